#include "pilot/validate.hpp"

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <set>
#include <utility>

#include "common/image_mount.hpp"
#include "common/text.hpp"
#include "pilot/privileged/keys.hpp"
#include "pilot/privileged/mounts.hpp"
#include "pilot/privileged/paths.hpp"

namespace vcpilot::pilot {

namespace fs = std::filesystem;

namespace {

bool is_env_name(std::string_view name) {
    if (name.empty() || name.size() > 256 || (name[0] >= '0' && name[0] <= '9')) {
        return false;
    }
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_';
    });
}

Error field_error(std::string_view field, const std::string& what) {
    return Error{std::string(field) + ": " + what};
}

// Wraps an error of a common/ parser ("invalid CIDR block ...") with the field it came from.
template <typename T>
Result<T> in_field(std::string_view field, Result<T> parsed) {
    if (!parsed) {
        return field_error(field, parsed.error().message);
    }
    return parsed;
}

Result<std::optional<IpAddress>> optional_address(std::string_view field, const std::string& text) {
    if (text.empty()) {
        return std::optional<IpAddress>{};
    }
    auto address = in_field(field, IpAddress::parse(text));
    if (!address) {
        return address.error();
    }
    return std::optional<IpAddress>{*address};
}

Result<fs::path> absolute_clean_path(std::string_view field, const std::string& text) {
    if (text.empty() || text.size() > 4096 || text.find('\0') != std::string::npos) {
        return field_error(field, quote(text) + " is not a usable path");
    }
    const fs::path path(text);
    if (!path.is_absolute()) {
        return field_error(field, quote(text) + " must be an absolute path");
    }
    // Compared as text: path equality ignores repeated separators ("//srv" == "/srv").
    if (path.lexically_normal().native() != text || (text.size() > 1 && text.back() == '/')) {
        return field_error(field, quote(text) +
                                      " must be a normalized path (no '.', '..', '//' or "
                                      "trailing '/')");
    }
    return path;
}

// 0.0.0.0 or ::, which no peer can send to (the overlay checks in net.cpp refuse it too).
bool is_unspecified(const IpAddress& address) {
    const auto bytes = address.bytes();
    return std::all_of(bytes.begin(), bytes.end(), [](std::uint8_t byte) { return byte == 0; });
}

bool is_token(std::string_view text) {
    return std::all_of(text.begin(), text.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '.' || c == '-';
    });
}

// They end up on edge's command line and in its environment: plain tokens only.
Result<N2nPlan> check_n2n(const v1::N2nOverlay& n2n) {
    if (n2n.community().empty() || n2n.community().size() > 16 || !is_token(n2n.community())) {
        return field_error("n2n.community",
                           quote(n2n.community()) + " is not 1 to 16 of [A-Za-z0-9_.-]");
    }
    if (n2n.key().size() < 16 || n2n.key().size() > 64 || !is_token(n2n.key())) {
        return field_error("n2n.key", "not 16 to 64 of [A-Za-z0-9_.-]");
    }
    auto supernode = parse_ipv4_endpoint(n2n.supernode());
    if (!supernode || is_unspecified(supernode->address)) {
        return field_error("n2n.supernode",
                           quote(n2n.supernode()) + " is not an IPv4 address and port");
    }
    if (n2n.mtu() != 0 && (n2n.mtu() < 576 || n2n.mtu() > 1400)) {
        return field_error("n2n.mtu", std::to_string(n2n.mtu()) + " is not in 576..1400");
    }
    return N2nPlan{n2n.community(), n2n.key(), supernode->address, supernode->port,
                   n2n.mtu() == 0 ? 1400U : n2n.mtu()};
}

}  // namespace

Result<UserIdentity> lookup_user(std::string_view name) {
    if (name.empty() || name.size() > 64) {
        return field_error("user", quote(name) + " is not a user name");
    }
    const std::string copy(name);
    long size = ::sysconf(_SC_GETPW_R_SIZE_MAX);
    std::vector<char> buffer(static_cast<std::size_t>(size > 0 ? size : 16384));
    passwd entry{};
    passwd* found = nullptr;
    const int error = ::getpwnam_r(copy.c_str(), &entry, buffer.data(), buffer.size(), &found);
    if (error != 0 || found == nullptr) {
        return field_error("user", "no user " + quote(name) + " on this node");
    }
    return UserIdentity{copy, entry.pw_uid, entry.pw_gid, entry.pw_dir};
}

