#include "pilot/privileged/net.hpp"

#include <arpa/inet.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <fmt/format.h>
#include <memory>
#include <netlink/addr.h>
#include <netlink/attr.h>
#include <netlink/cache.h>
#include <netlink/errno.h>
#include <netlink/handlers.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/vxlan.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>
#include <netlink/socket.h>
#include <new>
#include <system_error>
#include <thread>
#include <utility>

#include "common/text.hpp"
#include "pilot/privileged/namespaces.hpp"

namespace vcpilot::pilot {

namespace {

// ---- libnl objects owned by RAII ----

template <auto Free>
struct FreeWith {
    template <typename T>
    void operator()(T* object) const {
        Free(object);
    }
};
using SocketPtr = std::unique_ptr<nl_sock, FreeWith<nl_socket_free>>;
using CallbacksPtr = std::unique_ptr<nl_cb, FreeWith<nl_cb_put>>;
using CachePtr = std::unique_ptr<nl_cache, FreeWith<nl_cache_free>>;
using MessagePtr = std::unique_ptr<nl_msg, FreeWith<nlmsg_free>>;
using NlAddrPtr = std::unique_ptr<nl_addr, FreeWith<nl_addr_put>>;
using LinkPtr = std::unique_ptr<rtnl_link, FreeWith<rtnl_link_put>>;
using AddrPtr = std::unique_ptr<rtnl_addr, FreeWith<rtnl_addr_put>>;
using NeighPtr = std::unique_ptr<rtnl_neigh, FreeWith<rtnl_neigh_put>>;
using RoutePtr = std::unique_ptr<rtnl_route, FreeWith<rtnl_route_put>>;
using NexthopPtr = std::unique_ptr<rtnl_nexthop, FreeWith<rtnl_route_nh_free>>;

// libnl allocators return NULL only when out of memory; that is not an outcome to report
// field by field, so it becomes the usual exception (RAII still undoes what was built).
template <typename T>
T* allocated(T* object) {
    if (object == nullptr) {
        throw std::bad_alloc();
    }
    return object;
}

constexpr std::uint32_t kMaxVni = (1U << 24) - 1;
constexpr int kVxlanOverheadV4 = 50;  // outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
constexpr int kVxlanOverheadV6 = 70;  // IPv6 header is 40
constexpr std::uint32_t kMinMtuV4 = 68;
constexpr std::uint32_t kMinMtuV6 = 1280;  // below this the kernel disables IPv6 on the device
constexpr std::uint32_t kMaxMtu = 65535;
// How long a VNI still held by the device of a job that just ended may keep a new one waiting.
constexpr std::chrono::milliseconds kVniBusyWait{3000};

// ---- addresses ----

bool is_zero(const MacAddress& mac) {
    return std::all_of(mac.begin(), mac.end(), [](std::uint8_t byte) { return byte == 0; });
}
bool is_multicast(const MacAddress& mac) {
    return (mac[0] & 0x01) != 0;
}
bool is_unspecified(const IpAddress& address) {
    const auto bytes = address.bytes();
    return std::all_of(bytes.begin(), bytes.end(), [](std::uint8_t byte) { return byte == 0; });
}
const char* family_name(const IpAddress& address) {
    return address.is_v4() ? "IPv4" : "IPv6";
}

NlAddrPtr to_nl_addr(const IpAddress& address) {
    const auto bytes = address.bytes();
    return NlAddrPtr(
        allocated(nl_addr_build(address.is_v4() ? AF_INET : AF_INET6, bytes.data(), bytes.size())));
}
NlAddrPtr to_nl_addr(const MacAddress& mac) {
    return NlAddrPtr(allocated(nl_addr_build(AF_LLC, mac.data(), mac.size())));
}

std::optional<IpAddress> ip_of(const nl_addr* address) {
    if (address == nullptr) {
        return std::nullopt;
    }
    const auto* bytes = static_cast<const std::uint8_t*>(nl_addr_get_binary_addr(address));
    if (nl_addr_get_len(address) == 4) {
        std::array<std::uint8_t, 4> v4{};
        std::copy_n(bytes, v4.size(), v4.begin());
        return IpAddress::from_v4_bytes(v4);
    }
    if (nl_addr_get_len(address) == 16) {
        std::array<std::uint8_t, 16> v6{};
        std::copy_n(bytes, v6.size(), v6.begin());
        return IpAddress::from_v6_bytes(v6);
    }
    return std::nullopt;
}

std::optional<MacAddress> mac_of(const nl_addr* address) {
    if (address == nullptr || nl_addr_get_len(address) != 6) {
        return std::nullopt;
    }
    MacAddress mac{};
    std::copy_n(static_cast<const std::uint8_t*>(nl_addr_get_binary_addr(address)), mac.size(),
                mac.begin());
    return mac;
}

// ---- netlink sockets ----

// What the kernel said about the last request it refused: the errno that libnl would turn into
// one of its own coarser codes, and the extended ack text ("A VXLAN device with the specified VNI
// already exists"), which is usually the most useful sentence of the whole error.
struct KernelError {
    int errnum = 0;
    std::string message;
};

std::string extended_ack_message(const nlmsgerr* error) {
    // libnl hands over the payload of the NLMSG_ERROR message; its header sits just before it.
    const auto* header =
        reinterpret_cast<const nlmsghdr*>(reinterpret_cast<const char*>(error) - NLMSG_HDRLEN);
    if ((header->nlmsg_flags & NLM_F_ACK_TLVS) == 0) {
        return {};
    }
    std::size_t payload = sizeof(nlmsgerr);
    if ((header->nlmsg_flags & NLM_F_CAPPED) == 0 && error->msg.nlmsg_len > NLMSG_HDRLEN) {
        payload += error->msg.nlmsg_len - NLMSG_HDRLEN;  // the request is echoed back
    }
    const std::size_t offset = NLMSG_HDRLEN + NLMSG_ALIGN(payload);
    if (header->nlmsg_len <= offset) {
        return {};
    }
    auto* attributes = reinterpret_cast<nlattr*>(
        const_cast<char*>(reinterpret_cast<const char*>(header) + offset));
    nlattr* table[NLMSGERR_ATTR_MAX + 1] = {};
    if (nla_parse(table, NLMSGERR_ATTR_MAX, attributes,
                  static_cast<int>(header->nlmsg_len - offset), nullptr) < 0 ||
        table[NLMSGERR_ATTR_MSG] == nullptr) {
        return {};
    }
    const auto* text = static_cast<const char*>(nla_data(table[NLMSGERR_ATTR_MSG]));
    const auto length = static_cast<std::size_t>(nla_len(table[NLMSGERR_ATTR_MSG]));
    return single_line(std::string_view(text, strnlen(text, length)));
}

int remember_kernel_error(sockaddr_nl* /*from*/, nlmsgerr* error, void* argument) {
    auto& last = *static_cast<KernelError*>(argument);
    last.errnum = -error->error;
    last.message = extended_ack_message(error);
    return NL_STOP;  // libnl then returns its own code for the errno; `last` keeps the details
}

// The errno behind the libnl error codes that callers here tell apart; 0 for the others.
int errno_of_libnl_code(int code) {
    switch (code) {
        case NLE_NODEV:
            return ENODEV;
        case NLE_OBJ_NOTFOUND:
            return ENOENT;
        case NLE_EXIST:
            return EEXIST;
        default:
            return 0;
    }
}

// A NETLINK_ROUTE socket. It acts on the network namespace it was created in, whichever
// namespace the thread using it is in later.
class RouteSocket {
  public:
    // A socket in the calling thread's network namespace.
    static Result<RouteSocket> open() {
        auto last = std::make_unique<KernelError>();
        CallbacksPtr callbacks(allocated(nl_cb_alloc(NL_CB_DEFAULT)));
        nl_cb_err(callbacks.get(), NL_CB_CUSTOM, remember_kernel_error, last.get());
        SocketPtr socket(allocated(nl_socket_alloc_cb(callbacks.get())));
        if (const int rc = nl_connect(socket.get(), NETLINK_ROUTE); rc < 0) {
            return Error{fmt::format("open a netlink socket: {}", nl_geterror(rc))};
        }
        const int fd = nl_socket_get_fd(socket.get());
        const int on = 1;
        // Extended acks carry the kernel's reason in words; capped acks do not echo requests.
        if (setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &on, sizeof on) != 0 ||
            setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &on, sizeof on) != 0) {
            return sys_error("configure a netlink socket");
        }
        return RouteSocket(std::move(last), std::move(socket));
    }

