#!/usr/bin/env bash
# Builds n2n's edge from Debian 12's own source package of the installed n2n, with vcpilot's
# fixes (scripts/n2n/*.patch), and installs it where vc-pilot looks first:
# /usr/local/lib/vcpilot/n2n/edge (argument 1 to put it elsewhere). Idempotent: nothing is done
# when that edge was built from the same patches.
#
# Why: Debian's edge (n2n 1.3.1) gives a peer the socket of another when two peer-to-peer
# registrations are pending at once and their acknowledgements come back in the other order
# (edge-peer-ack.patch says how); frames for one virtual node then go to another until the
# registrations expire five minutes later. In a cluster that is an ssh or MPI connection that
# times out, now and then. The supernode is not affected and stays Debian's.
#
# The source comes from the same Debian archive as the packages, through apt with a private
# deb-src list: apt checks it against the archive's signed index, as for any package.
set -euo pipefail

dest=${1:-/usr/local/lib/vcpilot/n2n/edge}
here=$(cd "$(dirname "$0")" && pwd)
say() { echo "build-n2n-edge.sh: $*"; }
die() { echo "build-n2n-edge.sh: $*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "must run as root (it installs $dest)"
version=$(dpkg-query -W -f='${Version}' n2n 2>/dev/null) || die "the n2n package is not installed (scripts/install-deps.sh installs it)"
patches=("$here"/n2n/*.patch)
[[ -f ${patches[0]} ]] || die "no patches in $here/n2n"
stamp="n2n $version; $(cat "${patches[@]}" | sha256sum | cut -d' ' -f1)"
if [[ -x $dest && $(cat "$dest.built-from" 2>/dev/null) == "$stamp" ]]; then
    say "$dest is up to date (n2n $version)"
    exit 0
fi

# The archive the system's packages come from (deb822 or one-line sources), else Debian's.
mirror=$(sed -nE 's|^URIs:[[:space:]]*(https?://[^[:space:]]*/debian)/?$|\1|p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
[[ -n $mirror ]] || mirror=$(sed -nE 's|^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?(https?://[^[:space:]]*/debian)/?[[:space:]]+bookworm[[:space:]].*|\2|p' /etc/apt/sources.list 2>/dev/null | head -1)
[[ -n $mirror ]] || mirror=http://deb.debian.org/debian

work=$(mktemp -d /tmp/vcpilot-n2n.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm main" >"$work/sources.list"
apt_private=(-q -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/nonexistent
    -o "Dir::State::Lists=$work/lists" -o APT::Sandbox::User=root)
say "fetching the source of n2n $version from $mirror"
apt-get "${apt_private[@]}" update >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; die "apt-get update (deb-src) failed"; }
(cd "$work" && apt-get "${apt_private[@]}" source --download-only "n2n=$version") >>"$work/apt.log" 2>&1 ||
    { cat "$work/apt.log" >&2; die "cannot fetch the source of n2n $version"; }
dpkg-source --no-check -x "$work"/n2n_*.dsc "$work/src" >>"$work/apt.log" 2>&1 ||
    { cat "$work/apt.log" >&2; die "cannot unpack the source of n2n $version"; }
for p in "${patches[@]}"; do
    patch -d "$work/src" -p1 --forward --quiet <"$p" || die "$(basename "$p") does not apply to n2n $version"
done
make -C "$work/src" edge >"$work/make.log" 2>&1 || { cat "$work/make.log" >&2; die "building edge failed"; }
install -D -m 755 "$work/src/edge" "$dest"
echo "$stamp" >"$dest.built-from"
names=("${patches[@]##*/}")
say "installed $dest (n2n $version with ${names[*]})"
