# Shared by the scripts in this folder: where things are, and the one way we build.
set -euo pipefail
readonly VCPILOT_SOURCE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export VCPILOT_BUILD_DIR=${VCPILOT_BUILD_DIR:-$VCPILOT_SOURCE_DIR/build}

step() { printf '\n==> %s\n' "$*" >&2; }

require_root() {
    [[ $EUID -eq 0 ]] || { echo "$(basename "$0"): run as root (it installs packages and builds network namespaces)" >&2; exit 1; }
}

# Installs what is missing (fast when everything is there). VCPILOT_SKIP_DEPS=1 skips it.
install_deps() {
    [[ ${VCPILOT_SKIP_DEPS:-0} == 1 ]] && return 0
    step "Checking Debian packages"
    "$VCPILOT_SOURCE_DIR/scripts/install-deps.sh"
}

build() {
    step "Building in $VCPILOT_BUILD_DIR"
    cmake -S "$VCPILOT_SOURCE_DIR" -B "$VCPILOT_BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$VCPILOT_BUILD_DIR" -j "$(nproc)"
}
