#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test. Extra arguments go to ctest,
# e.g. `./scripts/test.sh -L unit` or `./scripts/test.sh -R testbed.wan_rtt`.
source "$(dirname "$0")/common.sh"
require_root
install_deps
build
step "Checking formatting"
cmake --build "$VCPILOT_BUILD_DIR" --target format-check
step "Running tests"
ctest --test-dir "$VCPILOT_BUILD_DIR" --output-on-failure "$@"
