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
#include "pilot/net.hpp"
#include "vcpilot/v1/pilot.pb.h"

namespace vcpilot::pilot {

struct UserIdentity {
    std::string name;
    uid_t uid = 0;
    gid_t gid = 0;
    std::filesystem::path home;
};

// Looks a user up in this node's passwd database (getpwnam_r).
Result<UserIdentity> lookup_user(std::string_view name);

struct SetupLimits {
    std::vector<std::filesystem::path> allowed_image_roots;
    std::uint64_t max_tmp_size_mb = 64 * 1024;
    std::function<Result<UserIdentity>(std::string_view)> find_user = lookup_user;
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
};

inline constexpr std::size_t kMaxClusterNodes = 4096;

// Every node of the cluster, checked against each other and against this node's own plan:
// names, addresses and MACs unique, addresses inside this node's prefix, this node present
// with the address and MAC it was set up with, keys that parse.
Result<std::vector<ClusterNodeView>> validate_set_keys(const v1::SetKeysRequest& request,
                                                       const SetupPlan& self);

}  // namespace vcpilot::pilot