Result<SetupPlan> validate_setup(const v1::SetupRequest& request, const SetupLimits& limits) {
    if (auto ok = check_job_id("cluster_id", request.cluster_id()); !ok) {
        return ok.error();
    }
    if (auto ok = check_host_label("node_name", request.node_name()); !ok) {
        return ok.error();
    }
    auto address = in_field("address", InterfaceAddress::parse(request.address()));
    if (!address) {
        return address.error();
    }
    if (!address->address().is_v4()) {
        return field_error("address", "only IPv4 job networks are supported for now");
    }
    if (address->prefix() > 30) {
        return field_error(
            "address",
            quote(request.address()) + ": the prefix leaves no room for a cluster (at most /30)");
    }
    const Cidr network = address->network();
    if (address->address() == network.network() || address->address() == network.last()) {
        return field_error("address", quote(request.address()) +
                                          " is the network or broadcast address of its prefix");
    }
    MacAddress mac = mac_for_address(address->address());
    if (!request.mac().empty()) {
        auto parsed = parse_mac("mac", request.mac());
        if (!parsed) {
            return parsed.error();
        }
        mac = *parsed;
    }
    if (!request.has_vxlan()) {
        return field_error("vxlan", "missing: the overlay must be given");
    }
    const auto& vxlan = request.vxlan();
    if (vxlan.vni() == 0 || vxlan.vni() > 0xFFFFFF) {
        return field_error("vxlan.vni", std::to_string(vxlan.vni()) + " is not in 1..16777215");
    }
    if (vxlan.udp_port() > 65535) {
        return field_error("vxlan.udp_port", std::to_string(vxlan.udp_port()) + " is not a port");
    }
    auto local = optional_address("vxlan.local_address", vxlan.local_address());
    if (!local) {
        return local.error();
    }
    if (*local && !(*local)->is_v4()) {
        return field_error("vxlan.local_address", "only an IPv4 underlay is supported for now");
    }
    if (*local && is_unspecified(**local)) {
        return field_error("vxlan.local_address",
                           quote(vxlan.local_address()) + " is not an address of this node");
    }
    if (vxlan.mtu() != 0 && (vxlan.mtu() < 576 || vxlan.mtu() > 9000)) {
        return field_error("vxlan.mtu", std::to_string(vxlan.mtu()) + " is not in 576..9000");
    }
    auto user = limits.find_user(request.user());
    if (!user) {
        return user.error();
    }
    auto gateway = optional_address("gateway", request.gateway());
    if (!gateway) {
        return gateway.error();
    }
    if (*gateway && (!network.contains(**gateway) || **gateway == address->address())) {
        return field_error("gateway", quote(request.gateway()) + " is not another address in " +
                                          network.to_string());
    }
    std::optional<fs::path> image, image_mount;
    if (!request.image().empty()) {
        auto path = absolute_clean_path("image", request.image());
        if (!path) {
            return path.error();
        }
        const bool allowed =
            std::any_of(limits.allowed_image_roots.begin(), limits.allowed_image_roots.end(),
                        [&](const fs::path& root) { return is_within(*path, root); });
        if (!allowed) {
            return field_error("image", quote(request.image()) + " is outside the image roots " +
                                            "this node allows");
        }
        auto mount_point = absolute_clean_path("image_mount", request.image_mount());
        if (!mount_point) {
            return mount_point.error();
        }
        if (auto ok = check_image_mount_point(*mount_point); !ok) {
            return field_error("image_mount", ok.error().message);
        }
        image = *path;
        image_mount = *mount_point;
    } else if (!request.image_mount().empty()) {
        return field_error("image_mount", "given without an image");
    }
    std::optional<N2nPlan> n2n;
    if (request.has_n2n()) {
        auto checked = check_n2n(request.n2n());
        if (!checked) {
            return checked.error();
        }
        n2n = std::move(*checked);
    }
    const std::uint64_t tmp_mb = request.tmp_size_mb() == 0 ? 1024 : request.tmp_size_mb();
    if (tmp_mb > limits.max_tmp_size_mb) {
        return field_error("tmp_size_mb", std::to_string(tmp_mb) +
                                              " is over this node's limit of " +
                                              std::to_string(limits.max_tmp_size_mb));
    }
    return SetupPlan{request.cluster_id(),
                     request.node_name(),
                     *address,
                     mac,
                     vxlan.vni(),
                     static_cast<std::uint16_t>(vxlan.udp_port() == 0 ? 4789 : vxlan.udp_port()),
                     *local,
                     vxlan.mtu(),
                     *user,
                     image,
                     image_mount,
                     *gateway,
                     tmp_mb * 1024 * 1024,
                     !request.seccomp().disabled(),
                     std::move(n2n)};
}

