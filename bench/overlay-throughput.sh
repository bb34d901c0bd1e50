#!/usr/bin/env bash
# Benchmark: TCP throughput between two virtual nodes on different sites, against the underlay
#
# A testbed of 2 sites x 1 node; a virtual cluster across them reserved through each site's
# Slurm (vcctl --grc create). At WAN RTT 0, 40 and 120 ms (changed on the running testbed),
# iperf3 runs for SECONDS (8, the first 2 omitted: slow start) between the two nodes' own
# network namespaces (the underlay) and between the two virtual nodes over each overlay built,
# alternately, RUNS (2) times each; medians. Socket buffers are raised to 64 MiB in every
# namespace involved (the default 4 MiB caps a stream at 120 ms). NetPIPE (NPopenmpi) between
# the two virtual nodes gives the MPI view at 0 ms. Writes a plot of bandwidth against RTT,
# one line per path, to bench/results/overlay-throughput.png, then one JSON line:
# {"vxlan_ratio_rtt0":..., ..., "n2n_ratio_rtt0":..., ..., "underlay_mbps_rtt0":...}.
set -euo pipefail
source_dir=$(cd "$(dirname "$0")/.." && pwd)
testbed=$source_dir/tests/testbed/vc-testbed
build=${VCPILOT_BUILD_DIR:-$source_dir/build}
runs=${RUNS:-2} seconds=${SECONDS_PER_RUN:-8}
for v in runs seconds; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "overlay-throughput.sh: ${v^^} is not a count" >&2; exit 2; }
done
((seconds > 2)) || { echo "overlay-throughput.sh: SECONDS_PER_RUN must be at least 3" >&2; exit 2; }
results=$source_dir/bench/results
rtts=(0 40 120)

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

"$testbed" down >/dev/null 2>&1 || true
trap '"$testbed" down >/dev/null 2>&1 || true' EXIT
"$testbed" up --sites 2 --nodes 1 2>/dev/null
# vcctl --grc as the test user (the tests' helper).
export VCPILOT_BUILD_DIR=$build
source "$source_dir/tests/integration/lib.sh"
grc() { user_grc "$@"; }

# A namespace to run in, as nsenter arguments: a testbed node's own, or its virtual node's.
node_ns() { echo "--net=/run/netns/vctb-site$1-node1"; }
virtual_ns() {  # K OVERLAY: the network namespace of that cluster's virtual node on siteK-node1
    local file holder
    file=/run/vcpilot/site$1-node1/${job[$2,$1]}/namespaces
    holder=$(awk '$1 == "holder" {print $2}' "$file" 2>/dev/null)
    [[ -n $holder ]] || { echo "overlay-throughput.sh: no virtual node of the $2 cluster on site$1-node1" >&2; exit 1; }
    echo "--net=/proc/$holder/ns/net"
}
raise_buffers() {  # NSENTER-ARGS
    nsenter "$1" sysctl -q -w net.ipv4.tcp_rmem="4096 131072 67108864" \
        net.ipv4.tcp_wmem="4096 16384 67108864"
}
iperf() {  # SERVER-NS CLIENT-NS ADDRESS: Mbit/s received
    local server mbps=
    nsenter "$1" timeout $((seconds + 20)) iperf3 -s -1 >/dev/null 2>&1 &
    server=$!
    for _ in $(seq 50); do
        mbps=$(nsenter "$2" iperf3 -c "$3" -t "$seconds" -O 2 -J 2>/dev/null |
            jq '.end.sum_received.bits_per_second / 1e6 | round' 2>/dev/null) && [[ $mbps != null ]] && break
        mbps=
        sleep 0.1  # the server may not be listening yet
    done
    wait "$server" 2>/dev/null || true
    [[ -n $mbps ]] || { echo "overlay-throughput.sh: iperf3 to $3 did not run" >&2; exit 1; }
    echo "$mbps"
}

overlays=(vxlan n2n)
declare -A cluster addr job
for overlay in "${overlays[@]}"; do
    id=$(grc create --site site1:1 --site site2:1 --walltime 60 --overlay "$overlay")
    grc wait "$id" --timeout 120 >/dev/null || { echo "overlay-throughput.sh: cluster $id did not become READY" >&2; exit 1; }
    cluster[$overlay]=$id
    addr[$overlay]=$(grc --json show "$id" | jq -r '.nodes[] | select(.site == "site2") | .address')
    for k in 1 2; do  # the Slurm job holding the cluster's node at siteK
        job[$overlay,$k]=$(grc --json show "$id" | jq -r ".sites[] | select(.site == \"site$k\") | .pilot_job")
    done
done
for k in 1 2; do
    raise_buffers "$(node_ns $k)"
    for overlay in "${overlays[@]}"; do raise_buffers "$(virtual_ns $k "$overlay")"; done
done
for overlay in "${overlays[@]}"; do
    echo "$overlay: cluster ${cluster[$overlay]}, site2's virtual node at ${addr[$overlay]}"
