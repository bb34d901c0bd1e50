#!/usr/bin/env bash
# Bad command lines get one clear line and change nothing.
source "$(dirname "$0")/lib.sh"
start_clean
before=$(root_netns_snapshot)

check_refused() {  # EXPECTED-TEXT ARGS...
    local text=$1; shift
    expect_status 2 testbed "$@"
    [[ $ERR == *"$text"* ]] || fail "'vc-testbed $*' should mention '$text', said: $ERR"
    [[ -z $(our_namespaces) && ! -e ${VCTB_RUN_DIR:-/run/vctb} ]] || fail "'vc-testbed $*' created something"
}
check_refused "--sites must be" up --sites 0
check_refused "--sites must be" up --sites two
check_refused "--nodes must be" up --nodes 1x
check_refused "--nodes must be" up --nodes 65
check_refused "--wan-rtt must be" up --wan-rtt -5
check_refused "--wan-rtt must be" up --wan-rtt 40ms
check_refused "--wan-rate must be" up --wan-rate fast
check_refused "unknown option '--site'" up --site 2
check_refused "unknown command 'upp'" upp
check_refused "needs a value" up --sites
check_refused "down takes no arguments" down now
pass "bad options of up and down are refused before anything is created"

expect_status 1 testbed exec site1 node1 -- true
[[ $ERR == *"not up"* ]] || fail "exec on a down testbed should say it is not up, said: $ERR"
expect_status 3 testbed status
pass "exec and status on a down testbed say so"

testbed up --sites 1 --nodes 1
check_exec_refused() {  # TEXT ARGS...
    local text=$1; shift
    expect_status 2 testbed "$@"
    [[ $ERR == *"$text"* ]] || fail "'vc-testbed $*' should mention '$text', said: $ERR"
}
check_exec_refused "unknown site 'site9'" exec site9 node1 -- true
check_exec_refused "unknown node 'node2'" exec site1 node2 -- true
check_exec_refused "expected '--'" exec site1 node1 true
check_exec_refused "no such user" exec --user nobody-here site1 node1 -- true
check_exec_refused "unknown site" submit --site mars /dev/null
expect_status 1 testbed submit /nonexistent/job.sh
[[ $ERR == *"cannot read the job script"* ]] || fail "submit of a missing script: $ERR"
expect_status 0 testbed status
pass "bad exec and submit arguments are refused and the testbed stays healthy"

testbed down
[[ $before == "$(root_netns_snapshot)" ]] || fail "the root network namespace changed"
assert_nothing_left
