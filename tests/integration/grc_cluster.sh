#!/usr/bin/env bash
# A cluster across two sites through the GRC (issue 5's acceptance): the test user creates it
# with vcctl --grc (mutual TLS); each site's CRM receives its share; pilots started on the four
# nodes attach to their own site's CRM (MUNGE); the GRC runs the barrier across sites and the
# cluster becomes READY; from every virtual node, ssh to every other (across sites too) works
# with strict host-key checking, in both key modes; release through the GRC stops the pilots
# at both sites and frees the blocks (the next cluster gets the same ones); nothing is left.
source "$(dirname "$0")/lib.sh"
start_clean

build=${VCPILOT_BUILD_DIR:?}
pilot=$build/pilot/vc-pilot
vcctl=$build/vcctl/vcctl
run_dir=${VCTB_RUN_DIR:-/run/vctb}
pki=$run_dir/pki

testbed up --sites 2 --nodes 2
grc=$(testbed grc 2>/dev/null)

# vcctl towards the GRC, from a node of site 1, with a user's certificate.
grc_as() {
    local user=$1; shift
    local as=()
    [[ $user == root ]] || as=(--user "$user")
    testbed exec "${as[@]}" site1 node1 -- "$vcctl" --grc "$grc" --tls-ca "$pki/ca.pem" \
        --tls-cert "$pki/user-$user.pem" --tls-key "$pki/user-$user.key" "$@"
}
user_grc() { grc_as vcuser "$@"; }
# vcctl as root towards site K's CRM.
site_crm() {
    local k=$1; shift
    "$vcctl" --crm "unix:$(testbed crm "site$k")" --munge-socket "$run_dir/site$k/munge/munge.socket" "$@"
}
json_field() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, {"d": d}))' "$1"; }

names=(vc-site1-1 vc-site1-2 vc-site2-1 vc-site2-2)
ssh_opts=(-T -o BatchMode=yes -o StrictHostKeyChecking=yes)
first_blocks=
job=7200
for mode in ca exchange; do
    job=$((job + 1))
    id=$(user_grc create --site site1:2 --site site2:2 --keys "$mode" --pilots jobs) || fail "$mode: vcctl --grc create failed"
    [[ $id =~ ^vc-[0-9a-f]{8}$ ]] || fail "vcctl --grc create printed '$id', not a cluster id"
    blocks=$(user_grc --json show "$id" | json_field '" ".join(s["block"] for s in d["sites"])')
    python3 - "$blocks" <<'EOF' || fail "$mode: the sites' blocks overlap: $blocks"
import ipaddress, sys
a, b = (ipaddress.ip_network(x) for x in sys.argv[1].split())
sys.exit(1 if a.overlaps(b) else 0)
EOF
    if [[ -z $first_blocks ]]; then first_blocks=$blocks; fi
    assert_eq "$first_blocks" "$blocks" "$mode: blocks (a released cluster's are reused)"

    for k in 1 2; do
        for _ in $(seq 100); do site_crm "$k" show "$id" >/dev/null 2>&1 && break; sleep 0.1; done
        site_crm "$k" show "$id" >/dev/null 2>&1 || fail "$mode: site$k's CRM never received its share of $id"
    done
    pass "$mode: created through the GRC, non-overlapping blocks $blocks, both CRMs hold their share"

    pids=()
    for k in 1 2; do
        for n in 1 2; do
            testbed exec "site$k" "node$n" -- "$pilot" serve --job "$job" --cluster "$id" \
                --crm "172.16.$k.2:7400" --munge-socket "$run_dir/site$k/munge/munge.socket" \
                --crm-timeout 30 >"/tmp/vc-grc-test-$k-$n.log" 2>&1 &
            pids+=($!)
        done
    done
    user_grc wait "$id" --timeout 60 >/dev/null ||
        { cat /tmp/vc-grc-test-*.log >&2; user_grc show "$id" >&2 || true; fail "$mode: the cluster did not become READY"; }
    ready=$(user_grc --json show "$id" | json_field 'sum(1 for n in d["nodes"] if n["state"] == "PILOT_STATE_READY")')
    assert_eq 4 "$ready" "$mode: READY nodes"
    pass "$mode: four pilots at two sites, barrier across sites through the GRC, cluster READY"

    # From every virtual node to every other: the first node reaches each directly, and each
    # of those reaches the rest.
    for from in "${names[@]}"; do
        for to in "${names[@]}"; do
            [[ $from != "$to" ]] || continue
            if [[ $from == vc-site1-1 ]]; then
                got=$(user_grc run "$id" -- ssh "${ssh_opts[@]}" "$to" hostname)
            else
                got=$(user_grc run "$id" -- ssh "${ssh_opts[@]}" "$from" ssh "${ssh_opts[@]}" "$to" hostname)
            fi
            assert_eq "$to" "$got" "$mode: ssh from $from to $to"
        done
    done
    pass "$mode: ssh from every virtual node to every other, across sites, strict host-key checking"

    out=$(grc_as root exec "$id" -- hostname | sort | tr '\n' ' ')
    assert_eq "vc-site1-1: vc-site1-1 vc-site1-2: vc-site1-2 vc-site2-1: vc-site2-1 vc-site2-2: vc-site2-2 " "$out" \
        "$mode: vcctl --grc exec hostname"
    expect_status 1 site_crm 1 release "$id"
    [[ $ERR == *GRC* ]] || fail "$mode: a site's release of a GRC cluster: unclear error: $ERR"
    pass "$mode: exec through the GRC reaches all four nodes; a site cannot release the GRC's cluster"

    user_grc release "$id" --wait --timeout 60 >/dev/null || fail "$mode: release failed"
    for pid in "${pids[@]}"; do
        wait "$pid" || { cat /tmp/vc-grc-test-*.log >&2; fail "$mode: a pilot exited with status $? after release"; }
    done
    for k in 1 2; do
        state=$(site_crm "$k" --json show "$id" | json_field 'd["state"]')
        assert_eq CLUSTER_STATE_RELEASED "$state" "$mode: cluster at site$k after release"
        for n in 1 2; do
            [[ ! -e /run/vcpilot/site$k-node$n/$job ]] || fail "$mode: run directory of site$k-node$n left"
        done
    done
    if ps -eo args | grep -q "[s]shd.*/run/vcpilot/.*/$job/"; then fail "$mode: a job sshd is still running"; fi
    pass "$mode: release through the GRC stops the pilots at both sites and leaves nothing"
done

# Certificates decide who is who.
expect_status 1 user_grc list --all
[[ $ERR == *root* ]] || fail "list --all by a user: unclear error: $ERR"
expect_status 2 testbed exec --user vcuser site1 node1 -- "$vcctl" --grc "$grc" --tls-ca "$pki/ca.pem" \
    --tls-cert "$pki/crm-site1.pem" --tls-key "$pki/crm-site1.key" list
pass "a user cannot list every cluster, nor read a CRM's key"

rm -f /tmp/vc-grc-test-*.log
testbed down
assert_nothing_left
