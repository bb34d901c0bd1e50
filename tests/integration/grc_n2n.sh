#!/usr/bin/env bash
# The n2n overlay (issue 7): a cluster across two sites made with --overlay n2n, reserved
# through each site's Slurm. Every virtual node sees only lo and eth0 (edge's TAP device, moved
# into the job's namespace); ssh and Open MPI work across the sites; a don't-fragment ping of
# the full n2n MTU passes. A capture on the WAN router while a node sends a marked payload to
# the other site holds n2n's UDP but never the marker in clear. A second n2n cluster at the
# same time is another community: neither reaches the other's addresses. Release leaves no edge,
# no TAP device, nothing.
source "$(dirname "$0")/lib.sh"
start_clean

run_dir=${VCTB_RUN_DIR:-/run/vctb}

testbed up --sites 2 --nodes 2
edges() { ps -eo stat=,comm= | awk '$1 !~ /^Z/ && $2 == "edge"' | wc -l; }
node_links() {  # the links in the testbed nodes' own namespaces
    local k n
    for k in 1 2; do for n in 1 2; do ip -n "vctb-site$k-node$n" -o link | awk -F': ' '{print $2}'; done; done | sort | tr '\n' ' '
}
links_before=$(node_links)

a=$(user_grc create --site site1:2 --site site2:2 --overlay n2n) || fail "vcctl --grc create --overlay n2n failed"
user_grc wait "$a" --timeout 120 >/dev/null || fail "the n2n cluster did not become READY: $(user_grc show "$a" 2>&1)"
assert_eq OVERLAY_N2N "$(user_grc --json show "$a" | json_field 'd["overlay"]')" "the cluster's overlay"
assert_eq 4 "$(edges)" "edge processes (one per node)"
assert_eq 4 "$(ps -eo args= | grep -c '^/usr/local/lib/vcpilot/n2n/edge ' || true)" \
    "edges running the fixed build (scripts/build-n2n-edge.sh; Debian's swaps peers)"
out=$(user_grc run "$a" -- bash -c 'echo $(ls /sys/class/net); ip -o link | wc -l; cat /sys/class/net/eth0/mtu; ssh -T vc-site2-2 hostname')
assert_eq "eth0 lo
2
1400
vc-site2-2" "$out" "links, MTU and ssh across the sites in an n2n cluster"
pass "create --overlay n2n: READY; each virtual node has only lo and eth0 (MTU 1400); ssh reaches the other site"

mpicc -O2 -o "$run_dir/mpi_ring" "$(dirname "$0")/../../examples/mpi_ring.c" || fail "mpicc could not build mpi_ring.c"
# mpi_yield_when_idle: the virtual nodes share this machine's 2 cores.
out=$(user_grc run "$a" -- bash -c "mpirun --mca mpi_yield_when_idle 1 -np 4 $run_dir/mpi_ring") ||
    fail "mpirun over n2n failed: $out"
assert_eq "mpi_ring: 4 ranks on vc-site1-1 vc-site1-2 vc-site2-1 vc-site2-2: 10 laps, token 60, allreduce 6: ok" "$out" "mpi_ring over n2n"
out=$(user_grc run "$a" -- bash -c 'ping -M do -c 2 -W 2 -s 1372 vc-site2-1 >/dev/null && echo full-size-ok')
assert_eq full-size-ok "$out" "a don't-fragment ping of the full n2n MTU"
pass "Open MPI runs the mpicc-built ring on 4 ranks across the sites over n2n; a DF ping of 1400 bytes passes"

# What crosses the WAN is n2n's encrypted UDP: a marked payload sent across never shows in clear.
marker=7663706c74657374  # "vcpltest", as ping -p repeats it
capture=$run_dir/wan.pcap
testbed exec wan -- timeout 8 tcpdump -Z root -i site1 -U -w "$capture" udp >/dev/null 2>&1 &
dump=$!
sleep 1
user_grc run "$a" -- bash -c "ping -c 5 -i 0.2 -p $marker -s 200 vc-site2-1 >/dev/null" || fail "the marked ping failed"
wait "$dump" || true
packets=$(tcpdump -r "$capture" -nn 2>/dev/null | wc -l)
((packets > 0)) || fail "the WAN capture holds no UDP: n2n's traffic did not cross the WAN router"
if tcpdump -r "$capture" -nn -x 2>/dev/null | tr -d ' \t\n' | grep -q "$marker$marker"; then
    fail "the ping's payload crossed the WAN in clear"
fi
pass "a capture on the WAN router: $packets UDP packets of n2n, the payload never in clear"

# A second n2n cluster at the same time: another community, another key; neither reaches the other.
b=$(user_grc create --site site1:2 --site site2:2 --overlay n2n) || fail "the second n2n cluster was not created"
user_grc wait "$b" --timeout 120 >/dev/null || fail "the second n2n cluster did not become READY: $(user_grc show "$b" 2>&1)"
assert_clusters_apart "$a" "$b" vc-site2-1
pass "two n2n clusters at once are separate communities: neither reaches the other"

for id in "$a" "$b"; do user_grc release "$id" --wait --timeout 60 >/dev/null || fail "release of $id failed"; done
for _ in $(seq 100); do [[ $(edges) == 0 && -z $(find /run/vcpilot -mindepth 1 -maxdepth 2 2>/dev/null) ]] && break; sleep 0.1; done
assert_eq 0 "$(edges)" "edge processes after the release"
assert_eq "$links_before" "$(node_links)" "links in the nodes' namespaces after the release"
[[ -z $(find /run/vcpilot -mindepth 1 -maxdepth 2 2>/dev/null) ]] || fail "left in /run/vcpilot: $(find /run/vcpilot -mindepth 1 -maxdepth 2)"
pass "release stops every edge; no TAP device, run directory or job is left"

rm -f "$run_dir/mpi_ring" "$capture"
testbed down
assert_nothing_left
