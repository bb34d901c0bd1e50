#!/usr/bin/env bash
# The demo: installs what is missing, builds, brings up a testbed of two Slurm sites joined
# by a 40 ms WAN, runs real Slurm jobs in each site and across the WAN, then tears it down.
source "$(dirname "$0")/common.sh"
require_root
install_deps
build

testbed=$VCPILOT_SOURCE_DIR/tests/testbed/vc-testbed
trap '"$testbed" down >/dev/null 2>&1 || true' EXIT

step "Bringing up 2 sites × 4 nodes, WAN round trip 40 ms"
"$testbed" up --sites 2 --nodes 4 --wan-rtt 40
"$testbed" status

for site in site1 site2; do
    step "srun -N4 hostname at $site, as the test user vcuser"
    start=${EPOCHREALTIME/./}
    "$testbed" exec --user vcuser "$site" ctl -- srun -N4 hostname | sort
    echo "($(( (${EPOCHREALTIME/./} - start) / 1000 )) ms)"
done

step "A batch job at site2 that pings site1 across the WAN"
job=$(mktemp)
cat >"$job" <<'JOB'
#!/bin/bash
#SBATCH -N1 --job-name=wan-ping
echo "job $SLURM_JOB_ID on $(hostname) as $(id -un)"
ping -c 3 -i 0.2 -q 172.16.1.11 | tail -n 1
JOB
"$testbed" submit --site site2 --wait "$job"
rm -f "$job"

step "Taking the testbed down"
"$testbed" down
trap - EXIT
echo "demo finished"