namespace {

// On-link blocks, checked, in address order.
Result<std::vector<Cidr>> validate_onlink_blocks(const v1::SetKeysRequest& request,
                                                 const Cidr& own) {
    if (static_cast<std::size_t>(request.onlink_blocks_size()) > kMaxOnlinkBlocks) {
        return field_error("onlink_blocks", std::to_string(request.onlink_blocks_size()) +
                                                " blocks, over the limit of " +
                                                std::to_string(kMaxOnlinkBlocks));
    }
    std::vector<std::pair<Cidr, int>> blocks;
    for (int i = 0; i < request.onlink_blocks_size(); ++i) {
        const std::string where = "onlink_blocks[" + std::to_string(i) + "]";
        const std::string& text = request.onlink_blocks(i);
        auto block = in_field(where, Cidr::parse(text));
        if (!block) {
            return block.error();
        }
        if (block->family() != own.family()) {
            return field_error(where, quote(text) + " is not of the job network's family (" +
                                          (own.family() == IpFamily::v4 ? "IPv4" : "IPv6") + ")");
        }
        if (block->overlaps(own)) {
            return field_error(where,
                               quote(text) + " overlaps this node's own prefix " + own.to_string());
        }
        blocks.emplace_back(*block, i);
    }
    // CIDR blocks either nest or are disjoint; in address order, a block overlaps an earlier one
    // exactly when it starts at or before the furthest end seen so far.
    std::sort(blocks.begin(), blocks.end());
    std::vector<Cidr> sorted;
    sorted.reserve(blocks.size());
    std::optional<std::pair<IpAddress, int>> furthest;  // end address, index of its block
    for (const auto& [block, index] : blocks) {
        if (furthest && block.network() <= furthest->first) {
            return field_error("onlink_blocks[" + std::to_string(index) + "]",
                               quote(request.onlink_blocks(index)) + " overlaps onlink_blocks[" +
                                   std::to_string(furthest->second) + "]");
        }
        furthest = std::pair{block.last(), index};
        sorted.push_back(block);
    }
    return sorted;
}

// A host address of `block`: inside it, and for IPv4 neither its network nor its broadcast
// address.
bool is_host_address_in(const Cidr& block, const IpAddress& address) {
    if (!block.contains(address)) {
        return false;
    }
    if (block.prefix() >= address.max_prefix() - 1) {
        return true;  // /31 and /32 (and IPv6 /127, /128) have no network or broadcast address
    }
    return address != block.network() && (!address.is_v4() || address != block.last());
}

enum class KeyMode { exchange, certificates };

Result<std::vector<ClusterNodeView>> validate_nodes(const v1::SetKeysRequest& request,
                                                    const SetupPlan& self, KeyMode mode,
                                                    const std::vector<Cidr>& onlink_blocks) {
    if (request.nodes_size() == 0) {
        return field_error("nodes", "the cluster has no nodes");
    }
    if (static_cast<std::size_t>(request.nodes_size()) > kMaxClusterNodes) {
        return field_error("nodes", std::to_string(request.nodes_size()) +
                                        " nodes, over the limit of " +
                                        std::to_string(kMaxClusterNodes));
    }
    const Cidr network = self.address.network();
    std::vector<ClusterNodeView> nodes;
    std::set<std::string> names;
    std::set<IpAddress> addresses;
    std::set<MacAddress> macs;
    bool found_self = false;
    for (int i = 0; i < request.nodes_size(); ++i) {
        const auto& node = request.nodes(i);
        const std::string where = "nodes[" + std::to_string(i) + "]";
        if (auto ok = check_host_label(where + ".name", node.name()); !ok) {
            return ok.error();
        }
        auto address = in_field(where + ".address", IpAddress::parse(node.address()));
        if (!address) {
            return address.error();
        }
        const bool in_network = is_host_address_in(network, *address);
        const bool on_link =
            std::any_of(onlink_blocks.begin(), onlink_blocks.end(),
                        [&](const Cidr& block) { return is_host_address_in(block, *address); });
        if (!in_network && !on_link) {
            return field_error(where + ".address",
                               quote(node.address()) + " is not a host address in " +
                                   network.to_string() +
                                   (onlink_blocks.empty() ? "" : " nor in an on-link block"));
        }
        auto mac = parse_mac(where + ".mac", node.mac());
        if (!mac) {
            return mac.error();
        }
        auto underlay =
            in_field(where + ".underlay_address", IpAddress::parse(node.underlay_address()));
        if (!underlay) {
            return underlay.error();
        }
        // One overlay, one underlay family; and this node's own underlay is IPv4 (SETUP).
        if (!underlay->is_v4()) {
            return field_error(where + ".underlay_address",
                               "only an IPv4 underlay is supported for now");
        }
        if (is_unspecified(*underlay)) {
            return field_error(where + ".underlay_address",
                               quote(node.underlay_address()) + " is not a node address");
        }
        std::string host_key, user_key;
        if (mode == KeyMode::exchange) {
            auto host = check_public_key(where + ".host_key", node.host_key());
            if (!host) {
                return host.error();
            }
            auto user = check_public_key(where + ".user_key", node.user_key());
            if (!user) {
                return user.error();
            }
            host_key = std::move(*host);
            user_key = std::move(*user);
        } else if (!node.host_key().empty() || !node.user_key().empty()) {
            return field_error(
                where + (node.host_key().empty() ? ".user_key" : ".host_key"),
                "given together with ca_key; in certificate mode the nodes carry no keys");
        }
        if (!node.host().empty()) {
            if (auto ok = check_job_id(where + ".host", node.host()); !ok) {
                return ok.error();
            }
        }
        if (node.slots() > 4096) {
            return field_error(where + ".slots", std::to_string(node.slots()) + " is over 4096");
        }
        if (!names.insert(node.name()).second) {
            return field_error(where + ".name", quote(node.name()) + " appears twice");
        }
        if (!addresses.insert(*address).second) {
            return field_error(where + ".address", quote(node.address()) + " appears twice");
        }
        if (!macs.insert(*mac).second) {
            return field_error(where + ".mac", quote(node.mac()) + " appears twice");
        }
        if (node.name() == self.node_name) {
            if (*address != self.address.address() || *mac != self.mac) {
                return field_error(where, "this node, " + quote(node.name()) +
                                              ", differs from its SETUP (address " +
                                              self.address.address().to_string() + ", mac " +
                                              to_string(self.mac) + ")");
            }
            found_self = true;
        } else if (*address == self.address.address()) {
            return field_error(where + ".address",
                               quote(node.address()) + " is this node's address");
        }
        nodes.push_back({node.name(), *address, *mac, *underlay, std::move(host_key),
                         std::move(user_key), node.slots() == 0 ? 1 : node.slots(), node.host()});
    }
    if (!found_self) {
        return field_error("nodes", "this node, " + quote(self.node_name) + ", is not in the list");
    }
    return nodes;
}

Result<CertificateTrust> validate_certificates(const v1::SetKeysRequest& request,
                                               const SetupPlan& self, const OwnKeys& own) {
    auto ca_key = check_public_key("ca_key", request.ca_key());
    if (!ca_key) {
        return ca_key.error();
    }
    const std::int64_t now = std::time(nullptr);
    auto host = check_certificate("host_certificate", request.host_certificate(),
                                  {.role = CertificateRole::host,
                                   .certified_key = own.host_key,
                                   .ca_key = *ca_key,
                                   .principal = self.node_name,
                                   .now_unix = now});
    if (!host) {
        return host.error();
    }
    auto user = check_certificate("user_certificate", request.user_certificate(),
                                  {.role = CertificateRole::user,
                                   .certified_key = own.user_key,
                                   .ca_key = *ca_key,
                                   .principal = self.user.name,
                                   .now_unix = now});
    if (!user) {
        return user.error();
    }
    return CertificateTrust{*ca_key, *host, *user};
}

}  // namespace

