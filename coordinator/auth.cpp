#include "coordinator/auth.hpp"

#include <netdb.h>
#include <pwd.h>
#include <sys/socket.h>

#include <array>
#include <cstring>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <memory>
#include <optional>
#include <vector>

#include "common/munge.hpp"
#include "common/text.hpp"

namespace vcpilot::coordinator {

std::string munge_payload_for(std::string_view method) {
    return fmt::format("vcpilot-call\n{}", method);
}

Result<Caller> munge_caller(const grpc::CallbackServerContext& context, std::string_view method,
                            const std::string& munge_socket) {
    const auto& metadata = context.client_metadata();
    const auto found = metadata.find(kMungeMetadata);
    if (found == metadata.end()) {
        return Error{"no MUNGE credential in the request (vcctl sends one; is munged running?)"};
    }
    auto identity =
        munge_decode(std::string_view(found->second.data(), found->second.size()), munge_socket);
    if (!identity) {
        return identity.error();
    }
    if (identity->payload != munge_payload_for(method)) {
        return Error{
            fmt::format("the MUNGE credential was made for another request, not {}", method)};
    }
    Caller caller;
    caller.uid = identity->uid;
    std::vector<char> buffer(16384);
    passwd entry{};
    passwd* result = nullptr;
    if (::getpwuid_r(identity->uid, &entry, buffer.data(), buffer.size(), &result) != 0 ||
        result == nullptr) {
        return Error{
            fmt::format("uid {} has no user name on the coordinator's host", identity->uid)};
    }
    caller.name = result->pw_name;
    return caller;
}

Result<IpAddress> peer_address(std::string_view peer) {
    std::string_view rest;
    if (peer.starts_with("ipv4:")) {
        rest = peer.substr(5);
        rest = rest.substr(0, rest.rfind(':'));
    } else if (peer.starts_with("ipv6:")) {
        rest = peer.substr(5);
        rest = rest.substr(0, rest.rfind(':'));
        if (rest.size() >= 2 && rest.front() == '[' && rest.back() == ']') {
            rest = rest.substr(1, rest.size() - 2);
        }
        // Link-local peers carry a zone ("fe80::1%eth0"); addresses compare without it.
        rest = rest.substr(0, rest.find('%'));
    } else {
        return Error{fmt::format("peer {} is not a TCP peer", quote(peer, 80))};
    }
    return IpAddress::parse(rest);
}

Status host_has_address(const std::string& host, const IpAddress& address) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* raw = nullptr;
    if (const int error = ::getaddrinfo(host.c_str(), nullptr, &hints, &raw); error != 0) {
        return Error{
            fmt::format("host {} does not resolve: {}", quote(host, 80), ::gai_strerror(error))};
    }
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> list(raw, ::freeaddrinfo);
    std::vector<std::string> seen;
    for (const addrinfo* entry = list.get(); entry != nullptr; entry = entry->ai_next) {
        std::optional<IpAddress> candidate;
        if (entry->ai_family == AF_INET) {
            const auto* in = reinterpret_cast<const sockaddr_in*>(entry->ai_addr);
            std::array<std::uint8_t, 4> bytes{};
            std::memcpy(bytes.data(), &in->sin_addr, 4);
            candidate = IpAddress::from_v4_bytes(bytes);
        } else if (entry->ai_family == AF_INET6) {
            const auto* in6 = reinterpret_cast<const sockaddr_in6*>(entry->ai_addr);
            std::array<std::uint8_t, 16> bytes{};
            std::memcpy(bytes.data(), &in6->sin6_addr, 16);
            candidate = IpAddress::from_v6_bytes(bytes);
        }
        if (candidate && *candidate == address) {
            return {};
        }
        if (candidate) {
            seen.push_back(candidate->to_string());
        }
    }
    return Error{fmt::format("the pilot claims to run on {} ({}), but connected from {}",
                             quote(host, 80), fmt::join(seen, ", "), address.to_string())};
}

}  // namespace vcpilot::coordinator
