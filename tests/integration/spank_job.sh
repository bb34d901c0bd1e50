#!/usr/bin/env bash
# Jobs with --vc, as the test user: the job prolog starts a pilot on every node, the pilots
# make the job's cluster at the site's CRM, every task joins its virtual node (only lo and
# eth0, a virtual hostname, an address in the job's range), srun runs inside a batch job
# (MPI launchers: launchers.sh), salloc's steps run
# inside while its command stays on the login node, the extern step (PrologFlags=Contain) stays
# on the node, GNU parallel farms tasks out over ssh; when the job ends, its cluster is
# released and nothing of it is left on the nodes.
source "$(dirname "$0")/lib.sh"
start_clean

build=${VCPILOT_BUILD_DIR:?}
run_dir=${VCTB_RUN_DIR:-/run/vctb}
testbed up --sites 1 --nodes 4
as_user() { testbed exec --user vcuser site1 node1 -- "$@"; }
crm() { "$build/vcctl/vcctl" --crm "unix:$(testbed crm site1)" --munge-socket "$run_dir/site1/munge/munge.socket" "$@"; }
netns_before=$(ip netns list | wc -l)

# srun -l: task i runs on the job's i-th node in Slurm's order (SLURMD_NODENAME), which is the
# i+1-th virtual node whatever the order in which the pilots attached.
out=$(as_user srun -l -N4 --vc bash -c 'echo "$(hostname) $VC_CLUSTER_ID $VC_NODE_NAME $VC_ADDRESS $(ip -o link | awk -F": " "{print \$2}" | cut -d@ -f1 | sort | tr "\n" ,) $SLURMD_NODENAME"') ||
    fail "srun -N4 --vc failed: $out"
