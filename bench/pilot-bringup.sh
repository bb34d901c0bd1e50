#!/usr/bin/env bash
# Benchmark: SETUP -> READY latency of one vc-pilot, against unshare -n and a bare sshd start
#
# Each run starts a pilot on a testbed node and times, from the client's side, SETUP + GET_KEYS
# + SET_KEYS up to READY for a one-node cluster: namespaces, VXLAN link, overlay /etc, two
# ed25519 keys, the cluster files and a listening sshd. In the same run, two baselines:
# `unshare -n true` (creating a network namespace at all) and a bare sshd, with a
# pre-generated host key, started in a private network namespace until it listens.
# Prints medians and p95s, then one JSON line.
set -euo pipefail
source_dir=$(cd "$(dirname "$0")/.." && pwd)
build=${VCPILOT_BUILD_DIR:-$source_dir/build}
testbed=$source_dir/tests/testbed/vc-testbed
pilot=$build/pilot/vc-pilot
driver=$build/tests/tools/pilot-driver/pilot-driver
runs=${RUNS:-50}
node_dir=/run/vcpilot/site1-node1

us() { echo "${EPOCHREALTIME/./}"; }
stats() {  # values (ms, one per line) -> "median p95"
    sort -n | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        i = int(0.95 * NR + 0.999); if (i < 1) i = 1; if (i > NR) i = NR
        printf "%.2f %.2f\n", m, v[i] }'
}

work=$(mktemp -d)
cleanup() { "$testbed" down >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
"$testbed" down >/dev/null 2>&1 || true
"$testbed" up --sites 1 --nodes 1 2>/dev/null

bringup=() unshare_ms=() sshd_ms=()
for ((i = 1; i <= runs; i++)); do
    job=$((60000 + i))
    "$testbed" exec site1 node1 -- "$pilot" serve --job "$job" --log-level warn 2>>"$work/pilot.log" &
    wrapper=$!
    for _ in $(seq 500); do "$driver" status "$node_dir/$job/pilot.sock" >/dev/null 2>&1 && break; sleep 0.01; done
    bringup+=("$("$driver" up --timing --vni $((1000 + i)) "$node_dir/$job/pilot.sock" | awk '/^bringup_ms/ {print $2}')")
    "$driver" shutdown "$node_dir/$job/pilot.sock" >/dev/null
    wait "$wrapper"
done

ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
cat >"$work/sshd_config" <<CONF
ListenAddress 127.0.0.1
Port 22
HostKey $work/host_key
UsePAM no
PidFile none
CONF
for ((i = 1; i <= runs; i++)); do
    t=$(us); unshare -n true; unshare_ms+=("$(awk -v d=$(($(us) - t)) 'BEGIN { print d / 1000 }')")
    # sshd in a fresh network namespace of its own, timed from spawn until it listens.
    sshd_ms+=("$(unshare -n bash -c '
        ip link set lo up
        t=${EPOCHREALTIME/./}
        /usr/sbin/sshd -D -f "$1" & pid=$!
        for _ in $(seq 2000); do
            grep -q ":0016 00000000:0000 0A" /proc/net/tcp 2>/dev/null && break
            sleep 0.001
        done
        d=$((${EPOCHREALTIME/./} - t))
        kill "$pid"; wait "$pid" 2>/dev/null
        awk -v d="$d" "BEGIN { print d / 1000 }"' bash "$work/sshd_config")")
done

read -r b_med b_p95 < <(printf '%s\n' "${bringup[@]}" | stats)
read -r u_med u_p95 < <(printf '%s\n' "${unshare_ms[@]}" | stats)
read -r s_med s_p95 < <(printf '%s\n' "${sshd_ms[@]}" | stats)
printf '\n%-58s %9s %9s\n' "figure ($runs runs)" "median ms" "p95 ms"
printf '%-58s %9s %9s\n' "vc-pilot SETUP -> READY (target: median <= 50 ms)" "$b_med" "$b_p95" \
    "baseline: unshare -n true" "$u_med" "$u_p95" \
    "baseline: bare sshd start until listening" "$s_med" "$s_p95"
printf '{"bringup_ms_median":%s,"bringup_ms_p95":%s,"unshare_ms_median":%s,"sshd_ms_median":%s,"runs":%d}\n' \
    "$b_med" "$b_p95" "$u_med" "$s_med" "$runs"