    // Runs one libnl call that takes this socket. On failure the error says which step failed
    // and why, in the kernel's words when it was the kernel that refused. Its code is the
    // kernel's errno; when only libnl's code is left, the errno of the codes callers here tell
    // apart (errno_of_libnl_code), else 0.
    template <typename Call>
    Status run(std::string_view step, Call&& call) {
        *last_ = KernelError{};
        const int rc = std::forward<Call>(call)(socket_.get());
        if (rc >= 0) {
            return {};
        }
        if (last_->errnum == 0) {
            // Some libnl calls (rtnl_link_get_kernel) read the answer with their own error
            // handler, so only libnl's code for the errno is left.
            return Error{fmt::format("{}: {}", step, nl_geterror(rc)), errno_of_libnl_code(-rc)};
        }
        if (last_->message.empty()) {
            return sys_error(step, last_->errnum);
        }
        return Error{fmt::format("{}: {}: {}", step, errno_text(last_->errnum), last_->message),
                     last_->errnum};
    }

  private:
    RouteSocket(std::unique_ptr<KernelError> last, SocketPtr socket)
        : last_(std::move(last)), socket_(std::move(socket)) {}

    std::unique_ptr<KernelError> last_;  // the error callback's argument: must outlive socket_
    SocketPtr socket_;
};

// A socket acting on the namespace of `netns_fd`, made there by a short-lived helper thread
// (in_network_namespace), so the caller's namespace stays as it was.
Result<RouteSocket> open_socket_in(int netns_fd, std::string_view which) {
    std::optional<Result<RouteSocket>> opened;
    auto entered = in_network_namespace(netns_fd, which, [&] {
        try {
            opened = RouteSocket::open();
        } catch (const std::exception& error) {  // an exception must not leave a thread
            opened = Error{fmt::format("open a netlink socket: {}", error.what())};
        }
    });
    if (!entered) {
        return entered.error();
    }
    return std::move(*opened);
}

// A root process that is handed its own namespace by mistake would build the job's network on
// the node's: refuse that before anything is created.
Status check_other_namespace(int job_netns_fd) {
    struct stat job {};
    struct stat own {};
    if (fstat(job_netns_fd, &job) != 0) {
        return sys_error(fmt::format("job network namespace fd {}", job_netns_fd));
    }
    if (stat("/proc/thread-self/ns/net", &own) != 0) {
        return sys_error("read this thread's network namespace");
    }
    if (job.st_dev == own.st_dev && job.st_ino == own.st_ino) {
        return Error{fmt::format(
            "job network namespace fd {} is the caller's own network namespace; the overlay "
            "must go into the job's",
            job_netns_fd)};
    }
    return {};
}

// ---- links and addresses ----

Result<LinkPtr> get_link(RouteSocket& socket, std::string_view name, std::string_view where) {
    const std::string c_name(name);
    rtnl_link* link = nullptr;
    auto status =
        socket.run(fmt::format("look up {} in the {} network namespace", name, where),
                   [&](nl_sock* sk) { return rtnl_link_get_kernel(sk, 0, c_name.c_str(), &link); });
    if (!status) {
        return status.error();
    }
    return LinkPtr(link);
}

Status set_link_up(RouteSocket& socket, rtnl_link* link, std::string_view step) {
    LinkPtr change(allocated(rtnl_link_alloc()));
    rtnl_link_set_flags(change.get(), IFF_UP);
    return socket.run(step,
                      [&](nl_sock* sk) { return rtnl_link_change(sk, link, change.get(), 0); });
}

// Deletes a link by name; a link that is already gone counts as deleted.
Status delete_named_link(RouteSocket& socket, std::string_view name, std::string_view where) {
    const std::string c_name(name);
    LinkPtr link(allocated(rtnl_link_alloc()));
    rtnl_link_set_name(link.get(), c_name.c_str());
    auto status = socket.run(fmt::format("delete {} in the {} network namespace", name, where),
                             [&](nl_sock* sk) { return rtnl_link_delete(sk, link.get()); });
    if (!status && status.error().code == ENODEV) {
        return {};
    }
    return status;
}

struct AddressOnLink {
    int ifindex;
    IpAddress address;
};

Result<std::vector<AddressOnLink>> list_addresses(RouteSocket& socket, std::string_view where) {
    nl_cache* raw = nullptr;
    auto status = socket.run(fmt::format("list the addresses of the {} network namespace", where),
                             [&](nl_sock* sk) { return rtnl_addr_alloc_cache(sk, &raw); });
    if (!status) {
        return status.error();
    }
    CachePtr cache(raw);
    std::vector<AddressOnLink> addresses;
    for (nl_object* object = nl_cache_get_first(cache.get()); object != nullptr;
         object = nl_cache_get_next(object)) {
        auto* address = reinterpret_cast<rtnl_addr*>(object);
        if (auto ip = ip_of(rtnl_addr_get_local(address))) {
            addresses.push_back({rtnl_addr_get_ifindex(address), *ip});
        }
    }
    return addresses;
}

