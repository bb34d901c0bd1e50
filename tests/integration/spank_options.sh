#!/usr/bin/env bash
# The SPANK plugin as users meet it first: srun and sbatch list the --vc options; a bad value
# stops the submission with one clear line and no job is created; a --vc job whose cluster
# cannot be made never runs its tasks (fail closed) and says why; jobs without --vc are
# untouched; a typo in plugstack.conf is a hard error naming the key.
source "$(dirname "$0")/lib.sh"
start_clean

testbed up --sites 1 --nodes 3
as_user() { testbed exec --user vcuser site1 node1 -- "$@"; }

for command in srun sbatch; do
    help=$(as_user "$command" --help 2>&1)
    for option in --vc --vc-net=CIDR --vc-overlay=vxlan\|n2n --vc-image=PATH --vc-cluster=ID \
        --vc-keys=ca\|exchange --vc-hostname-prefix=P; do
        grep -qF -- "$option" <<<"$help" || fail "$command --help does not list $option"
    done
done
pass "srun --help and sbatch --help list the --vc options"

first=$(as_user sbatch --parsable -N1 --wrap true)
for bad in --vc-net=banana --vc-net=10.77.0.1/24 --vc-overlay=gre --vc-image=relative \
    --vc-cluster=42 --vc-keys=rsa --vc-hostname-prefix=Bad_Name; do
    name=${bad%%=*}
    expect_status 255 as_user srun -N1 "$bad" true
    [[ $ERR == *"vcpilot: $name="* ]] || fail "srun $bad: unclear error: $ERR"
    if as_user sbatch -N1 "$bad" --wrap true >/dev/null 2>&1; then fail "sbatch $bad was accepted"; fi
done
second=$(as_user sbatch --parsable -N1 --wrap true)
assert_eq $((first + 1)) "$second" "job id after the refused submissions (none may be created)"
pass "bad --vc values stop srun and sbatch before submission, with the option named"

expect_status 0 as_user srun -N3 hostname
assert_eq "site1-node1 site1-node2 site1-node3" "$(sort <<<"$OUT" | tr '\n' ' ' | sed 's/ $//')" "srun -N3 hostname without --vc"
pass "jobs without --vc run as before"

# The site's CRM refuses this job's cluster (3 nodes do not fit in a /30): the tasks are not
# run, and srun says why.
if out=$(as_user srun -N3 --vc-net=10.200.0.0/30 hostname 2>&1); then fail "srun ran tasks without their virtual cluster: $out"; fi
if grep -qx 'site1-node[123]' <<<"$out"; then fail "srun --vc: a task ran on the host: $out"; fi
[[ $out == *"fewer than the 3 asked for"* && $out == *"the task is not run"* ]] ||
    fail "srun --vc with a refused range: unclear error: $out"
pass "a --vc task whose cluster cannot be made is not run (fail closed), with the CRM's reason"

# A job's own cluster over n2n (through the supernode the site's CRM was given): eth0 is
# n2n's TAP device (tun_flags), and the nodes reach each other over it.
out=$(as_user srun -N2 --vc-overlay=n2n bash -c 'echo $(hostname) $([[ -e /sys/class/net/eth0/tun_flags ]] && echo tap) $(ping -c 1 -W 5 -q vc-site1-1 >/dev/null && echo reaches-1)' | sort) ||
    fail "srun -N2 --vc-overlay=n2n failed: $out"
assert_eq "vc-site1-1 tap reaches-1
vc-site1-2 tap reaches-1" "$out" "tasks of an n2n job: host name, eth0's kind, reach of node 1"
pass "srun --vc-overlay=n2n: the job's nodes are linked by n2n"

# A cluster reserved with vcctl has its own range, overlay, keys and names.
before=$(as_user sbatch --parsable -N1 --wrap true)
for extra in --vc-net=10.77.0.0/24 --vc-overlay=vxlan --vc-keys=exchange --vc-hostname-prefix=mpi; do
    name=${extra%%=*}
    expect_status 1 as_user srun -N1 --vc-cluster=vc-0123abcd "$extra" true
    [[ $ERR == *"vcpilot: $name cannot go with --vc-cluster"* ]] || fail "srun --vc-cluster $extra: unclear error: $ERR"
    [[ $(grep -c "vcpilot:" <<<"$ERR") == 1 ]] || fail "srun --vc-cluster $extra: not one line: $ERR"
    if as_user sbatch -N1 --vc-cluster=vc-0123abcd "$extra" --wrap true >/dev/null 2>&1; then
        fail "sbatch --vc-cluster $extra was accepted"
    fi
done
after=$(as_user sbatch --parsable -N1 --wrap true)
assert_eq $((before + 1)) "$after" "job id after the refused --vc-cluster submissions (none may be created)"
pass "--vc-net, --vc-overlay, --vc-keys and --vc-hostname-prefix are refused with --vc-cluster, in one line, before submission"

# A plugstack.conf with a typo: every Slurm command of that configuration says what is wrong.
run_dir=${VCTB_RUN_DIR:-/run/vctb}
bad_dir=$run_dir/site1/bad-plugstack
mkdir -p "$bad_dir"
sed "s|^PlugStackConfig=.*|PlugStackConfig=$bad_dir/plugstack.conf|" "$run_dir/site1/slurm.conf" >"$bad_dir/slurm.conf"
sed 's/ crm=/ crmd=/' "$run_dir/site1/plugstack.conf" >"$bad_dir/plugstack.conf"
chmod 0755 "$bad_dir" && chmod 0644 "$bad_dir"/*
if out=$(as_user env SLURM_CONF="$bad_dir/slurm.conf" srun -N1 true 2>&1); then
    fail "srun ran with an unknown plugstack.conf key"
fi
[[ $out == *"unknown key 'crmd'"* ]] || fail "an unknown plugstack.conf key: unclear error: $out"
rm -rf "$bad_dir"
pass "an unknown key in plugstack.conf is a hard error naming it"

testbed down
assert_nothing_left
