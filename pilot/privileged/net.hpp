// The job's overlay network: one VXLAN device per job per node, created from the node's network
// namespace (so that its UDP socket sends and receives on the node's underlay) directly inside
// the job's network namespace, where it is called eth0 and is, with lo, the only interface.
// Peers are static: unicast head-end replication through FDB entries, and permanent neighbour
// entries so that no ARP/ND has to cross the overlay. No multicast, no learning.
//
// All netlink goes through libnl-route-3. Functions that act on the job's namespace take an fd of
// it (a persistent namespace file opened by the caller); they talk to it through a netlink socket
// created inside it, so the calling thread never changes namespace.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip.hpp"
#include "common/result.hpp"

namespace vcpilot::pilot {

// The overlay interface's name inside the job's network namespace.
inline constexpr std::string_view kOverlayInterface = "eth0";

using MacAddress = std::array<std::uint8_t, 6>;

// "02:ab:cd:ef:01:23": six two-digit hex groups separated by ':', either case. The address must
// be unicast and not all zeros, as an interface's own address must be. Errors name `field`.
Result<MacAddress> parse_mac(std::string_view field, std::string_view text);
// Lower-case, colon-separated.
std::string to_string(const MacAddress& mac);
// A locally administered unicast MAC derived from a job address, so that every peer computes
// the same MAC for the same node without being told: 02:00:a:b:c:d for IPv4 a.b.c.d (no two
// IPv4 addresses share one), 02 followed by the last five bytes for IPv6.
MacAddress mac_for_address(const IpAddress& address);

struct OverlaySpec {
    std::uint32_t vni = 0;  // 1 .. 2^24-1
    std::uint16_t udp_port = 4789;
    // The node's own underlay address; the device holding it carries the encapsulated traffic.
    IpAddress local_underlay;
    InterfaceAddress address;  // eth0's address and the job network's prefix
    MacAddress mac{};
    // 0: the underlay device's MTU minus the VXLAN overhead (50 bytes over IPv4, 70 over IPv6).
    std::uint32_t mtu = 0;
    // Default route through this address, which must be inside `address`'s network. None: the job
    // reaches only its own network.
    std::optional<IpAddress> gateway{};
};

struct OverlayPeer {
    IpAddress underlay;  // the peer node's underlay address
    IpAddress address;   // the peer's address on the overlay
    MacAddress mac{};    // the peer's eth0 MAC
};

// The checks create_overlay() and set_overlay_peers() make before they change anything; each
// error names the offending field.
Status check_overlay_spec(const OverlaySpec& spec);
Status check_overlay_peers(std::span<const OverlayPeer> peers);

// Creates the job's eth0: a VXLAN device (VNI, local address, UDP port, learning off, no group,
// bound to the underlay device holding `local_underlay`) made by a request sent from the
// caller's network namespace with the job namespace as its target, so it never exists in the
// node's namespace and its UDP socket stays there. Then, inside the job namespace: the address,
// lo and eth0 up, and the default route if asked for. On any failure eth0 is deleted again and
// the error names the step and the kernel's reason; nothing is left behind.
Status create_overlay(int job_netns_fd, const OverlaySpec& spec);

// Whether link `name` exists in the caller's network namespace and is up (false if it does not
// exist).
Result<bool> link_is_up(std::string_view name);

// Moves link `name` (a TAP device an overlay program such as n2n's edge holds) from the
// caller's network namespace into the job's as eth0 with `spec.mtu` (0: its own), then does what
// create_overlay() does inside the job namespace: `spec`'s address, lo and eth0 up, the default
// route. On failure eth0 is deleted in the job namespace.
Status adopt_overlay_link(int job_netns_fd, std::string_view name, const OverlaySpec& spec);

// Makes eth0's forwarding state in the job namespace exactly `peers` (the node's own entry, the
// one with eth0's address, is skipped): per peer an all-zeros FDB entry to its underlay address
// (broadcast and unknown unicast are sent to every peer), an FDB entry for its MAC, and a
// permanent neighbour entry for its address. Entries of peers no longer listed are removed.
// Idempotent; after a failure part way, calling it again with the same list converges.
Status set_overlay_peers(int job_netns_fd, std::span<const OverlayPeer> peers);

// Makes the on-link routes through eth0 in the job namespace exactly `blocks`: one route per
// block in the main table, scope link, protocol static (blocks of the cluster network outside
// eth0's own prefix, such as other sites' blocks, reached without a gateway: the overlay carries
// them and the peers' permanent neighbour entries resolve them). Routes of blocks no longer
// listed are removed; the prefix route of eth0's own address and the default route are not
// touched. Every block must be of eth0's address family. Idempotent.
Status set_onlink_routes(int job_netns_fd, std::span<const Cidr> blocks);

// The blocks set_onlink_routes() has routed on eth0, in the kernel's order.
Result<std::vector<Cidr>> onlink_routes(int job_netns_fd);

// eth0's forwarding state as the kernel reports it, for tests and status reports.
struct FdbEntry {
    MacAddress mac{};    // all zeros: the flood list
    IpAddress underlay;  // where frames for `mac` are sent
    bool operator==(const FdbEntry&) const = default;
};
struct NeighbourEntry {
    IpAddress address;
    MacAddress mac{};
    bool operator==(const NeighbourEntry&) const = default;
};
struct OverlayForwarding {
    std::vector<FdbEntry> fdb;               // every FDB entry with a destination
    std::vector<NeighbourEntry> neighbours;  // permanent neighbour entries only
};
Result<OverlayForwarding> overlay_forwarding(int job_netns_fd);

// Names of the links in a network namespace, in ifindex order.
Result<std::vector<std::string>> link_names(int netns_fd);

// The MTU of the device in the caller's network namespace that holds `local`.
Result<std::uint32_t> underlay_mtu(const IpAddress& local);

// Deletes link `name` in a network namespace. A link that is not there is not an error, so that
// teardown can be repeated. Teardown should delete eth0 this way before it lets the job's
// namespace go: the kernel frees a namespace, and the VXLAN device in it, asynchronously, and
// until then the VNI stays taken on the node (an immediate re-create failed 15 times in 20).
Status delete_link(int netns_fd, std::string_view name);

}  // namespace vcpilot::pilot
