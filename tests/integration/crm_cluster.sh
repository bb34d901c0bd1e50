#!/usr/bin/env bash
# One site's CRM (vc-crmd) and real pilots: the test user reserves a cluster with vcctl, the
# pilots are started on the nodes (as the plugin will), attach to the CRM with MUNGE, exchange
# keys through it, and the cluster becomes READY; from a virtual node, ssh to the other works
# with strict host-key checking, in both key modes; release stops the pilots, frees the block
# (the next cluster gets it again) and leaves nothing behind.
source "$(dirname "$0")/lib.sh"
start_clean

build=${VCPILOT_BUILD_DIR:?}
pilot=$build/pilot/vc-pilot
vcctl=$build/vcctl/vcctl
crm_tcp=172.16.1.2:7400
run_dir=${VCTB_RUN_DIR:-/run/vctb}
munge=$run_dir/site1/munge/munge.socket

testbed up --sites 1 --nodes 2
mounts_before=$(testbed exec site1 node1 -- cat /proc/self/mountinfo | wc -l)

# vcctl as the test user, from a node, over the CRM's TCP port (as a user on a login node).
user_ctl() { testbed exec --user vcuser site1 node1 -- "$vcctl" --crm "$crm_tcp" --munge-socket "$munge" "$@"; }
# vcctl as root on the controller's unix socket.
root_ctl() { "$vcctl" --crm "unix:$(testbed crm site1)" --munge-socket "$munge" "$@"; }
json_field() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, {"d": d}))' "$1"; }

first_block=
job=7000
for mode in ca exchange; do
    job=$((job + 1))
    id=$(user_ctl create --site site1:2 --keys "$mode") || fail "vcctl create ($mode) failed"
    [[ $id =~ ^vc-[0-9a-f]{8}$ ]] || fail "vcctl create printed '$id', not a cluster id"
    block=$(user_ctl --json show "$id" | json_field 'd["sites"][0]["block"]')
    if [[ -z $first_block ]]; then first_block=$block; fi
    assert_eq "$first_block" "$block" "block of the $mode cluster (the released one's is reused)"

    pids=()
    for n in 1 2; do
        testbed exec site1 "node$n" -- "$pilot" serve --job "$job" --cluster "$id" --crm "$crm_tcp" \
            --munge-socket "$munge" --crm-timeout 30 >"/tmp/vc-crm-test-$n.log" 2>&1 &
        pids+=($!)
    done
    user_ctl wait "$id" --timeout 60 >/dev/null ||
        { cat /tmp/vc-crm-test-*.log >&2; user_ctl show "$id" >&2 || true; fail "$mode cluster did not become READY"; }
    pass "$mode: both pilots attached, exchanged keys through the CRM, cluster READY"

    user_ctl show "$id" >/tmp/vc-crm-show.txt
    grep -q "vc-site1-1 .* READY" /tmp/vc-crm-show.txt || fail "vcctl show lacks vc-site1-1 READY: $(cat /tmp/vc-crm-show.txt)"
    assert_eq vc-site1-1 "$(user_ctl run "$id" -- hostname)" "hostname on the first node"
    assert_eq vcuser "$(user_ctl run "$id" -- id -un)" "user of vcctl run"
    links=$(user_ctl run "$id" -- ip -o link | awk -F': ' '{print $2}' | cut -d@ -f1 | sort | tr '\n' ' ')
    assert_eq "eth0 lo " "$links" "links inside the virtual node"
    ssh_opts=(-T -o BatchMode=yes -o StrictHostKeyChecking=yes)
    assert_eq vc-site1-2 "$(user_ctl run "$id" -- ssh "${ssh_opts[@]}" vc-site1-2 hostname)" "ssh vc-site1-2 hostname"
    address2=$(user_ctl --json show "$id" | json_field '[n["address"] for n in d["nodes"] if n["name"] == "vc-site1-2"][0]')
    assert_eq vc-site1-2 "$(user_ctl run "$id" -- ssh "${ssh_opts[@]}" "$address2" hostname)" "ssh $address2 hostname"
    assert_eq vc-site1-1 "$(user_ctl run "$id" -- ssh "${ssh_opts[@]}" vc-site1-2 ssh "${ssh_opts[@]}" vc-site1-1 hostname)" \
        "ssh back from the second node"
    # The known_hosts file ssh uses inside the job (the pilot's per-job one).
    known=$(user_ctl run "$id" -- sh -c 'cat "$(ssh -G vc-site1-2 | sed -n "s/^userknownhostsfile //p" | cut -d" " -f1)"')
    if [[ $mode == ca ]]; then
        [[ $(grep -c '^@cert-authority' <<<"$known") == 1 ]] || fail "ca mode: want one @cert-authority line, got: $known"
        [[ $(grep -vc '^@cert-authority' <<<"$known") == 0 ]] || fail "ca mode: node keys listed in known_hosts: $known"
    else
        grep -q '^@cert-authority' <<<"$known" && fail "exchange mode: a CA line in known_hosts"
        [[ $(grep -c 'ssh-ed25519' <<<"$known") == 2 ]] || fail "exchange mode: want both host keys, got: $known"
    fi
    pass "$mode: ssh between the virtual nodes by name and address, strict host-key checking"

    out=$(root_ctl exec "$id" -- hostname | sort | tr '\n' ' ')
    assert_eq "vc-site1-1: vc-site1-1 vc-site1-2: vc-site1-2 " "$out" "vcctl exec hostname"
    expect_status 1 user_ctl exec "$id" -- true
    [[ $ERR == *"root"* ]] || fail "exec by a user: unclear error: $ERR"
    pass "$mode: vcctl exec runs on every node (root), is refused to the user"

    user_ctl release "$id" --wait --timeout 30 >/dev/null || fail "$mode: release failed"
    for pid in "${pids[@]}"; do
        wait "$pid" || { cat /tmp/vc-crm-test-*.log >&2; fail "$mode: a pilot exited with status $? after release"; }
    done
    assert_eq RELEASED "$(user_ctl --json show "$id" | json_field 'd["state"]' | sed 's/CLUSTER_STATE_//')" "state after release"
    for n in 1 2; do
        [[ ! -e /run/vcpilot/site1-node$n/$job ]] ||
            fail "$mode: run directory of node$n left"
    done
    if ps -eo args | grep -q "[s]shd.*/run/vcpilot/.*/$job/"; then fail "$mode: a job sshd is still running"; fi
    pass "$mode: release stops both pilots and leaves no run directory or sshd"
