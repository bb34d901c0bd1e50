#!/usr/bin/env bash
# Benchmark: a GNU parallel task farm over ssh across 2 sites x 2 nodes, WAN RTT 0 vs 40 ms
#
# A virtual cluster across two testbed sites, reserved through each site's Slurm (vcctl --grc
# create, pilots from Slurm). From its first node, GNU parallel runs TASKS (16) tasks of fixed
# CPU work (sha256 of TASK_MB (512) MiB of zeros, about 1.5 s of one core here) over ssh on the
# cluster's 4 nodes, one task per node at a time, as a GridRPC-style farm would. The farm's wall
# time is taken RUNS (5) times at each RTT, interleaved (the WAN delay is changed on the running
# testbed), once with one ssh connection per task (what a user gets unmodified) and once with
# GNU parallel's --controlmaster (one connection per node, reused). The original design lost
# 2-3 % of a parallel docking run at 40 ms. Prints medians and slowdowns, then one JSON line:
# {"slowdown_pct_rtt40":..., "slowdown_pct_rtt40_controlmaster":..., ...}.
set -euo pipefail
source_dir=$(cd "$(dirname "$0")/.." && pwd)
testbed=$source_dir/tests/testbed/vc-testbed
build=${VCPILOT_BUILD_DIR:-$source_dir/build}
runs=${RUNS:-5} tasks=${TASKS:-16} task_mb=${TASK_MB:-512}
for v in runs tasks task_mb; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "farm-slowdown.sh: ${v^^}=${!v} is not a count" >&2; exit 2; }
done

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (a / b - 1) * 100 }'; }

"$testbed" down >/dev/null 2>&1 || true
trap '"$testbed" down >/dev/null 2>&1 || true' EXIT
"$testbed" up --sites 2 --nodes 2 2>/dev/null
# vcctl --grc as the test user (the tests' helper).
export VCPILOT_BUILD_DIR=$build
source "$source_dir/tests/integration/lib.sh"
grc() { user_grc "$@"; }
id=$(grc create --site site1:2 --site site2:2 --walltime 60)
grc wait "$id" --timeout 120 >/dev/null || { echo "farm-slowdown.sh: the cluster did not become READY" >&2; grc show "$id" >&2; exit 1; }
echo "cluster $id: 2 sites x 2 nodes; $tasks tasks of sha256 over $task_mb MiB each, 1 per node at a time"

# The farm, run from the cluster's first node; prints its wall time in seconds.
farm() {  # plain|controlmaster
    local option=
    [[ $1 == controlmaster ]] && option=--controlmaster
    grc run "$id" -- bash -c "
        sed 's|^|1/|' \"\$VC_NODELIST\" > /tmp/farm-logins
        start=\$EPOCHREALTIME
        seq $tasks | parallel $option --sshloginfile /tmp/farm-logins \
            'head -c ${task_mb}M /dev/zero | sha256sum >/dev/null; : task {}' || exit 1
        awk -v a=\$start -v b=\$EPOCHREALTIME 'BEGIN { printf \"%.3f\n\", b - a }'"
}
# One ssh round trip to a node of the other site: what each task pays on top of its work.
ssh_cost() {
    grc run "$id" -- bash -c 'far=$(sed -n 3p "$VC_NODELIST"); start=$EPOCHREALTIME
        for _ in 1 2 3; do ssh -T "$far" true; done
        awk -v a=$start -v b=$EPOCHREALTIME "BEGIN { printf \"%.0f\n\", (b - a) * 1000 / 3 }"'
}

farm plain >/dev/null  # warm-up: page cache, sshd's first starts on every node
declare -A t
for rtt in 0 40; do
    "$testbed" wan --rtt "$rtt" 2>/dev/null
    echo "rtt $rtt ms: ssh to the other site and back: $(ssh_cost) ms per connection"
done
for ((r = 1; r <= runs; r++)); do
    for rtt in 0 40; do
        "$testbed" wan --rtt "$rtt" 2>/dev/null
        for mode in plain controlmaster; do
            s=$(farm "$mode") || { echo "farm-slowdown.sh: the farm failed" >&2; exit 1; }
            t[$rtt,$mode]+="$s "
            printf 'run %d/%d rtt %3s ms %-13s %s s\n' "$r" "$runs" "$rtt" "$mode" "$s"
        done
    done
done
grc release "$id" --wait --timeout 60 >/dev/null
"$testbed" down >/dev/null 2>&1
trap - EXIT

declare -A m
for key in "${!t[@]}"; do m[$key]=$(tr ' ' '\n' <<<"${t[$key]}" | grep . | median); done
printf '\n%-44s %10s %10s\n' "farm wall time, median of $runs (s)" "rtt 0" "rtt 40"
printf '%-44s %10s %10s\n' "ssh per task (GNU parallel's default)" "${m[0,plain]}" "${m[40,plain]}" \
    "one connection per node (--controlmaster)" "${m[0,controlmaster]}" "${m[40,controlmaster]}"
plain_pct=$(pct "${m[40,plain]}" "${m[0,plain]}")
cm_pct=$(pct "${m[40,controlmaster]}" "${m[0,controlmaster]}")
printf '%-44s %10s\n' "slowdown at 40 ms, ssh per task (%)" "$plain_pct" \
    "slowdown at 40 ms, --controlmaster (%)" "$cm_pct" "target (the original design's) (%)" "<= 3"
printf '{"slowdown_pct_rtt40":%s,"slowdown_pct_rtt40_controlmaster":%s,"farm_s_rtt0":%s,"farm_s_rtt40":%s,"tasks":%s,"task_mb":%s}\n' \
    "$plain_pct" "$cm_pct" "${m[0,plain]}" "${m[40,plain]}" "$tasks" "$task_mb"