struct UnderlayDevice {
    int ifindex;
    std::string name;
    std::uint32_t mtu;
};

// The device in the socket's (the node's) namespace that holds `local`.
Result<UnderlayDevice> find_underlay(RouteSocket& node, const IpAddress& local) {
    auto addresses = list_addresses(node, "node's");
    if (!addresses) {
        return addresses.error();
    }
    const auto found = std::find_if(addresses->begin(), addresses->end(),
                                    [&](const AddressOnLink& a) { return a.address == local; });
    if (found == addresses->end()) {
        return Error{fmt::format(
            "local_underlay: no device in the node's network namespace has the address {}",
            local.to_string())};
    }
    rtnl_link* raw = nullptr;
    auto status = node.run(
        fmt::format("look up the device holding {}", local.to_string()),
        [&](nl_sock* sk) { return rtnl_link_get_kernel(sk, found->ifindex, nullptr, &raw); });
    if (!status) {
        return status.error();
    }
    LinkPtr link(raw);
    const char* name = rtnl_link_get_name(link.get());
    return UnderlayDevice{found->ifindex, name != nullptr ? name : "?",
                          rtnl_link_get_mtu(link.get())};
}

Result<std::uint32_t> overlay_mtu(const OverlaySpec& spec, const UnderlayDevice& underlay) {
    const int overhead = spec.local_underlay.is_v4() ? kVxlanOverheadV4 : kVxlanOverheadV6;
    const std::int64_t largest = static_cast<std::int64_t>(underlay.mtu) - overhead;
    const std::uint32_t smallest = spec.address.address().is_v4() ? kMinMtuV4 : kMinMtuV6;
    const std::int64_t mtu = spec.mtu != 0 ? spec.mtu : largest;
    if (mtu > largest) {
        return Error{fmt::format(
            "mtu: {} does not fit the underlay: {} has MTU {} and VXLAN over {} takes {} bytes, "
            "so at most {}",
            spec.mtu, underlay.name, underlay.mtu, family_name(spec.local_underlay), overhead,
            largest)};
    }
    if (mtu < smallest) {
        return Error{fmt::format("mtu: {} is below the {} minimum of {} (underlay {} has MTU {})",
                                 mtu, family_name(spec.address.address()), smallest, underlay.name,
                                 underlay.mtu)};
    }
    return static_cast<std::uint32_t>(mtu);
}

// ---- the overlay device ----

// libnl 3.7's VXLAN link type sends IFLA_VXLAN_PORT as 32 bits (fixed upstream in 3.12), which
// the kernel accepts with a warning in its log; the request is small, so it is built here
// attribute by attribute, exactly as the kernel defines them.
Status add_vxlan(RouteSocket& node, int job_netns_fd, const OverlaySpec& spec,
                 const UnderlayDevice& underlay, std::uint32_t mtu) {
    MessagePtr message(allocated(nlmsg_alloc_simple(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL)));
    nl_msg* m = message.get();
    ifinfomsg header{};
    header.ifi_family = AF_UNSPEC;
    const std::string name(kOverlayInterface);
    const auto local = spec.local_underlay.bytes();
    const std::uint16_t port = htons(spec.udp_port);

    bool built =
        nlmsg_append(m, &header, sizeof header, NLMSG_ALIGNTO) >= 0 &&
        nla_put_string(m, IFLA_IFNAME, name.c_str()) >= 0 && nla_put_u32(m, IFLA_MTU, mtu) >= 0 &&
        nla_put(m, IFLA_ADDRESS, static_cast<int>(spec.mac.size()), spec.mac.data()) >= 0 &&
        // Created straight into the job's namespace: it never exists in the node's,
        // while its UDP socket belongs to the namespace this request comes from.
        nla_put_u32(m, IFLA_NET_NS_FD, static_cast<std::uint32_t>(job_netns_fd)) >= 0;
    nlattr* link_info = built ? nla_nest_start(m, IFLA_LINKINFO) : nullptr;
    built = link_info != nullptr && nla_put_string(m, IFLA_INFO_KIND, "vxlan") >= 0;
    nlattr* data = built ? nla_nest_start(m, IFLA_INFO_DATA) : nullptr;
    built = data != nullptr && nla_put_u32(m, IFLA_VXLAN_ID, spec.vni) >= 0 &&
            nla_put(m, spec.local_underlay.is_v4() ? IFLA_VXLAN_LOCAL : IFLA_VXLAN_LOCAL6,
                    static_cast<int>(local.size()), local.data()) >= 0 &&
            nla_put_u32(m, IFLA_VXLAN_LINK, static_cast<std::uint32_t>(underlay.ifindex)) >= 0 &&
            nla_put(m, IFLA_VXLAN_PORT, sizeof port, &port) >= 0 &&
            nla_put_u8(m, IFLA_VXLAN_LEARNING, 0) >= 0 && nla_nest_end(m, data) >= 0 &&
            nla_nest_end(m, link_info) >= 0;
    if (!built) {
        return Error{"build the VXLAN device request: the message does not fit its buffer"};
    }
    const std::string step = fmt::format(
        "create VXLAN device {} in the job network namespace (VNI {}, local {} on {}, UDP port "
        "{})",
        kOverlayInterface, spec.vni, spec.local_underlay.to_string(), underlay.name, spec.udp_port);
    // nl_send_sync() frees the message whatever happens.
    return node.run(step, [&](nl_sock* sk) { return nl_send_sync(sk, message.release()); });
}

Status add_address(RouteSocket& job, int ifindex, const InterfaceAddress& address) {
    AddrPtr request(allocated(rtnl_addr_alloc()));
    NlAddrPtr local = to_nl_addr(address.address());
    nl_addr_set_prefixlen(local.get(), address.prefix());
    const std::string step = fmt::format("add address {} to {} in the job network namespace",
                                         address.to_string(), kOverlayInterface);
    if (const int rc = rtnl_addr_set_local(request.get(), local.get()); rc < 0) {
        return Error{fmt::format("{}: {}", step, nl_geterror(rc))};
    }
    rtnl_addr_set_ifindex(request.get(), ifindex);
    if (!address.address().is_v4()) {
        // Duplicate detection would hold the address back for a second or more; the
        // coordinator already guarantees that overlay addresses are unique.
        rtnl_addr_set_flags(request.get(), IFA_F_NODAD);
    }
    return job.run(step, [&](nl_sock* sk) {
        return rtnl_addr_add(sk, request.get(), NLM_F_CREATE | NLM_F_EXCL);
    });
}