done

mounts_after=$(testbed exec site1 node1 -- cat /proc/self/mountinfo | wc -l)
assert_eq "$mounts_before" "$mounts_after" "mount count in the node's mount namespace"

# The CRM refuses what it must, over the real daemons.
other=$(root_ctl create --site site1:1)
expect_status 1 user_ctl show "$other"
[[ $ERR == *"no cluster"* || $ERR == *"not found"* || $ERR == *"NOT_FOUND"* ]] || fail "another user's cluster: unclear error: $ERR"
expect_status 1 user_ctl release "$other"
assert_eq PENDING "$(root_ctl --json show "$other" | json_field 'd["state"]' | sed 's/CLUSTER_STATE_//')" "root's cluster after the user tried to release it"
expect_status 1 user_ctl create --site site1:0
[[ $ERR == *"nodes"* ]] || fail "0 nodes: unclear error: $ERR"
expect_status 1 user_ctl create --site site9:1
[[ $ERR == *"site9"* ]] || fail "unknown site: unclear error: $ERR"
expect_status 1 user_ctl create --site site1:70000
[[ $ERR == *"nodes"* || $ERR == *"pool"* ]] || fail "more nodes than the pool: unclear error: $ERR"
# A pilot for a cluster that does not exist is refused at once with the reason.
expect_status 1 testbed exec site1 node1 -- "$pilot" serve --job 7100 --cluster vc-00000000 --crm "$crm_tcp" \
    --munge-socket "$munge" --crm-timeout 10
[[ $ERR == *"vc-00000000"* ]] || fail "pilot for an unknown cluster: unclear error: $ERR"
[[ ! -e /run/vcpilot/site1-node1/7100 ]] || fail "the refused pilot left its run directory"
root_ctl release "$other" --wait >/dev/null
pass "another user's cluster, 0 nodes, unknown site, too many nodes, unknown cluster: clear errors, nothing changed"

rm -f /tmp/vc-crm-test-*.log /tmp/vc-crm-show.txt
testbed down
assert_nothing_left
