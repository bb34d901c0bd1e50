#!/usr/bin/env bash
# vcctl bcast (issue 8) in a real virtual cluster across two sites, as the test user: vc-bcast
# runs from the first virtual node, starts a receiver on every node over the cluster's ssh,
# and pushes the file along the ring over the overlay. Every node ends with a byte-identical
# DEST and nothing else new; bad input is refused in one line and changes nothing; no
# vc-bcast process is left.
source "$(dirname "$0")/lib.sh"
start_clean

testbed up --sites 2 --nodes 2
src=$(mktemp -d /var/tmp/vc-bcast-test.XXXXXX)
trap 'rm -rf "$src"; testbed down >/dev/null 2>&1 || true' EXIT
chmod 0755 "$src"
head -c $((20 * 1024 * 1024 + 3)) /dev/urandom >"$src/image.bin"
chmod 0644 "$src/image.bin"
want=$(sha256sum <"$src/image.bin" | cut -d' ' -f1)

id=$(user_grc create --site site1:2 --site site2:2) || fail "create failed"
user_grc wait "$id" --timeout 120 >/dev/null || fail "the cluster did not become READY: $(user_grc show "$id" 2>&1)"

tmp_before=$(root_grc exec "$id" -- ls -A /tmp | sort)

out=$(user_grc bcast "$id" "$src/image.bin" /tmp/image.bin 2>&1) || fail "vcctl bcast failed: $out"
[[ $out == *"to 4 nodes in "*": 4 ok, 0 failed"* ]] || fail "the report: $out"
[[ $out == *"vc-bcast: 20.0 MiB of 20.0 MiB (100%)"* ]] || fail "no progress line: $out"
sums=$(root_grc exec "$id" -- sha256sum /tmp/image.bin | awk '{print $1 " " $2}' | sort)
assert_eq "vc-site1-1: $want
vc-site1-2: $want
vc-site2-1: $want
vc-site2-2: $want" "$sums" "every node's copy"
tmp_after=$(root_grc exec "$id" -- ls -A /tmp | sort)
assert_eq "$(printf '%s\n' "$tmp_before" vc-site1-1:\ image.bin vc-site1-2:\ image.bin vc-site2-1:\ image.bin vc-site2-2:\ image.bin | grep . | sort)" \
    "$tmp_after" "what is new in each node's /tmp"
pass "vcctl bcast: 20 MiB to 4 virtual nodes on 2 sites, byte-identical, nothing else written: $(grep 'to 4 nodes' <<<"$out")"

expect_status 2 user_grc bcast "$id" "$src/image.bin" relative/dest
[[ $ERR == "vcctl: DEST 'relative/dest' must be an absolute path" ]] || fail "relative DEST: $ERR"
expect_status 2 user_grc bcast "$id" "$src/missing.bin" /tmp/other.bin
[[ $ERR == *"missing.bin: No such file or directory"* && $(wc -l <<<"$ERR") == 1 ]] || fail "missing FILE: $ERR"
[[ -z $(root_grc exec "$id" -- ls /tmp/other.bin 2>/dev/null) ]] || fail "a refused bcast wrote something"
pass "bad input is refused in one line and changes nothing: $ERR"

if ps -eo stat=,comm= | awk '$1 !~ /^Z/ && $2 == "vc-bcast"' | grep -q .; then fail "a vc-bcast process is left"; fi
user_grc release "$id" --wait --timeout 60 >/dev/null || fail "release failed"
pass "no vc-bcast process is left; the cluster releases"
testbed down
assert_nothing_left
