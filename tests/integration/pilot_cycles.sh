#!/usr/bin/env bash
# 100 SETUP -> READY -> SHUTDOWN cycles, then 20 cycles that end with kill -9 of the pilot and
# `vc-pilot cleanup`: afterwards the node has exactly the links, mounts, sshd processes and
# run-directory files it had before, and no namespace is in use that was not before.
source "$(dirname "$0")/lib.sh"
start_clean

build=${VCPILOT_BUILD_DIR:?}
pilot=$build/pilot/vc-pilot
driver=$build/tests/tools/pilot-driver/pilot-driver
cycles=${PILOT_CYCLES:-100}
kill_cycles=${PILOT_KILL_CYCLES:-20}
node_dir=/run/vcpilot/site1-node1

testbed up --sites 1 --nodes 1

# What a job could leave behind, counted on the node.
# Namespaces are compared as sets (assert_no_new_namespaces).
census() {
    echo "node links: $(testbed exec site1 node1 -- ip -o link | wc -l)"
    echo "node mounts: $(testbed exec site1 node1 -- cat /proc/self/mountinfo | wc -l)"
    # Live processes only: a killed pilot's children are zombies until init reaps them.
    echo "job sshd processes: $(ps -e -o stat=,args= | awk '$1 !~ /^Z/ && /sshd.*\/run\/vcpilot\//' | wc -l)"
    echo "holders: $(ps -e -L -o stat=,comm= | awk '$1 !~ /^Z/ && $2 == "vc-ns-holder"' | wc -l)"
    echo "run files: $(find "$node_dir" -mindepth 1 2>/dev/null | wc -l)"
}

start_pilot() {  # JOB -> sets PILOT_WRAPPER (the pid that reports the pilot's exit status)
    testbed exec site1 node1 -- "$pilot" serve --job "$1" --log-level warn >>/tmp/vc-pilot-cycles.log 2>&1 &
    PILOT_WRAPPER=$!
    # Ready when it answers: a socket file alone may be a killed predecessor's.
    local socket=$node_dir/$1/pilot.sock
    for _ in $(seq 400); do
        "$driver" status "$socket" >/dev/null 2>&1 && return 0
        sleep 0.01
    done
    fail "pilot of job $1 did not answer on $socket"
}

before=$(census)
namespaces_before=$(namespaces_in_use)
# Fails unless the census is as before and no namespace is in use that was not; sets `after`.
assert_as_before() {  # WHAT
    after=$(census)
    [[ $before == "$after" ]] || { diff <(echo "$before") <(echo "$after") >&2; fail "$1 left something behind"; }
    assert_no_new_namespaces "$namespaces_before" "$1"
}
: >/tmp/vc-pilot-cycles.log
for ((i = 1; i <= cycles; i++)); do
    job=$((7000 + i))
    start_pilot "$job"
    "$driver" up --cluster "c$job" --vni $((500 + i)) "$node_dir/$job/pilot.sock" >/dev/null ||
        fail "cycle $i: the cluster did not become READY"
    "$driver" shutdown "$node_dir/$job/pilot.sock" >/dev/null || fail "cycle $i: SHUTDOWN failed"
    wait "$PILOT_WRAPPER" || fail "cycle $i: the pilot exited with status $?"
done
assert_as_before "$cycles cycles"
pass "$cycles SETUP -> READY -> SHUTDOWN cycles leave nothing: $(echo $after | tr '\n' ' ')"

for ((i = 1; i <= kill_cycles; i++)); do
    job=$((8000 + i))
    start_pilot "$job"
    "$driver" up --cluster "k$job" --vni $((700 + i)) "$node_dir/$job/pilot.sock" >/dev/null ||
        fail "kill cycle $i: the cluster did not become READY"
    pid=$(sed -n 's/^pid=//p' "$node_dir/$job/state.json")
    kill -KILL "$pid"
    wait "$PILOT_WRAPPER" 2>/dev/null || true
    testbed exec site1 node1 -- "$pilot" cleanup --job "$job" >/dev/null || fail "kill cycle $i: cleanup failed"
done
assert_as_before "kill -9 + cleanup"
pass "$kill_cycles cycles of kill -9 and 'vc-pilot cleanup' leave nothing"

# A pilot started for a job whose earlier pilot was killed removes the leftovers itself.
job=9001
start_pilot "$job"
"$driver" up --cluster "r$job" --vni 900 "$node_dir/$job/pilot.sock" >/dev/null || fail "restart: not READY"
kill -KILL "$(sed -n 's/^pid=//p' "$node_dir/$job/state.json")"
wait "$PILOT_WRAPPER" 2>/dev/null || true
start_pilot "$job"
grep -q "removing what an earlier pilot left" /tmp/vc-pilot-cycles.log || fail "the restarted pilot did not clean up"
"$driver" up --cluster "r$job" --vni 900 "$node_dir/$job/pilot.sock" >/dev/null || fail "restart: the VNI or address is still taken"
"$driver" shutdown "$node_dir/$job/pilot.sock" >/dev/null
wait "$PILOT_WRAPPER" || fail "restart: the pilot exited with status $?"
assert_as_before "restart"
pass "a restarted pilot removes what its killed predecessor left, and the job can be rebuilt"

rm -f /tmp/vc-pilot-cycles.log
testbed down
assert_nothing_left
