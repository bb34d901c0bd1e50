#!/usr/bin/env bash
# Jobs with --vc, as the test user: the job prolog starts a pilot on every node, the pilots
# make the job's cluster at the site's CRM, every task joins its virtual node (only lo and
# eth0, a virtual hostname, an address in the job's range), unmodified Open MPI runs over ssh
# in a batch job, GNU parallel farms tasks out over ssh; when the job ends, its cluster is
# released and nothing of it is left on the nodes.
source "$(dirname "$0")/lib.sh"
start_clean

build=${VCPILOT_BUILD_DIR:?}
run_dir=${VCTB_RUN_DIR:-/run/vctb}
testbed up --sites 1 --nodes 2
as_user() { testbed exec --user vcuser site1 node1 -- "$@"; }
crm() { "$build/coordinator/vcctl" --crm "unix:$(testbed crm site1)" --munge-socket "$run_dir/site1/munge/munge.socket" "$@"; }
netns_before=$(ip netns list | wc -l)

out=$(as_user srun -N2 --vc bash -c 'echo "$(hostname) $VC_CLUSTER_ID $VC_NODE_NAME $VC_ADDRESS $(ip -o link | awk -F": " "{print \$2}" | cut -d@ -f1 | sort | tr "\n" ,)"') ||
    fail "srun -N2 --vc failed: $out"
lines=$(sort <<<"$out")
job=$(awk 'NR==1{print $2}' <<<"$lines")
[[ $job =~ ^vcj-[0-9]+$ ]] || fail "VC_CLUSTER_ID is '$job'"
assert_eq "vc-site1-1 $job vc-site1-1 10.65.0.1 eth0,lo,
vc-site1-2 $job vc-site1-2 10.65.0.2 eth0,lo," "$lines" "hostname, cluster, node, address and links of each task"
pass "srun -N2 --vc: each task sees only lo and eth0, its virtual hostname and an address in the job's range"

out=$(as_user srun -N2 --vc-net=10.65.200.0/29 bash -c 'ssh -T -o BatchMode=yes "$(sed -n 2p "$VC_NODELIST")" hostname; cat "$VC_HOSTFILE"') ||
    fail "ssh inside an srun --vc step failed: $out"
grep -qx 'vc-site1-2' <<<"$out" || fail "ssh to the second virtual node: $out"
grep -qx 'vc-site1-1 slots=1' <<<"$out" || fail "VC_HOSTFILE: $out"
pass "--vc-net places the job; ssh between virtual nodes with strict host-key checking; VC_HOSTFILE"

cat >"$run_dir/vc-mpi-job.sh" <<'SCRIPT'
#!/bin/bash
# Unmodified Open MPI over ssh; inside a Slurm allocation Open MPI would pick Slurm's own
# launcher and node list, so the ssh launcher and the job's hostfile are named.
set -e
mpirun --hostfile "$VC_HOSTFILE" --mca plm rsh --mca ras ^slurm --mca btl tcp,self \
    --mca btl_tcp_if_include eth0 --mca oob_tcp_if_include eth0 --map-by node \
    --mca mpi_yield_when_idle 1 -np 2 hostname | sort
mpirun --hostfile "$VC_HOSTFILE" --mca plm rsh --mca ras ^slurm --mca btl tcp,self \
    --mca btl_tcp_if_include eth0 --mca oob_tcp_if_include eth0 --map-by node \
    --mca mpi_yield_when_idle 1 -np 2 NPopenmpi -u 65536 -n 5 2>&1 | tail -1
SCRIPT
chmod 0755 "$run_dir/vc-mpi-job.sh"
out=$(testbed submit --site site1 --wait --timeout 180 "$run_dir/vc-mpi-job.sh" -N2 --vc 2>&1) ||
    fail "the --vc batch job with mpirun failed: $out"
grep -qx 'vc-site1-1' <<<"$out" && grep -qx 'vc-site1-2' <<<"$out" || fail "mpirun hostname: $out"
grep -Eq '^ *[0-9]+: +[0-9]+ bytes +[0-9]+ times --> +[0-9.]+ Mbps' <<<"$out" || fail "NetPIPE over the virtual cluster: $out"
pass "sbatch -N2 --vc: Open MPI over ssh runs hostname and NetPIPE across the virtual nodes"

out=$(as_user srun -N1 --vc bash -c 'seq 100 | parallel --sshloginfile "$VC_NODELIST" -j4 "echo {} \$(hostname)" | wc -l') ||
    fail "GNU parallel over ssh failed: $out"
assert_eq 100 "$(tail -1 <<<"$out")" "tasks GNU parallel ran over ssh"
pass "GNU parallel --sshloginfile \$VC_NODELIST runs 100 tasks over ssh"

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

rm -f "$run_dir/vc-mpi-job.sh"
testbed down
assert_nothing_left
