// Who is calling a coordinator. On a site, callers prove themselves with MUNGE (pilots as root,
// users as themselves); between sites and towards the GRC, with TLS client certificates.
#pragma once

#include <sys/types.h>

#include <grpcpp/grpcpp.h>
#include <string>
#include <string_view>

#include "common/ip.hpp"
#include "common/result.hpp"

namespace vcpilot::coordinator {

struct Caller {
    uid_t uid = static_cast<uid_t>(-1);
    std::string name;
    bool is_root() const noexcept { return uid == 0; }
};

// The request metadata key that carries a user's MUNGE credential.
inline constexpr const char* kMungeMetadata = "vcpilot-munge";

// The payload a user's credential for `method` must carry: a credential minted for listing
// cannot be replayed to release.
std::string munge_payload_for(std::string_view method);

// Decodes the caller's credential for `method`; the caller's name comes from the user database.
Result<Caller> munge_caller(const grpc::CallbackServerContext& context, std::string_view method,
                            const std::string& munge_socket);

// The address of a TCP peer ("ipv4:10.0.0.1:5000", "ipv6:[::1]:5000"); an error for other
// transports (unix sockets).
Result<IpAddress> peer_address(std::string_view peer);

// Whether `host` resolves (through this machine's resolver: /etc/hosts, DNS) to `address`.
Status host_has_address(const std::string& host, const IpAddress& address);

}  // namespace vcpilot::coordinator
