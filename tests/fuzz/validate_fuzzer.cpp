// libFuzzer target for the checks every SETUP and SET_KEYS request from the network passes
// (pilot/validate.cpp). Whatever the bytes, validation returns a plan or one clean error line
// that names the field, never crashes, gives the same answer twice, and a plan it returns is one
// the rest of the pilot builds without refusing it half way (check_overlay_spec,
// check_overlay_peers).
//
// Input: one selector byte, then a serialized message. An even first byte means a SetupRequest;
// an odd one a SetKeysRequest, checked against the plan of a fixed good SETUP (node "vn1",
// 10.77.0.1/24). A broken invariant is printed and abort()s, which libFuzzer reports as a crash
// together with the input that caused it.
//
// Byte mutations alone rarely get past protobuf's nested length prefixes (a byte inserted into a
// node changes the length of the node and of the message around it), so half of the mutations
// parse the input, change one field through reflection and serialize it again
// (proto_mutator.hpp).
//
// The seeds are in corpus/validate/. To read one:
//   tail -c +2 FILE | protoc -I proto --decode=vcpilot.v1.SetKeysRequest vcpilot/v1/pilot.proto

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <google/protobuf/message.h>
#include <google/protobuf/stubs/logging.h>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/text.hpp"
#include "pilot/privileged/keys.hpp"
#include "pilot/privileged/net.hpp"
#include "pilot/validate.hpp"
#include "proto_mutator.hpp"