Status add_default_route(RouteSocket& job, int ifindex, const IpAddress& gateway) {
    const int family = gateway.is_v4() ? AF_INET : AF_INET6;
    const std::string step =
        fmt::format("add a default route via {} in the job network namespace", gateway.to_string());
    RoutePtr route(allocated(rtnl_route_alloc()));
    const std::array<std::uint8_t, 16> zeros{};
    NlAddrPtr any(allocated(nl_addr_build(family, zeros.data(), gateway.bytes().size())));
    nl_addr_set_prefixlen(any.get(), 0);
    NexthopPtr hop(allocated(rtnl_route_nh_alloc()));
    NlAddrPtr via = to_nl_addr(gateway);
    rtnl_route_nh_set_gateway(hop.get(), via.get());
    rtnl_route_nh_set_ifindex(hop.get(), ifindex);
    rtnl_route_set_table(route.get(), RT_TABLE_MAIN);
    rtnl_route_set_protocol(route.get(), RTPROT_STATIC);
    rtnl_route_set_scope(route.get(), RT_SCOPE_UNIVERSE);
    int rc = rtnl_route_set_family(route.get(), static_cast<std::uint8_t>(family));
    if (rc >= 0) {
        rc = rtnl_route_set_type(route.get(), RTN_UNICAST);
    }
    if (rc >= 0) {
        rc = rtnl_route_set_dst(route.get(), any.get());
    }
    if (rc < 0) {
        return Error{fmt::format("{}: {}", step, nl_geterror(rc))};
    }
    rtnl_route_add_nexthop(route.get(), hop.release());  // the route owns it now
    return job.run(step, [&](nl_sock* sk) { return rtnl_route_add(sk, route.get(), NLM_F_EXCL); });
}

// Everything create_overlay() does inside the job's namespace once eth0 exists there.
Status configure_job_side(RouteSocket& job, const OverlaySpec& spec) {
    auto eth0 = get_link(job, kOverlayInterface, "job");
    if (!eth0) {
        return eth0.error();
    }
    const int ifindex = rtnl_link_get_ifindex(eth0->get());
    if (auto status = add_address(job, ifindex, spec.address); !status) {
        return status;
    }
    auto loopback = get_link(job, "lo", "job");
    if (!loopback) {
        return loopback.error();
    }
    if (auto status = set_link_up(job, loopback->get(), "bring lo up in the job network namespace");
        !status) {
        return status;
    }
    if (auto status =
            set_link_up(job, eth0->get(),
                        fmt::format("bring {} up in the job network namespace", kOverlayInterface));
        !status) {
        return status;
    }
    if (spec.gateway) {
        return add_default_route(job, ifindex, *spec.gateway);
    }
    return {};
}

// Deletes the job's eth0 on every way out of create_overlay() that does not reach the end.
class OverlayRollback {
  public:
    explicit OverlayRollback(RouteSocket& job) : job_(&job) {}
    OverlayRollback(const OverlayRollback&) = delete;
    OverlayRollback& operator=(const OverlayRollback&) = delete;
    ~OverlayRollback() {
        if (job_ == nullptr) {
            return;
        }
        // Only an allocation can throw here, and nothing may leave a destructor: eth0 then
        // stays, as when the delete itself fails.
        try {
            (void)delete_named_link(*job_, kOverlayInterface, "job");
        } catch (...) {
        }
    }
    // Rolls back now and reports how that went.
    Status run() {
        RouteSocket* job = std::exchange(job_, nullptr);
        return delete_named_link(*job, kOverlayInterface, "job");
    }
    void dismiss() { job_ = nullptr; }

  private:
    RouteSocket* job_;
};

// configure_job_side(); on failure eth0 is deleted again, and the error says if that failed too.
Status configure_job_side_or_remove(RouteSocket& job, const OverlaySpec& spec) {
    OverlayRollback rollback(job);
    if (auto status = configure_job_side(job, spec); !status) {
        if (auto undone = rollback.run(); !undone) {
            return Error{status.error().message +
                         "; removing the half-made overlay failed too: " + undone.error().message};
        }
        return status;
    }
    rollback.dismiss();
    return {};
}

// ---- forwarding entries ----

struct NeighbourRecord {
    int family;
    int ifindex;
    int state;
    unsigned flags;
    std::optional<IpAddress> destination;
    std::optional<MacAddress> mac;
};

int collect_neighbour(nl_msg* message, void* argument) {
    rtnl_neigh* parsed = nullptr;
    if (const int rc = rtnl_neigh_parse(nlmsg_hdr(message), &parsed); rc < 0) {
        return rc;
    }
    NeighPtr neighbour(parsed);
    static_cast<std::vector<NeighbourRecord>*>(argument)->push_back({
        rtnl_neigh_get_family(parsed),
        rtnl_neigh_get_ifindex(parsed),
        rtnl_neigh_get_state(parsed),
        rtnl_neigh_get_flags(parsed),
        ip_of(rtnl_neigh_get_dst(parsed)),
        mac_of(rtnl_neigh_get_lladdr(parsed)),
    });
    return NL_OK;
}

// One dump of the neighbour table of `family`: AF_BRIDGE for FDB entries, AF_UNSPEC for ARP and
// ND together. Read message by message rather than through a libnl cache, whose idea of which
// entries are the same object is not the kernel's for every kind of device.
Result<std::vector<NeighbourRecord>> dump_neighbours(RouteSocket& job, int family,
                                                     std::string_view what) {
    std::vector<NeighbourRecord> records;
    auto status =
        job.run(fmt::format("list the {} in the job network namespace", what), [&](nl_sock* sk) {
            CallbacksPtr callbacks(
                allocated(nl_cb_clone(CallbacksPtr(nl_socket_get_cb(sk)).get())));
            nl_cb_set(callbacks.get(), NL_CB_VALID, NL_CB_CUSTOM, collect_neighbour, &records);
            ndmsg request{};
            request.ndm_family = static_cast<std::uint8_t>(family);
            const int rc = nl_send_simple(sk, RTM_GETNEIGH, NLM_F_DUMP, &request, sizeof request);
            return rc < 0 ? rc : nl_recvmsgs(sk, callbacks.get());
        });
    if (!status) {
        return status.error();
    }
    return records;
}

struct OverlayDevice {
    int ifindex;
    MacAddress mac;
    std::optional<IpAddress> local_underlay;
    std::vector<IpAddress> addresses;
};

