#!/usr/bin/env bash
# Benchmark: GRC + 100 CRMs, 100 x 100 simulated pilots (4 processes) to READY, 4-node latency, create+release/s
#
# Runs coordinator-scale-bench (bench/coordinator_scale/, built with the tree): one
# GRC and 100 CRM engines, each CRM with its own SQLite store (WAL, fsync per commit batch) in
# a temporary directory and its own gRPC server on a unix socket, the CRMs connected to the GRC
# over mutual TLS on 127.0.0.1 with certificates from scripts/make-test-ca.sh, and a private
# munged. Simulated pilots are real gRPC clients of Crm.Attach (SimPilotFleet), in 4 worker
# processes of their own (--pilot-workers), as pilots are on nodes of their own. Figures:
#   - create -> 10,000 nodes READY as the GRC sees it (100 sites x 100 nodes) and the bytes each
#     node receives, in CA key mode; exchange mode (every node gets every key: 2 MB per node at
#     10,000 nodes, too much for one process holding both ends) runs at 100 x 10, and its bytes
#     per node at 100 x 100 are computed by the GRC's own view code, checked on the 100 x 10 run;
#   - create -> READY of a 1-site x 4-node cluster at a standalone CRM (median of 20 runs);
#   - create+release pairs per second, 16 clients for 5 s, at a CRM (and, printed, at the GRC).
# Extra arguments go to the program (--help lists them), e.g. --sites 10 --nodes 10.
# Prints a table, then one JSON line.
set -euo pipefail
source_dir=$(cd "$(dirname "$0")/.." && pwd)
build=${VCPILOT_BUILD_DIR:-$source_dir/build}
bench=$build/bench/coordinator-scale-bench
[[ -x $bench ]] || {
    echo "coordinator-scale: $bench is missing; build it: cmake --build $build --target coordinator-scale-bench" >&2
    exit 2
}
exec "$bench" --source-dir "$source_dir" "$@"
