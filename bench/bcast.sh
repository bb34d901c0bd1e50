#!/usr/bin/env bash
# Benchmark: vc-bcast's ring vs one point-to-point copy and vs Slurm's sbcast, links at 100 Mbit/s
#
# One testbed site of 16 nodes; every host's link (the controller's and each node's eth0) is
# limited to RATE (100mbit, Dolly+'s published setting) with tc tbf, so that the network and
# not this machine's cores is the bottleneck. A file of SIZE_MB (128) MiB goes from the
# controller host:
#   - to one node with one plain TCP copy (python's socket.sendfile): the baseline;
#   - to N = 2, 4, 8 and 16 nodes with vc-bcast (receivers started directly in the node
#     namespaces, the sender on the controller; the time is vc-bcast's own, from the ring's
#     start to the last node's checked copy);
#   - to 8 nodes with `sbcast` inside a `salloc -N8` of the site's Slurm (the time of sbcast).
# Each is run RUNS (1) times; medians are used. ratio_nN = time(N) / one copy (target <= 1.15),
# speedup_vs_sbcast_n8 = sbcast(8) / vc-bcast(8) (target >= 2). Last line: one JSON object.
set -euo pipefail
source_dir=$(cd "$(dirname "$0")/.." && pwd)
testbed=$source_dir/tests/testbed/vc-testbed
build=${VCPILOT_BUILD_DIR:-$source_dir/build}
bcast=$build/vcctl/vc-bcast
runs=${RUNS:-1} size_mb=${SIZE_MB:-128} rate=${RATE:-100mbit}
for v in runs size_mb; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bcast.sh: ${v^^}=${!v} is not a count" >&2; exit 2; }
done
[[ $rate =~ ^[0-9]+[kmg]bit$ ]] || { echo "bcast.sh: RATE=$rate is not a tc rate such as 100mbit" >&2; exit 2; }
counts=(${COUNTS:-2 4 8 16})
nodes=16

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

work=$(mktemp -d /var/tmp/vc-bcast-bench.XXXXXX)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    "$testbed" down >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
"$testbed" down >/dev/null 2>&1 || true
"$testbed" up --sites 1 --nodes "$nodes" 2>/dev/null
chmod 0755 "$work"
head -c $((size_mb * 1024 * 1024)) /dev/urandom >"$work/file"
chmod 0644 "$work/file"
mkdir "$work/sbcast" && chown vcuser "$work/sbcast"
want=$(sha256sum <"$work/file" | cut -d' ' -f1)

hosts=(ctl)
for i in $(seq "$nodes"); do hosts+=("node$i"); done
for host in "${hosts[@]}"; do
    "$testbed" exec site1 "$host" -- tc qdisc replace dev eth0 root tbf rate "$rate" burst 128kb latency 100ms
done
echo "site1: controller + $nodes nodes, every eth0 limited to $rate; file $size_mb MiB"

# One plain TCP copy, controller -> node1.
copy_once() {
    local port=5599 start
    rm -f "$work/copy.bin"
    "$testbed" exec site1 node1 -- python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1)
c, _ = s.accept()
with open(sys.argv[2], "wb") as f:
    while True:
        b = c.recv(1 << 20)
        if not b: break
        f.write(b)
' "$port" "$work/copy.bin" &
    local receiver=$!
    pids+=("$receiver")
    sleep 0.5
    start=$(now)
    "$testbed" exec site1 ctl -- python3 -c '
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
with open(sys.argv[3], "rb") as f: c.sendfile(f)
c.close()
' 172.16.1.11 "$port" "$work/file"
    wait "$receiver"
    elapsed "$start"
    [[ $(sha256sum <"$work/copy.bin" | cut -d' ' -f1) == "$want" ]] || { echo "bcast.sh: the plain copy differs" >&2; exit 1; }
    rm -f "$work/copy.bin"
}

