// The inside of vc-crmd's engine (see crm.hpp): CrmServer::Impl, the state its writer thread
// owns, and the little the files of crm/ share. Private to crm/: nothing outside includes it.
//
// One file per concern, each defining its part of Impl:
//   crm.cpp            the writer core: its hooks, a cluster's creation, state and release, and
//                      CrmServer (start, reconciliation, stop)
//   pilot_streams.cpp  the pilots' streams: hello, keys, status, output, a stream closing, the
//                      views at the barrier, commands to pilots, pilots that did not come back
//   slurm_jobs.cpp     the site's Slurm: the pilot jobs this CRM submits (PILOT_SOURCE_SLURM),
//                      and the clusters of jobs that bring their own pilots (--vc, --vc-cluster)
//   grc_uplink.cpp     the GRC's side: the stream to the GRC and the commands it sends
//   api.cpp            the Crm service: its reactors and handlers
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "coordinator/auth.hpp"
#include "coordinator/cluster_store.hpp"
#include "coordinator/cluster_view.hpp"
#include "coordinator/lease_store.hpp"
#include "coordinator/streams.hpp"
#include "coordinator/writer.hpp"
#include "crm/crm.hpp"
#include "crm/slurm.hpp"
#include "vcpilot/v1/coordinator.grpc.pb.h"

namespace vcpilot::coordinator {

using store_detail::now_unix_ms;

// ---- the streams ----

struct NodeKey {
    std::string site;
    std::uint32_t ordinal = 0;
    // NOLINTNEXTLINE(modernize-use-nullptr): clang-tidy 14 misreads the generated `< 0`.
    auto operator<=>(const NodeKey&) const = default;
};

// One attached pilot, as the writer thread sees it.
struct PilotLink {
    explicit PilotLink(std::shared_ptr<Outbox<v1::PilotCommand>> outbox_)
        : outbox(std::move(outbox_)) {}
    // Shared with the reactor, and safe to use after it is gone (sends are then dropped).
    const std::shared_ptr<Outbox<v1::PilotCommand>> outbox;
    // Set once by the writer thread when the hello is accepted.
    std::string cluster;
    std::string host, job;
    NodeKey node;
    bool attached = false;
    bool view_sent = false;
    // Its node was lent to its job and has been taken back: what it still says is not news.
    bool returned = false;
};

using Uplink = std::shared_ptr<Outbox<v1::SiteReport>>;

inline bool from_grc(const ClusterRecord& cluster) {
    return cluster.origin == kOriginGrc;
}

inline bool of_job(const ClusterRecord& cluster) {
    return cluster.origin == kOriginJob;
}

// Tells the GRC which Slurm job holds a cluster's nodes at this site.
inline v1::SiteReport pilot_job_report(const std::string& cluster_id, const std::string& job) {
    v1::SiteReport report;
    report.mutable_pilot_job()->set_cluster_id(cluster_id);
    report.mutable_pilot_job()->set_job_id(job);
    return report;
}

// ---- the writer thread ----

struct CrmServer::Impl {
    Impl(CrmOptions options_, ClusterStore store_)
        : options(std::move(options_)), store(std::move(store_)) {}

    const CrmOptions options;
    ClusterStore store;  // the writer thread's alone

    Writer writer{store.leases().database(), store.leases().path(),
                  WriterHooks{[this](Effects& effects) {
                                  expire_releases(effects);
                                  expire_absent_pilots(effects);
                                  expire_walltimes(effects);
                              },
                              [this] { after_batch(); },
                              [this] {
                                  cas.clear();
                                  dirty.clear();
                                  reported.clear();
                                  // Their submissions were never queued (effects of a failed
                                  // commit do not run); sbatch finds a job queued twice anyway.
                                  submitting.clear();
                              },
                              [this] { return next_release_deadline(); }}};

    // Writer-thread state. None of it is a fact the store lacks: links and watchers are open
    // connections, deadlines and CAs are derived from stored rows, and the views of GRC
    // clusters are sent again by the GRC whenever this CRM connects.
    std::map<std::pair<std::string, NodeKey>, std::shared_ptr<PilotLink>> links;
    Watchers watchers;
    std::map<std::string, std::int64_t> release_deadlines;  // RELEASING clusters
    // Nodes whose pilot is not attached but was: by when it must be back.
    std::map<std::pair<std::string, NodeKey>, std::int64_t> reattach_deadlines;
    CaCache cas;
    std::set<std::string> dirty;  // clusters changed in this batch
    // GRC clusters: the connected stream to the GRC (none while cut off), the views it sent,
    // and nodes whose change the GRC has not been told yet.
    Uplink uplink;
    std::map<std::string, v1::SiteClusterView> grc_views;
    std::set<std::pair<std::string, std::uint32_t>> reported;
    struct Command {
        std::function<void(const v1::NodeOutput&)> deliver;         // in effects
        std::function<void()> done;                                 // in effects
        std::map<std::shared_ptr<PilotLink>, std::string> pending;  // link -> node name
    };
    std::map<std::uint64_t, Command> commands;
    std::uint64_t next_command = 1;

