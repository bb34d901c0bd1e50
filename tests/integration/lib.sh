# Shared helpers for the testbed integration tests. Each test is a bash script that sources
# this file, runs against a real testbed, and fails with a message naming what a user would
# have seen go wrong.
set -euo pipefail

readonly TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly TESTBED=$(cd "$TESTS_DIR/../testbed" && pwd)/vc-testbed
readonly TEST_NAME=$(basename "$0" .sh)

fail() { echo "FAIL [$TEST_NAME]: $*" >&2; exit 1; }
pass() { echo "ok [$TEST_NAME]: $*"; }
note() { echo "   [$TEST_NAME] $*"; }

testbed() { "$TESTBED" "$@"; }

assert_eq() {  # EXPECTED ACTUAL WHAT
    [[ $1 == "$2" ]] || fail "$3: expected '$1', got '$2'"
}

# Runs CMD, expecting exit status WANT; stores stderr in $ERR and stdout in $OUT.
expect_status() {  # WANT CMD...
    local want=$1 rc=0 errf; shift
    errf=$(mktemp)
    OUT=$("$@" 2>"$errf") || rc=$?
    ERR=$(cat "$errf")
    rm -f "$errf"
    [[ $rc == "$want" ]] || fail "'$*' exited $rc, expected $want; stderr: $ERR"
}

# The root network namespace as the tests compare it before and after the testbed.
root_netns_snapshot() {
    ip -o link show
    ip -o addr show
    ip route show table all
    ip -6 route show table all
    ip rule show
    ip -6 rule show
}

our_namespaces() { ip netns list | awk '{print $1}' | grep '^vctb-' || true; }

# Live (non-zombie) processes running one of the testbed's daemons. A munged is the testbed's
# only if it serves a socket under the testbed's run directory: unit tests and benchmarks run
# private ones elsewhere at the same time.
live_daemons() {
    ps -e -o pid=,stat=,comm=,args= | awk -v run="${VCTB_RUN_DIR:-/run/vctb}/" '$2 !~ /^Z/ && $3 ~ /^(slurmctld|slurmd|slurmstepd|munged|vc-crmd|vc-grcd|wan-delay|lab-keeper|supernode|edge)$/ && ($3 != "munged" || index($0, run) > 0) {print $3 "(" $1 ")"}'
}

# vcctl towards the testbed's GRC as the test user, from site1's first node (the root
# namespace has no route to the lab), with vcuser's certificate from the testbed's PKI.
user_grc() {
    local pki=${VCTB_RUN_DIR:-/run/vctb}/pki
    [[ -n ${GRC_TARGET:-} ]] || GRC_TARGET=$(testbed grc 2>/dev/null)
    testbed exec --user vcuser site1 node1 -- "${VCPILOT_BUILD_DIR:?}/vcctl/vcctl" \
        --grc "$GRC_TARGET" --tls-ca "$pki/ca.pem" --tls-cert "$pki/user-vcuser.pem" \
        --tls-key "$pki/user-vcuser.key" "$@"
}

# The same as root (who alone may `exec` on a cluster's nodes).
root_grc() {
    local pki=${VCTB_RUN_DIR:-/run/vctb}/pki
    [[ -n ${GRC_TARGET:-} ]] || GRC_TARGET=$(testbed grc 2>/dev/null)
    testbed exec site1 node1 -- "${VCPILOT_BUILD_DIR:?}/vcctl/vcctl" \
        --grc "$GRC_TARGET" --tls-ca "$pki/ca.pem" --tls-cert "$pki/user-root.pem" \
        --tls-key "$pki/user-root.key" "$@"
}

# A value of the JSON document on stdin: EXPR is Python over `d`, e.g. 'd["state"]'.
json_field() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, {"d": d}))' "$1"; }

# The address of virtual node NODE of the test user's cluster ID, as `vcctl --grc show` gives it.
grc_node_address() {  # ID NODE
    user_grc --json show "$1" | json_field "[n['address'] for n in d['nodes'] if n['name'] == '$2'][0]"
}

# Two clusters up at once, each with a node NODE: neither reaches the other's NODE, and B
# reaches its own (so a failed ping means separation, not a broken cluster).
assert_clusters_apart() {  # A B NODE
    local a_addr b_addr
    a_addr=$(grc_node_address "$1" "$3")
    b_addr=$(grc_node_address "$2" "$3")
    if user_grc run "$1" -- ping -c 2 -W 1 "$b_addr" >/dev/null 2>&1; then fail "cluster $1 reaches $b_addr of cluster $2"; fi
    if user_grc run "$2" -- ping -c 2 -W 1 "$a_addr" >/dev/null 2>&1; then fail "cluster $2 reaches $a_addr of cluster $1"; fi
    user_grc run "$2" -- ping -c 1 -W 2 "$b_addr" >/dev/null || fail "cluster $2 does not reach its own $b_addr"
}

# The network, mount and UTS namespaces some process on the machine is in, one per line
# (readlink fails for processes gone meanwhile).
namespaces_in_use() { { readlink /proc/[0-9]*/ns/{net,mnt,uts} 2>/dev/null || true; } | sort -u; }

# Fails if a namespace is in use now that was not in BEFORE (namespaces_in_use's output): a job
# left it. Namespaces that went away meanwhile (an earlier test's last process exiting) are no
# concern here.
assert_no_new_namespaces() {  # BEFORE WHAT
    local new file pids=
    new=$(comm -13 <(echo "$1") <(namespaces_in_use))
    [[ -z $new ]] && return 0
    for file in /proc/[0-9]*/ns/{net,mnt,uts}; do
        grep -qxF -- "$(readlink "$file" 2>/dev/null)" <<<"$new" && pids+=" $(cut -d/ -f3 <<<"$file")"
    done
    fail "$2 left namespaces: $(echo $new) (in use by pids:$(tr ' ' '\n' <<<"$pids" | sort -un | head -20 | tr '\n' ' '))"
}

# Every test starts and ends without a testbed; a failing test still takes it down.
start_clean() {
    testbed down >/dev/null 2>&1 || true
    trap 'testbed down >/dev/null 2>&1 || true' EXIT
}

assert_nothing_left() {
    [[ -z $(our_namespaces) ]] || fail "namespaces left after down: $(our_namespaces | tr '\n' ' ')"
    [[ -z $(live_daemons) ]] || fail "processes left after down: $(live_daemons | tr '\n' ' ')"
    [[ ! -e ${VCTB_RUN_DIR:-/run/vctb} ]] || fail "run directory left after down"
    if grep -q " ${VCTB_RUN_DIR:-/run/vctb}/" /proc/self/mounts; then
        fail "mounts left after down"
    fi
}
