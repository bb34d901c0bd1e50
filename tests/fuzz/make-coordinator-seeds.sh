#!/usr/bin/env bash
# Writes the seed corpus of coordinator_fuzzer (tests/fuzz/corpus/coordinator/): one selector byte
# (0 CreateClusterRequest with policy selector/3 % 4, 1 SiteAssignment, 2 NodeReport), then the
# message encoded by protoc from the text below. The fixture these seeds aim at is described in
# coordinator_fuzzer.cpp (pools 10.96.0.0/22 + 10.97.0.0/24 and fd96::/118, clusters "grc-live"
# and "grc-released"). Run it after changing a seed; it rewrites every file.
set -euo pipefail

source_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=$source_dir/tests/fuzz/corpus/coordinator
mkdir -p "$out"

key1='ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBXsNNp/Lr+GhBf9NzPV+tDYV5Z14yPMvFP/QI9rvGsh'
key2='ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJFAI2f5AYokVpTqFlO55dt4mtu/1zbmf4SfrtvGeYTK'

# seed NAME SELECTOR MESSAGE-TYPE TEXT
seed() {
    local name=$1 selector=$2 type=$3 text=$4
    {
        printf "\\x$(printf %02x "$selector")"
        protoc -I "$source_dir/proto" --encode="vcpilot.v1.$type" vcpilot/v1/coordinator.proto \
            <<<"$text"
    } >"$out/$name"
}

# CreateClusterRequest
seed create-minimal 0 CreateClusterRequest 'sites { site: "s1" nodes: 1 }'
seed create-full 0 CreateClusterRequest '
sites { site: "s1" nodes: 3 }
sites { site: "s2" nodes: 200 }
sites { site: "s3" nodes: 2 block: "10.96.3.0/30" }
key_mode: KEY_MODE_EXCHANGE name_prefix: "hpc" slots: 8
image: "/srv/images/base.sqsh" image_mount: "/opt/base"'
# Node names at the 63 characters a hostname may have: "<30>-<30>-1".
seed create-name-63 0 CreateClusterRequest '
sites { site: "ssssssssssssssssssssssssssssss" nodes: 1 }
name_prefix: "pppppppppppppppppppppppppppppp"'
# The first pool has room for two more /24s; the third comes from the second pool.
seed create-second-pool 0 CreateClusterRequest '
sites { site: "s1" nodes: 254 } sites { site: "s2" nodes: 254 } sites { site: "s3" nodes: 254 }'
# A /22 does not fit anywhere.
seed create-too-big 0 CreateClusterRequest 'sites { site: "s1" nodes: 1000 }'
# Overlaps the fixture's GRC cluster 10.96.1.0/26.
seed create-block-overlaps 0 CreateClusterRequest 'sites { site: "s1" nodes: 10 block: "10.96.1.0/28" }'
seed create-duplicate-site 0 CreateClusterRequest 'sites { site: "s1" nodes: 1 } sites { site: "s1" nodes: 2 }'
seed create-no-vni 3 CreateClusterRequest 'sites { site: "s1" nodes: 1 }'
seed create-v6 6 CreateClusterRequest '
sites { site: "s1" nodes: 5 } sites { site: "s2" nodes: 100 block: "fd96::100/120" }'

# SiteAssignment
seed assign-new 1 SiteAssignment '
cluster_id: "vc-0000abcd" owner: "bob" key_mode: KEY_MODE_EXCHANGE vni: 6000 name_prefix: "g"
slots: 2 site: "s1" block: "10.96.3.0/28" nodes: 5'
seed assign-held 1 SiteAssignment '
cluster_id: "grc-live" owner: "bob" vni: 5000 site: "s1" block: "10.96.1.0/26" nodes: 40'
seed assign-released 1 SiteAssignment '
cluster_id: "grc-released" owner: "bob" vni: 5001 site: "s1" block: "10.96.2.0/26" nodes: 40'
seed assign-vni-taken 1 SiteAssignment '
cluster_id: "vc-0000abce" owner: "bob" vni: 101 site: "s1" block: "192.0.2.0/24" nodes: 254'

# NodeReport
seed report-new 2 NodeReport 'cluster_id: "grc-live" ordinal: 1 host: "n001" state: PILOT_STATE_NEW'
seed report-keyed 2 NodeReport "
cluster_id: \"grc-live\" ordinal: 2 host: \"n002\" underlay_address: \"192.0.2.7\"
host_key: \"$key1\" user_key: \"$key2\" state: PILOT_STATE_KEYED"
seed report-failed 2 NodeReport '
cluster_id: "grc-live" ordinal: 40 host: "n040" underlay_address: "2001:db8::7"
state: PILOT_STATE_FAILED reason: "setup: the image is missing"'
