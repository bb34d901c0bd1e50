#!/usr/bin/env bash
# --vc-cluster and --vc-image as the test user. A cluster reserved with vcctl is joined by a
# job's nodes (its virtual names, its id), and again by the next job: the cluster outlives each
# job, whose nodes are free again when it ends. Someone else's cluster, a job larger than the
# cluster's free nodes: the tasks are not run, srun says why in one line, and nothing is held
# or left behind. --vc-image is layered read-only over the node's /mnt in every task; one the
# user cannot read is refused.
source "$(dirname "$0")/lib.sh"
start_clean

build=${VCPILOT_BUILD_DIR:?}
vcctl=$build/vcctl/vcctl
run_dir=${VCTB_RUN_DIR:-/run/vctb}
munge=$run_dir/site1/munge/munge.socket
testbed up --sites 1 --nodes 3
as_user() { testbed exec --user vcuser site1 node1 -- "$@"; }
# vcctl as the test user over the CRM's TCP port (as from a login node), and as root.
user_ctl() { as_user "$vcctl" --crm 172.16.1.2:7400 --munge-socket "$munge" "$@"; }
root_ctl() { "$vcctl" --crm "unix:$(testbed crm site1)" --munge-socket "$munge" "$@"; }
# STATE and the hosts holding nodes of cluster ID, as vcctl shows them.
cluster_state() {
    root_ctl --json show "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin)
print(d["state"].replace("CLUSTER_STATE_", ""), ",".join(n.get("host", "") for n in d.get("nodes", [])))'
}
# Waits (up to 10 s) until cluster ID (of two nodes) is PENDING with every node free.
wait_free() {
    for _ in $(seq 100); do
        [[ $(cluster_state "$1") == "PENDING ," ]] && return 0
        sleep 0.1
    done
    fail "cluster $1 after the job: '$(cluster_state "$1")', want every node free and PENDING"
}
# No pilot, run directory or job sshd left on the nodes once the epilogs ran (up to 10 s).
wait_nothing_left() {
    for _ in $(seq 100); do
        if [[ -z $(find /run/vcpilot -mindepth 1 2>/dev/null) ]] && ! pgrep -x vc-pilot >/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    fail "left after the jobs: $(find /run/vcpilot -mindepth 1 | head -3) $(pgrep -a -x vc-pilot)"
}

id=$(user_ctl create --site site1:2 --name-prefix rsv) || fail "vcctl create as vcuser failed"
[[ $id =~ ^vc-[0-9a-f]{8}$ ]] || fail "vcctl create printed '$id'"
for run in first second; do
    out=$(as_user srun -N2 --vc-cluster="$id" bash -c 'echo "$(hostname) $VC_CLUSTER_ID $VC_NODE_NAME"') ||
        fail "$run srun -N2 --vc-cluster=$id failed: $out"
    assert_eq "rsv-site1-1 $id rsv-site1-1
rsv-site1-2 $id rsv-site1-2" "$(sort <<<"$out")" "$run job: hostname, VC_CLUSTER_ID, VC_NODE_NAME"
    wait_free "$id"
done
pass "srun -N2 --vc-cluster: the tasks run on the reserved cluster's virtual nodes, twice; after each job its nodes are free and the cluster PENDING, not released"

# Refusals: the CRM's one-line reason reaches srun, no task runs outside its virtual node.
refused() {  # WHAT EXPECTED-TEXT SRUN-ARGS...
    local what=$1 says=$2 out; shift 2
    if out=$(as_user srun "$@" hostname 2>&1); then fail "$what: srun ran tasks: $out"; fi
    if grep -qx 'site1-node[123]' <<<"$out"; then fail "$what: a task ran on the host: $out"; fi
    [[ $out == *"$says"* && $out == *"the task is not run"* ]] || fail "$what: unclear error: $out"
}
other=$(root_ctl create --site site1:1) || fail "vcctl create as root failed"
refused "another user's cluster" "no cluster '$other' of 'vcuser' at site site1" -N1 --vc-cluster="$other"
refused "an unknown cluster" "no cluster 'vc-0badc0de' of 'vcuser' at site site1" -N1 --vc-cluster=vc-0badc0de
refused "three nodes on two" "cluster $id has 2 free node(s) at site site1, job" -N3 --vc-cluster="$id"
wait_nothing_left
assert_eq "PENDING ," "$(cluster_state "$id")" "vcuser's cluster after the refused jobs"
assert_eq "PENDING " "$(cluster_state "$other")" "root's cluster after vcuser's refused job"
pass "another user's cluster, an unknown one and one too small are refused with the CRM's reason; nothing is held or left behind"

# --vc-image: a directory the user can read is layered read-only over the node's /mnt (the lab
# keeps /mnt/site/README there); one they cannot read is refused.
image=$run_dir/vc-image-test
secret=$run_dir/vc-image-secret
mkdir -p "$image" "$secret"
echo "marker of the image" >"$image/marker"
echo "not for vcuser" >"$secret/marker"
chmod 0755 "$image" && chmod 0644 "$image/marker"
chmod 0700 "$secret"
mkdir -p "$image/site"
echo "the image's own" >"$image/site/extra"
chmod 0755 "$image/site" && chmod 0644 "$image/site/extra"
out=$(as_user srun -N2 --vc --vc-image="$image" bash -c \
    'cat /mnt/marker /mnt/site/README /mnt/site/extra; touch /mnt/x /mnt/site/y 2>&1 || true') ||
    fail "srun --vc --vc-image failed: $out"
assert_eq 2 "$(grep -cx 'marker of the image' <<<"$out")" "tasks that see the image's marker at /mnt"
assert_eq 2 "$(grep -cx 'a file of the site' <<<"$out")" "tasks that still see the node's /mnt/site/README"
assert_eq 2 "$(grep -cx "the image's own" <<<"$out")" "tasks that see the image's file in the merged /mnt/site"
assert_eq 4 "$(grep -c 'Read-only file system' <<<"$out")" "writes to the union refused"
[[ ! -e $image/x && ! -e $image/site/y ]] || fail "a write in the job reached the image"
out=$(as_user srun -N2 --vc-cluster="$id" --vc-image="$image" bash -c 'echo "$(hostname) $(cat /mnt/marker)"') ||
    fail "srun --vc-cluster --vc-image failed: $out"
assert_eq "rsv-site1-1 marker of the image
rsv-site1-2 marker of the image" "$(sort <<<"$out")" "the reserved cluster's tasks with the image"
wait_free "$id"
refused "an image vcuser cannot read" "is not readable by 'vcuser'" -N1 --vc --vc-image="$secret"
refused "a missing image" "No such file or directory" -N1 --vc --vc-image="$run_dir/no-such-image"
wait_nothing_left
pass "--vc-image is layered read-only over the node's /mnt, whose own files show through (also with --vc-cluster); one the user cannot read, or a missing one, is refused"

user_ctl release "$id" --wait --timeout 30 >/dev/null || fail "vcctl release of the reserved cluster failed"
root_ctl release "$other" --wait --timeout 30 >/dev/null || fail "vcctl release of root's cluster failed"
rm -rf "$image" "$secret"
testbed down
assert_nothing_left
