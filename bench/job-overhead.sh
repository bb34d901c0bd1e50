#!/usr/bin/env bash
# Benchmark: sbatch -> job end of a 4-node /bin/true job, with and without --vc
#
# One testbed site of 4 nodes; RUNS (10) jobs of each kind, interleaved (plain, --vc, plain,
# ...), each `sbatch -N4 [--vc] --wrap /bin/true` as the test user, timed from submission until
# the job has left the queue, after the nodes are idle again (the epilog of the one before is
# done).
# With --vc that includes the prolog starting 4 pilots, the job's cluster being made at the
# CRM, the batch step joining its virtual node, and the epilog's teardown. Prints both medians,
# the difference and the ratio, then one JSON line. Target: --vc adds <= 150 ms.
set -euo pipefail
testbed=$(cd "$(dirname "$0")/.." && pwd)/tests/testbed/vc-testbed
runs=${RUNS:-10}
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "job-overhead.sh: RUNS=$runs is not a count" >&2; exit 2; }

us() { echo "${EPOCHREALTIME/./}"; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
secs() { awk -v us="$1" 'BEGIN { printf "%.3f", us / 1e6 }'; }

"$testbed" down >/dev/null 2>&1 || true
trap '"$testbed" down >/dev/null 2>&1 || true' EXIT
"$testbed" up --sites 1 --nodes 4 2>/dev/null
ctld_log=/run/vctb/site1/log/slurmctld.log
as_user() { "$testbed" exec --user vcuser site1 ctl -- "$@"; }
# Waits (bounded: 60 s) until no job is left and every node is idle.
settle() {
    local _
    for _ in $(seq 600); do
        [[ -z $(as_user squeue -h) && $(as_user sinfo -h -o '%T' | sort -u) == idle ]] && return 0
        sleep 0.1
    done
    echo "job-overhead.sh: the nodes did not become idle within 60 s" >&2
    exit 1
}
# slurmctld starts pending batch jobs in a pass about once a second (batch_sched_delay=0 in
# the testbed; Slurm's default of 3 s is coarser still): how long a job queues depends on where
# in that cycle it was submitted, and the two kinds, ending at different points of it, would
# queue differently. So every job is submitted at the same point, 50 ms after a pass, found from
# the millisecond of slurmctld's last "sched: Allocate" line (the cycle drifts by ~2 ms a second).
align() {
    local last now wait
    last=$(grep ' sched: Allocate ' "$ctld_log" 2>/dev/null | tail -1 |
        sed -nE 's/^\[[^]]*\.([0-9]{3})\].*/\1/p' || true)
    [[ -n $last ]] || return 0
    now=$(date +%3N)
    wait=$(((10#$last + 50 - 10#$now + 2000) % 1000))
    sleep "$(printf '0.%03d' "$wait")"
}
# One job: from sbatch until it has left the queue (epilog done), polled every 20 ms from
# inside the site (sbatch --wait polls at 2 s and more, too coarse for this).
job() {  # [--vc]
    local t id _
    settle
    align
    t=$(us)
    id=$(as_user sbatch --parsable --chdir=/tmp --output=/dev/null -N4 "$@" --wrap /bin/true)
    as_user bash -c "for _ in \$(seq 3000); do [[ -z \$(squeue -h -j $id 2>/dev/null) ]] && exit 0; sleep 0.02; done; exit 1" ||
        { echo "job-overhead.sh: job $id did not end within 60 s" >&2; exit 1; }
    echo $(($(us) - t))
}

job >/dev/null; job --vc >/dev/null  # warm-up: page cache, first pilot start
plain=() vc=()
for ((r = 1; r <= runs; r++)); do
    plain+=("$(job)")
    vc+=("$(job --vc)")
    printf 'run %d/%d: plain %s s, --vc %s s\n' "$r" "$runs" "$(secs "${plain[-1]}")" "$(secs "${vc[-1]}")"
done
"$testbed" down >/dev/null 2>&1
trap - EXIT

plain_us=$(printf '%s\n' "${plain[@]}" | median)
vc_us=$(printf '%s\n' "${vc[@]}" | median)
added_ms=$(awk -v a="$vc_us" -v b="$plain_us" 'BEGIN { printf "%.0f", (a - b) / 1000 }')
ratio=$(awk -v a="$vc_us" -v b="$plain_us" 'BEGIN { printf "%.3f", a / b }')
printf '\n%-48s %10s\n' "figure (median of $runs)" "value"
printf '%-48s %10s\n' "sbatch -N4 /bin/true, plain (s)" "$(secs "$plain_us")" \
    "sbatch -N4 --vc /bin/true (s)" "$(secs "$vc_us")" \
    "added by --vc (ms, target <= 150)" "$added_ms" \
    "ratio" "$ratio"
printf '{"plain_s_median":%s,"vc_s_median":%s,"added_ms":%s,"ratio":%s}\n' \
    "$(secs "$plain_us")" "$(secs "$vc_us")" "$added_ms" "$ratio"
