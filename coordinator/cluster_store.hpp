// The coordinators' record of virtual clusters: a cluster, the blocks of its sites and its
// nodes, kept in the lease store's database so that a cluster and its leases change together.
//
// Nothing here opens a transaction: the caller (the coordinator's single writer) holds one write
// transaction per batch of requests and a savepoint per request, so a batch is one fsync and a
// refused request changes nothing. Every method reports failures, SQLite's included, as values.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip.hpp"
#include "common/naming.hpp"
#include "common/result.hpp"
#include "coordinator/ipam.hpp"
#include "coordinator/lease_store.hpp"
#include "vcpilot/v1/coordinator.pb.h"

namespace SQLite {
class Statement;
}

namespace vcpilot::coordinator {

struct SiteRecord {
    std::string site;
    std::uint32_t nodes = 0;
    Cidr block;
    bool released = false;  // at the GRC: the site's CRM confirmed it holds nothing of it
    std::string pilot_job;  // PILOT_SOURCE_SLURM: the site's Slurm job id, once submitted
};

// ClusterRecord::origin of a cluster the GRC assigned to this site.
inline constexpr std::string_view kOriginGrc = "grc";

struct ClusterRecord {
    std::string id;
    std::string owner;
    v1::ClusterState state = v1::CLUSTER_STATE_PENDING;
    std::string reason;
    v1::KeyMode key_mode = v1::KEY_MODE_CA;
    std::optional<std::uint32_t> vni;  // none once released
    std::string name_prefix;
    std::uint32_t slots = 1;
    std::string image;
    std::string image_mount;
    std::vector<SiteRecord> sites;
    std::int64_t created_unix_ms = 0;
    std::int64_t changed_unix_ms = 0;
    std::int64_t release_by_ms = 0;
    std::string origin;  // empty: made by this coordinator; kOriginGrc: assigned by the GRC
    v1::PilotSource pilots = v1::PILOT_SOURCE_JOBS;
    std::uint32_t walltime_minutes = 0;  // 0: none
    // When this coordinator releases it for its walltime (0: never; at a CRM, 0 for GRC
    // clusters, whose walltime the GRC keeps).
    std::int64_t expires_unix_ms = 0;
    v1::Overlay overlay = v1::OVERLAY_VXLAN;
    std::string n2n_key;        // OVERLAY_N2N: the community's key, a secret of the cluster
    std::string n2n_supernode;  // OVERLAY_N2N: IPv4:port

    std::uint32_t node_count() const;
};

struct NodeRecord {
    std::string site;
    std::uint32_t ordinal = 0;
    std::string host;  // the pilot holding this node: physical host and job; empty = free
    std::string job;
    std::string underlay;
    std::string host_key;
    std::string user_key;
    std::string host_certificate;
    std::string user_certificate;
    v1::PilotState state = v1::PILOT_STATE_NEW;
    std::string reason;
    // Lent to a Slurm job that joined the cluster (--vc-cluster): when the job's pilot stops,
    // the node is free again for the next job instead of failing the cluster.
    bool lent = false;
};

// A validated request to create a cluster.
// Counts over a cluster's nodes (ClusterStore::node_summary).
struct NodeSummary {
    std::uint32_t total = 0;
    std::uint32_t keyed = 0;   // reported their keys (host_key not empty)
    std::uint32_t ready = 0;   // PILOT_STATE_READY
    std::uint32_t failed = 0;  // PILOT_STATE_FAILED or PILOT_STATE_GONE
};

struct ClusterSpec {
    std::string owner;
    std::vector<v1::SiteRequest> sites;
    v1::KeyMode key_mode = v1::KEY_MODE_CA;
    std::string name_prefix = "vc";
    std::uint32_t slots = 1;
    std::string image;
    std::string image_mount;
    v1::PilotSource pilots = v1::PILOT_SOURCE_JOBS;
    std::uint32_t walltime_minutes = 0;
    v1::Overlay overlay = v1::OVERLAY_VXLAN;
};

// Where a coordinator takes a new cluster's resources from.
struct CreatePolicy {
    const AddressPool* pool = nullptr;  // blocks are leased from here
    std::uint32_t vni_first = 1;        // VNIs are the lowest free in [first, last]
    std::uint32_t vni_last = 16777215;
    bool hold_ca = false;        // generate and keep the cluster's CA key here
    std::string id;              // the cluster's id; empty: a fresh random one
    std::string origin;          // ClusterRecord::origin
    bool keeps_walltime = true;  // release the cluster here when its walltime ends
    // OVERLAY_N2N: the supernode of the cluster's community (the key is made here).
    std::string n2n_supernode;
};

// ClusterRecord::origin of a cluster made for one Slurm job by its pilots (id "vcj-<job>").
inline constexpr std::string_view kOriginJob = "job";

// Checks a CreateClusterRequest's fields (not whether the sites exist, which only the
// coordinator knows) and returns the spec; the error names the field.
Result<ClusterSpec> validate_create(const v1::CreateClusterRequest& request, std::string owner);

// The one-site CreateClusterRequest a GRC assignment amounts to at its site, to be checked
// with validate_create (as adopt does).
v1::CreateClusterRequest request_of(const v1::SiteAssignment& assignment);

// The virtual hostname of node `ordinal` of `site`, and its address.
std::string node_name(std::string_view prefix, std::string_view site, std::uint32_t ordinal);
Result<IpAddress> node_address(const Cidr& block, std::uint32_t ordinal);

class ClusterStore {
  public:
    explicit ClusterStore(LeaseStore store);
    ~ClusterStore();
    ClusterStore(ClusterStore&&) noexcept;
    ClusterStore& operator=(ClusterStore&&) = delete;  // the kept statements name its database

