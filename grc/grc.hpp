// vc-grcd's engine: the Grc service (see proto/vcpilot/v1/coordinator.proto).
//
// The GRC owns the clusters that span sites: it leases one block per site from the global pool
// (never overlapping any live block of any cluster or site), a VNI and the cluster's CA key. It
// hands each site's CRM its share over the CRM's Connect stream, collects the nodes' reports
// from every site, runs the barrier across sites, signs certificates and pushes each site the
// cluster view. Like the CRM, one writer thread owns the store and every decision; replies and
// messages leave only after the commit.
#pragma once

#include <chrono>
#include <memory>
#include <set>
#include <string>

#include "common/result.hpp"
#include "coordinator/cluster_store.hpp"
#include "coordinator/ipam.hpp"
#include "vcpilot/v1/coordinator.grpc.pb.h"

namespace vcpilot::coordinator {

struct GrcOptions {
    std::set<std::string> sites;  // the sites this GRC serves
    AddressPool pool;             // every site's blocks come from here
    std::uint32_t vni_first = 1;
    std::uint32_t vni_last = 16777215;
    // How long a release waits for every site to confirm before it frees the blocks anyway.
    std::chrono::milliseconds release_timeout{60000};
    std::chrono::seconds certificate_lifetime{std::chrono::hours(24 * 30)};
    std::string n2n_supernode{};  // IPv4:port every site's nodes reach; empty: no n2n clusters
};

// Who is calling: the common name of the client's TLS certificate, verified against the CA by
// the transport. "crm:<site>" is a site's CRM; anything else is a user name ("root" is root).
Result<std::string> tls_identity(const grpc::CallbackServerContext& context);

class GrcServer {
  public:
    static Result<std::unique_ptr<GrcServer>> start(GrcOptions options, ClusterStore store);
    ~GrcServer();

    grpc::Service* service();
    // Ends every stream and stops the writer; call after the grpc::Server has shut down.
    void stop();

    struct Impl;

  private:
    explicit GrcServer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
    std::unique_ptr<grpc::Service> service_;
};

}  // namespace vcpilot::coordinator
