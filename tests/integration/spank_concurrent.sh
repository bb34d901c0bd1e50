#!/usr/bin/env bash
# Two --vc jobs of the test user at once on the same two nodes, both with the same --vc-net:
# they get the same virtual addresses, yet neither reaches the other. From job A, ssh to the
# address of a B node lands on A's own node (its host name says so), and a TCP port that only
# B listens on is closed; a capture on eth0 inside each job's namespace, taken while both jobs
# send distinctive UDP and ping payloads, holds its own job's packets and none of the other's.
# Both jobs end cleanly and nothing of either is left.
source "$(dirname "$0")/lib.sh"
start_clean

build=${VCPILOT_BUILD_DIR:?}
run_dir=${VCTB_RUN_DIR:-/run/vctb}
net=10.65.123.0/29
testbed up --sites 1 --nodes 2
as_user() { testbed exec --user vcuser site1 ctl -- "$@"; }
crm() { "$build/vcctl/vcctl" --crm "unix:$(testbed crm site1)" --munge-socket "$run_dir/site1/munge/munge.socket" "$@"; }
# Under the testbed's run directory: the tasks see it (their /tmp is the job's own); down removes it.
work=$run_dir/concurrent
mkdir -p "$work"
chmod 0755 "$work"

# The task of both jobs, one per node: for SECONDS_TO_RUN it sends its job's MARKER to the
# other node of its cluster, as UDP to port 9999 and as a ping payload, once every 0.2 s.
# Job B's tasks also answer TCP on port 7777 with their host name; job A's first task probes
# the other node's address (ssh, TCP 7777, ping) once both jobs run. Virtual names follow the
# order in which the pilots attached, not Slurm's node order: the peer is the other name.
cat >"$work/task.sh" <<'TASK'
#!/bin/bash
set -u
peer=$(grep -vx "$(hostname)" "$VC_NODELIST" | head -1)
peer_address=$(getent hosts "$peer" | awk '{print $1}')
echo "task $(hostname) $VC_ADDRESS peer $peer $peer_address"
if [[ $MARKER == JOBB ]]; then
    /usr/bin/python3 -c '
import socket, sys
server = socket.create_server(("", 7777))
server.settimeout(1)
while True:
    try:
        connection, _ = server.accept()
    except socket.timeout:
        continue
    connection.sendall(("listener of job B on " + socket.gethostname() + "\n").encode())
    connection.close()' &
    listener=$!
fi
end=$((SECONDS + SECONDS_TO_RUN))
probed=0
while ((SECONDS < end)); do
    echo "$MARKER-PAYLOAD from $(hostname)" >"/dev/udp/$peer_address/9999" 2>/dev/null
    ping -c1 -W1 -p "$MARKER_HEX" "$peer_address" >/dev/null 2>&1
    if [[ $MARKER == JOBA && $VC_ADDRESS == 10.65.123.1 && $probed == 0 && $SECONDS -ge 2 ]]; then
        probed=1
        echo "probe ssh $(ssh -T -o BatchMode=yes -o ConnectTimeout=5 "$peer_address" hostname 2>&1)"
        if reply=$(timeout 3 bash -c "exec 3<>/dev/tcp/$peer_address/7777 && head -1 <&3" 2>/dev/null); then
            echo "probe tcp7777 reached: $reply"
        else
            echo "probe tcp7777 closed"
        fi
        if ping -c1 -W2 "$peer_address" >/dev/null 2>&1; then echo "probe ping answered"; else echo "probe ping silent"; fi
    fi
    sleep 0.2
done
[[ -z ${listener:-} ]] || kill "$listener"
echo "task $(hostname) done"
TASK
chmod 0755 "$work/task.sh"

# The pid holding job JOB's namespaces on node N, once the pilot there is READY.
ready_holder() {  # N JOB
    local dir=/run/vcpilot/site1-node$1/$2
    grep -qx 'state=READY' "$dir/state.json" 2>/dev/null || return 1
    awk '$1 == "holder" {print $2}' "$dir/namespaces"
}
wait_ready() {  # JOB-NAME -> prints the job id once both pilots are READY
    local job= _
    for _ in $(seq 300); do
        job=$(as_user squeue -h -n "$1" -o %i | head -1)
        if [[ -n $job ]] && ready_holder 1 "$job" >/dev/null && ready_holder 2 "$job" >/dev/null; then
            echo "$job"
            return 0
        fi
        sleep 0.1
    done
    as_user squeue >&2
    fail "job $1 did not become READY on both nodes within 30 s"
}

