#!/usr/bin/env bash
# Two sites of two nodes: each is a working Slurm cluster with its own nodes, and 'down'
# leaves the root network namespace exactly as it was.
source "$(dirname "$0")/lib.sh"
start_clean
before=$(root_netns_snapshot)

testbed up --sites 2 --nodes 2
expect_status 0 testbed status
expect_status 0 testbed status --json
assert_eq 2 "$(jq '.sites | length' <<<"$OUT")" "sites in status --json"
assert_eq true "$(jq '.healthy' <<<"$OUT")" "healthy in status --json"
assert_eq "idle idle" "$(jq -r '[.sites[0].nodes[].state] | join(" ")' <<<"$OUT")" "site1 node states"

for site in site1 site2; do
    names=$(testbed exec --user vcuser "$site" ctl -- srun -N2 hostname | sort)
    assert_eq "$site-node1 $site-node2" "$(echo $names)" "srun -N2 hostname at $site"
done
pass "srun -N2 hostname prints two distinct node names in each site"

# The sites are separate Slurm clusters with separate MUNGE keys: a credential made at one
# site is refused at the other.
cred=$(testbed exec site1 ctl -- munge -n -S /run/vctb/site1/munge/munge.socket)
if testbed exec site2 ctl -- unmunge -S /run/vctb/site2/munge/munge.socket <<<"$cred" >/dev/null 2>&1; then
    fail "site2's munged accepted a credential made by site1's"
fi
pass "each site is its own MUNGE security domain"

# Sites reach each other across the WAN router.
testbed exec site1 node1 -- ping -c 1 -W 2 172.16.2.11 >/dev/null || fail "site1-node1 cannot reach site2-node1"
pass "sites reach each other over the WAN"

# A job as the test user: its output, and its exit status as ours.
job=$(mktemp)
printf '#!/bin/bash\nsrun -N2 hostname | sort\nid -un\nexit 3\n' >"$job"
expect_status 3 testbed submit --wait "$job" -N2
rm -f "$job"
assert_eq "site1-node1 site1-node2 vcuser" "$(echo "$OUT" | tail -n 3 | tr '\n' ' ' | sed 's/ $//')" "job output"
pass "submit --wait prints the job's output and exits with its status"

testbed down
after=$(root_netns_snapshot)
if [[ $before != "$after" ]]; then
    diff <(echo "$before") <(echo "$after") >&2 || true
    fail "the root network namespace changed"
fi
assert_nothing_left
expect_status 0 testbed down
[[ $ERR == *"already down"* ]] || fail "a second down should say 'already down', said: $ERR"
pass "down restores the root namespace byte for byte, leaves nothing, and is idempotent"
