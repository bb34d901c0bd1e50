#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (preset "fuzz", in build-fuzz/, reused between runs) and
# fuzzes each for a bounded time, starting from a copy of its seed corpus so that the repository
# is never modified: validate_fuzzer (the pilot's SETUP/SET_KEYS validation) and
# coordinator_fuzzer (the coordinators' CreateCluster, GRC assignment and node report handling).
# Fails on any crash, sanitizer report, leak, slow input or broken invariant; the input that did
# it is kept in build-fuzz/fuzz-artifacts/.
#
#   tests/fuzz/run-fuzzer.sh [validate|coordinator] [libFuzzer flags...]   # default: both
#   VCPILOT_FUZZ_SECONDS=600 tests/fuzz/run-fuzzer.sh     # per fuzzer; default 40
set -euo pipefail

source_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build_dir=$source_dir/build-fuzz
cmake=${CMAKE:-cmake}
seconds=${VCPILOT_FUZZ_SECONDS:-40}
fuzzers=(validate coordinator)
if [[ ${1:-} == validate || ${1:-} == coordinator ]]; then
    fuzzers=("$1")
    shift
fi
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

# The coordinator fixture's pools, blocks and cluster ids, and protobuf tags:
# CreateClusterRequest 1-6, SiteRequest 1-3, SiteAssignment 1-11, NodeReport 1-8; varints of
# 1048574 nodes (the most a block may be sized for) and of the largest VNI.
cat >"$work/coordinator.dict" <<'EOF'
"10.96.0."
"10.96.1.0/26"
"10.96.2.0/26"
"10.97.0.0/24"
"/22"
"/24"
"/26"
"/28"
"/30"
"/31"
"/32"
"/12"
"0.0.0.0/0"
"fd96::"
"/118"
"/120"
"/126"
"::/0"
"::ffff:"
"grc-live"
"grc-released"
"vc-"
"alice"
"bob"
"s1"
"s2"
"pppppppppppppppppppppppppppppp"
"/srv/images/"
"ssh-ed25519 "
"AAAAC3NzaC1lZDI1NTE5AAAAI"
"\x0a"
"\x10"
"\x12"
"\x18"
"\x1a"
"\x20"
"\x22"
"\x2a"
"\x30"
"\x32"
"\x38"
"\x3a"
"\x42"
"\x4a"
"\x52"
"\x58"
"\xfe\xff\x3f"
"\xff\xff\xff\x07"
"\xff\xff\xff\xff\x0f"
EOF

status=0
for fuzzer in "${fuzzers[@]}"; do
    rm -rf "$work/corpus"
    mkdir "$work/corpus"
    cp "$source_dir/tests/fuzz/corpus/$fuzzer/." "$work/corpus/" -R
    binary=$build_dir/tests/fuzz/${fuzzer}_fuzzer
    echo "run-fuzzer.sh: fuzzing ${fuzzer}_fuzzer for $seconds s"
    # TMPDIR: the coordinator fuzzer's store goes under $work, removed even after a crash.
    TMPDIR=$work "$binary" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
        -max_len=16384 -dict="$work/$fuzzer.dict" -artifact_prefix="$artifacts/$fuzzer-" \
        -print_final_stats=1 "$@" "$work/corpus" || {
        status=$?
        echo "run-fuzzer.sh: ${fuzzer}_fuzzer failed (exit $status); inputs in $artifacts:" >&2
        ls -l "$artifacts" >&2
        echo "run-fuzzer.sh: reproduce with $binary <input>" >&2
    }
done
if ((status != 0)); then
    exit 1
fi
