#!/usr/bin/env bash
# The demo: installs what is missing, builds, brings up a testbed of two Slurm sites joined
# by a 40 ms WAN, runs real Slurm jobs in each site and across the WAN, builds a 4-node virtual
# cluster with vc-pilot and runs unmodified Open MPI programs in it over ssh, then tears down.
source "$(dirname "$0")/common.sh"
require_root
install_deps
build

testbed=$VCPILOT_SOURCE_DIR/tests/testbed/vc-testbed
trap '"$testbed" down >/dev/null 2>&1 || true' EXIT

step "Bringing up 2 sites × 4 nodes, WAN round trip 40 ms"
"$testbed" up --sites 2 --nodes 4 --wan-rtt 40
"$testbed" status

for site in site1 site2; do
    step "srun -N4 hostname at $site, as the test user vcuser"
    start=${EPOCHREALTIME/./}
    "$testbed" exec --user vcuser "$site" ctl -- srun -N4 hostname | sort
    echo "($(( (${EPOCHREALTIME/./} - start) / 1000 )) ms)"
done

step "A batch job at site2 that pings site1 across the WAN"
job=$(mktemp)
cat >"$job" <<'JOB'
#!/bin/bash
#SBATCH -N1 --job-name=wan-ping
echo "job $SLURM_JOB_ID on $(hostname) as $(id -un)"
ping -c 3 -i 0.2 -q 172.16.1.11 | tail -n 1
JOB
"$testbed" submit --site site2 --wait "$job"
rm -f "$job"

step "A virtual cluster of 4 nodes at site1: vc-pilot on every node, wired by pilot-driver (standing in for the coordinators)"
pilot=$VCPILOT_BUILD_DIR/pilot/vc-pilot
driver=$VCPILOT_BUILD_DIR/tests/tools/pilot-driver/pilot-driver
job=100
sockets=()
for n in 1 2 3 4; do
    "$testbed" exec site1 "node$n" -- "$pilot" serve --job "$job" --log-level warn &
    sockets+=("/run/vcpilot/site1-node$n/$job/pilot.sock")
done
for socket in "${sockets[@]}"; do
    for _ in $(seq 500); do "$driver" status "$socket" >/dev/null 2>&1 && break; sleep 0.01; done
done
start=${EPOCHREALTIME/./}
"$driver" up --cluster demo --cidr 10.20.0.0/24 --vni 4242 --name-prefix vn "${sockets[@]}"
echo "(cluster READY in $(( (${EPOCHREALTIME/./} - start) / 1000 )) ms: namespaces, VXLAN, keys, sshd on 4 nodes)"
vn1() { "$driver" run "${sockets[0]}" -- "$@"; }

step "Inside vn1, as vcuser: the only interfaces, the hostname, ssh to another virtual node"
vn1 ip -brief address
vn1 sh -c 'echo "hostname: $(hostname)"; echo "ssh vn4 hostname: $(ssh vn4 hostname)"'

# All virtual nodes share this machine's cores: ranks that busy-poll starve the softirq work
# that carries their packets across the veths and VXLAN (4 ms per message, one scheduler tick);
# yielding when idle gives ~13 us. Real nodes do not share cores and need no such option.
mpi=(mpirun --hostfile /run/vcpilot/site1-node1/$job/job/hostfile --map-by node
     --mca btl tcp,self --mca btl_tcp_if_include eth0 --mca oob_tcp_if_include eth0
     --mca mpi_yield_when_idle 1)
step "Unmodified Open MPI over ssh across the virtual cluster: ${mpi[*]} -np 4 hostname"
vn1 "${mpi[@]}" -np 4 hostname
step "NetPIPE (NPopenmpi) between vn1 and vn2 over the job's VXLAN"
vn1 sh -c "cd /tmp && ${mpi[*]} -np 2 NPopenmpi -u 65536 -p 0 -o /tmp/np.out 2>&1 | tail -n 5"

"$driver" shutdown "${sockets[@]}"
wait

step "Taking the testbed down"
"$testbed" down
trap - EXIT
echo "demo finished"
