#!/usr/bin/env bash
# vc-bcast delivers byte-identical files to every node of rings of 2 to 8 nodes: empty, one
# byte, one chunk less one byte, one chunk, one chunk and one byte, many chunks.
source "$(dirname "$0")/lib.sh"

chunk=65536
for n in 2 3 5 8; do
    for size in 0 1 $((chunk - 1)) $chunk $((chunk + 1)) $((chunk * 37 + 1234)); do
        ring "$n" "$size" --chunk-size 64K --memory 256K --quiet
        finish
        ((SENT == 0)) || fail "$n nodes, $size bytes: the sender exited $SENT: $(cat "$RUN/send.out" "$RUN/send.err")"
        check_copies "$n" $(seq "$n")
        grep -q "to $n nodes in .*: $n ok, 0 failed" "$RUN/send.out" ||
            fail "$n nodes, $size bytes: the report says: $(head -1 "$RUN/send.out")"
    done
    pass "$n nodes: files of 0, 1, $((chunk - 1)), $chunk, $((chunk + 1)) and $((chunk * 37 + 1234)) bytes arrive byte-identical"
done

# A larger file through 8 nodes with the default chunk size; the copies keep the file's mode.
FILE_MODE=0640 ring 8 $((24 * 1024 * 1024 + 5)) --quiet
finish
((SENT == 0)) || fail "24 MiB to 8 nodes: the sender exited $SENT"
check_copies 8 $(seq 8)
mode=$(stat -c %a "$RUN/n8/copy")
[[ $mode == 640 ]] || fail "n8's copy has mode $mode, the file 640"
pass "24 MiB + 5 bytes to 8 nodes with 4 MiB chunks: $(head -1 "$RUN/send.out" | sed 's/.*nodes in //')"

# Bad input: one line, exit 2, nothing started and nothing written.
bad() {  # EXPECTED-ERROR ARGS...
    local want=$1 err rc=0
    shift
    err=$("$BCAST" "$@" 2>&1 >/dev/null) || rc=$?
    [[ $rc == 2 && $err == "vc-bcast: $want" ]] || fail "vc-bcast $*: exit $rc, '$err'"
}
BAD=$(mktemp -d "$WORK/bad.XXXX")
touch "$BAD/file"
bad "DEST 'relative' must be an absolute path" send --nodes n1 "$BAD/file" relative
bad "node name 'a;b' is not a host name" send --nodes 'a;b' "$BAD/file" "$BAD/copy"
bad "node n1 is listed twice" send --nodes n1,n1 "$BAD/file" "$BAD/copy"
bad "--chunk-size: unknown unit in '4X' (K, M or G)" send --nodes n1 --chunk-size 4X "$BAD/file" "$BAD/copy"
bad "--memory: give at least two chunks" send --nodes n1 --memory 1M "$BAD/file" "$BAD/copy"
bad "$BAD/missing: No such file or directory" send --nodes n1 "$BAD/missing" "$BAD/copy"
bad "give the secret with exactly one of --secret-stdin and --secret-file" \
    receive --sender 127.0.0.1:1 --name n1 "$BAD/copy"
left=$(ls -A "$BAD")
[[ $left == file ]] || fail "bad input left files: $left"
pass "bad input is refused in one line (exit 2) and starts or writes nothing"
