#!/usr/bin/env bash
# Every common launcher, typed as a user types it, in a 4-node --vc batch job as the test user:
# inside the job the allocation is the virtual cluster (Slurm's node lists name vc-site1-*),
# so Open MPI's mpirun and MPICH's mpiexec work with their Slurm support, a hostfile, -H or
# -f; srun --mpi=pmi2 starts MPICH ranks and srun --mpi=pmix Open MPI ones (through the
# plugin's bridge to the step's PMIx server); pdsh, GNU parallel and clush farm out over ssh; ssh
# sessions find the cluster's nodes without Slurm. Programs are built with each MPI's own
# mpicc on the host (and Debian's NetPIPE), and run unchanged.
#
# One setting belongs to this machine, not to the virtual cluster, and is set once in the job:
# mpi_yield_when_idle, as 4 virtual nodes share 2 cores and a busy-polling rank starves the
# softirqs that carry its own packets.
source "$(dirname "$0")/lib.sh"
start_clean

run_dir=${VCTB_RUN_DIR:-/run/vctb}
testbed up --sites 1 --nodes 4

examples=$(cd "$(dirname "$0")/../../examples" && pwd)
mpicc.openmpi -O2 -o "$run_dir/ring-openmpi" "$examples/mpi_ring.c" || fail "Open MPI's mpicc could not build mpi_ring.c"
mpicc.mpich -O2 -o "$run_dir/ring-mpich" "$examples/mpi_ring.c" || fail "MPICH's mpicc could not build mpi_ring.c"

# Each launcher's output, its lines prefixed with the launcher's tag.
cat >"$run_dir/launchers-job.sh" <<SCRIPT
#!/bin/bash
cd /tmp  # NetPIPE writes np.out where it runs
export OMPI_MCA_mpi_yield_when_idle=1
tag() { sed "s/^/\$1 /"; }
echo "nodelist \$SLURM_JOB_NODELIST \$(scontrol show hostnames | tr '\n' ' ')"
srun -N1 -w vc-site1-3 hostname | tag srun-w
mpirun -np 4 $run_dir/ring-openmpi | tag ompi-slurm
mpirun --hostfile \$VC_HOSTFILE -np 4 $run_dir/ring-openmpi | tag ompi-hostfile
mpirun -H vc-site1-1,vc-site1-2,vc-site1-3,vc-site1-4 -np 4 $run_dir/ring-openmpi | tag ompi-H
mpirun -np 2 NPopenmpi -u 65536 -n 5 2>&1 | tail -1 | tag ompi-netpipe
mpiexec.hydra -np 4 $run_dir/ring-mpich | tag mpich-slurm
mpiexec.hydra -launcher ssh -f \$VC_NODELIST -np 4 $run_dir/ring-mpich | tag mpich-ssh
mpiexec.hydra -np 2 NPmpich2 -u 65536 -n 5 2>&1 | tail -1 | tag mpich-netpipe
srun --mpi=pmi2 $run_dir/ring-mpich | tag srun-pmi2
srun --mpi=pmix $run_dir/ring-openmpi | tag srun-pmix
srun -n 8 --overcommit --mpi=pmix $run_dir/ring-openmpi 2>&1 | sed 's/ on [^:]*:/:/' | tag srun-pmix-8
pdsh -R ssh -w ^\$VC_NODELIST hostname | sort | tag pdsh
parallel --sshloginfile \$VC_NODELIST --nonall hostname | sort | tag parallel
clush --hostfile \$VC_NODELIST hostname | sort | tag clush
ssh vc-site1-2 'mpirun -np 4 hostname; mpiexec.hydra -np 4 hostname' | sort | tag in-ssh
SCRIPT
chmod 0755 "$run_dir/launchers-job.sh"
out=$(testbed submit --site site1 --wait --timeout 280 "$run_dir/launchers-job.sh" -N4 --vc 2>&1) ||
    fail "the --vc batch job running every launcher failed: $out"

nodes="vc-site1-1 vc-site1-2 vc-site1-3 vc-site1-4"
grep -qxF "nodelist vc-site1-[1-4] $nodes " <<<"$out" ||
    fail "SLURM_JOB_NODELIST and scontrol show hostnames in the job: $(grep ^nodelist <<<"$out")"
grep -qxF "srun-w vc-site1-3" <<<"$out" || fail "srun -w with a virtual name: $(grep ^srun-w <<<"$out")"
pass "inside the job Slurm's node list names the virtual nodes (scontrol show hostnames too), and srun -w takes a virtual name"

ring="mpi_ring: 4 ranks on $nodes: 10 laps, token 60, allreduce 6: ok"
netpipe=' +[0-9]+: +[0-9]+ bytes +[0-9]+ times --> +[0-9.]+ Mbps'
for tag in ompi-slurm ompi-hostfile ompi-H; do
    grep -qxF "$tag $ring" <<<"$out" || fail "Open MPI's mpirun ($tag): $(grep "^$tag " <<<"$out")"
done
grep -Eq "^ompi-netpipe$netpipe" <<<"$out" || fail "NetPIPE under Open MPI's mpirun: $(grep ^ompi-netpipe <<<"$out")"
grep -qxF "srun-pmix $ring" <<<"$out" || fail "srun --mpi=pmix (Open MPI): $(grep "^srun-pmix " <<<"$out")"
grep -qxF "srun-pmix-8 mpi_ring: 8 ranks: 10 laps, token 280, allreduce 28: ok" <<<"$out" ||
    fail "srun -n 8 --mpi=pmix, two tasks a node (Open MPI): $(grep "^srun-pmix-8 " <<<"$out")"
pass "Open MPI: mpirun with Slurm's launcher, --hostfile \$VC_HOSTFILE and -H, and srun --mpi=pmix (one and two ranks a node) run an mpicc-built ring across the 4 virtual nodes, and NPopenmpi"
# The bridge to each step's PMIx server ends with the step: nothing of the user's is left.
left=$(ps -u vcuser -o pid=,args= || true)
[[ -z $left ]] || fail "processes of the test user left after the job: $left"

for tag in mpich-slurm mpich-ssh srun-pmi2; do
    grep -qxF "$tag $ring" <<<"$out" || fail "MPICH ($tag): $(grep "^$tag " <<<"$out")"
done
grep -Eq "^mpich-netpipe$netpipe" <<<"$out" || fail "NetPIPE under MPICH's mpiexec: $(grep ^mpich-netpipe <<<"$out")"
pass "MPICH: mpiexec with Slurm's launcher, mpiexec -launcher ssh -f \$VC_NODELIST and srun --mpi=pmi2 run an mpicc.mpich-built ring, and NPmpich2"

for tag in pdsh parallel clush; do
    got=$(grep "^$tag " <<<"$out" | sed "s/^$tag //; s/^[^ ]*: //" | tr '\n' ' ')
    assert_eq "$nodes " "$got" "hostname on every node with $tag"
done
assert_eq "vc-site1-1 vc-site1-1 vc-site1-2 vc-site1-2 vc-site1-3 vc-site1-3 vc-site1-4 vc-site1-4 " \
    "$(grep '^in-ssh ' <<<"$out" | sed 's/^in-ssh //' | tr '\n' ' ')" "mpirun and mpiexec in an ssh session"
pass "pdsh -R ssh -w ^\$VC_NODELIST, parallel --sshloginfile and clush --hostfile reach every virtual node; in an ssh session mpirun and mpiexec find the cluster's nodes unasked"