    // The GRC uplink's thread (a site with a GRC only).
    std::thread uplink_thread;
    std::mutex uplink_mutex;
    std::condition_variable uplink_changed;
    bool uplink_stopping = false;

    // Clusters of this site's own that end with their walltime.
    Walltimes walltimes;

    // PILOT_SOURCE_SLURM: the site's Slurm (none: this CRM submits no jobs), the thread that
    // runs its commands in order (each may take seconds; the writer never waits for one), and
    // the clusters whose pilot job is being submitted.
    std::optional<Slurm> slurm;
    std::thread slurm_thread;
    std::mutex slurm_mutex;
    std::condition_variable slurm_changed;
    std::deque<std::function<void()>> slurm_queue;
    bool slurm_stopping = false;
    std::set<std::string> submitting;

    // -- the writer core (crm.cpp) --

    void post(Work work) { writer.post(std::move(work)); }
    // The writer's hooks.
    std::optional<std::int64_t> next_release_deadline() const;
    void after_batch();
    void expire_releases(Effects& effects);
    void expire_walltimes(Effects& effects);
    // Checks what can be checked without the store; the error names the field.
    Result<ClusterSpec> check_create(const v1::CreateClusterRequest& request,
                                     const Caller& caller) const;
    Result<ClusterRecord> create(const ClusterSpec& spec, Effects& effects);
    Result<ClusterRecord> owned_cluster(const std::string& id, const Caller& caller);
    Status settle(const ClusterRecord& cluster);
    Status begin_release(const ClusterRecord& cluster, std::string_view reason, Effects& effects);
    Status maybe_finish_release(const std::string& id, Effects& effects);
    Status finish_release(const std::string& id, Effects& effects);

    // -- the pilots' streams (pilot_streams.cpp) --

    // Handlers, on the writer thread inside a transaction.
    Status hello(const std::shared_ptr<PilotLink>& link, const v1::PilotHello& hello,
                 const std::string& underlay, Effects& effects);
    Status keys(const std::shared_ptr<PilotLink>& link, const v1::PilotKeys& keys,
                Effects& effects);
    Status pilot_status(const std::shared_ptr<PilotLink>& link, const v1::PilotStatus& status,
                        Effects& effects);
    void pilot_output(const std::shared_ptr<PilotLink>& link, const v1::PilotCommandOutput& out,
                      Effects& effects);
    Status closed(const std::shared_ptr<PilotLink>& link, Effects& effects);
    Status send_views(const ClusterRecord& cluster, Effects& effects);
    Status start_command(const ClusterRecord& cluster, const v1::RunRequest& run, bool as_root,
                         bool first_only, Command command, Effects& effects);
    std::vector<std::shared_ptr<PilotLink>> links_of(const std::string& id);
    // The writer's hook for pilots that did not attach again in time.
    void expire_absent_pilots(Effects& effects);

    // -- the site's Slurm (slurm_jobs.cpp) --

    void run_slurm();
    void on_slurm_thread(std::function<void()> task);
    // The site's pilot job of a PILOT_SOURCE_SLURM cluster: submitted once the cluster is held
    // here, recorded when Slurm accepted it, cancelled on release.
    Status want_pilot_job(const ClusterRecord& cluster, Effects& effects);
    Status pilot_job_submitted(const std::string& id, const Result<std::string>& job,
                               Effects& effects);
    void cancel_pilot_job(const std::string& id, const std::string& job, Effects& effects);
    Status fail_free_nodes(const ClusterRecord& cluster, const std::string& reason);
    // The clusters of jobs that bring their own pilots: made by the job (--vc), or joined by it
    // (--vc-cluster), and a node lent to a job coming back.
    Result<ClusterRecord> create_job_cluster(const v1::PilotHello& hello);
    Status check_join(const std::optional<ClusterRecord>& cluster, const v1::PilotHello& hello);
    Status return_node(const ClusterRecord& cluster, const NodeRecord& node, std::string_view why);

    // -- the GRC's side (grc_uplink.cpp) --

    void run_uplink();
    // A node of a GRC cluster changed: the GRC is told after the commit (after_batch).
    void report(const std::string& id, std::uint32_t ordinal) { reported.insert({id, ordinal}); }
    // The GRC's commands, and the uplink coming and going.
    Status uplink_up(const Uplink& outbox, Effects& effects);
    void uplink_down(const Uplink& outbox, Effects& effects);
    Status assign(const v1::SiteAssignment& assignment, Effects& effects);
    Status view(const v1::SiteClusterView& view, Effects& effects);
    Status release_from_grc(const std::string& id, Effects& effects);
    Status run_from_grc(const v1::SiteCommandRequest& request, Effects& effects);
};

// ---- the service ----

// The Crm service (api.cpp), answering from `crm`.
std::unique_ptr<grpc::Service> make_crm_service(CrmServer::Impl& crm);

}  // namespace vcpilot::coordinator
