#!/usr/bin/env bash
# Two pilots on two nodes of one site, wired by pilot-driver (standing in for the CRM): the job
# sees only lo and eth0, its own hostnames and /etc/hosts, reaches the other virtual node by
# ping and ssh, cannot reach the underlay, cannot escape its namespaces; SHUTDOWN leaves nothing.
source "$(dirname "$0")/lib.sh"
start_clean

build=${VCPILOT_BUILD_DIR:?}
pilot=$build/pilot/vc-pilot
driver=$build/tests/tools/pilot-driver/pilot-driver
job=4242
sock() { echo "/run/vcpilot/site1-node$1/$job/pilot.sock"; }

testbed up --sites 1 --nodes 2
hosts_before=$(sha256sum /etc/hosts)
mounts_before=$(testbed exec site1 node1 -- cat /proc/self/mountinfo | wc -l)

pids=()
for n in 1 2; do
    testbed exec site1 "node$n" -- "$pilot" serve --job "$job" >"/tmp/vc-pilot-test-$n.log" 2>&1 &
    pids+=($!)
done
for n in 1 2; do
    for _ in $(seq 200); do [[ -S $(sock "$n") ]] && break; sleep 0.05; done
    [[ -S $(sock "$n") ]] || { cat "/tmp/vc-pilot-test-$n.log" >&2; fail "pilot on node$n did not open its socket"; }
done

"$driver" up --cluster c1 --cidr 10.77.0.0/24 --vni 100 --user vcuser "$(sock 1)" "$(sock 2)" ||
    { cat /tmp/vc-pilot-test-*.log >&2; fail "the cluster did not come up"; }
run1() { "$driver" run "$(sock 1)" -- "$@"; }

links=$(run1 ip -o link | awk -F': ' '{print $2}' | cut -d@ -f1 | sort | tr '\n' ' ')
assert_eq "eth0 lo " "$links" "links inside the job"
pass "only lo and eth0 are visible inside"

assert_eq vn1 "$(run1 hostname)" "hostname inside"
assert_eq vcuser "$(run1 id -un)" "user of RUN"
run1 grep -q 'vn2' /etc/hosts || fail "/etc/hosts inside does not list vn2"
assert_eq "$hosts_before" "$(sha256sum /etc/hosts)" "the host's /etc/hosts"
pass "virtual hostname, cluster /etc/hosts inside, host's unchanged"

run1 ping -c 2 -W 2 10.77.0.2 >/dev/null || fail "vn1 cannot ping vn2"
run1 ping -M do -s $(($(run1 cat /sys/class/net/eth0/mtu) - 28)) -c 1 -W 2 10.77.0.2 >/dev/null ||
    fail "a full-MTU don't-fragment ping fails"
assert_eq vn2 "$(run1 ssh -o BatchMode=yes vn2 hostname)" "ssh vn2 hostname"
pass "ping (full MTU, DF) and ssh with strict host key checking between virtual nodes"

for target in 172.16.1.11 172.16.1.12 172.16.1.2; do
    if run1 ping -c 1 -W 1 "$target" >/dev/null 2>&1; then
        fail "the underlay address $target is reachable from inside the job"
    fi
done
pass "the underlay is unreachable from inside"

for escape in "unshare -Urn true" "unshare -Urm true" "nsenter -t 1 -n true" "mount -t tmpfs none /mnt" \
    "unshare -Ur mount -t tmpfs none /mnt"; do
    if run1 $escape >/dev/null 2>&1; then
        fail "'$escape' succeeded inside the job"
    fi
done
pass "namespace and mount escapes fail inside the job"

"$driver" shutdown "$(sock 1)" "$(sock 2)" >/dev/null
for pid in "${pids[@]}"; do
    wait "$pid" || fail "a pilot exited with status $? after SHUTDOWN"
done
[[ ! -e /run/vcpilot/site1-node1/$job && ! -e /run/vcpilot/site1-node2/$job ]] || fail "run directories left"
mounts_after=$(testbed exec site1 node1 -- cat /proc/self/mountinfo | wc -l)
assert_eq "$mounts_before" "$mounts_after" "mount count in the node's mount namespace"
if ps -eo comm,args | grep -q "[s]shd.*/run/vcpilot"; then fail "a job sshd is still running"; fi
pass "SHUTDOWN removes run directories, mounts and sshd"
rm -f /tmp/vc-pilot-test-*.log
testbed down
assert_nothing_left
