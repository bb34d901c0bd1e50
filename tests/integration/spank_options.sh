#!/usr/bin/env bash
# The SPANK plugin as users meet it first: srun and sbatch list the --vc options; a bad value
# stops the submission with one clear line and no job is created; a --vc job never runs its
# tasks outside a virtual cluster (until the pilots are started from Slurm, it is refused);
# jobs without --vc are untouched; a typo in plugstack.conf is a hard error naming the key.
source "$(dirname "$0")/lib.sh"
start_clean

testbed up --sites 1 --nodes 2
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

expect_status 0 as_user srun -N2 hostname
assert_eq "site1-node1 site1-node2" "$(sort <<<"$OUT" | tr '\n' ' ' | sed 's/ $//')" "srun -N2 hostname without --vc"
pass "jobs without --vc run as before"

if out=$(as_user srun -N1 --vc hostname 2>&1); then fail "srun --vc ran its task without a virtual cluster: $out"; fi
if grep -qx 'site1-node1' <<<"$out"; then fail "srun --vc: the task ran on the host: $out"; fi
[[ $out == *"vcpilot:"* ]] || fail "srun --vc: no vcpilot message: $out"
pass "a --vc task that cannot join a virtual cluster is not run (fail closed)"

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