    LeaseStore& leases() noexcept { return store_; }

    // Creates the cluster: id, VNI, one leased block per site (explicit or sized to its nodes),
    // node rows, and the CA key if the policy says so. Refuses overlapping explicit blocks, a
    // pool too small, no free VNI.
    Result<ClusterRecord> create(const ClusterSpec& spec, const CreatePolicy& policy);

    Result<std::optional<ClusterRecord>> find(std::string_view id);
    // Clusters of `owner` (every owner's when empty), released ones only if asked, oldest first.
    Result<std::vector<ClusterRecord>> list(std::string_view owner, bool include_released);
    // Clusters in one of `states`.
    Result<std::vector<ClusterRecord>> in_states(const std::vector<v1::ClusterState>& states);
    Result<std::vector<NodeRecord>> nodes(std::string_view id);
    // One node of the cluster, by site and ordinal (none if there is no such node): a report
    // about one node need not read them all.
    Result<std::optional<NodeRecord>> node(std::string_view id, std::string_view site,
                                           std::uint32_t ordinal);
    // How many nodes the cluster has and how many of them are keyed, READY, FAILED or GONE,
    // counted by SQLite: what the barrier and the cluster state need, without reading the rows.
    Result<NodeSummary> node_summary(std::string_view id);

    // Records a GRC cluster's share of this site as the GRC made it (block, VNI, owner), with
    // its nodes; the block is leased here too, so that no local cluster overlaps it. Again for
    // the same cluster: nothing changes (a released one is recorded afresh).
    Status adopt(const v1::SiteAssignment& assignment);
    // Deletes a RELEASED cluster's row, so that its id can be made again (a job cluster's id
    // comes back when Slurm's job ids wrap).
    Status forget_released(std::string_view id);
    // At the GRC: the site's CRM confirmed the cluster's release.
    Status set_site_released(std::string_view id, std::string_view site);
    // The Slurm job holding the cluster's nodes at `site` (PILOT_SOURCE_SLURM).
    Status set_pilot_job(std::string_view id, std::string_view site, std::string_view job);

    // How many nodes of the cluster at `site` are free or already held by a pilot of `job`:
    // the most a job joining the cluster can have there.
    Result<std::uint32_t> nodes_open_to(std::string_view id, std::string_view site,
                                        std::string_view job);
    // Gives the pilot (host, job) a node of the cluster: the one it already holds, else the
    // free node whose ordinal is `rank` (the pilot's place in its Slurm job's node list, 1-based;
    // 0: none), else the lowest free ordinal. Refuses when every node is taken.
    Result<NodeRecord> attach(std::string_view id, std::string_view host, std::string_view job,
                              std::string_view underlay, std::uint32_t rank = 0);
    // Writes every field of `node` but its site and ordinal.
    Status update_node(std::string_view id, const NodeRecord& node);
    Status set_state(std::string_view id, v1::ClusterState state, std::string_view reason,
                     std::int64_t release_by_ms = 0);
    // Frees the cluster's leases and VNI, forgets its nodes; the cluster stays, RELEASED.
    Status finish_release(std::string_view id);
    // The cluster CA's private key seed, when this coordinator holds it.
    Result<std::optional<std::array<std::uint8_t, 32>>> ca_seed(std::string_view id);
    // Forgets released clusters changed before `before_unix_ms`.
    Status prune_released(std::int64_t before_unix_ms);

  private:
    // A statement for `sql`, prepared once and kept for the connection's life (preparing costs
    // more than running most of them), reset and unbound: ready to bind. Not for two uses at once.
    SQLite::Statement& prepared(const std::string& sql);

    LeaseStore store_;
    // After store_: destroyed (finalized) before the database closes.
    std::map<std::string, std::unique_ptr<SQLite::Statement>> statements_;
};

}  // namespace vcpilot::coordinator
