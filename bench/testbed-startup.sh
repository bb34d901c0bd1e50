#!/usr/bin/env bash
# Benchmark: up/down time of a 2-site × 4-node testbed and srun -N4 latency per site
#
# Five up/down cycles; in each, ten `srun -N4 /bin/true` per site, measured next to the
# same number of `vc-testbed exec ... /bin/true` (the cost of entering the namespaces, which
# every srun measured here also pays). Prints medians, then one JSON line.
set -euo pipefail
testbed=$(cd "$(dirname "$0")/.." && pwd)/tests/testbed/vc-testbed
cycles=${CYCLES:-5}
sruns=${SRUNS:-10}

us() { echo "${EPOCHREALTIME/./}"; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
secs() { awk -v us="$1" 'BEGIN { printf "%.3f", us / 1e6 }'; }

"$testbed" down >/dev/null 2>&1 || true
trap '"$testbed" down >/dev/null 2>&1 || true' EXIT
ups=() downs=() sruns_us=() execs_us=()
for ((c = 1; c <= cycles; c++)); do
    t=$(us); "$testbed" up --sites 2 --nodes 4 2>/dev/null; ups+=($(($(us) - t)))
    for site in site1 site2; do
        for ((r = 1; r <= sruns; r++)); do
            t=$(us); "$testbed" exec --user vcuser "$site" ctl -- srun -N4 /bin/true; sruns_us+=($(($(us) - t)))
            t=$(us); "$testbed" exec --user vcuser "$site" ctl -- /bin/true; execs_us+=($(($(us) - t)))
        done
    done
    t=$(us); "$testbed" down 2>/dev/null; downs+=($(($(us) - t)))
    printf 'cycle %d/%d: up %s s, down %s s\n' "$c" "$cycles" "$(secs "${ups[-1]}")" "$(secs "${downs[-1]}")"
done
trap - EXIT

up=$(secs "$(printf '%s\n' "${ups[@]}" | median)")
down=$(secs "$(printf '%s\n' "${downs[@]}" | median)")
srun=$(secs "$(printf '%s\n' "${sruns_us[@]}" | median)")
exec_only=$(secs "$(printf '%s\n' "${execs_us[@]}" | median)")
printf '\n%-44s %8s\n' "figure (median)" "seconds"
printf '%-44s %8s\n' "up, 2 sites x 4 nodes (target <= 2 s)" "$up" \
    "down" "$down" \
    "srun -N4 /bin/true, from the controller" "$srun" \
    "baseline: exec /bin/true in the same place" "$exec_only"
printf '{"up_s_median":%s,"down_s_median":%s,"srun_s_median":%s,"exec_baseline_s_median":%s,"cycles":%d,"sruns_per_site_per_cycle":%d}\n' \
    "$up" "$down" "$srun" "$exec_only" "$cycles" "$sruns"
