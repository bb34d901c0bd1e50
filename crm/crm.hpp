// vc-crmd's engine: the Crm service of one site (see proto/vcpilot/v1/coordinator.proto).
//
// One writer thread owns the store and every decision. gRPC reactors only authenticate, parse
// and post work to it; the writer applies a batch of work items in one transaction (a savepoint
// each, so a refused item changes nothing), commits once, and only then answers callers and
// sends commands to pilots. A reply or a command therefore never announces anything the store
// does not already hold, and a burst of pilot reports costs one fsync, not one each.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "common/result.hpp"
#include "coordinator/cluster_store.hpp"
#include "coordinator/ipam.hpp"
#include "crm/slurm.hpp"
#include "vcpilot/v1/coordinator.grpc.pb.h"

namespace vcpilot::coordinator {

// Where a site with a GRC finds it, and the CRM's TLS identity (certificate CN "crm:<site>").
struct GrcUplinkOptions {
    std::string target;  // HOST:PORT
    std::string tls_ca;  // PEM text, not paths
    std::string tls_cert;
    std::string tls_key;
};

struct CrmOptions {
    std::string site;                 // this site's name
    std::optional<AddressPool> pool;  // the site's own range (a site without a GRC)
    std::uint32_t vni_first = 1;
    std::uint32_t vni_last = 16777215;
    std::string munge_socket;  // empty = libmunge's default
    // Pilots attaching over TCP must come from an address their host name resolves to.
    bool check_pilot_address = true;
    // How long a pilot that lost its stream (or had one before a restart of this CRM) may take to
    // attach again before its node counts as gone and its cluster as FAILED.
    std::chrono::milliseconds reattach_grace{60000};
    // How long a release waits for pilots to confirm they stopped before it frees the blocks.
    std::chrono::milliseconds release_timeout{30000};
    // Certificates are valid from a little before their signing (clock skew between nodes)
    // until this long after.
    std::chrono::seconds certificate_lifetime{std::chrono::hours(24 * 30)};
    // The GRC this site belongs to, if any: its clusters across sites come from there.
    std::optional<GrcUplinkOptions> grc;
    // The site's Slurm, for clusters whose pilots come from a job the CRM submits
    // (PILOT_SOURCE_SLURM); none: such clusters are refused here.
    std::optional<SlurmOptions> slurm;
    std::string n2n_supernode;  // IPv4:port for this site's own n2n clusters; empty: none
    // The site's nodes cannot be reached from other sites: told to the GRC, which then makes
    // no VXLAN cluster spanning this site and another.
    bool behind_nat = false;
};

class CrmServer {
  public:
    // Takes the store, reconciles it (resumes releases that were under way) and starts the
    // writer thread. The service is then ready to register with a grpc::ServerBuilder.
    static Result<std::unique_ptr<CrmServer>> start(CrmOptions options, ClusterStore store);
    ~CrmServer();

    grpc::Service* service();
    // Ends every stream and stops the writer; call after the grpc::Server has shut down.
    void stop();

    struct Impl;

  private:
    explicit CrmServer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
    std::unique_ptr<grpc::Service> service_;
};

}  // namespace vcpilot::coordinator
