#!/usr/bin/env bash
# Two jobs with the SAME address range on the same two nodes: each reaches only its own nodes,
# and a capture inside each sees none of the other's packets.
source "$(dirname "$0")/lib.sh"
start_clean

build=${VCPILOT_BUILD_DIR:?}
pilot=$build/pilot/vc-pilot
driver=$build/tests/tools/pilot-driver/pilot-driver
sock() { echo "/run/vcpilot/site1-node$1/$2/pilot.sock"; }
holder() { awk '$1 == "holder" {print $2}' "/run/vcpilot/site1-node$1/$2/namespaces"; }

testbed up --sites 1 --nodes 2
wrappers=()
for job in 5001 5002; do
    for n in 1 2; do
        testbed exec site1 "node$n" -- "$pilot" serve --job "$job" --log-level warn >>/tmp/vc-pilot-isolation.log 2>&1 &
        wrappers+=($!)
    done
done
for job in 5001 5002; do
    for n in 1 2; do
        for _ in $(seq 400); do "$driver" status "$(sock "$n" "$job")" >/dev/null 2>&1 && break; sleep 0.01; done
    done
done
"$driver" up --cluster a --vni 100 --name-prefix a --cidr 10.77.0.0/24 "$(sock 1 5001)" "$(sock 2 5001)" >/dev/null ||
    fail "job a did not come up"
"$driver" up --cluster b --vni 101 --name-prefix b --cidr 10.77.0.0/24 "$(sock 1 5002)" "$(sock 2 5002)" >/dev/null ||
    fail "job b did not come up"

assert_eq a2 "$("$driver" run "$(sock 1 5001)" -- ssh -o BatchMode=yes a2 hostname)" "ssh a2 from a1"
assert_eq b2 "$("$driver" run "$(sock 1 5002)" -- ssh -o BatchMode=yes b2 hostname)" "ssh b2 from b1"
if "$driver" run "$(sock 1 5001)" -- ssh -o BatchMode=yes -o ConnectTimeout=3 b2 true >/dev/null 2>&1; then
    fail "job a can ssh to job b's node"
fi
pass "each job reaches its own nodes by ssh, and only those"

# Captures on eth0 of both jobs' second node while job PINGER pings 10.77.0.2 (an address both
# jobs have): only the pinger's own node may see the packets.
capture_while_pinging() {  # PINGER-JOB
    local job own other
    job=$1
    local captures=()
    rm -f /tmp/vc-cap-5001 /tmp/vc-cap-5002
    for own in 5001 5002; do
        timeout 6 nsenter --net="/proc/$(holder 2 "$own")/ns/net" \
            tcpdump -i eth0 -nn -l icmp >"/tmp/vc-cap-$own" 2>/dev/null &
        captures+=($!)
    done
    sleep 1.5  # tcpdump attaches
    "$driver" run "$(sock 1 "$job")" -- ping -c 5 -i 0.2 -W 1 10.77.0.2 >/dev/null ||
        fail "job $job cannot ping its own 10.77.0.2"
    wait "${captures[@]}" || true
    other=$((job == 5001 ? 5002 : 5001))
    local seen_own seen_other
    seen_own=$(grep -c 'ICMP echo request' "/tmp/vc-cap-$job" || true)
    seen_other=$(grep -c 'ICMP' "/tmp/vc-cap-$other" || true)
    note "job $job pings: its own node captured $seen_own requests, the other job's node $seen_other packets"
    ((seen_own >= 5)) || fail "job $job's own node saw only $seen_own of 5 echo requests"
    ((seen_other == 0)) || fail "job $other's capture saw $seen_other of job $job's packets"
}
capture_while_pinging 5001
capture_while_pinging 5002
pass "a capture inside each job sees none of the other job's packets"

"$driver" shutdown "$(sock 1 5001)" "$(sock 2 5001)" "$(sock 1 5002)" "$(sock 2 5002)" >/dev/null
for w in "${wrappers[@]}"; do wait "$w" || fail "a pilot exited with status $?"; done
rm -f /tmp/vc-cap-5001 /tmp/vc-cap-5002 /tmp/vc-pilot-isolation.log
testbed down
assert_nothing_left
