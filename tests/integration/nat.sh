#!/usr/bin/env bash
# Sites behind NAT (testbed up --nat): each site's gateway masquerades, so a site's hosts reach
# the GRC and n2n's supernode but not the other site's hosts. A VXLAN cluster across the sites
# is refused at once with the reason (its CRMs said they are behind NAT), and nothing is held;
# --overlay auto chooses n2n, whose cluster comes up: ssh and Open MPI across the sites.
# Release leaves nothing.
source "$(dirname "$0")/lib.sh"
start_clean


testbed up --sites 2 --nodes 2 --nat

if testbed exec site1 node1 -- ping -c 1 -W 1 172.16.2.11 >/dev/null 2>&1; then
    fail "site1-node1 reaches site2-node1 across the NAT"
fi
testbed exec site1 node1 -- ping -c 1 -W 2 172.31.0.2 >/dev/null || fail "site1-node1 does not reach the GRC through its NAT"
pass "--nat: a site's hosts reach the GRC, not the other site's hosts"

expect_status 1 user_grc create --site site1:2 --site site2:2 --overlay vxlan
[[ $ERR == *"overlay vxlan: sites site1 and site2 are behind NAT"*"use --overlay n2n"* ]] ||
    fail "vxlan across sites behind NAT: $ERR"
[[ $(wc -l <<<"$ERR") == 1 ]] || fail "the refusal is not one line: $ERR"
assert_eq "" "$(user_grc list | tail -n +2)" "clusters after the refusal"
pass "--overlay vxlan across sites behind NAT is refused: $ERR"

id=$(user_grc create --site site1:2 --site site2:2 --overlay auto) || fail "create --overlay auto failed"
user_grc wait "$id" --timeout 120 >/dev/null || fail "the auto cluster did not become READY: $(user_grc show "$id" 2>&1)"
assert_eq OVERLAY_N2N "$(user_grc --json show "$id" | json_field 'd["overlay"]')" "the overlay auto chose"
out=$(user_grc run "$id" -- bash -c 'ssh -T vc-site2-1 hostname; mpirun --hostfile $VC_HOSTFILE \
    --mca mpi_yield_when_idle 1 -np 4 hostname | sort | tr "\n" " "') ||
    fail "ssh or mpirun across the NATs failed: $out"
assert_eq "vc-site2-1
vc-site1-1 vc-site1-2 vc-site2-1 vc-site2-2 " "$out" "ssh and mpirun hostname across the NATs"
pass "--overlay auto chose n2n: READY, ssh and Open MPI across the NATs"

user_grc release "$id" --wait --timeout 60 >/dev/null || fail "release failed"
for _ in $(seq 100); do [[ -z $(find /run/vcpilot -mindepth 1 -maxdepth 2 2>/dev/null) ]] && break; sleep 0.1; done
[[ -z $(find /run/vcpilot -mindepth 1 -maxdepth 2 2>/dev/null) ]] || fail "left in /run/vcpilot: $(find /run/vcpilot -mindepth 1 -maxdepth 2)"
if ps -eo stat=,comm= | awk '$1 !~ /^Z/ && $2 == "edge"' | grep -q .; then fail "an edge is still running"; fi
pass "release leaves no edge and no run directory"

testbed down
assert_nothing_left
