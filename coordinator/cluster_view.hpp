// What both coordinators derive from their store the same way: a cluster as callers see it, the
// view its nodes receive at the barrier, certificates, and the cluster state its nodes imply.
// Everything here runs on the coordinator's writer thread, inside its transaction.
#pragma once

#include <chrono>
#include <fmt/format.h>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <spdlog/spdlog.h>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "coordinator/cluster_store.hpp"
#include "coordinator/sshcert.hpp"
#include "coordinator/streams.hpp"
#include "vcpilot/v1/coordinator.pb.h"

namespace vcpilot::coordinator {

const SiteRecord* site_of(const ClusterRecord& cluster, std::string_view site);

// The cluster as its owner sees it; nodes only if asked (GetCluster, WatchCluster).
Result<v1::Cluster> describe_cluster(ClusterStore& store, const ClusterRecord& cluster,
                                     bool with_nodes);

// Every node of the cluster has reported its keys: the barrier is passed.
bool every_node_keyed(const std::vector<NodeRecord>& nodes);

// The part of the cluster view that every node receives: sites, blocks, underlay addresses and,
// in exchange mode, every key; in CA mode, the CA's public key (`ca` must then be given).
Result<v1::ClusterView> common_view(const ClusterRecord& cluster,
                                    const std::vector<NodeRecord>& nodes, const SshCa* ca);

// Signs `node`'s host key (principals: its name and address) and user key (principal: the
// cluster's owner) with the cluster's CA, valid from 5 minutes ago for `lifetime`.
Status certify_node(const SshCa& ca, const ClusterRecord& cluster, NodeRecord& node,
                    std::chrono::seconds lifetime);

// The cluster state its nodes imply: FAILED (with the first failed node's reason) as soon as
// one failed or its pilot stopped (GONE), READY once every node is, while it is PENDING or READY.
// Writes it if it changed; returns whether it did.
Result<bool> settle_state(ClusterStore& store, const ClusterRecord& cluster,
                          const std::vector<NodeRecord>& nodes);
// The same from the node counts; reads the nodes only when one failed (for its reason).
Result<bool> settle_state(ClusterStore& store, const ClusterRecord& cluster,
                          const NodeSummary& summary);

// Checks what a CRM reports about one node (from the network: the GRC trusts the CRM's identity,
// not its bytes): one-line fields of bounded length, an underlay address, Ed25519 public keys
// given together, a known state. The error names the node and the field.
Status check_node_report(const v1::NodeReport& report);

// The CA keys a coordinator holds, loaded from the store on first use.
class CaCache {
  public:
    Result<const SshCa*> get(ClusterStore& store, const std::string& id);
    void forget(const std::string& id) { cas_.erase(id); }
    void clear() { cas_.clear(); }

  private:
    std::map<std::string, SshCa> cas_;
};

// common_view with the cluster's CA from `cas` when it is in CA mode.
Result<v1::ClusterView> common_view(ClusterStore& store, CaCache& cas, const ClusterRecord& cluster,
                                    const std::vector<NodeRecord>& nodes);

// Clusters that this coordinator releases at the end of their walltime, with when.
class Walltimes {
  public:
    // Every live cluster of the store that has an expiry (at start).
    Status load(ClusterStore& store);
    void track(const ClusterRecord& cluster);
    void forget(const std::string& id) { due_.erase(id); }
    std::optional<std::int64_t> next() const;
    // The clusters due by `now_unix_ms`, no longer tracked.
    std::vector<std::string> take_due(std::int64_t now_unix_ms);
    // Calls release(cluster, reason) for every cluster due by `now_unix_ms` that is neither
    // RELEASING nor RELEASED; errors are logged (a tick has no caller to tell).
    template <typename Release>
    void release_due(ClusterStore& store, std::int64_t now_unix_ms, Release&& release);

  private:
    std::map<std::string, std::int64_t> due_;
};

template <typename Release>
void Walltimes::release_due(ClusterStore& store, std::int64_t now_unix_ms, Release&& release) {
    for (const auto& id : take_due(now_unix_ms)) {
        auto found = store.find(id);
        if (!found || !*found || (*found)->state == v1::CLUSTER_STATE_RELEASING ||
            (*found)->state == v1::CLUSTER_STATE_RELEASED) {
            continue;
        }
        const ClusterRecord& cluster = **found;
        const std::string reason =
            fmt::format("its walltime of {} min ended", cluster.walltime_minutes);
        spdlog::info("cluster {}: {}; releasing it", id, reason);
        if (auto ok = release(cluster, reason); !ok) {
            spdlog::error("cluster {}: {}", id, ok.error().message);
        }
    }
}

// The write side of a server stream fed by the writer thread (WatchCluster, Run, Exec).
template <typename T>
struct WriterLink {
    explicit WriterLink(std::shared_ptr<Outbox<T>> outbox_) : outbox(std::move(outbox_)) {}
    const std::shared_ptr<Outbox<T>> outbox;
};

template <typename T>
class WriterReactor final : public grpc::ServerWriteReactor<T> {
  public:
    WriterReactor()
        : outbox_(std::make_shared<Outbox<T>>([this](const T* m) { this->StartWrite(m); },
                                              [this](const grpc::Status& s) { this->Finish(s); })),
          link_(std::make_shared<WriterLink<T>>(outbox_)) {}

    std::shared_ptr<WriterLink<T>> link() const { return link_; }
    void OnWriteDone(bool ok) override { outbox_->write_done(ok); }
    void OnCancel() override { outbox_->finish(grpc::Status::CANCELLED); }
    void OnDone() override {
        outbox_->gone();
        delete this;
    }

  private:
    std::shared_ptr<Outbox<T>> outbox_;
    std::shared_ptr<WriterLink<T>> link_;
};

// WatchCluster callers, told of every change once it is durable.
class Watchers {
  public:
    using Link = std::shared_ptr<WriterLink<v1::Cluster>>;

    // Sends the cluster as it is now, then keeps the caller for later changes (unless the
    // cluster is already released: then the stream ends).
    Status add(ClusterStore& store, const ClusterRecord& cluster, Link link);
    // After a commit: every watcher of a cluster in `changed` gets it as it is now.
    void notify(ClusterStore& store, const std::set<std::string>& changed);

  private:
    std::map<std::string, std::vector<Link>> watchers_;
};

grpc::Status to_grpc(grpc::StatusCode code, const Status& status);

}  // namespace vcpilot::coordinator
