#!/usr/bin/env bash
# A virtual cluster across two sites reserved through each site's Slurm (issue 7): the test user
# creates it at the GRC; each site's CRM submits a job of the user (sbatch --vc-cluster=ID -N 4)
# that holds its nodes; the plugin starts the pilots; the barrier across sites completes and all
# 8 nodes are READY. vcctl show lists every node with its site; vcctl run starts unmodified
# Open MPI and MPICH programs (mpicc-built rings on 8 ranks, NetPIPE between the sites) with
# the launchers as users type them, and pdsh, clush and GNU parallel over ssh across both sites. Release cancels both jobs and leaves nothing. A site's job cancelled by
# hand fails the cluster with the reason, and its release still cleans up both sites.
source "$(dirname "$0")/lib.sh"
start_clean

run_dir=${VCTB_RUN_DIR:-/run/vctb}

testbed up --sites 2 --nodes 4
queue() {  # SITE: the test user's jobs there, "id name state nodes"
    testbed exec --user vcuser "$1" ctl -- squeue -h -o '%i %j %T %D'
}
left_on_nodes() {
    find /run/vcpilot -mindepth 1 -maxdepth 2 2>/dev/null
    ps -eo args | grep '[s]shd.*/run/vcpilot/' || true
    ps -eo stat=,comm= | awk '$1 !~ /^Z/ && $2 == "vc-pilot"' || true
}
# Waits (bounded) until both sites have no job of the test user and nothing of a job is left.
wait_all_gone() {  # WHAT
    local _
    for _ in $(seq 300); do
        if [[ -z $(queue site1) && -z $(queue site2) && -z $(left_on_nodes) ]]; then
            return 0
        fi
        sleep 0.1
    done
    fail "$1: left after 30 s: $(queue site1) $(queue site2) $(left_on_nodes | head -5)"
}

id=$(user_grc create --site site1:4 --site site2:4 --walltime 30) || fail "vcctl --grc create failed"
[[ $id =~ ^vc-[0-9a-f]{8}$ ]] || fail "vcctl --grc create printed '$id', not a cluster id"
user_grc wait "$id" --timeout 120 >/dev/null ||
    fail "the cluster did not become READY: $(user_grc show "$id" 2>&1) site1: $(queue site1) site2: $(queue site2)"
shown=$(user_grc --json show "$id")
assert_eq CLUSTER_STATE_READY "$(json_field 'd["state"]' <<<"$shown")" "cluster state"
assert_eq 8 "$(json_field 'sum(1 for n in d["nodes"] if n["state"] == "PILOT_STATE_READY")' <<<"$shown")" "READY nodes"
assert_eq PILOT_SOURCE_SLURM "$(json_field 'd["pilots"]' <<<"$shown")" "pilots"
for k in 1 2; do
    job=$(json_field "[s['pilot_job'] for s in d['sites'] if s['site'] == 'site$k'][0]" <<<"$shown")
    [[ $job =~ ^[0-9]+$ ]] || fail "site$k's pilot job is '$job'"
    assert_eq "$job $id RUNNING 4" "$(queue "site$k")" "site$k's queue (the user's own job, named after the cluster)"
done
pass "vcctl --grc create --site site1:4 --site site2:4: each CRM submitted a 4-node job of vcuser, all 8 nodes READY"

table=$(user_grc show "$id")
for k in 1 2; do
    for n in 1 2 3 4; do
        grep -Eq "^vc-site$k-$n +site$k +10\.[0-9.]+ +site$k-node$n +172\.16\.$k\.[0-9]+ +READY" <<<"$table" ||
            fail "vcctl show has no line for vc-site$k-$n with its site, address, host and state: $table"
    done
done
pass "vcctl show lists every node with its site, address, host and state"