Result<OverlayDevice> find_overlay_device(RouteSocket& job) {
    auto link = get_link(job, kOverlayInterface, "job");
    if (!link) {
        if (link.error().code == ENODEV) {
            return Error{fmt::format("the job network namespace has no {} (no overlay created)",
                                     kOverlayInterface)};
        }
        return link.error();
    }
    // VXLAN, or the TAP device of an overlay program (n2n's edge).
    const char* kind = rtnl_link_get_type(link->get());
    if (kind == nullptr || (std::string_view(kind) != "vxlan" && std::string_view(kind) != "tun")) {
        return Error{fmt::format("{} in the job network namespace is a {} device, not the overlay",
                                 kOverlayInterface, kind != nullptr ? kind : "plain")};
    }
    OverlayDevice device{rtnl_link_get_ifindex(link->get()), {}, std::nullopt, {}};
    if (auto mac = mac_of(rtnl_link_get_addr(link->get()))) {
        device.mac = *mac;
    }
    nl_addr* local = nullptr;
    if (std::string_view(kind) == "vxlan" && rtnl_link_vxlan_get_local(link->get(), &local) >= 0 &&
        local != nullptr) {
        NlAddrPtr owned(local);
        device.local_underlay = ip_of(local);
    }
    auto addresses = list_addresses(job, "job");
    if (!addresses) {
        return addresses.error();
    }
    for (const AddressOnLink& address : *addresses) {
        if (address.ifindex == device.ifindex) {
            device.addresses.push_back(address.address);
        }
    }
    return device;
}

// The job namespace's netlink socket and its overlay device, which every change to the
// overlay's routes and forwarding starts from.
struct JobOverlay {
    RouteSocket socket;
    OverlayDevice device;
};

Result<JobOverlay> open_job_overlay(int job_netns_fd) {
    auto job = open_socket_in(job_netns_fd, "job");
    if (!job) {
        return job.error();
    }
    auto device = find_overlay_device(*job);
    if (!device) {
        return device.error();
    }
    return JobOverlay{std::move(*job), std::move(*device)};
}

Result<OverlayForwarding> read_forwarding(RouteSocket& job, int ifindex) {
    OverlayForwarding forwarding;
    auto fdb = dump_neighbours(job, AF_BRIDGE, "FDB entries");
    if (!fdb) {
        return fdb.error();
    }
    for (const NeighbourRecord& record : *fdb) {
        if (record.ifindex == ifindex && record.mac && record.destination) {
            forwarding.fdb.push_back({*record.mac, *record.destination});
        }
    }
    auto neighbours = dump_neighbours(job, AF_UNSPEC, "neighbour entries");
    if (!neighbours) {
        return neighbours.error();
    }
    for (const NeighbourRecord& record : *neighbours) {
        if (record.ifindex == ifindex && (record.family == AF_INET || record.family == AF_INET6) &&
            (record.state & NUD_PERMANENT) != 0 && record.mac && record.destination) {
            forwarding.neighbours.push_back({*record.destination, *record.mac});
        }
    }
    return forwarding;
}

NeighPtr fdb_request(int ifindex, const FdbEntry& entry) {
    NeighPtr request(allocated(rtnl_neigh_alloc()));
    rtnl_neigh_set_ifindex(request.get(), ifindex);
    rtnl_neigh_set_lladdr(request.get(), to_nl_addr(entry.mac).get());
    // The destination first: it sets the family to the address's, which AF_BRIDGE then replaces.
    (void)rtnl_neigh_set_dst(request.get(), to_nl_addr(entry.underlay).get());
    rtnl_neigh_set_family(request.get(), AF_BRIDGE);
    rtnl_neigh_set_state(request.get(), NUD_PERMANENT);
    rtnl_neigh_set_flags(request.get(), NTF_SELF);
    return request;
}

NeighPtr neighbour_request(int ifindex, const NeighbourEntry& entry) {
    NeighPtr request(allocated(rtnl_neigh_alloc()));
    rtnl_neigh_set_ifindex(request.get(), ifindex);
    (void)rtnl_neigh_set_dst(request.get(), to_nl_addr(entry.address).get());
    rtnl_neigh_set_lladdr(request.get(), to_nl_addr(entry.mac).get());
    rtnl_neigh_set_state(request.get(), NUD_PERMANENT);
    return request;
}

std::string describe(const FdbEntry& entry) {
    return fmt::format("FDB entry {} dst {}", to_string(entry.mac), entry.underlay.to_string());
}
std::string describe(const NeighbourEntry& entry) {
    return fmt::format("neighbour entry {} lladdr {}", entry.address.to_string(),
                       to_string(entry.mac));
}

// Removal of an entry that is already gone succeeds, so a repeated call converges.
template <typename Entry>
Status delete_entry(RouteSocket& job, NeighPtr request, const Entry& entry) {
    auto status = job.run(fmt::format("delete {} in the job network namespace", describe(entry)),
                          [&](nl_sock* sk) { return rtnl_neigh_delete(sk, request.get(), 0); });
    if (!status && status.error().code == ENOENT) {
        return {};
    }
    return status;
}

template <typename Entry>
bool contains(const std::vector<Entry>& entries, const Entry& entry) {
    return std::find(entries.begin(), entries.end(), entry) != entries.end();
}

// ---- on-link routes ----

// The routes set_onlink_routes() makes and manages: main table, scope link, protocol static,
// through eth0. The kernel's prefix route for eth0's address has protocol kernel, and the
// default route scope universe, so neither is ever mistaken for one of these.
bool is_managed_onlink_route(rtnl_route* route, int ifindex) {
    if (rtnl_route_get_table(route) != RT_TABLE_MAIN ||
        rtnl_route_get_scope(route) != RT_SCOPE_LINK ||
        rtnl_route_get_protocol(route) != RTPROT_STATIC ||
        rtnl_route_get_type(route) != RTN_UNICAST || rtnl_route_get_nnexthops(route) != 1) {
        return false;
    }
    rtnl_nexthop* hop = rtnl_route_nexthop_n(route, 0);
    return hop != nullptr && rtnl_route_nh_get_ifindex(hop) == ifindex &&
           rtnl_route_nh_get_gateway(hop) == nullptr;
}

std::optional<Cidr> cidr_of(const nl_addr* address) {
    auto ip = ip_of(address);
    if (!ip) {
        return std::nullopt;
    }
    auto block = Cidr::from(*ip, static_cast<int>(nl_addr_get_prefixlen(address)));
    return block ? std::optional<Cidr>(*block) : std::nullopt;
}

Result<std::vector<Cidr>> read_onlink_routes(RouteSocket& job, int ifindex) {
    nl_cache* raw = nullptr;
    auto status = job.run("list the routes of the job network namespace", [&](nl_sock* sk) {
        return rtnl_route_alloc_cache(sk, AF_UNSPEC, 0, &raw);
    });
    if (!status) {
        return status.error();
    }
    CachePtr cache(raw);
    std::vector<Cidr> blocks;
    for (nl_object* object = nl_cache_get_first(cache.get()); object != nullptr;
         object = nl_cache_get_next(object)) {
        auto* route = reinterpret_cast<rtnl_route*>(object);
        if (!is_managed_onlink_route(route, ifindex)) {
            continue;
        }
        if (auto block = cidr_of(rtnl_route_get_dst(route))) {
            blocks.push_back(*block);
        }
    }
    return blocks;
}

