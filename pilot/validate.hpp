// Turns SETUP and SET_KEYS requests from the network into checked plans. Nothing is built from
// a request until all of it has passed: a bad field gets an error that names it, and the
// pilot's state does not change.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/ip.hpp"
#include "common/result.hpp"
#include "pilot/privileged/net.hpp"
#include "pilot/privileged/spawn.hpp"
#include "vcpilot/v1/pilot.pb.h"

namespace vcpilot::pilot {

// Looks a user up in this node's passwd database (getpwnam_r).
Result<UserIdentity> lookup_user(std::string_view name);

struct SetupLimits {
    std::vector<std::filesystem::path> allowed_image_roots;
    std::uint64_t max_tmp_size_mb = std::uint64_t{64} * 1024;
    std::function<Result<UserIdentity>(std::string_view)> find_user = lookup_user;
};

struct N2nPlan {
    std::string community;
    std::string key;
    IpAddress supernode;
    std::uint16_t supernode_port;
    std::uint32_t mtu;
};

struct SetupPlan {
    std::string cluster_id;
    std::string node_name;
    InterfaceAddress address;
    MacAddress mac;
    std::uint32_t vni;
    std::uint16_t udp_port;
    std::optional<IpAddress> local_underlay;  // empty: the node's own address
    std::uint32_t mtu;                        // 0: underlay MTU - 50
    UserIdentity user;
    std::optional<std::filesystem::path> image;
    std::optional<std::filesystem::path> image_mount;
    std::optional<IpAddress> gateway;
    std::uint64_t tmp_size_bytes;
    bool seccomp;
    std::optional<N2nPlan> n2n;  // none: VXLAN
};

Result<SetupPlan> validate_setup(const v1::SetupRequest& request, const SetupLimits& limits);

struct ClusterNodeView {
    std::string name;
    IpAddress address;
    MacAddress mac;
    IpAddress underlay;
    std::string host_key;
    std::string user_key;
    std::uint32_t slots;
    std::string host;  // the Slurm node its pilot runs on; empty: not known
};

inline constexpr std::size_t kMaxClusterNodes = 4096;
// Blocks of other sites routed on-link; one per site, so this is generous.
inline constexpr std::size_t kMaxOnlinkBlocks = 4096;

// This node's own public key lines (GET_KEYS), which its certificates must certify.
struct OwnKeys {
    std::string host_key;
    std::string user_key;
};

// Certificate mode: every node trusts one cluster CA, for hosts and for users, and carries its
// own two certificates; nobody holds any other node's key.
struct CertificateTrust {
    std::string ca_key;            // "ssh-ed25519 <base64>"
    std::string host_certificate;  // "ssh-ed25519-cert-v01@openssh.com <base64>"
    std::string user_certificate;
};

struct ClusterPlan {
    // In certificate mode every node's host_key and user_key are empty.
    std::vector<ClusterNodeView> nodes;
    std::optional<CertificateTrust> certificates;  // none: exchange mode
    std::vector<Cidr> onlink_blocks;
};

// A whole SET_KEYS request, checked against itself and against this node's plan and keys:
// - onlink_blocks: at most kMaxOnlinkBlocks CIDRs of the job's address family, overlapping
//   neither this node's prefix nor each other;
// - nodes: names, addresses and MACs unique, each address a host address of this node's prefix
//   or of an on-link block, this node present with the address and MAC it was set up with;
// - keys: with ca_key, certificate mode: the nodes carry no keys, and the two certificates
//   certify `own`'s keys, were signed by the CA and are valid for this node's name and the job
//   user; without it, exchange mode: every node carries a host and a user key that parse.
Result<ClusterPlan> validate_set_keys(const v1::SetKeysRequest& request, const SetupPlan& self,
                                      const OwnKeys& own);

// The node list of an exchange-mode request whose nodes all live in this node's prefix, as
// SET_KEYS was before certificates and on-link blocks: ca_key, the certificates and
// onlink_blocks are not looked at. Kept for the fuzzer, which checks exactly that contract.
Result<std::vector<ClusterNodeView>> validate_set_keys(const v1::SetKeysRequest& request,
                                                       const SetupPlan& self);

// Checks a RUN request's command and environment; errors name the field.
Status check_job_command(const std::vector<std::string>& argv,
                         const std::map<std::string, std::string>& env);

}  // namespace vcpilot::pilot