namespace vcpilot::pilot {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kMaxErrorLength = 4096;
constexpr std::uint64_t kMiB = 1024 * 1024;
constexpr std::uint64_t kMaxTmpSizeMb = 64 * 1024;
constexpr std::string_view kImageRoot = "/srv/images";
constexpr std::string_view kUser = "alice";
// What the pilot fills in when SETUP leaves the underlay or the MTU to the node.
constexpr std::string_view kNodeUnderlay = "192.0.2.1";
constexpr std::uint32_t kNodeOverlayMtu = 1450;

[[noreturn]] void broken(std::string_view invariant, std::string_view detail) {
    const std::string shown = single_line(detail);
    std::fprintf(stderr, "validate_fuzzer: invariant broken: %.*s\n  detail: %s\n",
                 static_cast<int>(invariant.size()), invariant.data(), shown.c_str());
    std::abort();
}

void require(bool holds, std::string_view invariant, std::string_view detail = {}) {
    if (!holds) {
        broken(invariant, detail);
    }
}

// A passwd database with one user: the fuzzer must not depend on, or hammer, the node's.
const SetupLimits& fake_limits() {
    static const SetupLimits limits = [] {
        SetupLimits fake;
        fake.allowed_image_roots = {fs::path(kImageRoot)};
        fake.max_tmp_size_mb = kMaxTmpSizeMb;
        fake.find_user = [](std::string_view name) -> Result<UserIdentity> {
            if (name == kUser) {
                return UserIdentity{std::string(kUser), 1000, 1000, "/home/alice"};
            }
            return Error{"user: no user " + quote(name) + " on this node"};
        };
        return fake;
    }();
    return limits;
}

const SetupPlan& self_plan() {
    static const SetupPlan plan = [] {
        v1::SetupRequest request;
        request.set_cluster_id("c1");
        request.set_node_name("vn1");
        request.set_address("10.77.0.1/24");
        request.mutable_vxlan()->set_vni(100);
        request.set_user(std::string(kUser));
        auto validated = validate_setup(request, fake_limits());
        if (!validated) {
            broken("the fixed good SETUP validates", validated.error().message);
        }
        return *std::move(validated);
    }();
    return plan;
}

IpAddress address_of(std::string_view text) {
    auto address = IpAddress::parse(text);
    if (!address) {
        broken("a constant address parses", address.error().message);
    }
    return *address;
}

// ---- errors ----

bool is_control(char c) {
    const auto byte = static_cast<unsigned char>(c);
    return byte < 0x20 || byte == 0x7f;
}

// What the user sees: one line, not empty, not a flood.
void check_error_line(const Error& error) {
    const std::string& message = error.message;
    require(!message.empty(), "an error message is not empty");
    require(message.size() <= kMaxErrorLength, "an error message is at most 4 KiB",
            message.substr(0, 200));
    require(std::none_of(message.begin(), message.end(), is_control),
            "an error message is one line without control characters", message);
}

bool starts_with_field(std::string_view message, std::string_view field) {
    return message.starts_with(field) && message.substr(field.size()).starts_with(": ");
}

void check_setup_error(const Error& error) {
    check_error_line(error);
    static constexpr std::string_view kFields[] = {
        "cluster_id",    "node_name",   "address",        "mac",
        "vxlan",         "vxlan.vni",   "vxlan.udp_port", "vxlan.local_address",
        "vxlan.mtu",     "user",        "gateway",        "image",
        "image_mount",   "tmp_size_mb", "n2n.community",  "n2n.key",
        "n2n.supernode", "n2n.mtu"};
    require(std::any_of(
                std::begin(kFields), std::end(kFields),
                [&](std::string_view field) { return starts_with_field(error.message, field); }),
            "a SETUP error starts with the field it is about", error.message);
}

// "nodes: ...", "nodes[i]: ..." or "nodes[i].<field>: ..." with i an index of the request.
bool names_cluster_node_field(std::string_view message, int node_count) {
    if (starts_with_field(message, "nodes")) {
        return true;
    }
    constexpr std::string_view kOpen = "nodes[";
    if (!message.starts_with(kOpen)) {
        return false;
    }
    message.remove_prefix(kOpen.size());
    int index = -1;
    const auto [end, parsed] =
        std::from_chars(message.data(), message.data() + message.size(), index);
    if (parsed != std::errc{} || index < 0 || index >= node_count || end == message.data() ||
        (*message.data() == '0' && end - message.data() > 1)) {
        return false;
    }
    message.remove_prefix(static_cast<std::size_t>(end - message.data()));
    if (!message.starts_with("]")) {
        return false;
    }
    message.remove_prefix(1);
    if (message.starts_with(": ")) {
        return true;
    }
    static constexpr std::string_view kFields[] = {
        ".name",     ".address",  ".mac",   ".underlay_address",
        ".host_key", ".user_key", ".slots", ".host"};
    return std::any_of(std::begin(kFields), std::end(kFields),
                       [&](std::string_view field) { return starts_with_field(message, field); });
}

void check_set_keys_error(const Error& error, const v1::SetKeysRequest& request) {
    check_error_line(error);
    require(names_cluster_node_field(error.message, request.nodes_size()),
            "a SET_KEYS error starts with the node and field it is about", error.message);
    // keys.hpp: an error about a key never repeats private key material.
    if (error.message.find("_key: ") != std::string::npos) {
        require(error.message.find("PRIVATE KEY") == std::string::npos &&
                    error.message.find("b3BlbnNzaC1rZXktdjE") == std::string::npos,
                "a key error never echoes a private key", error.message);
    }
}

// ---- plans ----

bool same_user(const UserIdentity& a, const UserIdentity& b) {
    return a.name == b.name && a.uid == b.uid && a.gid == b.gid && a.home == b.home;
}

bool same_plan(const SetupPlan& a, const SetupPlan& b) {
    return a.cluster_id == b.cluster_id && a.node_name == b.node_name && a.address == b.address &&
           a.mac == b.mac && a.vni == b.vni && a.udp_port == b.udp_port &&
           a.local_underlay == b.local_underlay && a.mtu == b.mtu && same_user(a.user, b.user) &&
           a.image == b.image && a.image_mount == b.image_mount && a.gateway == b.gateway &&
           a.tmp_size_bytes == b.tmp_size_bytes && a.seccomp == b.seccomp;
}

bool same_node(const ClusterNodeView& a, const ClusterNodeView& b) {
    return a.name == b.name && a.address == b.address && a.mac == b.mac &&
           a.underlay == b.underlay && a.host_key == b.host_key && a.user_key == b.user_key &&
           a.slots == b.slots;
}

bool is_host_label(std::string_view name) {
    return !name.empty() && name.size() <= 63 && name.front() != '-' && name.back() != '-' &&
           std::all_of(name.begin(), name.end(), [](char c) {
               return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
           });
}

bool is_job_id(std::string_view id) {
    return !id.empty() && id.size() <= 64 && id != "." && id != ".." &&
           std::all_of(id.begin(), id.end(), [](char c) {
               return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '.' || c == '-';
           });
}

bool is_interface_mac(const MacAddress& mac) {
    return (mac[0] & 1) == 0 && std::any_of(mac.begin(), mac.end(), [](auto b) { return b != 0; });
}

std::string lower(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) {
        return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    });
    return text;
}

