#!/usr/bin/env bash
# The pilot's life outside the happy path: a bad SETUP changes nothing, RUN returns the
# command's exit status, SIGTERM and the launcher's death both tear the job down, and only
# root may drive a pilot.
source "$(dirname "$0")/lib.sh"
start_clean

build=${VCPILOT_BUILD_DIR:?}
pilot=$build/pilot/vc-pilot
driver=$build/tests/tools/pilot-driver/pilot-driver
node_dir=/run/vcpilot/site1-node1
sock() { echo "$node_dir/$1/pilot.sock"; }
pilot_pid() { sed -n 's/^pid=//p' "$node_dir/$1/state.json"; }

start_pilot() {  # JOB [ARGS...] -> WRAPPER
    local job=$1; shift
    testbed exec site1 node1 -- "$pilot" serve --job "$job" --log-level warn "$@" >>/tmp/vc-pilot-lifecycle.log 2>&1 &
    WRAPPER=$!
    for _ in $(seq 400); do "$driver" status "$(sock "$job")" >/dev/null 2>&1 && return 0; sleep 0.01; done
    fail "pilot of job $job did not answer"
}
await_gone() {  # JOB WRAPPER WHAT
    wait "$2" || fail "$3: the pilot exited with status $?"
    [[ ! -e $node_dir/$1 ]] || fail "$3: the run directory is still there"
    [[ -z $(ps -e -L -o stat=,comm= | awk '$1 !~ /^Z/ && $2 == "vc-ns-holder"') ]] || fail "$3: a namespace holder is left"
}

testbed up --sites 1 --nodes 1
: >/tmp/vc-pilot-lifecycle.log

start_pilot 6001
expect_status 1 "$driver" up --user no-such-user "$(sock 6001)"
[[ $ERR == *"user: no user 'no-such-user'"* ]] || fail "a SETUP for an unknown user: $ERR"
expect_status 0 "$driver" status "$(sock 6001)"
[[ $OUT == *" NEW" ]] || fail "a refused SETUP changed the state: $OUT"
[[ $(ls "$node_dir/6001") == $'pilot.sock\nstate.json' ]] || fail "a refused SETUP left files: $(ls "$node_dir/6001")"
pass "a SETUP naming an unknown user is refused with the field named, and nothing changes"

"$driver" watch "$(sock 6001)" >/tmp/vc-pilot-watch.txt 2>&1 &
watcher=$!
sleep 0.2
"$driver" up "$(sock 6001)" >/dev/null || fail "the good SETUP after a bad one failed"
expect_status 7 "$driver" run "$(sock 6001)" -- sh -c 'echo out; echo err >&2; exit 7'
assert_eq out "$OUT" "RUN stdout"
assert_eq err "$ERR" "RUN stderr"
expect_status 1 "$driver" up "$(sock 6001)"
[[ $ERR == *"not possible in state READY"* ]] || fail "a second SETUP: $ERR"
pass "RUN streams stdout and stderr and returns the exit status; SETUP twice is refused"

expect_status 255 "$driver" run --stdin-bytes $((5 * 1024 * 1024)) "$(sock 6001)" -- true
[[ $ERR == *"Received message larger than max"* ]] || fail "an oversize RUN: $ERR"
expect_status 0 "$driver" run "$(sock 6001)" -- true
pass "an oversize message is refused and the pilot goes on serving"

if runuser -u vcuser -- "$driver" status "$(sock 6001)" >/dev/null 2>&1; then
    fail "a non-root user could talk to the pilot"
fi
pass "only root can reach the control socket"

kill -TERM "$(pilot_pid 6001)"
await_gone 6001 "$WRAPPER" "SIGTERM"
wait "$watcher" || true
assert_eq "NEW CONFIGURED KEYED READY STOPPING GONE" "$(awk '{print $1}' /tmp/vc-pilot-watch.txt | tr '\n' ' ' | sed 's/ $//')" \
    "states seen by a watcher"
rm -f /tmp/vc-pilot-watch.txt
pass "SIGTERM tears the job down and the pilot exits 0; a watcher saw every state change"

sleep 60 &
launcher=$!
start_pilot 6002 --launcher-pid "$launcher"
"$driver" up "$(sock 6002)" >/dev/null || fail "launcher test: not READY"
kill "$launcher"; wait "$launcher" 2>/dev/null || true
await_gone 6002 "$WRAPPER" "launcher death"
grep -q "the launcher (pid $launcher) ended" /tmp/vc-pilot-lifecycle.log || fail "the pilot did not say why it stopped"
pass "the launcher's death tears the job down"

rm -f /tmp/vc-pilot-lifecycle.log
testbed down
assert_nothing_left
