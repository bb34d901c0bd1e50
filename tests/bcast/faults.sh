#!/usr/bin/env bash
# vc-bcast's ring survives its nodes: one node and then a second killed mid-transfer, a node
# stopped (it stalls) past the timeout, a flipped bit in a chunk, a node whose disk is full, a
# receiver with another transfer's secret. The others always finish with identical, checked
# files; the sender names each failed node and why; nothing is left behind.
source "$(dirname "$0")/lib.sh"
slow_loopback 400mbit

ring 6 $((40 * 1024 * 1024)) --chunk-size 1M --stall-timeout 3
wait_progress 10
kill -9 "${RPIDS[3]}"
wait_progress 40
kill -9 "${RPIDS[5]}"
finish
((SENT == 1)) || fail "two killed nodes: the sender exited $SENT, expected 1"
check_copies 6 1 2 4 6
grep -q "n3  FAILED: lost contact" "$RUN/send.out" || fail "n3's failure: $(cat "$RUN/send.out")"
grep -q "n5  FAILED: " "$RUN/send.out" || fail "n5's failure: $(cat "$RUN/send.out")"
grep -q ": 4 ok, 2 failed" "$RUN/send.out" || fail "the summary: $(head -1 "$RUN/send.out")"
pass "n3 then n5 killed mid-transfer: the 4 others finish with identical files; $(grep n5 "$RUN/send.out" | sed 's/^ *//')"

slow_loopback 200mbit
ring 4 $((40 * 1024 * 1024)) --chunk-size 1M --stall-timeout 2
wait_progress 1
kill -STOP "${RPIDS[2]}"
finish
((SENT == 1)) || fail "a stalled node: the sender exited $SENT, expected 1"
check_copies 4 1 3 4
grep -q "n2  FAILED: .*stalled" "$RUN/send.out" ||
    fail "n2's failure: $(cat "$RUN/send.out")"
pass "a node stopped mid-transfer is bypassed after the stall timeout; the others finish; once it runs again it exits, leaving no file"

tc qdisc del dev lo root
RECEIVER_ARGS=([2]="--test-corrupt-chunk 3" [4]="--test-corrupt-chunk 0")
ring 4 $((8 * 1024 * 1024)) --chunk-size 1M --quiet
finish
RECEIVER_ARGS=()
((SENT == 0)) || fail "flipped bits: the sender exited $SENT: $(cat "$RUN/send.out")"
check_copies 4 1 2 3 4
grep -q "n2  ok (chunks that failed their checksum here and were sent again: 3)" "$RUN/send.out" &&
    grep -q "n4  ok (chunks that failed their checksum here and were sent again: 0)" "$RUN/send.out" ||
    fail "the repairs are not reported: $(cat "$RUN/send.out")"
pass "a flipped bit in chunk 3 at n2 and chunk 0 at n4 is detected, sent again and repaired"

SMALL_DISK=3
ring 4 $((4 * 1024 * 1024)) --chunk-size 1M --quiet
finish
SMALL_DISK=""
((SENT == 1)) || fail "a full disk: the sender exited $SENT, expected 1"
check_copies 4 1 2 4
grep -q "n3  FAILED: .*/n3/copy: no room for 4194304 bytes: No space left on device" "$RUN/send.out" ||
    fail "n3's failure: $(cat "$RUN/send.out")"
pass "n3's disk is full: it fails at once saying so, the others complete"

LATE_NODES=3
ring 3 100000 --quiet
LATE_NODES=""
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$RUN/other-secret"
"$BCAST" receive --sender "127.0.0.1:$(cat "$RUN/port")" --name n3 --secret-file "$RUN/other-secret" \
    --listen 127.0.0.1 "$RUN/intruder" 2>"$RUN/intruder.err" && fail "a receiver with another secret joined"
grep -q "does not hold this transfer's secret" "$RUN/intruder.err" ||
    fail "the intruder's error: $(cat "$RUN/intruder.err")"
[[ ! -e $RUN/intruder ]] || fail "the intruder wrote a file"
start_receiver 3
finish
((SENT == 0)) || fail "after the intruder: the sender exited $SENT"
check_copies 3 1 2 3
pass "a receiver without the transfer's secret cannot join: $(cat "$RUN/intruder.err" | sed 's/.*error: //')"

for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then fail "process $pid is still running"; fi
done
pass "no vc-bcast process is left"