RoutePtr onlink_route_request(int ifindex, const Cidr& block) {
    RoutePtr route(allocated(rtnl_route_alloc()));
    NlAddrPtr destination = to_nl_addr(block.network());
    nl_addr_set_prefixlen(destination.get(), block.prefix());
    NexthopPtr hop(allocated(rtnl_route_nh_alloc()));
    rtnl_route_nh_set_ifindex(hop.get(), ifindex);
    rtnl_route_set_table(route.get(), RT_TABLE_MAIN);
    rtnl_route_set_protocol(route.get(), RTPROT_STATIC);
    rtnl_route_set_scope(route.get(), RT_SCOPE_LINK);
    // Family and type are valid constants and the destination is of that family: none of these
    // can fail.
    (void)rtnl_route_set_family(
        route.get(),
        static_cast<std::uint8_t>(block.family() == IpFamily::v4 ? AF_INET : AF_INET6));
    (void)rtnl_route_set_type(route.get(), RTN_UNICAST);
    (void)rtnl_route_set_dst(route.get(), destination.get());
    rtnl_route_add_nexthop(route.get(), hop.release());  // the route owns it now
    return route;
}

}  // namespace

// ---- MAC addresses ----

Result<MacAddress> parse_mac(std::string_view field, std::string_view text) {
    if (text.empty()) {
        return Error{fmt::format("{}: the MAC address is empty", field)};
    }
    const auto not_a_mac = [&] {
        return Error{fmt::format(
            "{}: {} is not a MAC address (expected six hex pairs like 02:00:0a:00:00:01)", field,
            quote(text))};
    };
    if (text.size() != 17) {
        return not_a_mac();
    }
    const auto hex_digit = [](char c) -> int {
        if (c >= '0' && c <= '9') {
            return c - '0';
        }
        if (c >= 'a' && c <= 'f') {
            return c - 'a' + 10;
        }
        if (c >= 'A' && c <= 'F') {
            return c - 'A' + 10;
        }
        return -1;
    };
    MacAddress mac{};
    for (std::size_t i = 0; i < mac.size(); ++i) {
        const int high = hex_digit(text[3 * i]);
        const int low = hex_digit(text[3 * i + 1]);
        if (high < 0 || low < 0 || (i + 1 < mac.size() && text[3 * i + 2] != ':')) {
            return not_a_mac();
        }
        mac[i] = static_cast<std::uint8_t>(high * 16 + low);
    }
    if (is_multicast(mac)) {
        return Error{fmt::format(
            "{}: {} is a multicast MAC address; an interface needs a unicast one (even first byte)",
            field, quote(text))};
    }
    if (is_zero(mac)) {
        return Error{fmt::format("{}: {} is the all-zeros MAC address, which no interface may have",
                                 field, quote(text))};
    }
    return mac;
}

std::string to_string(const MacAddress& mac) {
    return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", mac[0], mac[1], mac[2], mac[3],
                       mac[4], mac[5]);
}

MacAddress mac_for_address(const IpAddress& address) {
    const auto bytes = address.bytes();
    MacAddress mac{0x02};  // locally administered, unicast
    if (address.is_v4()) {
        std::copy(bytes.begin(), bytes.end(), mac.begin() + 2);
    } else {
        std::copy(bytes.end() - 5, bytes.end(), mac.begin() + 1);
    }
    return mac;
}

// ---- checks ----

Status check_overlay_spec(const OverlaySpec& spec) {
    if (spec.vni == 0 || spec.vni > kMaxVni) {
        return Error{fmt::format("vni: {} is out of range; a VNI is 1 to {}", spec.vni, kMaxVni)};
    }
    if (spec.udp_port == 0) {
        return Error{"udp_port: 0 is not a UDP port"};
    }
    if (is_unspecified(spec.local_underlay)) {
        return Error{fmt::format("local_underlay: {} is not a node address",
                                 spec.local_underlay.to_string())};
    }
    const IpAddress& address = spec.address.address();
    const Cidr network = spec.address.network();
    if (spec.address.prefix() == address.max_prefix()) {
        return Error{fmt::format("address: {} is a single host; the job network needs a prefix",
                                 spec.address.to_string())};
    }
    if (spec.address.prefix() < address.max_prefix() - 1 &&
        (address == network.network() || (address.is_v4() && address == network.last()))) {
        return Error{fmt::format("address: {} is the {} address of {}", spec.address.to_string(),
                                 address == network.network() ? "network" : "broadcast",
                                 network.to_string())};
    }
    if (is_multicast(spec.mac) || is_zero(spec.mac)) {
        return Error{fmt::format("mac: {} is not a unicast MAC address", to_string(spec.mac))};
    }
    const std::uint32_t smallest = address.is_v4() ? kMinMtuV4 : kMinMtuV6;
    if (spec.mtu != 0 && (spec.mtu < smallest || spec.mtu > kMaxMtu)) {
        return Error{
            fmt::format("mtu: {} is out of range; an {} overlay needs {} to {} (or 0 for "
                        "the underlay's MTU minus the VXLAN overhead)",
                        spec.mtu, family_name(address), smallest, kMaxMtu)};
    }
    if (spec.gateway) {
        const IpAddress& gateway = *spec.gateway;
        if (gateway.family() != address.family()) {
            return Error{fmt::format("gateway: {} is {}, the job address {} is {}",
                                     gateway.to_string(), family_name(gateway), address.to_string(),
                                     family_name(address))};
        }
        if (!network.contains(gateway) || gateway == address) {
            return Error{fmt::format("gateway: {} must be another address inside {}",
                                     gateway.to_string(), network.to_string())};
        }
    }
    return {};
}

