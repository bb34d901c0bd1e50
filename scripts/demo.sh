#!/usr/bin/env bash
# The demo: installs what is missing, builds, brings up a testbed of two Slurm sites joined
# by a 40 ms WAN, runs real Slurm jobs in each site and across the WAN, then a `sbatch --vc`
# job whose 4 nodes form a private virtual cluster running unmodified Open MPI and MPICH with
# their launchers as users type them, then a virtual cluster across both sites reserved through
# their Slurm, then tears down.
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

step "sbatch -N4 --vc at site1: a job in its own virtual cluster, MPI launched as users type it"
# The plugin's job prolog starts a pilot on each node; the pilots make the job's cluster at the
# site's CRM (addresses, VXLAN, SSH CA); every task, the batch script included, runs inside its
# virtual node, where Slurm's node list names the virtual nodes: mpirun and mpiexec need no
# flag of ours. All virtual nodes share this machine's 2 cores: ranks that busy-poll starve the
# softirq work that carries their packets (4 ms per message); yielding when idle gives ~13 us,
# hence OMPI_MCA_mpi_yield_when_idle, a setting of this machine, not of the virtual cluster.
# Ordinary MPI programs, built with each MPI's mpicc where every node can read them.
mkdir -p /run/vctb/demo
mpicc -O2 -o /run/vctb/demo/mpi_ring "$VCPILOT_SOURCE_DIR/examples/mpi_ring.c"
mpicc.mpich -O2 -o /run/vctb/demo/mpi_ring.mpich "$VCPILOT_SOURCE_DIR/examples/mpi_ring.c"
chmod 0755 /run/vctb/demo /run/vctb/demo/*
job=$(mktemp)
cat >"$job" <<'JOB'
#!/bin/bash
#SBATCH --job-name=vc-mpi
export OMPI_MCA_mpi_yield_when_idle=1  # 4 virtual nodes on 2 cores (see above)
echo "batch script on $(hostname) ($VC_ADDRESS) in cluster $VC_CLUSTER_ID; interfaces:"
ip -brief address
echo "SLURM_JOB_NODELIST=$SLURM_JOB_NODELIST"
echo "ssh $(sed -n 4p "$VC_NODELIST") hostname: $(ssh "$(sed -n 4p "$VC_NODELIST")" hostname)"
run() { echo "\$ $*"; "$@"; }
run mpirun -np 4 hostname
run mpirun -np 4 /run/vctb/demo/mpi_ring
run mpirun --hostfile "$VC_HOSTFILE" -np 4 /run/vctb/demo/mpi_ring
run mpiexec.hydra -np 4 /run/vctb/demo/mpi_ring.mpich
run srun --mpi=pmi2 /run/vctb/demo/mpi_ring.mpich
run pdsh -R ssh -w "^$VC_NODELIST" uptime
echo "\$ mpirun -np 2 NPopenmpi   (NetPIPE between two virtual nodes over the job's VXLAN)"
cd /tmp && mpirun -np 2 NPopenmpi -u 65536 -p 0 -o /tmp/np.out 2>&1 | tail -n 5
JOB
start=${EPOCHREALTIME/./}
"$testbed" submit --site site1 --wait --timeout 300 "$job" -N4 --vc
echo "(sbatch to job end: $(( (${EPOCHREALTIME/./} - start) / 1000 )) ms, virtual cluster set-up and teardown included)"
rm -f "$job"

step "The same with srun: every task in its virtual node"
start=${EPOCHREALTIME/./}
"$testbed" exec --user vcuser site1 ctl -- srun -N4 --vc sh -c 'echo "$(hostname) $VC_ADDRESS"' | sort
echo "($(( (${EPOCHREALTIME/./} - start) / 1000 )) ms)"

step "A virtual cluster across both sites, reserved through each site's Slurm (vcctl --grc)"
# The GRC gives each site a block and the cluster a VNI; each site's CRM submits a job of the
# user holding its nodes (sbatch --vc-cluster=ID); the pilots meet at the GRC's barrier across
# the 40 ms WAN, and VXLAN joins the four virtual nodes into one network.
grc() {
    "$testbed" exec --user vcuser site1 node1 -- "$VCPILOT_BUILD_DIR/vcctl/vcctl" \
        --grc "$("$testbed" grc 2>/dev/null)" --tls-ca /run/vctb/pki/ca.pem \
        --tls-cert /run/vctb/pki/user-vcuser.pem --tls-key /run/vctb/pki/user-vcuser.key "$@"
}
start=${EPOCHREALTIME/./}
id=$(grc create --site site1:2 --site site2:2 --walltime 30)
grc wait "$id" --timeout 120 >/dev/null
echo "(create to READY: $(( (${EPOCHREALTIME/./} - start) / 1000 )) ms)"
grc show "$id"
# No Slurm allocation spans two sites: mpirun and mpiexec find the cluster's nodes in the
# hostfile every process of the cluster is pointed to.
echo "\$ vcctl run $id -- mpirun -np 4 /run/vctb/demo/mpi_ring"
grc run "$id" -- mpirun --mca mpi_yield_when_idle 1 -np 4 /run/vctb/demo/mpi_ring
echo "\$ vcctl run $id -- mpiexec.hydra -np 4 /run/vctb/demo/mpi_ring.mpich"
grc run "$id" -- mpiexec.hydra -np 4 /run/vctb/demo/mpi_ring.mpich
grc release "$id" --wait --timeout 60 >/dev/null
echo "released: both sites' jobs cancelled"

step "Taking the testbed down"
"$testbed" down
trap - EXIT
echo "demo finished"