// A host address of the job's network: inside the prefix, neither network nor broadcast.
bool is_host_in(const Cidr& network, const IpAddress& address) {
    return network.contains(address) && address != network.network() && address != network.last();
}

// As text: std::filesystem::path equality ignores repeated separators ("//srv" == "/srv").
bool is_normalized_absolute(const fs::path& path) {
    const std::string& text = path.native();
    return path.is_absolute() && path.lexically_normal().native() == text &&
           (text == "/" || !text.ends_with('/'));
}

void check_setup_plan(const SetupPlan& plan, const v1::SetupRequest& request) {
    require(plan.cluster_id == request.cluster_id() && is_job_id(plan.cluster_id),
            "cluster_id is the request's and a valid id", plan.cluster_id);
    require(plan.node_name == request.node_name() && is_host_label(plan.node_name),
            "node_name is the request's and a host label", plan.node_name);

    const IpAddress& address = plan.address.address();
    const Cidr network = plan.address.network();
    require(address.is_v4() && plan.address.prefix() <= 30, "the address is IPv4, at most /30",
            plan.address.to_string());
    require(is_host_in(network, address), "the address is a host address inside its prefix",
            plan.address.to_string());
    // IPv4 text is strict (no leading zeros, short forms or signs), so it has one spelling.
    require(plan.address.to_string() == request.address(),
            "an accepted address is written canonically", request.address());

    require(is_interface_mac(plan.mac), "the MAC is unicast and not zero", to_string(plan.mac));
    if (request.mac().empty()) {
        require(plan.mac == mac_for_address(address), "no MAC given: the derived one",
                to_string(plan.mac));
    } else {
        require(to_string(plan.mac) == lower(request.mac()), "the MAC is the request's",
                request.mac());
    }

    require(plan.vni >= 1 && plan.vni <= 0xFFFFFF && plan.vni == request.vxlan().vni(),
            "the VNI is the request's, in 1..2^24-1", std::to_string(plan.vni));
    require(
        plan.udp_port != 0 &&
            plan.udp_port == (request.vxlan().udp_port() == 0 ? 4789U : request.vxlan().udp_port()),
        "the UDP port is the request's or 4789", std::to_string(plan.udp_port));
    require(plan.local_underlay.has_value() == !request.vxlan().local_address().empty(),
            "an underlay address only when one was given");
    if (plan.local_underlay) {
        require(plan.local_underlay->is_v4(), "the underlay address is IPv4",
                plan.local_underlay->to_string());
    }
    require(plan.mtu == 0 || (plan.mtu >= 576 && plan.mtu <= 9000), "the MTU is 0 or 576..9000",
            std::to_string(plan.mtu));
    require(plan.user.name == kUser, "the user is the one the node knows", plan.user.name);
    if (plan.gateway) {
        require(network.contains(*plan.gateway) && *plan.gateway != address,
                "the gateway is another address of the job's network", plan.gateway->to_string());
    }

    require(plan.image.has_value() == plan.image_mount.has_value(),
            "an image comes with its mount point and only with it");
    if (plan.image) {
        const std::string image = plan.image->string();
        require(image == request.image() && is_normalized_absolute(*plan.image) &&
                    (image == kImageRoot || image.starts_with(std::string(kImageRoot) + "/")),
                "the image is a normalized absolute path below an allowed root", image);
        require(plan.image_mount->string() == request.image_mount() &&
                    is_normalized_absolute(*plan.image_mount),
                "the image mount point is a normalized absolute path", plan.image_mount->string());
    }

    const std::uint64_t tmp_mb = request.tmp_size_mb() == 0 ? 1024 : request.tmp_size_mb();
    require(tmp_mb <= kMaxTmpSizeMb && plan.tmp_size_bytes == tmp_mb * kMiB,
            "the /tmp size is the request's (or 1 GiB), within the node's limit",
            std::to_string(plan.tmp_size_bytes));
    require(plan.seccomp == !request.seccomp().disabled(), "seccomp is on unless disabled");

    // The pilot builds namespaces and mounts before create_overlay() checks the overlay: anything
    // that check refuses must already have been refused here, or SETUP fails half way.
    static const IpAddress node_underlay = address_of(kNodeUnderlay);
    const OverlaySpec overlay{.vni = plan.vni,
                              .udp_port = plan.udp_port,
                              .local_underlay = plan.local_underlay.value_or(node_underlay),
                              .address = plan.address,
                              .mac = plan.mac,
                              .mtu = plan.mtu == 0 ? kNodeOverlayMtu : plan.mtu,
                              .gateway = plan.gateway};
    const Status overlay_ok = check_overlay_spec(overlay);
    require(overlay_ok.ok(), "a validated SETUP passes check_overlay_spec",
            overlay_ok.ok() ? "" : overlay_ok.error().message);
}

