#!/usr/bin/env bash
# make-test-ca.sh: a small X.509 PKI for the mutual TLS between vc-grcd, vc-crmd and vcctl in
# tests and in the testbed. Not for production: the CA key lies next to the certificates.
#
#   ca.pem, ca.key             self-signed CA "vcpilot test CA" (ECDSA P-256, 10 years)
#   grc.pem, grc.key           the GRC's server certificate: CN "grc", subjectAltName
#                              IP:<grc-address>, DNS:<grc-name>; serverAuth and clientAuth
#   crm-SITE.pem, crm-SITE.key a site's CRM: CN "crm:SITE", clientAuth
#   user-USER.pem, .key        a user: CN "USER", clientAuth; the key belongs to USER if
#                              that account exists
#
# Keys are mode 0600, certificates 0644. See --help.
set -euo pipefail

readonly PROG=make-test-ca.sh
readonly CA_DAYS=3650
readonly LEAF_DAYS=825

usage() {
    cat <<EOF
Usage: $PROG --out DIR --grc-address IP [--grc-name NAME] [--site SITE]... [--user USER]... [--force]

Makes a test PKI for mutual TLS between vc-grcd, vc-crmd and vcctl in DIR (created 0755):
  ca.pem ca.key               self-signed CA, CN "vcpilot test CA", ECDSA P-256, $CA_DAYS days
  grc.pem grc.key             GRC server certificate, CN "grc",
                              subjectAltName IP:<grc-address>, DNS:<grc-name>,
                              extendedKeyUsage serverAuth, clientAuth
  crm-SITE.pem crm-SITE.key   per --site: CN "crm:SITE", clientAuth
  user-USER.pem user-USER.key per --user: CN "USER", clientAuth; the key is chowned to
                              USER when that account exists
Keys are 0600, certificates 0644; leaf certificates are valid for $LEAF_DAYS days.

Options:
  --out DIR           where to write (required)
  --grc-address IP    the GRC's IP address, put in its certificate (required)
  --grc-name NAME     the GRC's DNS name in its certificate (default: grc)
  --site SITE         a site to make a CRM certificate for (repeatable)
  --user USER         a user to make a client certificate for (repeatable)
  --force             replace an existing PKI in DIR (every file this script makes there)
  -h, --help          this text
SITE and USER are lowercase labels: [a-z0-9-], 1 to 32 characters, no '-' at either end.
Without --force an existing DIR/ca.pem is never overwritten.
EOF
}

die() { echo "$PROG: $*" >&2; exit 1; }
usage_error() { echo "$PROG: $*" >&2; echo "Try '$PROG --help'." >&2; exit 2; }