lines=$(sort <<<"$out")
job=$(awk 'NR==1{print $3}' <<<"$lines")
[[ $job =~ ^vcj-[0-9]+$ ]] || fail "VC_CLUSTER_ID is '$job'"
assert_eq "0: vc-site1-1 $job vc-site1-1 10.65.0.1 eth0,lo, site1-node1
1: vc-site1-2 $job vc-site1-2 10.65.0.2 eth0,lo, site1-node2
2: vc-site1-3 $job vc-site1-3 10.65.0.3 eth0,lo, site1-node3
3: vc-site1-4 $job vc-site1-4 10.65.0.4 eth0,lo, site1-node4" "$lines" "task, hostname, cluster, node, address, links and Slurm node of each task"
for n in 1 2 3 4; do  # not by luck: the prolog gave each pilot its place in the job
    grep -q "vcpilot: job ${job#vcj-}: pilot started on site1-node$n (node $n of the job" "$run_dir/site1/log/site1-node$n.log" ||
        fail "the prolog on site1-node$n did not give its pilot rank $n: $(grep -h "vcpilot: job ${job#vcj-}" "$run_dir"/site1/log/*.log)"
done
pass "srun -N4 --vc: each task sees only lo and eth0, its virtual hostname and an address in the job's range; the job's n-th node is vc-site1-n"

# /sys shows the job's interfaces too, not the node's (nor the machine's): tools that read
# /sys/class/net (hwloc, MPI libraries choosing an interface) see what ip sees.
out=$(as_user srun -N1 --vc bash -c 'echo $(ls /sys/class/net) $(cat /sys/class/net/eth0/mtu) $(ip -o link show eth0 | grep -o "mtu [0-9]*")') ||
    fail "reading /sys/class/net in a --vc task failed: $out"
[[ $out =~ ^eth0\ lo\ ([0-9]+)\ mtu\ ([0-9]+)$ && ${BASH_REMATCH[1]} == "${BASH_REMATCH[2]}" ]] ||
    fail "/sys/class/net in the job: '$out' (want 'eth0 lo MTU mtu MTU')"
pass "/sys/class/net in the job lists only lo and eth0, with eth0's own MTU"

out=$(as_user srun -N2 --vc-net=10.65.200.0/29 bash -c 'ssh -T -o BatchMode=yes "$(sed -n 2p "$VC_NODELIST")" hostname; cat "$VC_HOSTFILE"') ||
    fail "ssh inside an srun --vc step failed: $out"
grep -qx 'vc-site1-2' <<<"$out" || fail "ssh to the second virtual node: $out"
grep -qx 'vc-site1-1 slots=1' <<<"$out" || fail "VC_HOSTFILE: $out"
pass "--vc-net places the job; ssh between virtual nodes with strict host-key checking; VC_HOSTFILE"

# srun inside the batch script (vc-srun through the node's pilot); every MPI launcher is
# launchers.sh's.
cat >"$run_dir/vc-srun-job.sh" <<'SCRIPT'
#!/bin/bash
srun -N4 hostname | sed 's/^/srun-in-batch /' | sort
SCRIPT
chmod 0755 "$run_dir/vc-srun-job.sh"
out=$(testbed submit --site site1 --wait --timeout 240 "$run_dir/vc-srun-job.sh" -N4 --vc 2>&1) ||
    fail "the --vc batch job with srun inside failed: $out"
assert_eq "srun-in-batch vc-site1-1
srun-in-batch vc-site1-2
srun-in-batch vc-site1-3
srun-in-batch vc-site1-4" "$(grep '^srun-in-batch ' <<<"$out")" "srun inside the batch script"
pass "inside the batch job, srun (relayed by the node's pilot) runs its tasks in the virtual nodes"

# Interactive: salloc's command runs on the login node; the steps it makes run inside.
out=$(testbed exec --user vcuser site1 ctl -- salloc -N2 --vc bash -c \
    'echo "salloc-command $(hostname)"; srun hostname | sed "s/^/step /";
     env -u SLURM_SPANK__SLURM_SPANK_OPTION_vcpilot_vc -u _SLURM_SPANK_OPTION_vcpilot_vc srun hostname | sed "s/^/bare-step /"' 2>/dev/null) ||
    fail "salloc -N2 --vc failed: $out"
assert_eq "bare-step vc-site1-1
bare-step vc-site1-2
salloc-command site1-ctl
step vc-site1-1
step vc-site1-2" "$(sort <<<"$out")" "salloc's command and the steps made in its allocation"
pass "salloc -N2 --vc: srun steps in the allocation get virtual names, also an srun that lost the --vc option"
expect_status 1 testbed exec --user vcuser site1 ctl -- salloc -N1 srun --vc hostname
[[ $ERR == *"no virtual cluster was made for this job"* ]] || fail "srun --vc in an allocation without --vc: $ERR"
pass "srun --vc inside an allocation made without --vc is refused at once, with the reason"

# The first task of a 4-node job farms 100 tasks out over ssh to the job's 4 virtual nodes.
out=$(as_user srun -N4 --vc bash -c '[[ $SLURM_PROCID != 0 ]] ||
    seq 100 | parallel --sshloginfile "$VC_NODELIST" -j4 "echo {} \$(hostname)"') ||
    fail "GNU parallel over ssh failed: $out"
assert_eq 100 "$(wc -l <<<"$out")" "tasks GNU parallel ran over ssh"
assert_eq "vc-site1-1 vc-site1-2 vc-site1-3 vc-site1-4" "$(awk '{print $2}' <<<"$out" | sort -u | tr '\n' ' ' | sed 's/ $//')" \
    "the virtual nodes GNU parallel's tasks ran on"
pass "GNU parallel --sshloginfile \$VC_NODELIST runs 100 tasks over ssh across the job's 4 nodes"

# The extern step (PrologFlags=Contain) holds what Slurm adopts from outside any step (ssh
# logins through pam_slurm_adopt): it stays on the node, while the job's steps run inside.
sed -i 's/^PrologFlags=Alloc$/PrologFlags=Alloc,Contain/' "$run_dir/site1/slurm.conf"
testbed exec site1 ctl -- scontrol reconfigure
for _ in $(seq 50); do
    testbed exec site1 ctl -- scontrol show config | grep -q 'PrologFlags *= *Alloc,Contain' && break
    sleep 0.1
done
as_user srun -N1 --vc bash -c 'sleep 3; hostname' >"$run_dir/extern.out" 2>&1 &
step=$!
extern= job=
for _ in $(seq 100); do
    job=$(as_user squeue -h -o %i | head -1)
    extern=$(pgrep -f '^sleep 100000000$' | head -1 || true)
    [[ -n $extern && -n $job ]] && grep -qx state=READY "/run/vcpilot/site1-node1/$job/state.json" 2>/dev/null && break
    sleep 0.1
done
[[ -n $extern ]] || fail "no extern step with PrologFlags=Contain"
holder=$(awk '$1 == "holder" {print $2}' "/run/vcpilot/site1-node1/$job/namespaces")
node_net=$(testbed exec site1 node1 -- readlink /proc/self/ns/net)
assert_eq "$node_net" "$(readlink "/proc/$extern/ns/net")" "the extern step's network namespace (the node's)"
[[ $(readlink "/proc/$holder/ns/net") != "$node_net" ]] || fail "the job's namespace is the node's"
wait "$step" || fail "srun --vc with PrologFlags=Contain failed: $(cat "$run_dir/extern.out")"
assert_eq vc-site1-1 "$(cat "$run_dir/extern.out")" "the step's host name with PrologFlags=Contain"
pass "PrologFlags=Contain: the extern step stays on the node, the job's step runs in its virtual node"

# Every job's cluster was released when the job ended, and nothing is left on the nodes.
for _ in $(seq 50); do
    [[ -z $(crm --json list --all | python3 -c 'import json,sys; print(" ".join(c["id"] for c in json.load(sys.stdin).get("clusters", [])))') ]] && break
    sleep 0.1
done
left=$(crm --json list --all | python3 -c 'import json,sys; print(" ".join(c["id"] for c in json.load(sys.stdin).get("clusters", [])))')
[[ -z $left ]] || fail "clusters still live after their jobs ended: $left"
[[ -z $(find /run/vcpilot -mindepth 1 2>/dev/null) ]] || fail "left in /run/vcpilot: $(find /run/vcpilot -mindepth 1 | head)"
if ps -eo args | grep -q "[s]shd.*/run/vcpilot/"; then fail "a job sshd is still running"; fi
if ps -eo comm | grep -qx 'vc-pilot'; then fail "a pilot is still running"; fi
assert_eq "$netns_before" "$(ip netns list | wc -l)" "named network namespaces"
pass "when the jobs end, their clusters are released and nothing is left (run dirs, sshd, pilots)"

rm -f "$run_dir/vc-mpi-job.sh" "$run_dir/mpi_ring" "$run_dir/extern.out"
testbed down
assert_nothing_left