void check_public_key_line(const std::string& key, std::string_view original) {
    // Normalised: "ssh-ed25519 <base64>", no comment; and normalising it again changes nothing.
    require(key.starts_with("ssh-ed25519 ") && key.find(' ', 12) == std::string::npos,
            "a key is normalised to 'ssh-ed25519 <base64>'", key);
    auto again = check_public_key("key", key);
    require(again.ok() && *again == key, "a normalised key passes the check unchanged", key);
    require(original.find(key.substr(12)) != std::string_view::npos,
            "a normalised key holds the request's key data", key);
}

void check_cluster(const std::vector<ClusterNodeView>& nodes, const v1::SetKeysRequest& request,
                   const SetupPlan& self) {
    require(!nodes.empty() && nodes.size() <= kMaxClusterNodes &&
                nodes.size() == static_cast<std::size_t>(request.nodes_size()),
            "one view per requested node, 1..kMaxClusterNodes", std::to_string(nodes.size()));
    const Cidr network = self.address.network();
    std::set<std::string> names;
    std::set<IpAddress> addresses;
    std::set<MacAddress> macs;
    int selves = 0;
    std::vector<OverlayPeer> peers;
    for (std::size_t i = 0; i < nodes.size(); ++i) {
        const ClusterNodeView& node = nodes[i];
        const v1::ClusterNode& asked = request.nodes(static_cast<int>(i));
        require(node.name == asked.name() && is_host_label(node.name),
                "a node name is the request's and a host label", node.name);
        require(is_host_in(network, node.address),
                "a node address is a host address of this node's network",
                node.address.to_string());
        require(node.address.to_string() == asked.address(),
                "an accepted node address is written canonically", asked.address());
        require(node.underlay.is_v4() && node.underlay.to_string() == asked.underlay_address(),
                "a node's underlay address is the request's, IPv4, written canonically",
                asked.underlay_address());
        require(is_interface_mac(node.mac), "a node MAC is unicast and not zero",
                to_string(node.mac));
        require(to_string(node.mac) == lower(asked.mac()), "a node MAC is the request's",
                asked.mac());
        check_public_key_line(node.host_key, asked.host_key());
        check_public_key_line(node.user_key, asked.user_key());
        require(node.slots >= 1 && node.slots <= 4096 &&
                    node.slots == (asked.slots() == 0 ? 1 : asked.slots()),
                "slots are the request's (or 1), at most 4096", std::to_string(node.slots));
        require(names.insert(node.name).second, "node names are unique", node.name);
        require(addresses.insert(node.address).second, "node addresses are unique",
                node.address.to_string());
        require(macs.insert(node.mac).second, "node MACs are unique", to_string(node.mac));
        if (node.name == self.node_name) {
            ++selves;
            require(node.address == self.address.address() && node.mac == self.mac,
                    "this node's entry matches its SETUP", node.address.to_string());
        } else {
            peers.push_back({node.underlay, node.address, node.mac});
        }
    }
    require(selves == 1, "this node is in the cluster exactly once", std::to_string(selves));
    // As for SETUP: set_overlay_peers() runs after the cluster's files are written.
    const Status peers_ok = check_overlay_peers(peers);
    require(peers_ok.ok(), "a validated SET_KEYS passes check_overlay_peers",
            peers_ok.ok() ? "" : peers_ok.error().message);
}

