# Shared helpers for vc-bcast's ring tests: a sender and N receivers on loopback, in a network
# and mount namespace of their own (so nothing reaches the machine's network, and a tmpfs made
# for a test cannot outlive it).
set -euo pipefail

if [[ -z ${BCAST_IN_NAMESPACE:-} ]]; then
    exec unshare --net --mount --propagation private -- env BCAST_IN_NAMESPACE=1 bash "$0" "$@"
fi
ip link set lo up

readonly TEST_NAME=$(basename "$0" .sh)
readonly BCAST=${VCPILOT_BUILD_DIR:?}/vcctl/vc-bcast
WORK=$(mktemp -d /tmp/vc-bcast-test.XXXXXX)
PIDS=()

fail() { echo "FAIL [$TEST_NAME]: $*" >&2; exit 1; }
pass() { echo "ok [$TEST_NAME]: $*"; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    while read -r mount; do umount "$mount"; done < <(awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/self/mounts)
    [[ -n ${KEEP_WORK:-} ]] || rm -rf "$WORK"
}
trap cleanup EXIT

# ring N SIZE [sender options...]: a broadcast of SIZE random bytes to n1..nN.
# Per-node receiver options in RECEIVER_ARGS[i]; a small tmpfs under node i when i is in
# SMALL_DISK; nodes in LATE_NODES are left for the test to start (start_receiver). Leaves SENDER (pid), RPIDS[i] and the run in $RUN.
declare -A RECEIVER_ARGS=()
SMALL_DISK=""
ring() {
    local n=$1 size=$2 i nodes
    shift 2
    RUN=$(mktemp -d "$WORK/run.XXXX")
    head -c "$size" /dev/urandom >"$RUN/file"
    chmod "${FILE_MODE:-0644}" "$RUN/file"
    nodes=$(seq -s, -f "n%g" 1 "$n")
    "$BCAST" send --no-launch --nodes "$nodes" --listen 127.0.0.1 --advertise 127.0.0.1 \
        --secret-file "$RUN/secret" --port-file "$RUN/port" "$@" "$RUN/file" /unused \
        >"$RUN/send.out" 2>"$RUN/send.err" &
    SENDER=$!
    PIDS+=("$SENDER")
    for _ in $(seq 100); do [[ -s $RUN/port ]] && break; sleep 0.05; done
    [[ -s $RUN/port ]] || fail "the sender did not listen: $(cat "$RUN/send.err")"
    RPIDS=()
    for i in $(seq "$n"); do
        mkdir "$RUN/n$i"
        if [[ " $SMALL_DISK " == *" $i "* ]]; then mount -t tmpfs -o size=1m tmpfs "$RUN/n$i"; fi
        [[ " $LATE_NODES " == *" $i "* ]] || start_receiver "$i"
    done
}
LATE_NODES=""

start_receiver() {  # I: node i's receiver, with the transfer's secret
    local i=$1
    # shellcheck disable=SC2086
    "$BCAST" receive --sender "127.0.0.1:$(cat "$RUN/port")" --name "n$i" \
        --secret-file "$RUN/secret" --listen 127.0.0.1 ${RECEIVER_ARGS[$i]:-} \
        "$RUN/n$i/copy" 2>"$RUN/n$i.err" &
    RPIDS[i]=$!
    PIDS+=("${RPIDS[i]}")
}

# Waits for the sender and then every receiver (bounded); the sender's exit status in SENT.
finish() {
    local i
    SENT=0
    for _ in $(seq 1200); do kill -0 "$SENDER" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$SENDER" 2>/dev/null && fail "the sender still runs after 120 s: $(tail -3 "$RUN/send.err")"
    wait "$SENDER" || SENT=$?
    # Receivers exit once the sender is gone; a stopped one too, when it runs again.
    for i in "${!RPIDS[@]}"; do kill -CONT "${RPIDS[i]}" 2>/dev/null || true; done
    for i in "${!RPIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "${RPIDS[i]}" 2>/dev/null || break; sleep 0.1; done
        kill -0 "${RPIDS[i]}" 2>/dev/null && fail "n$i's receiver still runs 10 s after the sender ended"
        wait "${RPIDS[i]}" 2>/dev/null || true
    done
}

# Every node listed holds a byte-identical copy; every other node holds none.
check_copies() {  # N GOOD-NODES...
    local n=$1 i
    shift
    for i in $(seq "$n"); do
        if [[ " $* " == *" $i "* ]]; then
            cmp -s "$RUN/file" "$RUN/n$i/copy" || fail "n$i's copy differs from the file ($(tail -2 "$RUN/n$i.err"))"
        elif [[ -e $RUN/n$i/copy ]]; then
            fail "n$i failed but left a file"
        fi
    done
}

# Blocks until the sender's progress reaches PERCENT (bounded).
wait_progress() {  # PERCENT
    local p
    for _ in $(seq 600); do
        p=$(grep -o '([0-9]*%)' "$RUN/send.err" 2>/dev/null | tail -1 | tr -dc 0-9 || true)
        [[ -n $p ]] && ((p >= $1)) && return 0
        kill -0 "$SENDER" 2>/dev/null || fail "the sender ended before ${1}%: $(cat "$RUN/send.out")"
        sleep 0.05
    done
    fail "no progress to ${1}% within 30 s"
}

# Loopback at a rate that makes a transfer last seconds (so that faults land mid-transfer).
slow_loopback() {  # RATE
    tc qdisc replace dev lo root tbf rate "$1" burst 1mb latency 100ms
}
