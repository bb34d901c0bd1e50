#!/usr/bin/env bash
# --wan-rtt 40 makes a ping between sites take 40 ms (36..48 accepted), and nothing within a site.
source "$(dirname "$0")/lib.sh"
start_clean

testbed up --sites 2 --nodes 1 --wan-rtt 40
rtt=$(testbed exec site1 node1 -- ping -U -c 5 -i 0.2 -q 172.16.2.11 | awk -F/ '/^rtt/ {print $5}')
note "site1-node1 -> site2-node1: avg rtt $rtt ms"
awk -v r="$rtt" 'BEGIN { exit !(r >= 36 && r <= 48) }' || fail "cross-site RTT $rtt ms is not within 36..48"
local_rtt=$(testbed exec site1 node1 -- ping -U -c 3 -i 0.2 -q 172.16.1.2 | awk -F/ '/^rtt/ {print $5}')
awk -v r="$local_rtt" 'BEGIN { exit !(r < 5) }' || fail "RTT inside a site is $local_rtt ms: the delay leaks into the LAN"
pass "WAN RTT $rtt ms across sites, $local_rtt ms inside a site"
testbed down
assert_nothing_left