void fuzz_setup(const v1::SetupRequest& request) {
    const auto plan = validate_setup(request, fake_limits());
    const auto again = validate_setup(request, fake_limits());
    require(plan.ok() == again.ok(), "SETUP validation is deterministic");
    if (!plan) {
        check_setup_error(plan.error());
        require(plan.error().message == again.error().message,
                "SETUP validation gives the same error twice", plan.error().message);
        return;
    }
    require(same_plan(*plan, *again), "SETUP validation gives the same plan twice");
    check_setup_plan(*plan, request);
}

void fuzz_set_keys(const v1::SetKeysRequest& request) {
    const SetupPlan& self = self_plan();
    const auto nodes = validate_set_keys(request, self);
    const auto again = validate_set_keys(request, self);
    require(nodes.ok() == again.ok(), "SET_KEYS validation is deterministic");
    if (!nodes) {
        check_set_keys_error(nodes.error(), request);
        require(nodes.error().message == again.error().message,
                "SET_KEYS validation gives the same error twice", nodes.error().message);
        return;
    }
    require(nodes->size() == again->size() &&
                std::equal(nodes->begin(), nodes->end(), again->begin(), same_node),
            "SET_KEYS validation gives the same nodes twice");
    check_cluster(*nodes, request, self);
}

// ---- structure-aware mutation (proto_mutator.hpp) ----

// Values next to the limits the checks draw: VNI, MTU, port, slots, /tmp size.
constexpr std::uint64_t kInterestingNumbers[] = {
    0,    1,     575,   576,      1450,      4096,       4097,       9000,
    9001, 65535, 65536, 0xFFFFFF, 0x1000000, 0xFFFFFFFF, 1ULL << 40, ~0ULL};

std::unique_ptr<google::protobuf::Message> request_for(std::uint8_t selector) {
    if ((selector & 1) == 0) {
        return std::make_unique<v1::SetupRequest>();
    }
    return std::make_unique<v1::SetKeysRequest>();
}

}  // namespace
}  // namespace vcpilot::pilot

extern "C" std::size_t LLVMFuzzerCustomMutator(std::uint8_t* data, std::size_t size,
                                               std::size_t max_size, unsigned int seed) {
    return vcpilot::fuzz::mutate_input(data, size, max_size, seed, vcpilot::pilot::request_for,
                                       vcpilot::pilot::kInterestingNumbers);
}

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
    // Proto3 parsing logs every string that is not UTF-8; that is expected input here.
    google::protobuf::SetLogHandler(nullptr);
    (void)vcpilot::pilot::self_plan();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0 || size - 1 > static_cast<std::size_t>(INT_MAX)) {
        return -1;
    }
    const auto* body = data + 1;
    const int body_size = static_cast<int>(size - 1);
    // -1: an input protobuf refuses reaches no validation code; keep it out of the corpus.
    if ((data[0] & 1) == 0) {
        vcpilot::v1::SetupRequest request;
        if (!request.ParseFromArray(body, body_size)) {
            return -1;
        }
        vcpilot::pilot::fuzz_setup(request);
    } else {
        vcpilot::v1::SetKeysRequest request;
        if (!request.ParseFromArray(body, body_size)) {
            return -1;
        }
        vcpilot::pilot::fuzz_set_keys(request);
    }
    return 0;
}