# The launchers as users type them (launchers.sh has them inside a job); a cluster of two
# Slurms has no allocation to read, so mpirun and mpiexec take the cluster's hostfile and node
# list from the environment every process of the cluster gets. mpi_yield_when_idle: 8 virtual
# nodes share this machine's 2 cores (a busy-polling rank starves its own packets).
examples=$(cd "$(dirname "$0")/../../examples" && pwd)
mpicc.openmpi -O2 -o "$run_dir/ring-openmpi" "$examples/mpi_ring.c" || fail "Open MPI's mpicc could not build mpi_ring.c"
mpicc.mpich -O2 -o "$run_dir/ring-mpich" "$examples/mpi_ring.c" || fail "MPICH's mpicc could not build mpi_ring.c"
out=$(user_grc run "$id" -- bash -c "export OMPI_MCA_mpi_yield_when_idle=1; cd /tmp; tag() { sed \"s/^/\$1 /\"; }
    mpirun -np 8 $run_dir/ring-openmpi | tag ompi-default
    mpirun --hostfile \$VC_HOSTFILE -np 8 $run_dir/ring-openmpi | tag ompi-hostfile
    mpirun -H vc-site1-1,vc-site2-1 -np 2 NPopenmpi -u 65536 -n 5 2>&1 | tail -1 | tag ompi-netpipe
    mpiexec.hydra -np 8 $run_dir/ring-mpich | tag mpich-default
    mpiexec.hydra -launcher ssh -f \$VC_NODELIST -np 8 $run_dir/ring-mpich | tag mpich-ssh
    pdsh -R ssh -w ^\$VC_NODELIST hostname | sort | tag pdsh
    clush --hostfile \$VC_NODELIST hostname | sort | tag clush") ||
    fail "the launchers across both sites failed: $out"
ring="mpi_ring: 8 ranks on vc-site1-1 vc-site1-2 vc-site1-3 vc-site1-4 vc-site2-1 vc-site2-2 vc-site2-3 vc-site2-4: 10 laps, token 280, allreduce 28: ok"
for tag in ompi-default ompi-hostfile mpich-default mpich-ssh; do
    grep -qxF "$tag $ring" <<<"$out" || fail "mpi_ring on 8 ranks across the sites ($tag): $(grep "^$tag " <<<"$out")"
done
grep -Eq '^ompi-netpipe +[0-9]+: +[0-9]+ bytes +[0-9]+ times --> +[0-9.]+ Mbps' <<<"$out" ||
    fail "NetPIPE between the sites: $(grep ^ompi-netpipe <<<"$out")"
for tag in pdsh clush; do
    assert_eq "vc-site1-1 vc-site1-2 vc-site1-3 vc-site1-4 vc-site2-1 vc-site2-2 vc-site2-3 vc-site2-4 " \
        "$(grep "^$tag " <<<"$out" | sed "s/^$tag //; s/^[^ ]*: //" | tr '\n' ' ')" "hostname on every node with $tag"
done
pass "vcctl run: mpirun -np 8 and mpiexec -np 8 (no flags), --hostfile, -f and -H run mpicc-built rings on all 8 nodes and NetPIPE between the sites; pdsh and clush reach all 8"

# The overlay's MTU fits the path across the sites: a don't-fragment ping of exactly the
# interface's MTU crosses the WAN (VXLAN adds 50 bytes underneath), one byte more is refused.
out=$(user_grc run "$id" -- bash -c 'mtu=$(cat /sys/class/net/eth0/mtu); echo "mtu $mtu";
    ping -M do -c 2 -W 2 -s $((mtu - 28)) vc-site2-4 >/dev/null && echo full-size-ok;
    ping -M do -c 1 -W 2 -s $((mtu - 27)) vc-site2-4 >/dev/null 2>&1 || echo one-more-refused') ||
    fail "the don't-fragment pings failed: $out"
[[ $out == *"full-size-ok"* && $out == *"one-more-refused"* ]] || fail "don't-fragment pings across the sites: $out"
pass "a don't-fragment ping of the full overlay MTU ($(head -1 <<<"$out" | cut -d' ' -f2)) crosses the WAN; one byte more is refused"

out=$(user_grc run "$id" -- bash -c 'seq 40 | parallel --sshloginfile "$VC_NODELIST" -j8 "echo {} \$(hostname)"') ||
    fail "GNU parallel across the sites failed: $out"
assert_eq 40 "$(wc -l <<<"$out")" "tasks GNU parallel ran"
grep -q ' vc-site1-' <<<"$out" && grep -q ' vc-site2-' <<<"$out" || fail "GNU parallel used only one site: $out"
pass "GNU parallel --sshloginfile \$VC_NODELIST runs 40 tasks over ssh on both sites"

# A second cluster across the same sites at the same time (its jobs share the nodes): another
# VNI and other addresses. Neither reaches the other, and while the first pings all its nodes
# with a marked payload, captures on every node of the second see none of it.
other=$(user_grc create --site site1:2 --site site2:2) || fail "the concurrent cluster was not created"
user_grc wait "$other" --timeout 120 >/dev/null || fail "the concurrent cluster did not become READY: $(user_grc show "$other" 2>&1)"
assert_clusters_apart "$id" "$other" vc-site2-1
theirs=7663706c74657374  # "vcpltest", as ping -p repeats it
ours=6f7572736f757273    # "oursours"
root_grc exec "$other" -- bash -c "timeout 6 tcpdump -i eth0 -nn -x -U 2>/dev/null | tr -d ' \t\n' >/tmp/capture;
    echo \$(grep -o $theirs$theirs /tmp/capture | wc -l) \$(grep -o $ours$ours /tmp/capture | wc -l); rm -f /tmp/capture" \
    >"$run_dir/captures" 2>&1 &
capture=$!
sleep 2
pings='for h in $(cat $VC_NODELIST); do ping -c 3 -i 0.2 -p MARK -s 200 $h >/dev/null & done; wait'
user_grc run "$id" -- bash -c "${pings/MARK/$theirs}" || fail "the marked pings within $id failed"
user_grc run "$other" -- bash -c "${pings/MARK/$ours}" || fail "the marked pings within $other failed"
wait "$capture" || true
# Each of the second cluster's nodes saw its own cluster's pings (the capture works) and none
# of the first's.
[[ $(grep -cE '^vc-site[12]-[12]: 0 [1-9][0-9]*$' "$run_dir/captures") == 4 ]] ||
    fail "captures in cluster $other (the other's marked packets, its own): $(cat "$run_dir/captures")"
user_grc release "$other" --wait --timeout 60 >/dev/null || fail "release of $other failed"
rm -f "$run_dir/captures"
pass "a concurrent VXLAN cluster on the same nodes: neither reaches the other; its 4 nodes' captures hold none of the other's marked pings"

user_grc release "$id" --wait --timeout 60 >/dev/null || fail "release failed"
wait_all_gone "release"
pass "release cancels both sites' jobs; nothing is left on any node"

# A site's job ends under the cluster (scancel by an administrator): FAILED, with the reason.
id=$(user_grc create --site site1:2 --site site2:2) || fail "the second create failed"
user_grc wait "$id" --timeout 120 >/dev/null || fail "the second cluster did not become READY: $(user_grc show "$id" 2>&1)"
job=$(user_grc --json show "$id" | json_field "[s['pilot_job'] for s in d['sites'] if s['site'] == 'site2'][0]")
testbed exec site2 ctl -- scancel "$job"
state=
for _ in $(seq 300); do
    shown=$(user_grc --json show "$id")
    state=$(json_field 'd["state"]' <<<"$shown")
    [[ $state == CLUSTER_STATE_FAILED ]] && break
    sleep 0.1
done
assert_eq CLUSTER_STATE_FAILED "$state" "the cluster's state once site2's job was cancelled"
reason=$(json_field 'd.get("reason", "")' <<<"$shown")
[[ $reason == *"Slurm job $job"*"before the release"* ]] || fail "the reason does not name the job: '$reason'"
pass "scancel of a site's job fails the cluster: $reason"
user_grc release "$id" --wait --timeout 60 >/dev/null || fail "release of the failed cluster failed"
wait_all_gone "release of the failed cluster"
pass "its release ends the other site's job too; nothing is left"

rm -f "$run_dir/mpi_ring"
testbed down
assert_nothing_left