# vc-bcast from the controller to node1..nodeN; prints its time (the ring's, from its report).
ring() {  # N
    local n=$1 i node_list sender
    node_list=$(seq -s, -f "node%g" 1 "$n")
    rm -f "$work/port" "$work/secret"
    "$testbed" exec site1 ctl -- "$bcast" send --no-launch --nodes "$node_list" --listen 172.16.1.2 \
        --advertise 172.16.1.2 --secret-file "$work/secret" --port-file "$work/port" --quiet \
        "$work/file" /unused >"$work/send.out" 2>"$work/send.err" &
    sender=$!
    pids+=("$sender")
    for _ in $(seq 100); do [[ -s $work/port ]] && break; sleep 0.05; done
    for i in $(seq "$n"); do
        "$testbed" exec site1 "node$i" -- "$bcast" receive --sender "172.16.1.2:$(cat "$work/port")" \
            --name "node$i" --secret-file "$work/secret" "$work/node$i.bin" 2>"$work/node$i.err" &
        pids+=($!)
    done
    wait "$sender" || { echo "bcast.sh: vc-bcast to $n nodes failed: $(cat "$work/send.out" "$work/send.err")" >&2; exit 1; }
    wait
    for i in $(seq "$n"); do
        [[ $(sha256sum <"$work/node$i.bin" | cut -d' ' -f1) == "$want" ]] || { echo "bcast.sh: node$i's copy differs" >&2; exit 1; }
        rm -f "$work/node$i.bin"
    done
    sed -n 's/.* nodes in \([0-9.]*\) s .*/\1/p' "$work/send.out"
}

# sbcast to 8 nodes inside an allocation, as the test user; the nodes share this machine's
# file system, so they all write the same DEST (the same bytes).
sbcast_8() {
    local out
    out=$("$testbed" exec --user vcuser site1 ctl -- salloc -N8 -w "site1-node[1-8]" bash -c '
        s=$(date +%s.%N); sbcast -f "$1" "$2" || exit 1; e=$(date +%s.%N)
        awk -v a="$s" -v b="$e" "BEGIN { printf \"%.2f\", b - a }"' sbcast "$work/file" "$work/sbcast/copy.bin" 2>"$work/sbcast.err") ||
        { echo "bcast.sh: sbcast failed: $(cat "$work/sbcast.err")" >&2; exit 1; }
    [[ $(sha256sum <"$work/sbcast/copy.bin" | cut -d' ' -f1) == "$want" ]] || { echo "bcast.sh: sbcast's copy differs" >&2; exit 1; }
    rm -f "$work/sbcast/copy.bin"
    echo "$out"
}

declare -A times
for ((r = 1; r <= runs; r++)); do
    t=$(copy_once); times[copy]+="$t "; line="run $r/$runs: one copy $t s"
    for n in "${counts[@]}"; do t=$(ring "$n"); times[ring$n]+="$t "; line+=", vc-bcast N=$n $t s"; done
    t=$(sbcast_8); times[sbcast8]+="$t "; line+=", sbcast N=8 $t s"
    echo "$line"
done

declare -A med
for key in "${!times[@]}"; do med[$key]=$(tr ' ' '\n' <<<"${times[$key]}" | grep . | median); done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
printf '\n%-34s %10s %10s\n' "median of $runs run(s)" "seconds" "ratio"
printf '%-34s %10s %10s\n' "one TCP copy (1 node)" "${med[copy]}" "1.000"
for n in "${counts[@]}"; do
    printf '%-34s %10s %10s\n' "vc-bcast to $n nodes" "${med[ring$n]}" "$(ratio "${med[ring$n]}" "${med[copy]}")"
done
printf '%-34s %10s %10s\n' "sbcast to 8 nodes" "${med[sbcast8]}" "$(ratio "${med[sbcast8]}" "${med[copy]}")"
echo "(targets: every vc-bcast ratio <= 1.15; sbcast(8) / vc-bcast(8) >= 2)"
printf '{"ratio_n2":%s,"ratio_n4":%s,"ratio_n8":%s,"ratio_n16":%s,"speedup_vs_sbcast_n8":%s,"copy_s":%s,"sbcast_n8_s":%s}\n' \
    "$(ratio "${med[ring2]}" "${med[copy]}")" "$(ratio "${med[ring4]}" "${med[copy]}")" \
    "$(ratio "${med[ring8]}" "${med[copy]}")" "$(ratio "${med[ring16]}" "${med[copy]}")" \
    "$(ratio "${med[sbcast8]}" "${med[ring8]}")" "${med[copy]}" "${med[sbcast8]}"
