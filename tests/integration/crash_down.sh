#!/usr/bin/env bash
# After kill -9 of any daemon, status says what is dead, 'up' recovers, and 'down' still
# removes everything.
source "$(dirname "$0")/lib.sh"
start_clean

testbed up --sites 2 --nodes 2 --wan-rtt 2
run=${VCTB_RUN_DIR:-/run/vctb}
for daemon in site1-slurmctld site1-node2-slurmd site2-munged wan-delay; do
    kill -KILL "$(cat "$run/pids/$daemon.pid")"
done
sleep 0.2
expect_status 1 testbed status
for what in "slurmctld  *site1  *dead" "slurmd  *site1-node2  *dead" "munged  *site2  *dead" "wan-delay  *wan  *dead"; do
    grep -Eq "$what" <<<"$OUT" || fail "status does not report '$what': $OUT"
done
pass "status reports each killed daemon as dead and exits 1"

# 'up' on an unhealthy testbed takes it down and brings it up again.
expect_status 0 testbed up --sites 2 --nodes 2 --wan-rtt 2
expect_status 0 testbed status
pass "up recovers an unhealthy testbed"

# A second 'up' with the same settings is a no-op that says so.
expect_status 0 testbed up --sites 2 --nodes 2 --wan-rtt 2
[[ $ERR == *"already up"* ]] || fail "up on a healthy testbed should say 'already up', said: $ERR"

# Kill everything, the keeper included, then down.
kill -KILL "$(cat "$run/keeper.pid")" $(cat "$run"/pids/*.pid)
testbed down
assert_nothing_left
pass "down after kill -9 of every daemon and of the keeper leaves nothing"