Result<ClusterPlan> validate_set_keys(const v1::SetKeysRequest& request, const SetupPlan& self,
                                      const OwnKeys& own) {
    auto onlink_blocks = validate_onlink_blocks(request, self.address.network());
    if (!onlink_blocks) {
        return onlink_blocks.error();
    }
    const KeyMode mode = request.ca_key().empty() ? KeyMode::exchange : KeyMode::certificates;
    if (mode == KeyMode::exchange) {
        if (!request.host_certificate().empty()) {
            return field_error("host_certificate", "given without ca_key");
        }
        if (!request.user_certificate().empty()) {
            return field_error("user_certificate", "given without ca_key");
        }
    }
    auto nodes = validate_nodes(request, self, mode, *onlink_blocks);
    if (!nodes) {
        return nodes.error();
    }
    ClusterPlan plan{std::move(*nodes), std::nullopt, std::move(*onlink_blocks)};
    if (mode == KeyMode::certificates) {
        auto trust = validate_certificates(request, self, own);
        if (!trust) {
            return trust.error();
        }
        plan.certificates = std::move(*trust);
    }
    return plan;
}

Result<std::vector<ClusterNodeView>> validate_set_keys(const v1::SetKeysRequest& request,
                                                       const SetupPlan& self) {
    return validate_nodes(request, self, KeyMode::exchange, {});
}

Status check_job_command(const std::vector<std::string>& argv,
                         const std::map<std::string, std::string>& env) {
    if (argv.empty() || argv[0].empty()) {
        return Error{"argv: no command given"};
    }
    if (argv.size() > 4096) {
        return Error{"argv: more than 4096 arguments"};
    }
    for (std::size_t i = 0; i < argv.size(); ++i) {
        if (argv[i].find('\0') != std::string::npos) {
            return Error{"argv[" + std::to_string(i) + "]: contains a NUL byte"};
        }
    }
    for (const auto& [name, value] : env) {
        if (!is_env_name(name)) {
            return Error{"env: " + quote(name) + " is not a variable name"};
        }
        if (value.find('\0') != std::string::npos) {
            return Error{"env." + name + ": contains a NUL byte"};
        }
    }
    return {};
}

}  // namespace vcpilot::pilot