done
echo "${seconds} s per iperf3 run, $runs runs per path and RTT"

declare -A mbps netpipe
for rtt in "${rtts[@]}"; do
    "$testbed" wan --rtt "$rtt" 2>/dev/null
    for ((r = 1; r <= runs; r++)); do
        m=$(iperf "$(node_ns 2)" "$(node_ns 1)" 172.16.2.11)
        mbps[underlay,$rtt]+="$m "
        line="rtt $rtt ms run $r/$runs: underlay $m Mbit/s"
        for overlay in "${overlays[@]}"; do
            m=$(iperf "$(virtual_ns 2 "$overlay")" "$(virtual_ns 1 "$overlay")" "${addr[$overlay]}")
            mbps[$overlay,$rtt]+="$m "
            line+=", $overlay $m Mbit/s"
        done
        echo "$line"
    done
    # NetPIPE's ping-pong of each size takes many round trips: at 40 and 120 ms it runs for
    # minutes, so MPI is measured at 0 ms only, where it shows what each overlay costs MPI.
    [[ $rtt == 0 ]] || continue
    for overlay in "${overlays[@]}"; do
        netpipe[$overlay,$rtt]=$(grc run "${cluster[$overlay]}" -- bash -c 'cd /tmp && mpirun --hostfile "$VC_HOSTFILE" \
            --mca plm rsh --mca ras ^slurm --mca btl tcp,self --mca btl_tcp_if_include eth0 \
            --mca oob_tcp_if_include eth0 --mca mpi_yield_when_idle 1 -np 2 timeout 120 NPopenmpi \
            -l 65536 -u 4194304 -n 3 -o /dev/null 2>&1' | awk '/Mbps/ {m = $(NF - 4) > m ? $(NF - 4) : m} END {printf "%.0f", m}') ||
            netpipe[$overlay,$rtt]="failed"
        echo "rtt $rtt ms: NetPIPE (NPopenmpi) peak over $overlay: ${netpipe[$overlay,$rtt]} Mbit/s"
    done
done
for overlay in "${overlays[@]}"; do grc release "${cluster[$overlay]}" --wait --timeout 60 >/dev/null; done
"$testbed" down >/dev/null 2>&1
trap - EXIT

declare -A med
for key in "${!mbps[@]}"; do med[$key]=$(tr ' ' '\n' <<<"${mbps[$key]}" | grep . | median); done
ratio() {  # OVERLAY RTT
    [[ -n ${med[$1,$2]:-} ]] || { echo null; return; }
    awk -v a="${med[$1,$2]}" -v b="${med[underlay,$2]}" 'BEGIN { printf "%.3f", a / b }'
}
printf '\n%-32s' "iperf3 median (Mbit/s)"
for rtt in "${rtts[@]}"; do printf ' %12s' "rtt $rtt"; done
echo
for path in underlay vxlan n2n; do
    printf '%-32s' "$path"
    for rtt in "${rtts[@]}"; do printf ' %12s' "${med[$path,$rtt]:-not built}"; done
    echo
done
for overlay in vxlan n2n; do
    printf '%-32s' "$overlay / underlay"
    for rtt in "${rtts[@]}"; do printf ' %12s' "$(ratio "$overlay" "$rtt")"; done
    echo
done
for overlay in "${overlays[@]}"; do
    printf '%-32s %12s\n' "NetPIPE peak over $overlay" "${netpipe[$overlay,0]}"
done
printf '(target: vxlan >= 0.90 of the underlay at every RTT; n2n reported as a ratio)\n'

mkdir -p "$results"
data=$(mktemp)
for rtt in "${rtts[@]}"; do
    echo "$rtt ${med[underlay,$rtt]} ${med[vxlan,$rtt]:-NaN} ${med[n2n,$rtt]:-NaN}"
done >"$data"
gnuplot <<EOF
set terminal png size 800,500
set output "$results/overlay-throughput.png"
set title "TCP throughput between two sites (iperf3, median of $runs x ${seconds} s)"
set xlabel "WAN round-trip time (ms)"
set ylabel "Mbit/s"
set xtics (0, 40, 120)
set key top right
set yrange [0:*]
plot "$data" using 1:2 with linespoints title "underlay (node to node)", \
     "$data" using 1:3 with linespoints title "VXLAN (virtual nodes)", \
     "$data" using 1:4 with linespoints title "n2n (virtual nodes)"
EOF
rm -f "$data"
echo "plot: $results/overlay-throughput.png"
printf '{"vxlan_ratio_rtt0":%s,"vxlan_ratio_rtt40":%s,"vxlan_ratio_rtt120":%s,"n2n_ratio_rtt0":%s,"n2n_ratio_rtt40":%s,"n2n_ratio_rtt120":%s,"underlay_mbps_rtt0":%s}\n' \
    "$(ratio vxlan 0)" "$(ratio vxlan 40)" "$(ratio vxlan 120)" \
    "$(ratio n2n 0)" "$(ratio n2n 40)" "$(ratio n2n 120)" "${med[underlay,0]}"