Status check_overlay_peers(std::span<const OverlayPeer> peers) {
    for (std::size_t i = 0; i < peers.size(); ++i) {
        const OverlayPeer& peer = peers[i];
        if (is_multicast(peer.mac) || is_zero(peer.mac)) {
            return Error{fmt::format("peers[{}].mac: {} is not a unicast MAC address", i,
                                     to_string(peer.mac))};
        }
        if (is_unspecified(peer.underlay)) {
            return Error{fmt::format("peers[{}].underlay: {} is not a node address", i,
                                     peer.underlay.to_string())};
        }
        if (i == 0) {
            continue;
        }
        if (peer.underlay.family() != peers[0].underlay.family()) {
            return Error{fmt::format("peers[{}].underlay: {} is {}, peers[0]'s is {}", i,
                                     peer.underlay.to_string(), family_name(peer.underlay),
                                     family_name(peers[0].underlay))};
        }
        if (peer.address.family() != peers[0].address.family()) {
            return Error{fmt::format("peers[{}].address: {} is {}, peers[0]'s is {}", i,
                                     peer.address.to_string(), family_name(peer.address),
                                     family_name(peers[0].address))};
        }
        for (std::size_t j = 0; j < i; ++j) {
            if (peers[j].address == peer.address) {
                return Error{fmt::format("peers[{}].address: {} is also peers[{}]'s", i,
                                         peer.address.to_string(), j)};
            }
            if (peers[j].mac == peer.mac) {
                return Error{fmt::format("peers[{}].mac: {} is also peers[{}]'s", i,
                                         to_string(peer.mac), j)};
            }
        }
    }
    return {};
}

// ---- operations ----

