#!/usr/bin/env bash
# Many --vc jobs in a row on one site of 2 nodes, mixing normal ends, scancel during set-up and
# kill -9 of a pilot mid-job (CYCLES, default 200; one in ten of each kind of failure). Nothing
# may be left afterwards: the test counts links and mounts in the nodes' namespaces, job sshd
# processes, pilots and files under /run/vcpilot before and after, no namespace may be in use
# that was not before, and every job's cluster at the CRM must be released.
source "$(dirname "$0")/lib.sh"
start_clean

build=${VCPILOT_BUILD_DIR:?}
run_dir=${VCTB_RUN_DIR:-/run/vctb}
cycles=${CYCLES:-200}
[[ $cycles =~ ^[1-9][0-9]*$ ]] || fail "CYCLES=$cycles is not a count"
testbed up --sites 1 --nodes 2
as_user() { testbed exec --user vcuser site1 ctl -- "$@"; }
crm() { "$build/vcctl/vcctl" --crm "unix:$(testbed crm site1)" --munge-socket "$run_dir/site1/munge/munge.socket" "$@"; }

# What a job could leave behind, counted from outside.
census() {
    local n
    for n in 1 2; do
        echo "links-node$n $(ip -n vctb-site1-node$n -o link | wc -l)"
        echo "mounts-node$n $(testbed exec site1 "node$n" -- cat /proc/self/mountinfo | wc -l)"
    done
    echo "sshd $(ps -eo args | grep -c '[s]shd.*/run/vcpilot/' || true)"
    echo "pilots $(ps -eo stat=,comm= | awk '$1 !~ /^Z/ && $2 == "vc-pilot"' | wc -l)"
    echo "files $(find /run/vcpilot -mindepth 1 2>/dev/null | wc -l)"
}
before=$(census)
namespaces_before=$(namespaces_in_use)
[[ $before == *"files 0"* ]] || fail "/run/vcpilot is not empty before the test: $(find /run/vcpilot -mindepth 1 | head)"

wait_idle() {
    local _
    for _ in $(seq 300); do
        [[ -z $(as_user squeue -h) ]] && return 0
        sleep 0.1
    done
    fail "jobs still queued or completing after 30 s: $(as_user squeue)"
}

normal=0 cancelled=0 killed=0
start=$SECONDS
for ((c = 1; c <= cycles; c++)); do
    case $((c % 10)) in
        3)  # scancel while the job's virtual cluster is being set up
            as_user srun -N2 --vc sleep 5 >/dev/null 2>&1 &
            srun_pid=$!
            sleep "0.$((RANDOM % 3 + 1))"
            as_user scancel -u vcuser
            wait "$srun_pid" || true
            cancelled=$((cancelled + 1))
            ;;
        7)  # kill -9 one pilot while its job runs
            as_user srun -N2 --vc sleep 3 >/dev/null 2>&1 &
            srun_pid=$!
            # Once the pilot of node 1 is READY (its state file says so), kill it.
            pilot=
            for _ in $(seq 200); do
                job=$(as_user squeue -h -o %i | head -1)
                state=$(cat "/run/vcpilot/site1-node1/${job:-none}/state.json" 2>/dev/null || true)
                if [[ $state == *state=READY* ]]; then
                    pilot=$(sed -n 's/^pid=//p' <<<"$state" | head -1)
                    break
                fi
                sleep 0.02
            done
            [[ -n $pilot ]] || { as_user squeue >&2; ls -R /run/vcpilot >&2; cat /run/vcpilot/*/pilot-*.log >&2; tail -5 "$run_dir/site1/log/crmd.log" >&2; fail "cycle $c: the job's pilot on node1 never became READY"; }
            kill -9 "$pilot"
            wait "$srun_pid" || true
            killed=$((killed + 1))
            ;;
        *)
            as_user srun -N2 --vc true >/dev/null || fail "cycle $c: a normal --vc job failed"
            normal=$((normal + 1))
            ;;
    esac
    wait_idle
    if ((c % 50 == 0)); then note "$c/$cycles cycles ($((SECONDS - start)) s)"; fi
done

after=$(census)
assert_eq "$before" "$after" "links, mounts, sshd, pilots and run-directory files after $cycles jobs"
assert_no_new_namespaces "$namespaces_before" "$cycles jobs"
live=$(crm --json list --all | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("clusters", [])))')
for _ in $(seq 100); do
    [[ $live == 0 ]] && break
    sleep 0.1
    live=$(crm --json list --all | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("clusters", [])))')
done
# A killed pilot's cluster is released when its job's other pilot stops at the epilog.
assert_eq 0 "$live" "job clusters still live at the CRM"
pass "$cycles --vc jobs ($normal normal, $cancelled cancelled during set-up, $killed with a pilot killed) in $((SECONDS - start)) s leave nothing"

testbed down
assert_nothing_left
