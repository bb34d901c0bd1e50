#!/usr/bin/env bash
# Installs every Debian 12 package vcpilot builds, tests and demos with, and builds n2n's edge
# from Debian's source with vcpilot's fix (build-n2n-edge.sh). Idempotent.
# Only Debian's own archive is used; nothing is downloaded from anywhere else.
#
# Daemons that these packages would normally start on the host (sshd, munged, slurmd,
# slurmctld, tgtd) are kept from starting with a temporary policy-rc.d: vcpilot starts its
# own copies inside namespaces, and the host's network must stay untouched.
set -euo pipefail

if [[ $EUID -ne 0 ]]; then
    echo "install-deps.sh: must run as root (it installs Debian packages)" >&2
    exit 1
fi
if ! grep -q '^VERSION_CODENAME=bookworm' /etc/os-release 2>/dev/null; then
    echo "install-deps.sh: warning: written for Debian 12 (bookworm); continuing anyway" >&2
fi

packages=(
    # toolchain
    build-essential g++ cmake pkg-config git clang-format clang-tidy clang libclang-rt-14-dev
    # libraries we build against
    libnl-3-dev libnl-route-3-dev libseccomp-dev libboost1.81-dev libssh-dev
    libgtest-dev libgmock-dev googletest libbenchmark-dev
    libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
    libsqlitecpp-dev libsqlite3-dev libtomlplusplus-dev libcli11-dev libspdlog-dev libfmt-dev
    libmunge-dev libssl-dev libnetfilter-queue-dev libmnl-dev
    # Slurm and MUNGE
    slurm-wlm slurmctld slurmd slurm-client libslurm-dev munge
    # what runs inside the virtual clusters and the testbed
    openssh-server openssh-client openmpi-bin libopenmpi-dev netpipe-openmpi
    mpich libmpich-dev netpipe-mpich2 pdsh clustershell
    parallel iperf3 iproute2 iptables iputils-ping tcpdump procps util-linux
    n2n net-tools tgt libiscsi-bin qemu-system-x86 qemu-block-extra
    # scripts and figures; openssl makes the test PKI (scripts/make-test-ca.sh)
    jq gnuplot-nox openssl python3
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

# n2n's edge with vcpilot's fix, built from Debian's source of the installed n2n (idempotent).
build_edge() { "$(dirname "$0")/build-n2n-edge.sh"; }

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps.sh: all ${#packages[@]} packages already installed"
    build_edge
    exit 0
fi

echo "install-deps.sh: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive

policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# written by vcpilot install-deps.sh while installing\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    made_policy=1
fi
cleanup() { [[ $made_policy -eq 1 ]] && rm -f "$policy"; true; }
trap cleanup EXIT

apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
build_edge
echo "install-deps.sh: done"
