#!/usr/bin/env bash
# Builds the libFuzzer target for SETUP/SET_KEYS validation with clang (preset "fuzz", in
# build-fuzz/, reused between runs) and fuzzes it for a bounded time, starting from a copy of the
# seed corpus so that the repository is never modified. Fails on any crash, sanitizer report,
# leak, slow input or broken invariant; the input that did it is kept in
# build-fuzz/fuzz-artifacts/.
#
#   tests/fuzz/run-fuzzer.sh [libFuzzer flags...]
#   VCPILOT_FUZZ_SECONDS=600 tests/fuzz/run-fuzzer.sh     # default 60
set -euo pipefail

source_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build_dir=$source_dir/build-fuzz
cmake=${CMAKE:-cmake}
seconds=${VCPILOT_FUZZ_SECONDS:-60}
if [[ ! $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "run-fuzzer.sh: VCPILOT_FUZZ_SECONDS=$seconds is not a positive number of seconds" >&2
    exit 2
fi

mkdir -p "$build_dir"
# One build and one run at a time per tree, however many ctest runs share it.
exec 9>"$build_dir/.run-fuzzer.lock"
flock 9

cd "$source_dir"
started=$SECONDS
"$cmake" --preset fuzz --log-level=WARNING
"$cmake" --build --preset fuzz -j "$(nproc)"
echo "run-fuzzer.sh: configure + build took $((SECONDS - started)) s"

work=$(mktemp -d "${TMPDIR:-/tmp}/vcpilot-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus"
cp "$source_dir/tests/fuzz/corpus/validate/." "$work/corpus/" -R
artifacts=$build_dir/fuzz-artifacts
mkdir -p "$artifacts"

# Tokens the checks compare against; libFuzzer splices them into the strings of the messages.
# Raw bytes are protobuf tags: SetupRequest fields 1-11, VxlanOverlay 1-4, ClusterNode.slots.
cat >"$work/validate.dict" <<'EOF'
"ssh-ed25519 "
"AAAAC3NzaC1lZDI1NTE5AAAAI"
"ssh-rsa "
"PRIVATE KEY"
"b3BlbnNzaC1rZXktdjE"
"=="
"10.77.0."
"/24"
"/30"
"/31"
"/0"
"0.0.0.0"
"255.255.255.255"
"224.0.0.1"
"::"
"::ffff:"
"fd00::1"
"%eth0"
"02:00:0a:4d:00:"
"ff:ff:ff:ff:ff:ff"
"00:00:00:00:00:00"
"/srv/images/"
"/../"
"//"
"/."
"alice"
"vn1"
"vn2"
"\x0a"
"\x12"
"\x1a"
"\x22"
"\x2a"
"\x32"
"\x3a"
"\x42"
"\x4a"
"\x50"
"\x5a"
"\x08"
"\x10"
"\x20"
"\x38"
"\xff\xff\xff\xff\x0f"
EOF

fuzzer=$build_dir/tests/fuzz/validate_fuzzer
echo "run-fuzzer.sh: fuzzing for $seconds s"
status=0
"$fuzzer" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=16384 \
    -dict="$work/validate.dict" -artifact_prefix="$artifacts/" -print_final_stats=1 \
    "$@" "$work/corpus" || status=$?
if ((status != 0)); then
    echo "run-fuzzer.sh: the fuzzer failed (exit $status); inputs in $artifacts:" >&2
    ls -l "$artifacts" >&2
    echo "run-fuzzer.sh: reproduce with $fuzzer <input>" >&2
    exit 1
fi
