#!/usr/bin/env bash
# Runs benchmark NAME from bench/ (building first if needed) and prints its figures; the
# last line of its output is one JSON object. `scripts/bench.sh` alone lists them.
source "$(dirname "$0")/common.sh"
bench_dir=$VCPILOT_SOURCE_DIR/bench
list() { for f in "$bench_dir"/*.sh; do n=$(basename "$f" .sh); printf '  %-20s %s\n' "$n" "$(sed -n 's/^# Benchmark: //p' "$f")"; done; }
if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    echo "usage: $(basename "$0") NAME [ARGS...]"; echo "benchmarks:"; list
    [[ $# -ge 1 ]] && exit 0 || exit 2
fi
name=$1; shift
[[ -f $bench_dir/$name.sh ]] || { echo "$(basename "$0"): no benchmark '$name'; there are:" >&2; list >&2; exit 2; }
require_root
[[ -x $VCPILOT_BUILD_DIR/tests/tools/lab-keeper/lab-keeper ]] || { install_deps; build; }
exec bash "$bench_dir/$name.sh" "$@"