Status create_overlay(int job_netns_fd, const OverlaySpec& spec) {
    if (auto status = check_overlay_spec(spec); !status) {
        return status;
    }
    if (auto status = check_other_namespace(job_netns_fd); !status) {
        return status;
    }
    auto node = RouteSocket::open();
    if (!node) {
        return node.error();
    }
    auto underlay = find_underlay(*node, spec.local_underlay);
    if (!underlay) {
        return underlay.error();
    }
    auto mtu = overlay_mtu(spec, *underlay);
    if (!mtu) {
        return mtu.error();
    }
    auto job = open_socket_in(job_netns_fd, "job");
    if (!job) {
        return job.error();
    }
    // Checked first because the kernel says "File exists" both for this and for a VNI in use.
    if (auto existing = get_link(*job, kOverlayInterface, "job"); existing) {
        return Error{fmt::format("the job network namespace already has an {}", kOverlayInterface)};
    } else if (existing.error().code != ENODEV) {
        return existing.error();
    }

    // The VNI may still be held by the VXLAN device of this node's previous job, whose network
    // namespace the kernel is freeing in the background (a job's teardown leaves the device to
    // it: deleting it there costs tens of milliseconds of RCU grace periods at every job end).
    // The kernel's "File exists" is then only for a moment: try again, for a bounded time.
    const auto deadline = std::chrono::steady_clock::now() + kVniBusyWait;
    for (;;) {
        auto status = add_vxlan(*node, job_netns_fd, spec, *underlay, *mtu);
        if (status) {
            break;
        }
        if (status.error().code != EEXIST || std::chrono::steady_clock::now() >= deadline) {
            return status;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return configure_job_side_or_remove(*job, spec);
}

Result<bool> link_is_up(std::string_view name) {
    auto node = RouteSocket::open();
    if (!node) {
        return node.error();
    }
    auto link = get_link(*node, name, "node's");
    if (!link) {
        if (link.error().code == ENODEV) {
            return false;
        }
        return link.error();
    }
    return (rtnl_link_get_flags(link->get()) & IFF_UP) != 0;
}

Status adopt_overlay_link(int job_netns_fd, std::string_view name, const OverlaySpec& spec) {
    if (auto status = check_other_namespace(job_netns_fd); !status) {
        return status;
    }
    auto node = RouteSocket::open();
    if (!node) {
        return node.error();
    }
    auto link = get_link(*node, name, "node's");
    if (!link) {
        return link.error();
    }
    auto job = open_socket_in(job_netns_fd, "job");
    if (!job) {
        return job.error();
    }
    if (auto existing = get_link(*job, kOverlayInterface, "job"); existing) {
        return Error{fmt::format("the job network namespace already has an {}", kOverlayInterface)};
    }
    MessagePtr message(allocated(nlmsg_alloc_simple(RTM_NEWLINK, 0)));
    ifinfomsg header{};
    header.ifi_family = AF_UNSPEC;
    header.ifi_index = rtnl_link_get_ifindex(link->get());
    const std::string new_name(kOverlayInterface);
    // Moved, renamed and given its MTU in one request (the kernel moves it first): it never has
    // the job's name in the node's namespace, and the MTU is ours whatever the program that made
    // the device was still doing to it.
    if (nlmsg_append(message.get(), &header, sizeof header, NLMSG_ALIGNTO) < 0 ||
        nla_put_u32(message.get(), IFLA_NET_NS_FD, static_cast<std::uint32_t>(job_netns_fd)) < 0 ||
        nla_put_string(message.get(), IFLA_IFNAME, new_name.c_str()) < 0 ||
        (spec.mtu != 0 && nla_put_u32(message.get(), IFLA_MTU, spec.mtu) < 0)) {
        return Error{"build the request moving the overlay link: the message does not fit"};
    }
    if (auto moved = node->run(
            fmt::format("move {} into the job network namespace as {}", name, kOverlayInterface),
            [&](nl_sock* sk) { return nl_send_sync(sk, message.release()); });
        !moved) {
        return moved;
    }
    return configure_job_side_or_remove(*job, spec);
}

Status set_overlay_peers(int job_netns_fd, std::span<const OverlayPeer> peers) {
    if (auto status = check_overlay_peers(peers); !status) {
        return status;
    }
    if (auto status = check_other_namespace(job_netns_fd); !status) {
        return status;
    }
    auto overlay = open_job_overlay(job_netns_fd);
    if (!overlay) {
        return overlay.error();
    }
    RouteSocket& job = overlay->socket;
    const OverlayDevice& device = overlay->device;

    OverlayForwarding wanted;
    for (std::size_t i = 0; i < peers.size(); ++i) {
        const OverlayPeer& peer = peers[i];
        const bool is_self = std::find(device.addresses.begin(), device.addresses.end(),
                                       peer.address) != device.addresses.end();
        if (is_self) {
            if (peer.mac != device.mac) {
                return Error{fmt::format(
                    "peers[{}]: {} is this node's address, but its MAC {} is not {}'s {}", i,
                    peer.address.to_string(), to_string(peer.mac), kOverlayInterface,
                    to_string(device.mac))};
            }
            continue;
        }
        if (peer.mac == device.mac) {
            return Error{
                fmt::format("peers[{}].mac: {} is this node's own MAC", i, to_string(peer.mac))};
        }
        if (!device.addresses.empty() &&
            peer.address.family() != device.addresses.front().family()) {
            return Error{fmt::format("peers[{}].address: {} is {}, the overlay is {}", i,
                                     peer.address.to_string(), family_name(peer.address),
                                     family_name(device.addresses.front()))};
        }
        if (device.local_underlay && peer.underlay.family() != device.local_underlay->family()) {
            return Error{fmt::format("peers[{}].underlay: {} is {}, this node's underlay is {}", i,
                                     peer.underlay.to_string(), family_name(peer.underlay),
                                     family_name(*device.local_underlay))};
        }
        const FdbEntry flood{MacAddress{}, peer.underlay};
        if (!contains(wanted.fdb, flood)) {
            wanted.fdb.push_back(flood);
        }
        wanted.fdb.push_back({peer.mac, peer.underlay});
        wanted.neighbours.push_back({peer.address, peer.mac});
    }

    auto current = read_forwarding(job, device.ifindex);
    if (!current) {
        return current.error();
    }
    // Stale entries go first, so that a MAC that moved to another node is re-created cleanly.
    for (const FdbEntry& entry : current->fdb) {
        if (!contains(wanted.fdb, entry)) {
            if (auto status = delete_entry(job, fdb_request(device.ifindex, entry), entry);
                !status) {
                return status;
            }
        }
    }
    for (const NeighbourEntry& entry : current->neighbours) {
        const bool still_a_peer =
            std::any_of(wanted.neighbours.begin(), wanted.neighbours.end(),
                        [&](const NeighbourEntry& w) { return w.address == entry.address; });
        if (!still_a_peer) {
            if (auto status = delete_entry(job, neighbour_request(device.ifindex, entry), entry);
                !status) {
                return status;
            }
        }
    }
    for (const FdbEntry& entry : wanted.fdb) {
        // The all-zeros entry holds a list of destinations: append to it. A unicast MAC has one.
        const int flags = NLM_F_CREATE | (is_zero(entry.mac) ? NLM_F_APPEND : NLM_F_REPLACE);
        NeighPtr request = fdb_request(device.ifindex, entry);
        if (auto status =
                job.run(fmt::format("add {} in the job network namespace", describe(entry)),
                        [&](nl_sock* sk) { return rtnl_neigh_add(sk, request.get(), flags); });
            !status) {
            return status;
        }
    }
    for (const NeighbourEntry& entry : wanted.neighbours) {
        NeighPtr request = neighbour_request(device.ifindex, entry);
        if (auto status =
                job.run(fmt::format("add {} in the job network namespace", describe(entry)),
                        [&](nl_sock* sk) {
                            return rtnl_neigh_add(sk, request.get(), NLM_F_CREATE | NLM_F_REPLACE);
                        });
            !status) {
            return status;
        }
    }
    return {};
}

Status set_onlink_routes(int job_netns_fd, std::span<const Cidr> blocks) {
    if (auto status = check_other_namespace(job_netns_fd); !status) {
        return status;
    }
    auto overlay = open_job_overlay(job_netns_fd);
    if (!overlay) {
        return overlay.error();
    }
    RouteSocket& job = overlay->socket;
    const OverlayDevice& device = overlay->device;
    for (std::size_t i = 0; i < blocks.size(); ++i) {
        if (!device.addresses.empty() && blocks[i].family() != device.addresses.front().family()) {
            return Error{fmt::format("blocks[{}]: {} is not of {}'s address family", i,
                                     blocks[i].to_string(), kOverlayInterface)};
        }
    }
    auto current = read_onlink_routes(job, device.ifindex);
    if (!current) {
        return current.error();
    }
    for (const Cidr& block : *current) {
        if (std::find(blocks.begin(), blocks.end(), block) != blocks.end()) {
            continue;
        }
        RoutePtr request = onlink_route_request(device.ifindex, block);
        auto status =
            job.run(fmt::format("delete the on-link route to {} in the job network namespace",
                                block.to_string()),
                    [&](nl_sock* sk) { return rtnl_route_delete(sk, request.get(), 0); });
        if (!status && status.error().code != ESRCH && status.error().code != ENOENT) {
            return status;
        }
    }
    for (const Cidr& block : blocks) {
        RoutePtr request = onlink_route_request(device.ifindex, block);
        if (auto status = job.run(
                fmt::format("add an on-link route to {} via {} in the job network namespace",
                            block.to_string(), kOverlayInterface),
                [&](nl_sock* sk) {
                    return rtnl_route_add(sk, request.get(), NLM_F_CREATE | NLM_F_REPLACE);
                });
            !status) {
            return status;
        }
    }
    return {};
}

Result<std::vector<Cidr>> onlink_routes(int job_netns_fd) {
    auto overlay = open_job_overlay(job_netns_fd);
    if (!overlay) {
        return overlay.error();
    }
    RouteSocket& job = overlay->socket;
    const OverlayDevice& device = overlay->device;
    return read_onlink_routes(job, device.ifindex);
}

Result<OverlayForwarding> overlay_forwarding(int job_netns_fd) {
    auto overlay = open_job_overlay(job_netns_fd);
    if (!overlay) {
        return overlay.error();
    }
    RouteSocket& job = overlay->socket;
    const OverlayDevice& device = overlay->device;
    return read_forwarding(job, device.ifindex);
}

Result<std::vector<std::string>> link_names(int netns_fd) {
    auto socket = open_socket_in(netns_fd, "given");
    if (!socket) {
        return socket.error();
    }
    nl_cache* raw = nullptr;
    auto status = socket->run("list the links of the network namespace", [&](nl_sock* sk) {
        return rtnl_link_alloc_cache(sk, AF_UNSPEC, &raw);
    });
    if (!status) {
        return status.error();
    }
    CachePtr cache(raw);
    std::vector<std::pair<int, std::string>> links;
    for (nl_object* object = nl_cache_get_first(cache.get()); object != nullptr;
         object = nl_cache_get_next(object)) {
        auto* link = reinterpret_cast<rtnl_link*>(object);
        const char* name = rtnl_link_get_name(link);
        links.emplace_back(rtnl_link_get_ifindex(link), name != nullptr ? name : "");
    }
    std::sort(links.begin(), links.end());
    std::vector<std::string> names;
    names.reserve(links.size());
    for (auto& link : links) {
        names.push_back(std::move(link.second));
    }
    return names;
}

Result<std::uint32_t> underlay_mtu(const IpAddress& local) {
    auto node = RouteSocket::open();
    if (!node) {
        return node.error();
    }
    auto underlay = find_underlay(*node, local);
    if (!underlay) {
        return underlay.error();
    }
    return underlay->mtu;
}

Status delete_link(int netns_fd, std::string_view name) {
    if (name.empty() || name.size() >= IFNAMSIZ) {
        return Error{
            fmt::format("link name {} must be 1 to {} characters", quote(name), IFNAMSIZ - 1)};
    }
    auto socket = open_socket_in(netns_fd, "given");
    if (!socket) {
        return socket.error();
    }
    return delete_named_link(*socket, name, "given");
}

}  // namespace vcpilot::pilot