valid_label() { [[ ${#1} -le 32 && $1 =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ ]]; }

valid_ipv4() {
    local IFS=. octets o
    [[ $1 =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || return 1
    read -r -a octets <<<"$1"
    for o in "${octets[@]}"; do
        ((10#$o <= 255)) || return 1
    done
}
valid_ipv6() { [[ $1 == *:* && $1 =~ ^[0-9A-Fa-f:.]+$ && ${#1} -le 45 ]]; }

valid_dns_name() {
    [[ ${#1} -le 253 && $1 =~ ^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$ ]]
}

out="" grc_address="" grc_name=grc force=0
sites=() users=()
need_value() {  # OPTION VALUE
    [[ -n $2 && $2 != --* ]] || usage_error "$1 needs a value"
}
while [[ $# -gt 0 ]]; do
    case $1 in
        --out) need_value "$1" "${2:-}"; out=$2; shift 2 ;;
        --grc-address) need_value "$1" "${2:-}"; grc_address=$2; shift 2 ;;
        --grc-name) need_value "$1" "${2:-}"; grc_name=$2; shift 2 ;;
        --site) need_value "$1" "${2:-}"; sites+=("$2"); shift 2 ;;
        --user) need_value "$1" "${2:-}"; users+=("$2"); shift 2 ;;
        --force) force=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "unknown option '$1'" ;;
    esac
done

[[ -n $out ]] || usage_error "missing --out DIR"
[[ -n $grc_address ]] || usage_error "missing --grc-address IP"
valid_ipv4 "$grc_address" || valid_ipv6 "$grc_address" ||
    usage_error "--grc-address must be an IPv4 or IPv6 address, not '$grc_address'"
valid_dns_name "$grc_name" || usage_error "--grc-name must be a DNS name, not '$grc_name'"
check_names() {  # WHAT NAMES...
    local what=$1 name seen=" "; shift
    for name in "$@"; do
        valid_label "$name" ||
            usage_error "--$what '$name': must be a lowercase label of [a-z0-9-], 1 to 32 characters, no '-' at either end"
        [[ $seen != *" $name "* ]] || usage_error "--$what '$name' is given twice"
        seen+="$name "
    done
}
check_names site ${sites[@]+"${sites[@]}"}
check_names user ${users[@]+"${users[@]}"}

command -v openssl >/dev/null || die "'openssl' is not installed: run scripts/install-deps.sh"

if [[ ! -d $out ]]; then
    [[ ! -e $out ]] || die "$out exists and is not a directory"
    mkdir -p -- "$out"
    chmod 0755 -- "$out"
fi
if [[ -e $out/ca.pem && $force == 0 ]]; then
    die "$out/ca.pem exists: not overwriting the PKI there (use --force to replace it)"
fi

# Everything is made in a temporary directory inside DIR and moved into place at the end, so
# a failure leaves DIR as it was.
umask 077
tmp=$(mktemp -d "$out/.make-test-ca.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT

# A private configuration, so that the host's openssl.cnf adds nothing to the certificates.
cat >"$tmp/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF

openssl_quiet() {  # ARGS...: openssl, its chatter shown only when it fails
    local log
    if ! log=$(openssl "$@" 2>&1); then
        echo "$log" >&2
        die "openssl $1 failed"
    fi
}

new_key() { openssl_quiet genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/$1.key"; }

# NAME CN EXTENDED-KEY-USAGE [SUBJECT-ALT-NAME]: NAME.key and NAME.pem signed by the CA.
new_leaf() {
    local name=$1 cn=$2 eku=$3 san=${4:-}
    new_key "$name"
    {
        echo "[leaf]"
        echo "basicConstraints = critical, CA:FALSE"
        echo "keyUsage = critical, digitalSignature"
        echo "extendedKeyUsage = $eku"
        echo "subjectKeyIdentifier = hash"
        echo "authorityKeyIdentifier = keyid"
        [[ -z $san ]] || echo "subjectAltName = $san"
    } >"$tmp/$name.ext"
    openssl_quiet req -new -config "$tmp/openssl.cnf" -key "$tmp/$name.key" -subj "/CN=$cn" \
        -out "$tmp/$name.csr"
    openssl_quiet x509 -req -in "$tmp/$name.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days "$LEAF_DAYS" -sha256 \
        -extfile "$tmp/$name.ext" -extensions leaf -out "$tmp/$name.pem"
    rm -f -- "$tmp/$name.csr" "$tmp/$name.ext"
}

new_key ca
openssl_quiet req -x509 -new -config "$tmp/openssl.cnf" -extensions ca -key "$tmp/ca.key" \
    -subj "/CN=vcpilot test CA" -set_serial "0x$(openssl rand -hex 16)" -days "$CA_DAYS" \
    -sha256 -out "$tmp/ca.pem"

new_leaf grc grc "serverAuth, clientAuth" "IP:$grc_address, DNS:$grc_name"
for site in ${sites[@]+"${sites[@]}"}; do
    new_leaf "crm-$site" "crm:$site" clientAuth
done
for user in ${users[@]+"${users[@]}"}; do
    new_leaf "user-$user" "$user" clientAuth
    if id -u "$user" >/dev/null 2>&1; then
        if [[ $EUID -eq 0 ]]; then
            chown -- "$user:" "$tmp/user-$user.key"
        elif [[ $(id -u "$user") != "$EUID" ]]; then
            echo "$PROG: warning: not root, so user-$user.key is not given to $user" >&2
        fi
    fi
done
rm -f -- "$tmp/openssl.cnf"
chmod 0600 "$tmp"/*.key
chmod 0644 "$tmp"/*.pem

# With --force, what an earlier run made goes first (also sites and users not listed now).
if [[ $force == 1 ]]; then
    rm -f -- "$out"/{ca,grc}.{pem,key} "$out"/crm-*.{pem,key} "$out"/user-*.{pem,key}
fi
# The CA certificate last: its presence marks a complete PKI.
for file in "$tmp"/*; do
    [[ $file == "$tmp/ca.pem" ]] || mv -f -- "$file" "$out/"
done
mv -f -- "$tmp/ca.pem" "$out/ca.pem"
echo "$PROG: made a test PKI in $out: CA, grc (IP:$grc_address, DNS:$grc_name)${sites[*]:+, CRMs of ${sites[*]}}${users[*]:+, users ${users[*]}}" >&2
