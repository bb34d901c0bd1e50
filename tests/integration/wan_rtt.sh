#!/usr/bin/env bash
# --wan-rtt 40 makes a ping between sites take 40 ms (36..48 accepted) and adds nothing inside a
# site; --wan-rate caps the throughput between sites.
source "$(dirname "$0")/lib.sh"
start_clean

testbed up --sites 2 --nodes 1 --wan-rtt 40 --wan-rate 50mbit
rtt=$(testbed exec site1 node1 -- ping -U -c 5 -i 0.2 -q 172.16.2.11 | awk -F/ '/^rtt/ {print $5}')
note "site1-node1 -> site2-node1: avg rtt $rtt ms"
awk -v r="$rtt" 'BEGIN { exit !(r >= 36 && r <= 48) }' || fail "cross-site RTT $rtt ms is not within 36..48"
local_rtt=$(testbed exec site1 node1 -- ping -U -c 3 -i 0.2 -q 172.16.1.2 | awk -F/ '/^rtt/ {print $5}')
awk -v r="$local_rtt" 'BEGIN { exit !(r < 5) }' || fail "RTT inside a site is $local_rtt ms: the delay leaks into the LAN"
pass "WAN RTT $rtt ms across sites, $local_rtt ms inside a site"

# The rate limit holds: a TCP stream across the WAN gets at most 50 Mbit/s (10 % slack for
# tbf's burst). Only an upper bound: a slow machine must not fail this test.
testbed exec site2 node1 -- timeout 30 iperf3 -s -1 >/dev/null 2>&1 &
server=$!
mbps=""
for _ in $(seq 50); do
    mbps=$(testbed exec site1 node1 -- iperf3 -c 172.16.2.11 -t 3 -J 2>/dev/null |
        jq '(.end.sum_received.bits_per_second / 1e5 | round) / 10' 2>/dev/null) && break
    sleep 0.1  # the server may not be listening yet
done
wait "$server" || true
[[ -n $mbps ]] || fail "iperf3 across the WAN did not run"
note "TCP across the WAN: $mbps Mbit/s"
awk -v m="$mbps" 'BEGIN { exit !(m > 0 && m <= 55) }' || fail "throughput $mbps Mbit/s exceeds --wan-rate 50mbit"
pass "--wan-rate 50mbit caps cross-site TCP at $mbps Mbit/s"

# 'wan --rtt' changes the delay of the running testbed, both ways; a bad value changes nothing.
cross_rtt() { testbed exec site1 node1 -- ping -U -c 4 -i 0.2 -q 172.16.2.11 | awk -F/ '/^rtt/ {print $5}'; }
testbed wan --rtt 120 2>/dev/null
rtt=$(cross_rtt)
awk -v r="$rtt" 'BEGIN { exit !(r >= 116 && r <= 130) }' || fail "after wan --rtt 120 the cross-site RTT is $rtt ms"
testbed wan --rtt 0 2>/dev/null
rtt0=$(cross_rtt)
awk -v r="$rtt0" 'BEGIN { exit !(r < 5) }' || fail "after wan --rtt 0 the cross-site RTT is $rtt0 ms"
expect_status 2 testbed wan --rtt fast
[[ $ERR == *"milliseconds between 0 and 20000"* ]] || fail "wan --rtt fast: $ERR"
testbed status >/dev/null || fail "the testbed is not healthy after wan --rtt"
pass "wan --rtt 120 then 0 on the running testbed: $rtt ms, then $rtt0 ms; a bad value is refused"
testbed down
assert_nothing_left