as_user env MARKER=JOBB MARKER_HEX=4a4f4242 SECONDS_TO_RUN=16 \
    srun -N2 --job-name=vc-b --vc-net=$net --vc-hostname-prefix=jobb "$work/task.sh" >"$work/b.out" 2>&1 &
b_srun=$!
job_b=$(wait_ready vc-b)
as_user env MARKER=JOBA MARKER_HEX=4a4f4241 SECONDS_TO_RUN=9 \
    srun -N2 --job-name=vc-a --vc-net=$net --vc-hostname-prefix=joba "$work/task.sh" >"$work/a.out" 2>&1 &
a_srun=$!
job_a=$(wait_ready vc-a)

running=$(as_user squeue -h -t RUNNING -o '%j %N' | sort)
assert_eq "vc-a site1-node[1-2]
vc-b site1-node[1-2]" "$running" "jobs running at once, and their nodes"
pass "two --vc jobs with the same --vc-net run at once on the same nodes (jobs $job_a, $job_b)"

# Capture inside each job's network namespace (entered through its holder), on node 1, for 5 s
# while both jobs send.
captures=()
for job in a b; do
    id=job_$job
    holder=$(ready_holder 1 "${!id}")
    timeout 5 nsenter -t "$holder" -n tcpdump -i eth0 -n -U -Z root -w "$work/$job.pcap" \
        2>"$work/$job.tcpdump.err" &
    captures+=($!)
done
for pid in "${captures[@]}"; do wait "$pid" || true; done
wait "$a_srun" || fail "job A's srun failed: $(cat "$work/a.out")"
wait "$b_srun" || fail "job B's srun failed: $(cat "$work/b.out")"

a_out=$(cat "$work/a.out")
b_out=$(cat "$work/b.out")
grep -q "^task joba-site1-1 10.65.123.1 " <<<"$a_out" && grep -q "^task jobb-site1-1 10.65.123.1 " <<<"$b_out" ||
    fail "the jobs' first nodes do not share 10.65.123.1: A: $a_out; B: $b_out"
pass "both jobs' virtual nodes have the same addresses (10.65.123.1, .2)"
grep -qx 'probe ssh joba-site1-2' <<<"$a_out" || fail "ssh from job A to 10.65.123.2: $a_out"
grep -qx 'probe tcp7777 closed' <<<"$a_out" || fail "job A reached job B's TCP listener: $a_out"
grep -qx 'probe ping answered' <<<"$a_out" || fail "ping from job A to its own second node: $a_out"
pass "from job A, ssh to the shared address lands on A's own node, B's TCP port is closed, ping answers from A's node"

for job in a b; do
    [[ -s $work/$job.pcap ]] || fail "no capture in job $job: $(cat "$work/$job.tcpdump.err")"
done
count() { tcpdump -r "$work/$1.pcap" -n -A 2>/dev/null | grep -c "$2" || true; }
# The UDP payload shows as text; the ping payload is MARKER_HEX repeated.
a_own=$(count a JOBA-PAYLOAD) a_other=$(count a JOBB)
b_own=$(count b JOBB-PAYLOAD) b_other=$(count b JOBA)
note "capture in A: $a_own own UDP payloads, $a_other of B; in B: $b_own own, $b_other of A"
((a_own > 0 && b_own > 0)) || fail "a capture saw none of its own job's packets (A $a_own, B $b_own)"
assert_eq 0 "$a_other" "packets of job B in job A's capture"
assert_eq 0 "$b_other" "packets of job A in job B's capture"
pass "a capture on eth0 in each job's namespace sees its own job's packets and none of the other's"

# Both jobs end cleanly and nothing of them is left.
for _ in $(seq 100); do
    [[ -z $(as_user squeue -h) ]] && break
    sleep 0.1
done
[[ -z $(as_user squeue -h) ]] || fail "jobs still there: $(as_user squeue)"
live=
for _ in $(seq 50); do
    live=$(crm --json list --all | python3 -c 'import json,sys; print(" ".join(c["id"] for c in json.load(sys.stdin).get("clusters", [])))')
    [[ -z $live ]] && break
    sleep 0.1
done
[[ -z $live ]] || fail "clusters still live after their jobs ended: $live"
[[ -z $(find /run/vcpilot -mindepth 1 2>/dev/null) ]] || fail "left in /run/vcpilot: $(find /run/vcpilot -mindepth 1 | head)"
if ps -eo args | grep -q "[s]shd.*/run/vcpilot/"; then fail "a job sshd is still running"; fi
if ps -eo stat=,comm= | awk '$1 !~ /^Z/ && $2 == "vc-pilot"' | grep -q .; then fail "a pilot is still running"; fi
pass "both jobs end cleanly: no cluster, run directory, sshd or pilot left"

testbed down
assert_nothing_left
