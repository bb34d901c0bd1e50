// What vc-crmd and vc-grcd share as programs: parsing their configuration, listening, and
// waiting for the signal to stop.
#pragma once

#include <grpcpp/grpcpp.h>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "coordinator/ipam.hpp"

namespace vcpilot::coordinator {

// "FIRST-LAST" within the 24-bit VXLAN network identifier space.
Result<std::pair<std::uint32_t, std::uint32_t>> parse_vni_range(const std::string& text);

// One or more CIDRs; `flag` names the option in errors.
Result<AddressPool> parse_pools(const std::string& flag, const std::vector<std::string>& texts);

// A PEM file's text (certificate or key); the error names the option.
Result<std::string> read_pem(const std::string& flag, const std::string& path);

// --n2n-supernode: an IPv4 address and port ("172.31.0.2:7654"), as pilots will be given it.
Status check_supernode(const std::string& flag, const std::string& text);

// Server credentials for mutual TLS: the client must present a certificate signed by `ca`.
std::shared_ptr<grpc::ServerCredentials> mutual_tls(const std::string& ca, const std::string& cert,
                                                    const std::string& key);

// Builds and starts a server with `service` on every address of `listen`; with `ports`, says
// which TCP port each address got (the one chosen for HOST:0).
Result<std::unique_ptr<grpc::Server>> serve_on(
    const std::vector<std::string>& listen,
    const std::vector<std::shared_ptr<grpc::ServerCredentials>>& credentials,
    grpc::Service* service, std::vector<int>* ports = nullptr);

// Blocks SIGTERM and SIGINT in this thread (call first in main: threads inherit the mask).
void block_stop_signals();
// Waits for one of them; returns its number.
int wait_for_stop_signal();

}  // namespace vcpilot::coordinator
