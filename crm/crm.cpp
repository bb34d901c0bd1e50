#include "crm/crm.hpp"

#include <netdb.h>
#include <pwd.h>
#include <sys/socket.h>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Exception.h>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <fmt/format.h>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <spdlog/spdlog.h>
#include <thread>

#include "common/munge.hpp"
#include "coordinator/sshcert.hpp"
#include "coordinator/lease_store.hpp"
#include "common/text.hpp"
#include "coordinator/auth.hpp"
#include "coordinator/cluster_methods.hpp"
#include "coordinator/cluster_view.hpp"
#include "coordinator/streams.hpp"
#include "coordinator/writer.hpp"

namespace vcpilot::coordinator {

namespace {

using Clock = std::chrono::steady_clock;
using store_detail::now_unix_ms;

// ---- the streams ----

struct NodeKey {
    std::string site;
    std::uint32_t ordinal = 0;
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

constexpr int kReportsPerMessage = 1000;

bool from_grc(const ClusterRecord& cluster) {
    return cluster.origin == kOriginGrc;
}

bool of_job(const ClusterRecord& cluster) {
    return cluster.origin == kOriginJob;
}

// Tells the GRC which Slurm job holds a cluster's nodes at this site.
v1::SiteReport pilot_job_report(const std::string& cluster_id, const std::string& job) {
    v1::SiteReport report;
    report.mutable_pilot_job()->set_cluster_id(cluster_id);
    report.mutable_pilot_job()->set_job_id(job);
    return report;
}

}  // namespace

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

    void post(Work work) { writer.post(std::move(work)); }
    std::optional<std::int64_t> next_release_deadline() const;
    void after_batch();
    void expire_releases(Effects& effects);
    void expire_absent_pilots(Effects& effects);
    void expire_walltimes(Effects& effects);
    void run_uplink();
    void run_slurm();
    void on_slurm_thread(std::function<void()> task);

    // The site's pilot job of a PILOT_SOURCE_SLURM cluster: submitted once the cluster is held
    // here, recorded when Slurm accepted it, cancelled on release.
    Status want_pilot_job(const ClusterRecord& cluster, Effects& effects);
    Status pilot_job_submitted(const std::string& id, const Result<std::string>& job,
                               Effects& effects);
    void cancel_pilot_job(const std::string& id, const std::string& job, Effects& effects);
    Status fail_free_nodes(const ClusterRecord& cluster, const std::string& reason);

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
    // Checks what can be checked without the store; the error names the field.
    Result<ClusterSpec> check_create(const v1::CreateClusterRequest& request,
                                     const Caller& caller) const;
    Result<ClusterRecord> create(const ClusterSpec& spec, Effects& effects);
    Result<ClusterRecord> create_job_cluster(const v1::PilotHello& hello);
    Status check_join(const std::optional<ClusterRecord>& cluster, const v1::PilotHello& hello);
    Status return_node(const ClusterRecord& cluster, const NodeRecord& node, std::string_view why);
    Result<ClusterRecord> owned_cluster(const std::string& id, const Caller& caller);
    Status begin_release(const ClusterRecord& cluster, std::string_view reason, Effects& effects);
    Status maybe_finish_release(const std::string& id, Effects& effects);
    Status finish_release(const std::string& id, Effects& effects);
    Status send_views(const ClusterRecord& cluster, Effects& effects);
    Status settle(const ClusterRecord& cluster);
    Status start_command(const ClusterRecord& cluster, const v1::RunRequest& run, bool as_root,
                         bool first_only, Command command, Effects& effects);
    std::vector<std::shared_ptr<PilotLink>> links_of(const std::string& id);
    void report(const std::string& id, std::uint32_t ordinal) { reported.insert({id, ordinal}); }

    // The GRC's commands, and the uplink coming and going.
    Status uplink_up(const Uplink& outbox, Effects& effects);
    void uplink_down(const Uplink& outbox, Effects& effects);
    Status assign(const v1::SiteAssignment& assignment, Effects& effects);
    Status view(const v1::SiteClusterView& view, Effects& effects);
    Status release_from_grc(const std::string& id, Effects& effects);
    Status run_from_grc(const v1::SiteCommandRequest& request, Effects& effects);
};

namespace {

v1::SetupRequest setup_for(const ClusterRecord& cluster, const SiteRecord& site,
                           const NodeRecord& node) {
    v1::SetupRequest setup;
    setup.set_cluster_id(cluster.id);
    setup.set_node_name(node_name(cluster.name_prefix, site.site, node.ordinal));
    setup.set_address(fmt::format("{}/{}", node_address(site.block, node.ordinal)->to_string(),
                                  site.block.prefix()));
    setup.mutable_vxlan()->set_vni(cluster.vni.value_or(0));
    setup.mutable_vxlan()->set_local_address(node.underlay);
    if (cluster.overlay == v1::OVERLAY_N2N) {
        // One community per cluster, named after it; its key is the cluster's own.
        setup.mutable_n2n()->set_community(cluster.id);
        setup.mutable_n2n()->set_key(cluster.n2n_key);
        setup.mutable_n2n()->set_supernode(cluster.n2n_supernode);
    }
    setup.set_user(cluster.owner);
    setup.set_image(cluster.image);
    setup.set_image_mount(cluster.image_mount);
    return setup;
}

}  // namespace

std::vector<std::shared_ptr<PilotLink>> CrmServer::Impl::links_of(const std::string& id) {
    std::vector<std::shared_ptr<PilotLink>> found;
    for (auto it = links.lower_bound({id, NodeKey{}}); it != links.end() && it->first.first == id;
         ++it) {
        found.push_back(it->second);
    }
    return found;
}

Result<ClusterSpec> CrmServer::Impl::check_create(const v1::CreateClusterRequest& request,
                                                  const Caller& caller) const {
    auto spec = validate_create(request, caller.name);
    if (!spec) {
        return spec.error();
    }
    if (spec->overlay == v1::OVERLAY_AUTO) {
        spec->overlay = v1::OVERLAY_VXLAN;  // one site: its nodes reach each other
    }
    for (const auto& site : spec->sites) {
        if (site.site() != options.site) {
            return Error{fmt::format(
                "sites: unknown site {}: this CRM serves site {} only; clusters across sites are "
                "made through the GRC",
                quote(site.site()), options.site)};
        }
    }
    if (!options.pool) {
        return Error{fmt::format(
            "site {} has no address pool of its own (its ranges come from the GRC): create the "
            "cluster through the GRC",
            options.site)};
    }
    if (spec->pilots == v1::PILOT_SOURCE_SLURM && !options.slurm) {
        return Error{
            fmt::format("pilots: the CRM of site {} submits no Slurm jobs (vc-crmd runs without "
                        "--slurm-conf); submit your own with --vc-cluster",
                        options.site)};
    }
    return spec;
}

Result<ClusterRecord> CrmServer::Impl::create(const ClusterSpec& spec, Effects& effects) {
    CreatePolicy policy;
    policy.pool = &*options.pool;
    policy.vni_first = options.vni_first;
    policy.vni_last = options.vni_last;
    policy.hold_ca = true;
    policy.n2n_supernode = options.n2n_supernode;
    auto created = store.create(spec, policy);
    if (!created) {
        return created;
    }
    walltimes.track(*created);
    if (auto ok = want_pilot_job(*created, effects); !ok) {
        return ok.error();
    }
    return created;
}

Result<ClusterRecord> CrmServer::Impl::owned_cluster(const std::string& id, const Caller& caller) {
    auto cluster = store.find(id);
    if (!cluster) {
        return cluster.error();
    }
    // Someone else's cluster is reported exactly like a missing one: ids are not disclosed.
    if (!*cluster || (!caller.is_root() && (*cluster)->owner != caller.name)) {
        return Error{fmt::format("no cluster {}", quote(id, 80))};
    }
    return std::move(**cluster);
}

// The cluster of a Slurm job that asked for one (--vc): made by the first of its pilots.
Result<ClusterRecord> CrmServer::Impl::create_job_cluster(const v1::PilotHello& hello) {
    const auto& job = hello.job_cluster();
    if (hello.cluster_id() != job_cluster_id(hello.job_id())) {
        return Error{fmt::format("hello: the cluster of job {} is {}, not {}", hello.job_id(),
                                 job_cluster_id(hello.job_id()), quote(hello.cluster_id(), 80))};
    }
    if (!options.pool && job.block().empty()) {
        return Error{
            fmt::format("site {} has no address pool of its own for jobs' clusters", options.site)};
    }
    v1::CreateClusterRequest request;
    auto* site = request.add_sites();
    site->set_site(options.site);
    site->set_nodes(job.nodes());
    site->set_block(job.block());
    request.set_key_mode(job.key_mode());
    request.set_name_prefix(job.name_prefix());
    request.set_image(job.image());
    request.set_image_mount(job.image_mount());
    request.set_overlay(job.overlay() == v1::OVERLAY_N2N ? v1::OVERLAY_N2N : v1::OVERLAY_VXLAN);
    auto spec = validate_create(request, job.user());
    if (!spec) {
        return Error{fmt::format("job {}: {}", hello.job_id(), spec.error().message)};
    }
    if (auto ok = store.forget_released(hello.cluster_id()); !ok) {
        return ok.error();
    }
    CreatePolicy policy;
    // A range the job named (--vc-net) is its own: the job's namespaces and VNI isolate it, so
    // two jobs may use the same one, and it is not taken from (or checked against) the pool.
    policy.pool = job.block().empty() ? &*options.pool : nullptr;
    policy.vni_first = options.vni_first;
    policy.vni_last = options.vni_last;
    policy.hold_ca = true;
    policy.id = hello.cluster_id();
    policy.origin = kOriginJob;
    policy.n2n_supernode = options.n2n_supernode;
    auto created = store.create(*spec, policy);
    if (created) {
        spdlog::info("cluster {} made for job {} of {} ({} nodes)", created->id, hello.job_id(),
                     job.user(), job.nodes());
    }
    return created;
}

// A Slurm job joining a cluster reserved beforehand (--vc-cluster): the job's user must own it,
// it must be live and this site's own, and the job must fit in the nodes still free here.
// Someone else's cluster is refused exactly like a missing one: ids are not disclosed.
Status CrmServer::Impl::check_join(const std::optional<ClusterRecord>& cluster,
                                   const v1::PilotHello& hello) {
    const v1::JoinCluster& join = hello.join();
    if (hello.has_job_cluster()) {
        return Error{"hello: job_cluster and join exclude each other"};
    }
    if (join.user().empty() || join.user().size() > 128 || join.nodes() == 0) {
        return Error{"hello: join needs the job's user and node count"};
    }
    if (join.image().empty() != join.image_mount().empty() ||
        (!join.image().empty() &&
         (join.image().front() != '/' || join.image_mount().front() != '/'))) {
        return Error{"hello: join.image and join.image_mount are absolute paths, both or neither"};
    }
    if (!cluster || cluster->state == v1::CLUSTER_STATE_RELEASED || cluster->owner != join.user()) {
        return Error{fmt::format("no cluster {} of {} at site {}", quote(hello.cluster_id(), 80),
                                 quote(join.user(), 80), options.site)};
    }
    if (of_job(*cluster)) {
        return Error{
            fmt::format("cluster {} is another job's own: a job can join only a "
                        "cluster made with vcctl",
                        cluster->id)};
    }
    if (cluster->state == v1::CLUSTER_STATE_RELEASING) {
        return Error{fmt::format("cluster {} is being released", cluster->id)};
    }
    auto open = store.nodes_open_to(cluster->id, options.site, hello.job_id());
    if (!open) {
        return open.error();
    }
    if (*open < join.nodes()) {
        return Error{fmt::format("cluster {} has {} free node(s) at site {}, job {} has {}",
                                 cluster->id, *open, options.site, hello.job_id(), join.nodes())};
    }
    // A node of the cluster failed outside any job: it stays FAILED until its owner releases it.
    if (cluster->state == v1::CLUSTER_STATE_FAILED) {
        return Error{fmt::format("cluster {} has FAILED ({}); release it and create another",
                                 cluster->id, cluster->reason)};
    }
    return {};
}

// A node lent to a job comes back when the job's pilot stops (or went away and did not come
// back): free for the next job, and the cluster waits for pilots again (PENDING) unless a node
// failed outside any job. The pilots still there get the view again once every node is held:
// the next job's nodes have other keys and underlay addresses.
Status CrmServer::Impl::return_node(const ClusterRecord& cluster, const NodeRecord& node,
                                    std::string_view why) {
    // The pilot job of a PILOT_SOURCE_SLURM cluster holds the site's nodes for the cluster's
    // life: one that ended before the release (cancelled, killed, past its time limit, its node
    // lost) fails the cluster instead of freeing the node.
    const bool held_for_life = cluster.pilots == v1::PILOT_SOURCE_SLURM;
    NodeRecord changed;
    if (held_for_life) {
        spdlog::warn("cluster {}: its pilot on {} (Slurm job {}) {} before the release", cluster.id,
                     node.host, node.job, why);
        changed = node;
        changed.state = v1::PILOT_STATE_FAILED;
        changed.reason = fmt::format("its pilot on {} (Slurm job {}) {} before the release",
                                     node.host, node.job, why);
    } else {
        spdlog::info("cluster {}: node {} is free again: its pilot on {} (job {}) {}", cluster.id,
                     node_name(cluster.name_prefix, node.site, node.ordinal), node.host, node.job,
                     why);
        changed.site = node.site;
        changed.ordinal = node.ordinal;
    }
    if (auto ok = store.update_node(cluster.id, changed); !ok) {
        return ok;
    }
    const auto key = std::pair{cluster.id, NodeKey{node.site, node.ordinal}};
    if (auto link = links.find(key); link != links.end()) {
        link->second->returned = true;
        links.erase(link);
    }
    reattach_deadlines.erase(key);
    dirty.insert(cluster.id);
    if (from_grc(cluster)) {
        report(cluster.id, node.ordinal);
    }
    if (held_for_life) {
        return settle(cluster);
    }
    for (const auto& other : links_of(cluster.id)) {
        other->view_sent = false;
    }
    if (cluster.state != v1::CLUSTER_STATE_READY && cluster.state != v1::CLUSTER_STATE_FAILED) {
        return {};
    }
    auto summary = store.node_summary(cluster.id);
    if (!summary) {
        return summary.error();
    }
    if (summary->failed > 0) {
        return {};
    }
    return store.set_state(cluster.id, v1::CLUSTER_STATE_PENDING, "");
}

Status CrmServer::Impl::hello(const std::shared_ptr<PilotLink>& link, const v1::PilotHello& hello,
                              const std::string& underlay, Effects& effects) {
    auto found = store.find(hello.cluster_id());
    if (!found) {
        return found.error();
    }
    if (hello.has_job_cluster() && (!*found || (*found)->state == v1::CLUSTER_STATE_RELEASED)) {
        auto created = create_job_cluster(hello);
        if (!created) {
            return created.error();
        }
        *found = std::move(*created);
        dirty.insert(hello.cluster_id());
    }
    if (hello.has_join()) {
        if (auto ok = check_join(*found, hello); !ok) {
            return ok;
        }
    }
    if (!*found || (*found)->state == v1::CLUSTER_STATE_RELEASED) {
        return Error{
            fmt::format("no cluster {} at site {}", quote(hello.cluster_id(), 80), options.site)};
    }
    const ClusterRecord& cluster = **found;
    if (cluster.state == v1::CLUSTER_STATE_RELEASING) {
        return Error{fmt::format("cluster {} is being released", cluster.id)};
    }
    auto node = store.attach(cluster.id, hello.host(), hello.job_id(), underlay, hello.rank());
    if (!node) {
        return node.error();
    }
    const SiteRecord* site = site_of(cluster, node->site);
    if (site == nullptr) {
        return Error{fmt::format("cluster {} has no site {}", cluster.id, node->site)};
    }
    if (hello.rank() > 0 && node->ordinal != hello.rank()) {
        spdlog::info(
            "cluster {}: the pilot on {} (job {}) is node {} of its job, but node {} "
            "is {}; it gets node {}",
            cluster.id, hello.host(), hello.job_id(), hello.rank(), hello.rank(),
            hello.rank() > site->nodes ? "not in the cluster" : "held by another pilot",
            node->ordinal);
    }
    const v1::PilotState reported_state =
        hello.has_status() ? hello.status().state() : v1::PILOT_STATE_NEW;
    node->state =
        reported_state == v1::PILOT_STATE_UNSPECIFIED ? v1::PILOT_STATE_NEW : reported_state;
    node->reason = hello.has_status() ? hello.status().reason() : "";
    node->lent = hello.has_join();
    if (auto ok = store.update_node(cluster.id, *node); !ok) {
        return ok;
    }
    const auto key = std::pair{cluster.id, NodeKey{node->site, node->ordinal}};
    link->cluster = cluster.id;
    link->host = hello.host();
    link->job = hello.job_id();
    link->node = key.second;
    link->attached = true;
    std::shared_ptr<PilotLink> replaced;
    if (auto old = links.find(key); old != links.end() && old->second != link) {
        replaced = old->second;
    }
    links[key] = link;
    reattach_deadlines.erase(key);
    dirty.insert(cluster.id);
    if (from_grc(cluster)) {
        report(cluster.id, node->ordinal);
    }
    const bool needs_setup = node->state == v1::PILOT_STATE_NEW;
    v1::PilotCommand command;
    if (needs_setup) {
        *command.mutable_setup() = setup_for(cluster, *site, *node);
        if (!hello.join().image().empty()) {
            command.mutable_setup()->set_image(hello.join().image());
            command.mutable_setup()->set_image_mount(hello.join().image_mount());
        }
    }
    effects.push_back([link, replaced, command, needs_setup] {
        if (replaced) {
            replaced->outbox->finish(
                {grpc::StatusCode::ABORTED, "the pilot attached again on another stream"});
        }
        if (needs_setup) {
            link->outbox->send(command);
        }
    });
    return {};
}

Status CrmServer::Impl::keys(const std::shared_ptr<PilotLink>& link, const v1::PilotKeys& keys,
                             Effects& effects) {
    if (!link->attached) {
        return Error{"keys before hello"};
    }
    if (link->returned) {
        return {};
    }
    for (const auto* line : {&keys.host_key(), &keys.user_key()}) {
        if (auto ok = parse_ed25519_public_key(*line); !ok) {
            return Error{fmt::format("keys: {}", ok.error().message)};
        }
    }
    auto found = store.find(link->cluster);
    if (!found) {
        return found.error();
    }
    if (!*found) {
        return Error{fmt::format("no cluster {}", link->cluster)};
    }
    const ClusterRecord& cluster = **found;
    auto found_node = store.node(cluster.id, link->node.site, link->node.ordinal);
    if (!found_node) {
        return found_node.error();
    }
    if (!*found_node) {
        return Error{"the pilot's node is gone"};
    }
    NodeRecord* node = &**found_node;
    if (node->host_key != keys.host_key() || node->user_key != keys.user_key()) {
        node->host_certificate.clear();
        node->user_certificate.clear();
    }
    node->host_key = keys.host_key();
    node->user_key = keys.user_key();
    // A cluster of this site alone is certified here; a GRC cluster's CA is at the GRC.
    if (!from_grc(cluster) && cluster.key_mode == v1::KEY_MODE_CA &&
        node->host_certificate.empty()) {
        auto ca = cas.get(store, cluster.id);
        if (!ca) {
            return ca.error();
        }
        if (auto ok = certify_node(**ca, cluster, *node, options.certificate_lifetime); !ok) {
            return ok;
        }
    }
    if (auto ok = store.update_node(cluster.id, *node); !ok) {
        return ok;
    }
    dirty.insert(cluster.id);
    if (from_grc(cluster)) {
        report(cluster.id, node->ordinal);
    }
    return send_views(cluster, effects);
}

// The barrier. For a cluster of this site: once every node has reported its keys. For a GRC
// cluster: once the GRC sent the view (it ran the barrier across sites). Then each attached
// pilot that has not had the view on its current stream gets it; one that attaches later gets
// it when it reports its keys.
Status CrmServer::Impl::send_views(const ClusterRecord& cluster, Effects& effects) {
    // Before the barrier there is nothing to send: checked without reading every node (a GRC
    // cluster's barrier is the GRC's view; a local cluster's, every node keyed).
    if (from_grc(cluster)) {
        if (!grc_views.contains(cluster.id)) {
            return {};
        }
    } else {
        auto summary = store.node_summary(cluster.id);
        if (!summary) {
            return summary.error();
        }
        if (summary->keyed != summary->total) {
            return {};
        }
    }
    auto nodes = store.nodes(cluster.id);
    if (!nodes) {
        return nodes.error();
    }
    std::shared_ptr<const v1::ClusterView> shared;
    std::map<std::uint32_t, std::pair<std::string, std::string>> certificates;
    if (from_grc(cluster)) {
        auto view = grc_views.find(cluster.id);
        if (view == grc_views.end()) {
            return {};
        }
        shared = std::make_shared<const v1::ClusterView>(view->second.common());
        for (const auto& [ordinal, certs] : view->second.certificates()) {
            certificates[ordinal] = {certs.host_certificate(), certs.user_certificate()};
        }
    } else {
        if (!every_node_keyed(*nodes)) {
            return {};
        }
        auto common = common_view(store, cas, cluster, *nodes);
        if (!common) {
            return common.error();
        }
        shared = std::make_shared<const v1::ClusterView>(std::move(*common));
        for (const auto& node : *nodes) {
            certificates[node.ordinal] = {node.host_certificate, node.user_certificate};
        }
    }
    for (const auto& node : *nodes) {
        if (node.site != options.site && from_grc(cluster)) {
            continue;
        }
        auto link = links.find({cluster.id, NodeKey{node.site, node.ordinal}});
        if (link == links.end() || link->second->view_sent) {
            continue;
        }
        link->second->view_sent = true;
        effects.push_back([link = link->second, shared, certs = certificates[node.ordinal]] {
            v1::PilotCommand command;
            *command.mutable_view() = *shared;
            command.mutable_view()->set_host_certificate(certs.first);
            command.mutable_view()->set_user_certificate(certs.second);
            link->outbox->send(std::move(command));
        });
    }
    return {};
}

// The cluster state its nodes imply. A GRC cluster is READY here once this site's nodes are
// and the GRC has sent the view (the GRC holds the state of the whole cluster).
Status CrmServer::Impl::settle(const ClusterRecord& cluster) {
    auto summary = store.node_summary(cluster.id);
    if (!summary) {
        return summary.error();
    }
    if (from_grc(cluster) && !grc_views.contains(cluster.id) && summary->failed == 0) {
        return {};
    }
    auto changed = settle_state(store, cluster, *summary);
    if (!changed) {
        return changed.error();
    }
    if (*changed) {
        dirty.insert(cluster.id);
    }
    return {};
}

Status CrmServer::Impl::pilot_status(const std::shared_ptr<PilotLink>& link,
                                     const v1::PilotStatus& status, Effects& effects) {
    if (!link->attached) {
        return Error{"status before hello"};
    }
    if (link->returned) {
        return {};
    }
    if (!v1::PilotState_IsValid(status.state())) {
        return Error{fmt::format("status: unknown state {}", static_cast<int>(status.state()))};
    }
    auto found = store.find(link->cluster);
    if (!found || !*found) {
        return found ? Error{"the cluster is gone"} : found.error();
    }
    const ClusterRecord& cluster = **found;
    auto node = store.node(cluster.id, link->node.site, link->node.ordinal);
    if (!node) {
        return node.error();
    }
    const bool stopping =
        status.state() == v1::PILOT_STATE_STOPPING || status.state() == v1::PILOT_STATE_GONE;
    // The job that was lent this node ended: the node is free for the next one.
    if (*node && (*node)->lent && stopping && cluster.state != v1::CLUSTER_STATE_RELEASING) {
        return return_node(cluster, **node, "stopped");
    }
    if (*node) {
        if ((*node)->state == status.state() && (*node)->reason == status.reason()) {
            return {};
        }
        (*node)->state = status.state();
        (*node)->reason = status.reason();
        if (auto ok = store.update_node(cluster.id, **node); !ok) {
            return ok;
        }
    }
    dirty.insert(cluster.id);
    if (from_grc(cluster)) {
        report(cluster.id, link->node.ordinal);
    }
    if (cluster.state == v1::CLUSTER_STATE_RELEASING) {
        return maybe_finish_release(cluster.id, effects);
    }
    // A job's cluster ends with the job: its pilots stop when the job ends.
    if (of_job(cluster) &&
        (status.state() == v1::PILOT_STATE_STOPPING || status.state() == v1::PILOT_STATE_GONE)) {
        return begin_release(cluster, "the job ended", effects);
    }
    return settle(cluster);
}

void CrmServer::Impl::pilot_output(const std::shared_ptr<PilotLink>& link,
                                   const v1::PilotCommandOutput& out, Effects& effects) {
    auto command = commands.find(out.request());
    if (command == commands.end()) {
        return;
    }
    auto pending = command->second.pending.find(link);
    if (pending == command->second.pending.end()) {
        return;
    }
    v1::NodeOutput output;
    output.set_node(pending->second);
    *output.mutable_output() = out.output();
    if (out.output().has_exit_status()) {
        command->second.pending.erase(pending);
    }
    const bool finished = command->second.pending.empty();
    auto deliver = command->second.deliver;
    auto done = finished ? command->second.done : std::function<void()>{};
    if (finished) {
        commands.erase(command);
    }
    effects.push_back([deliver, done, output = std::move(output)] {
        deliver(output);
        if (done) {
            done();
        }
    });
}

Status CrmServer::Impl::closed(const std::shared_ptr<PilotLink>& link, Effects& effects) {
    // Commands that were running on this pilot end for it.
    for (auto it = commands.begin(); it != commands.end();) {
        auto pending = it->second.pending.find(link);
        if (pending == it->second.pending.end()) {
            ++it;
            continue;
        }
        v1::NodeOutput lost;
        lost.set_node(pending->second);
        lost.mutable_output()->set_stderr("vcpilot: the node's pilot went away\n");
        v1::NodeOutput status;
        status.set_node(pending->second);
        status.mutable_output()->set_exit_status(255);
        it->second.pending.erase(pending);
        const bool finished = it->second.pending.empty();
        effects.push_back([deliver = it->second.deliver,
                           done = finished ? it->second.done : std::function<void()>{}, lost,
                           status] {
            deliver(lost);
            deliver(status);
            if (done) {
                done();
            }
        });
        it = finished ? commands.erase(it) : std::next(it);
    }
    if (!link->attached) {
        return {};
    }
    const auto key = std::pair{link->cluster, link->node};
    if (auto current = links.find(key); current == links.end() || current->second != link) {
        return {};  // replaced by a newer stream of the same pilot
    }
    links.erase(key);
    auto found = store.find(link->cluster);
    if (!found || !*found) {
        return found ? Status{} : Status{found.error()};
    }
    if ((*found)->state != v1::CLUSTER_STATE_RELEASING) {
        // A job's pilot that failed goes no further: the node it was lent is free at once.
        auto node = store.node(link->cluster, link->node.site, link->node.ordinal);
        if (!node) {
            return node.error();
        }
        if (*node && (*node)->lent && (*found)->state != v1::CLUSTER_STATE_RELEASED &&
            (*node)->state == v1::PILOT_STATE_FAILED) {
            return return_node(**found, **node, "failed and left");
        }
        // The pilot may come back (a broken connection, a restart of its own); its node stays
        // its own until the grace ends.
        if ((*found)->state != v1::CLUSTER_STATE_RELEASED) {
            reattach_deadlines[key] = now_unix_ms() + options.reattach_grace.count();
        }
        return {};
    }
    auto nodes = store.nodes(link->cluster);
    if (!nodes) {
        return nodes.error();
    }
    for (auto& node : *nodes) {
        if (node.site == link->node.site && node.ordinal == link->node.ordinal) {
            node.state = v1::PILOT_STATE_GONE;
            if (auto ok = store.update_node(link->cluster, node); !ok) {
                return ok;
            }
        }
    }
    dirty.insert(link->cluster);
    return maybe_finish_release(link->cluster, effects);
}

Status CrmServer::Impl::begin_release(const ClusterRecord& cluster, std::string_view reason,
                                      Effects& effects) {
    const std::int64_t deadline = now_unix_ms() + options.release_timeout.count();
    if (auto ok = store.set_state(cluster.id, v1::CLUSTER_STATE_RELEASING, reason, deadline); !ok) {
        return ok;
    }
    release_deadlines[cluster.id] = deadline;
    walltimes.forget(cluster.id);
    dirty.insert(cluster.id);
    if (const SiteRecord* site = site_of(cluster, options.site);
        site != nullptr && !site->pilot_job.empty()) {
        cancel_pilot_job(cluster.id, site->pilot_job, effects);
    }
    v1::PilotCommand command;
    command.mutable_shutdown()->set_reason(fmt::format("cluster {} released", cluster.id));
    for (const auto& link : links_of(cluster.id)) {
        effects.push_back([link, command] { link->outbox->send(command); });
    }
    return maybe_finish_release(cluster.id, effects);
}

// A releasing cluster is released once no pilot of it is attached any more.
Status CrmServer::Impl::maybe_finish_release(const std::string& id, Effects& effects) {
    if (!links_of(id).empty()) {
        return {};
    }
    return finish_release(id, effects);
}

Status CrmServer::Impl::finish_release(const std::string& id, Effects& effects) {
    auto found = store.find(id);
    if (!found) {
        return found.error();
    }
    const bool tell_grc = *found && from_grc(**found);
    if (auto ok = store.finish_release(id); !ok) {
        return ok;
    }
    release_deadlines.erase(id);
    std::erase_if(reattach_deadlines, [&](const auto& entry) { return entry.first.first == id; });
    cas.forget(id);
    grc_views.erase(id);
    dirty.insert(id);
    if (tell_grc && uplink) {
        v1::SiteReport released;
        released.set_released(id);
        effects.push_back([outbox = uplink, released] { outbox->send(released); });
    }
    return {};
}

std::optional<std::int64_t> CrmServer::Impl::next_release_deadline() const {
    std::optional<std::int64_t> next = walltimes.next();
    for (const auto& [id, deadline] : release_deadlines) {
        next = next ? std::min(*next, deadline) : deadline;
    }
    for (const auto& [node, deadline] : reattach_deadlines) {
        next = next ? std::min(*next, deadline) : deadline;
    }
    return next;
}

// Pilots that did not attach again in time are gone (their job ended, their node died, or this
// CRM was down when it happened): their node is GONE and the cluster FAILED, with the reason.
void CrmServer::Impl::expire_absent_pilots(Effects& effects) {
    const std::int64_t now = now_unix_ms();
    std::vector<std::pair<std::string, NodeKey>> expired;
    for (const auto& [key, deadline] : reattach_deadlines) {
        if (deadline <= now) {
            expired.push_back(key);
        }
    }
    for (const auto& key : expired) {
        reattach_deadlines.erase(key);
        const auto& [id, where] = key;
        auto found = store.find(id);
        if (!found || !*found || (*found)->state == v1::CLUSTER_STATE_RELEASING ||
            (*found)->state == v1::CLUSTER_STATE_RELEASED) {
            continue;
        }
        auto nodes = store.nodes(id);
        if (!nodes) {
            spdlog::error("cluster {}: {}", id, nodes.error().message);
            continue;
        }
        bool returned = false;
        for (auto& node : *nodes) {
            if (node.site != where.site || node.ordinal != where.ordinal) {
                continue;
            }
            if (node.lent) {
                // A job's pilot: the job is over for this node, which is free for the next.
                if (auto ok = return_node(**found, node, "went away and did not come back"); !ok) {
                    spdlog::error("cluster {}: {}", id, ok.error().message);
                }
                returned = true;
                continue;
            }
            spdlog::warn("cluster {}: the pilot of node {} on {} (job {}) did not come back", id,
                         node.ordinal, node.host, node.job);
            node.state = v1::PILOT_STATE_GONE;
            node.reason = fmt::format(
                "its pilot on {} (job {}) went away and did not come back "
                "within {} s",
                node.host, node.job, options.reattach_grace.count() / 1000);
            if (auto ok = store.update_node(id, node); !ok) {
                spdlog::error("cluster {}: {}", id, ok.error().message);
                continue;
            }
            dirty.insert(id);
            if (from_grc(**found)) {
                report(id, node.ordinal);
            }
        }
        if (returned) {
            continue;
        }
        // A job's cluster ends with the job; another is FAILED until its owner releases it.
        if (auto ok = of_job(**found)
                          ? begin_release(**found, "a pilot of the job went away", effects)
                          : settle(**found);
            !ok) {
            spdlog::error("cluster {}: {}", id, ok.error().message);
        }
    }
}

void CrmServer::Impl::expire_walltimes(Effects& effects) {
    walltimes.release_due(store, now_unix_ms(),
                          [&](const ClusterRecord& cluster, const std::string& reason) {
                              return begin_release(cluster, reason, effects);
                          });
}

// ---- the site's Slurm ----

// Minutes a pilot job may run past its cluster's walltime: the coordinator that keeps the
// walltime releases the cluster first, and Slurm's limit only catches a coordinator that is down.
constexpr std::uint32_t kPilotJobSlackMinutes = 2;

void CrmServer::Impl::on_slurm_thread(std::function<void()> task) {
    {
        std::lock_guard lock(slurm_mutex);
        if (slurm_stopping) {
            return;
        }
        slurm_queue.push_back(std::move(task));
    }
    slurm_changed.notify_one();
}

void CrmServer::Impl::run_slurm() {
    std::unique_lock lock(slurm_mutex);
    while (true) {
        slurm_changed.wait(lock, [this] { return slurm_stopping || !slurm_queue.empty(); });
        if (slurm_queue.empty()) {
            return;  // stopping, and nothing left: a cancel queued before the stop still runs
        }
        auto task = std::move(slurm_queue.front());
        slurm_queue.pop_front();
        lock.unlock();
        task();
        lock.lock();
    }
}

Status CrmServer::Impl::want_pilot_job(const ClusterRecord& cluster, Effects& effects) {
    if (cluster.pilots != v1::PILOT_SOURCE_SLURM || cluster.state == v1::CLUSTER_STATE_RELEASING ||
        cluster.state == v1::CLUSTER_STATE_RELEASED) {
        return {};
    }
    const SiteRecord* site = site_of(cluster, options.site);
    if (site == nullptr || !site->pilot_job.empty() || submitting.contains(cluster.id)) {
        return {};
    }
    if (!slurm) {
        return fail_free_nodes(cluster,
                               fmt::format("the CRM of site {} submits no Slurm jobs (vc-crmd runs "
                                           "without --slurm-conf)",
                                           options.site));
    }
    submitting.insert(cluster.id);
    PilotJobRequest request;
    request.cluster_id = cluster.id;
    request.owner = cluster.owner;
    request.nodes = site->nodes;
    request.time_limit_minutes =
        cluster.walltime_minutes > 0 ? cluster.walltime_minutes + kPilotJobSlackMinutes : 0;
    // Only once the cluster is durable here: a job is never submitted for a cluster a failed
    // commit lost.
    effects.push_back([this, request] {
        on_slurm_thread([this, request] {
            auto job = slurm->submit_pilot_job(request);
            post({[this, id = request.cluster_id, job](Effects& later) {
                      return pilot_job_submitted(id, job, later);
                  },
                  {}});
        });
    });
    return {};
}

Status CrmServer::Impl::pilot_job_submitted(const std::string& id, const Result<std::string>& job,
                                            Effects& effects) {
    submitting.erase(id);
    auto found = store.find(id);
    if (!found) {
        return found.error();
    }
    const bool live = *found && (*found)->state != v1::CLUSTER_STATE_RELEASING &&
                      (*found)->state != v1::CLUSTER_STATE_RELEASED;
    if (!job) {
        spdlog::warn("cluster {}: its pilot job was not submitted: {}", id, job.error().message);
        return live ? fail_free_nodes(**found, fmt::format("its pilot job at site {} was not "
                                                           "submitted: {}",
                                                           options.site, job.error().message))
                    : Status{};
    }
    if (!live) {
        spdlog::info("cluster {} was released while its pilot job {} was submitted; cancelling it",
                     id, *job);
        cancel_pilot_job(id, *job, effects);
        return {};
    }
    if (auto ok = store.set_pilot_job(id, options.site, *job); !ok) {
        return ok;
    }
    spdlog::info("cluster {}: Slurm job {} of {} holds its {} node(s) at site {}", id, *job,
                 (*found)->owner, (*found)->node_count(), options.site);
    dirty.insert(id);
    if (from_grc(**found) && uplink) {
        effects.push_back(
            [outbox = uplink, report = pilot_job_report(id, *job)] { outbox->send(report); });
    }
    return {};
}

void CrmServer::Impl::cancel_pilot_job(const std::string& id, const std::string& job,
                                       Effects& effects) {
    if (!slurm) {
        return;
    }
    effects.push_back([this, id, job] {
        on_slurm_thread([this, id, job] {
            if (auto ok = slurm->cancel(job); !ok) {
                spdlog::warn("cluster {}: {}", id, ok.error().message);
            } else {
                spdlog::info("cluster {}: cancelled its pilot job {}", id, job);
            }
        });
    });
}

// Nodes no pilot holds can never be READY: they fail with `reason`, and so does the cluster.
Status CrmServer::Impl::fail_free_nodes(const ClusterRecord& cluster, const std::string& reason) {
    auto nodes = store.nodes(cluster.id);
    if (!nodes) {
        return nodes.error();
    }
    for (auto& node : *nodes) {
        if (node.site != options.site || !node.host.empty()) {
            continue;
        }
        node.state = v1::PILOT_STATE_FAILED;
        node.reason = reason;
        if (auto ok = store.update_node(cluster.id, node); !ok) {
            return ok;
        }
        if (from_grc(cluster)) {
            report(cluster.id, node.ordinal);
        }
    }
    dirty.insert(cluster.id);
    return settle(cluster);
}

// Releases whose pilots did not confirm in time end anyway: the blocks are freed, and a pilot
// that comes back later is told its cluster is gone.
void CrmServer::Impl::expire_releases(Effects& effects) {
    const std::int64_t now = now_unix_ms();
    std::vector<std::string> expired;
    for (const auto& [id, deadline] : release_deadlines) {
        if (deadline <= now) {
            expired.push_back(id);
        }
    }
    for (const auto& id : expired) {
        spdlog::warn("cluster {}: pilots did not confirm the release in time; freeing it", id);
        for (const auto& link : links_of(id)) {
            links.erase({id, link->node});
            link->attached = false;
        }
        if (auto ok = finish_release(id, effects); !ok) {
            spdlog::error("cluster {}: {}", id, ok.error().message);
            release_deadlines.erase(id);
        }
    }
}

Status CrmServer::Impl::start_command(const ClusterRecord& cluster, const v1::RunRequest& run,
                                      bool as_root, bool first_only, Command command,
                                      Effects& effects) {
    auto targets = links_of(cluster.id);
    if (targets.empty()) {
        return Error{fmt::format("no pilot of cluster {} is attached to the CRM of site {}",
                                 cluster.id, options.site)};
    }
    if (first_only) {
        targets.resize(1);  // links are ordered by site and ordinal
    }
    const std::uint64_t id = next_command++;
    v1::PilotCommand message;
    message.mutable_run()->set_request(id);
    *message.mutable_run()->mutable_command() = run;
    message.mutable_run()->set_as_root(as_root);
    for (const auto& pilot : targets) {
        command.pending[pilot] =
            node_name(cluster.name_prefix, pilot->node.site, pilot->node.ordinal);
        effects.push_back([pilot, message] { pilot->outbox->send(message); });
    }
    commands.emplace(id, std::move(command));
    return {};
}

// After a commit: watchers learn of every change, the GRC of every node change of its
// clusters (batched: a burst of pilot reports is one message).
void CrmServer::Impl::after_batch() {
    watchers.notify(store, dirty);
    dirty.clear();
    if (!uplink || reported.empty()) {
        reported.clear();
        return;
    }
    v1::SiteReport message;
    for (const auto& [id, ordinal] : reported) {
        // One node at a time: a batch usually reports a few nodes of a large cluster.
        auto found = store.node(id, options.site, ordinal);
        if (found && *found) {
            const NodeRecord& node = **found;
            auto* out = message.mutable_nodes()->add_nodes();
            out->set_cluster_id(id);
            out->set_ordinal(ordinal);
            out->set_host(node.host);
            out->set_underlay_address(node.underlay);
            out->set_host_key(node.host_key);
            out->set_user_key(node.user_key);
            out->set_state(node.state);
            out->set_reason(node.reason);
        }
        if (message.nodes().nodes_size() >= kReportsPerMessage) {
            uplink->send(std::move(message));
            message.Clear();
        }
    }
    if (message.nodes().nodes_size() > 0) {
        uplink->send(std::move(message));
    }
    reported.clear();
}

// ---- the GRC's side ----

// Connected: the hello names every GRC cluster held here; every node of them is reported again
// (the GRC may have missed changes while the stream was down).
Status CrmServer::Impl::uplink_up(const Uplink& outbox, Effects& effects) {
    if (!outbox->open()) {
        return {};  // the stream ended already (its uplink_down came first): nothing is up
    }
    auto clusters = store.in_states({v1::CLUSTER_STATE_PENDING, v1::CLUSTER_STATE_READY,
                                     v1::CLUSTER_STATE_FAILED, v1::CLUSTER_STATE_RELEASING});
    if (!clusters) {
        return clusters.error();
    }
    v1::SiteReport hello;
    hello.mutable_hello()->set_site(options.site);
    hello.mutable_hello()->set_behind_nat(options.behind_nat);
    std::vector<v1::SiteReport> jobs;  // the pilot jobs of GRC clusters, told again
    for (const auto& cluster : *clusters) {
        if (!from_grc(cluster)) {
            continue;
        }
        hello.mutable_hello()->add_clusters(cluster.id);
        for (std::uint32_t ordinal = 1; ordinal <= cluster.node_count(); ++ordinal) {
            report(cluster.id, ordinal);
        }
        if (const SiteRecord* site = site_of(cluster, options.site);
            site != nullptr && !site->pilot_job.empty()) {
            jobs.push_back(pilot_job_report(cluster.id, site->pilot_job));
        }
    }
    uplink = outbox;
    effects.push_back([outbox, hello, jobs = std::move(jobs)] {
        outbox->send(hello);
        for (const auto& job : jobs) {
            outbox->send(job);
        }
    });
    spdlog::info("connected to the GRC; {} GRC cluster(s) held here",
                 hello.hello().clusters_size());
    return {};
}

void CrmServer::Impl::uplink_down(const Uplink& outbox, Effects& effects) {
    if (uplink != outbox) {
        return;
    }
    uplink.reset();
    // Commands relayed for the GRC have no one left to answer.
    for (auto it = commands.begin(); it != commands.end();) {
        if (it->second.pending.empty() || !it->second.deliver) {
            it = commands.erase(it);
        } else {
            ++it;
        }
    }
    (void)effects;
}

Status CrmServer::Impl::assign(const v1::SiteAssignment& assignment, Effects& effects) {
    if (assignment.site() != options.site) {
        return Error{fmt::format("assignment of cluster {} is for site {}, this is site {}",
                                 quote(assignment.cluster_id(), 80), quote(assignment.site(), 80),
                                 options.site)};
    }
    if (auto ok = store.adopt(assignment); !ok) {
        return Error{fmt::format("assignment of cluster {}: {}", quote(assignment.cluster_id(), 80),
                                 ok.error().message)};
    }
    dirty.insert(assignment.cluster_id());
    v1::SiteReport assigned;
    assigned.set_assigned(assignment.cluster_id());
    effects.push_back([outbox = uplink, assigned] {
        if (outbox) {
            outbox->send(assigned);
        }
    });
    auto found = store.find(assignment.cluster_id());
    if (!found || !*found) {
        return found ? Status{Error{"the assigned cluster vanished"}} : Status{found.error()};
    }
    return want_pilot_job(**found, effects);
}

Status CrmServer::Impl::view(const v1::SiteClusterView& view, Effects& effects) {
    auto found = store.find(view.cluster_id());
    if (!found) {
        return found.error();
    }
    if (!*found || !from_grc(**found) || (*found)->state == v1::CLUSTER_STATE_RELEASED ||
        (*found)->state == v1::CLUSTER_STATE_RELEASING) {
        return {};  // a view of a cluster that is over here: nothing to do
    }
    if (view.common().cluster_id() != view.cluster_id()) {
        return Error{fmt::format("the view of cluster {} names cluster {}",
                                 quote(view.cluster_id(), 80),
                                 quote(view.common().cluster_id(), 80))};
    }
    grc_views[view.cluster_id()] = view;
    dirty.insert(view.cluster_id());
    if (auto ok = send_views(**found, effects); !ok) {
        return ok;
    }
    return settle(**found);
}

Status CrmServer::Impl::release_from_grc(const std::string& id, Effects& effects) {
    auto found = store.find(id);
    if (!found) {
        return found.error();
    }
    if (!*found || (*found)->state == v1::CLUSTER_STATE_RELEASED || !from_grc(**found)) {
        v1::SiteReport released;
        released.set_released(id);
        effects.push_back([outbox = uplink, released] {
            if (outbox) {
                outbox->send(released);
            }
        });
        return {};
    }
    if ((*found)->state == v1::CLUSTER_STATE_RELEASING) {
        return {};
    }
    return begin_release(**found, "released by the GRC", effects);
}

Status CrmServer::Impl::run_from_grc(const v1::SiteCommandRequest& request, Effects& effects) {
    auto outbox = uplink;
    const std::uint64_t grc_request = request.request();
    auto answer = [outbox, grc_request](std::string node, std::string error) {
        v1::SiteReport failed;
        auto* out = failed.mutable_output();
        out->set_request(grc_request);
        out->mutable_output()->set_node(std::move(node));
        out->mutable_output()->mutable_output()->set_stderr(std::move(error));
        v1::SiteReport last;
        last.mutable_output()->set_request(grc_request);
        last.mutable_output()->set_last(true);
        return [outbox, failed, last] {
            if (outbox) {
                outbox->send(failed);
                outbox->send(last);
            }
        };
    };
    auto found = store.find(request.cluster_id());
    if (!found) {
        return found.error();
    }
    if (!*found || !from_grc(**found) || request.command().argv().empty()) {
        effects.push_back(
            answer(options.site, fmt::format("vcpilot: site {} cannot run it\n", options.site)));
        return {};
    }
    Command command;
    command.deliver = [outbox, grc_request](const v1::NodeOutput& output) {
        v1::SiteReport report;
        report.mutable_output()->set_request(grc_request);
        *report.mutable_output()->mutable_output() = output;
        if (outbox) {
            outbox->send(std::move(report));
        }
    };
    command.done = [outbox, grc_request] {
        v1::SiteReport report;
        report.mutable_output()->set_request(grc_request);
        report.mutable_output()->set_last(true);
        if (outbox) {
            outbox->send(std::move(report));
        }
    };
    if (auto ok = start_command(**found, request.command(), request.as_root(),
                                request.first_node_only(), std::move(command), effects);
        !ok) {
        effects.push_back(answer(options.site, "vcpilot: " + ok.error().message + "\n"));
    }
    return {};
}

namespace {

// What the uplink thread and one stream's reactor share; it outlives both.
struct UplinkCall {
    grpc::ClientContext context;
    bool done = false;  // under the CRM's uplink_mutex
    grpc::Status status;
    std::atomic<bool> heard_back{false};
};

// The CRM's end of Grc.Connect. Deletes itself when the stream is over.
class GrcUplink final : public grpc::ClientBidiReactor<v1::SiteReport, v1::SiteCommand> {
  public:
    GrcUplink(CrmServer::Impl& crm, v1::Grc::Stub& stub, std::shared_ptr<UplinkCall> call)
        : crm_(crm),
          call_(std::move(call)),
          outbox_(std::make_shared<Outbox<v1::SiteReport>>(
              [this](const v1::SiteReport* m) { StartWrite(m); }, [](const grpc::Status&) {})) {
        // Once the call is started, OnDone may run (the GRC refused the connection) and delete
        // this reactor before the constructor returns: nothing below StartCall may touch it.
        CrmServer::Impl* const crm_impl = &crm_;
        const auto outbox = outbox_;
        stub.async()->Connect(&call_->context, this);
        AddHold();  // the writer thread writes from outside the reactions
        StartRead(&in_);
        StartCall();
        crm_impl->post(
            {[crm_impl, outbox](Effects& effects) { return crm_impl->uplink_up(outbox, effects); },
             {}});
    }

    void OnReadDone(bool ok) override {
        if (!ok) {
            outbox_->finish(grpc::Status::OK);  // nothing more is written
            RemoveHold();
            return;
        }
        call_->heard_back = true;
        v1::SiteCommand command = std::move(in_);
        crm_.post({[crm = &crm_, command](Effects& effects) -> Status {
                       switch (command.command_case()) {
                           case v1::SiteCommand::kAssign:
                               return crm->assign(command.assign(), effects);
                           case v1::SiteCommand::kView:
                               return crm->view(command.view(), effects);
                           case v1::SiteCommand::kRelease:
                               return crm->release_from_grc(command.release(), effects);
                           case v1::SiteCommand::kRun:
                               return crm->run_from_grc(command.run(), effects);
                           default:
                               return Error{"a GRC command of an unknown kind"};
                       }
                   },
                   [](const Status& status) {
                       if (!status) {
                           spdlog::warn("GRC: {}", status.error().message);
                       }
                   }});
        StartRead(&in_);
    }

    void OnWriteDone(bool ok) override { outbox_->write_done(ok); }

    void OnDone(const grpc::Status& status) override {
        outbox_->gone();
        crm_.post({[crm = &crm_, outbox = outbox_](Effects& effects) -> Status {
                       crm->uplink_down(outbox, effects);
                       return {};
                   },
                   {}});
        CrmServer::Impl& crm = crm_;
        std::shared_ptr<UplinkCall> call = std::move(call_);
        delete this;
        // Under the lock to the end: once run_uplink sees `done` it may return, and the CRM be
        // destroyed (on stop), with its mutex and condition variable. It also holds the last
        // reference to the call, so that the call's context goes with the uplink's thread.
        std::lock_guard lock(crm.uplink_mutex);
        call->status = status;
        call->done = true;
        call.reset();
        crm.uplink_changed.notify_all();
    }

  private:
    CrmServer::Impl& crm_;
    std::shared_ptr<UplinkCall> call_;
    std::shared_ptr<Outbox<v1::SiteReport>> outbox_;
    v1::SiteCommand in_;
};

}  // namespace

// Keeps one stream to the GRC open: on a break, waits (0.2 s, doubling up to 5 s; back to
// 0.2 s after a stream that worked) and connects again, until the CRM stops.
void CrmServer::Impl::run_uplink() {
    const auto& grc = *options.grc;
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = grc.tls_ca;
    tls.pem_cert_chain = grc.tls_cert;
    tls.pem_private_key = grc.tls_key;
    grpc::ChannelArguments arguments;
    arguments.SetMaxReceiveMessageSize(kMaxCoordinatorMessage);
    arguments.SetMaxSendMessageSize(kMaxCoordinatorMessage);
    auto channel = grpc::CreateCustomChannel(grc.target, grpc::SslCredentials(tls), arguments);
    auto stub = v1::Grc::NewStub(channel);
    auto backoff = std::chrono::milliseconds(200);
    std::string last_error;
    std::unique_lock lock(uplink_mutex);
    while (!uplink_stopping) {
        auto call = std::make_shared<UplinkCall>();
        lock.unlock();
        new GrcUplink(*this, *stub, call);
        lock.lock();
        uplink_changed.wait(lock, [&] { return uplink_stopping || call->done; });
        if (!call->done) {
            lock.unlock();
            call->context.TryCancel();
            lock.lock();
            uplink_changed.wait(lock, [&] { return call->done; });
            return;
        }
        if (call->heard_back) {
            backoff = std::chrono::milliseconds(200);
        }
        const std::string error = call->status.error_message();
        if (error != last_error) {
            spdlog::warn("the stream to the GRC at {} ended: {}; connecting again", grc.target,
                         error.empty() ? "no reason given" : error);
            last_error = error;
        }
        if (uplink_changed.wait_for(lock, backoff, [this] { return uplink_stopping; })) {
            return;
        }
        backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
    }
}

// ---- the service ----

namespace {

class AttachReactor final : public grpc::ServerBidiReactor<v1::PilotReport, v1::PilotCommand> {
  public:
    AttachReactor(CrmServer::Impl& crm, grpc::CallbackServerContext* context)
        : crm_(crm),
          context_(context),
          outbox_(std::make_shared<Outbox<v1::PilotCommand>>(
              [this](const v1::PilotCommand* c) { StartWrite(c); },
              [this](const grpc::Status& s) { Finish(s); })),
          link_(std::make_shared<PilotLink>(outbox_)) {
        StartRead(&in_);
    }

    void OnReadDone(bool ok) override {
        if (!ok) {
            outbox_->finish(grpc::Status::OK);
            return;
        }
        if (!hello_seen_) {
            if (in_.report_case() != v1::PilotReport::kHello) {
                outbox_->finish({grpc::StatusCode::INVALID_ARGUMENT,
                                 "the first message of a pilot must be its hello"});
                return;
            }
            hello_seen_ = true;
            auto underlay = authenticate(in_.hello());
            if (!underlay) {
                spdlog::warn("pilot refused: {}", underlay.error().message);
                outbox_->finish({grpc::StatusCode::UNAUTHENTICATED, underlay.error().message});
                return;
            }
            auto link = link_;
            v1::PilotHello hello = in_.hello();
            crm_.post({[crm = &crm_, link, hello, address = *underlay](auto& effects) {
                           return crm->hello(link, hello, address, effects);
                       },
                       [link](const Status& status) {
                           if (!status) {
                               link->outbox->finish(
                                   {grpc::StatusCode::FAILED_PRECONDITION, status.error().message});
                           }
                       }});
        } else {
            auto link = link_;
            v1::PilotReport report = in_;
            crm_.post({[crm = &crm_, link, report](auto& effects) -> Status {
                           switch (report.report_case()) {
                               case v1::PilotReport::kKeys:
                                   return crm->keys(link, report.keys(), effects);
                               case v1::PilotReport::kStatus:
                                   return crm->pilot_status(link, report.status(), effects);
                               case v1::PilotReport::kOutput:
                                   crm->pilot_output(link, report.output(), effects);
                                   return {};
                               default:
                                   return Error{"a pilot report of an unknown kind"};
                           }
                       },
                       [link](const Status& status) {
                           if (!status) {
                               spdlog::warn("pilot {} (job {}): {}", link->host, link->job,
                                            status.error().message);
                               link->outbox->finish(
                                   {grpc::StatusCode::INVALID_ARGUMENT, status.error().message});
                           }
                       }});
        }
        StartRead(&in_);
    }

    void OnWriteDone(bool ok) override { outbox_->write_done(ok); }

    void OnDone() override {
        outbox_->gone();
        auto link = link_;
        // The link outlives this reactor in the writer's maps; its outbox pointer must not.
        crm_.post({[crm = &crm_, link](auto& effects) { return crm->closed(link, effects); }, {}});
        delete this;
    }

  private:
    // The MUNGE credential must be root's, bound to this very hello; over TCP, the peer must be
    // the host it claims to be. Returns the pilot's underlay address.
    Result<std::string> authenticate(const v1::PilotHello& hello) {
        for (auto [field, value] :
             {std::pair{"cluster_id", &hello.cluster_id()}, std::pair{"host", &hello.host()},
              std::pair{"job_id", &hello.job_id()}}) {
            if (value->empty() || value->size() > 255 ||
                value->find_first_of(std::string_view("\n\0", 2)) != std::string::npos) {
                return Error{fmt::format("hello: {} is empty, too long or not one line", field)};
            }
        }
        auto identity = munge_decode(hello.munge_credential(), crm_.options.munge_socket);
        if (!identity) {
            return identity.error();
        }
        if (identity->uid != 0) {
            return Error{
                fmt::format("the pilot's MUNGE credential is of uid {}, not root", identity->uid)};
        }
        const std::string expected = fmt::format("vcpilot-attach\n{}\n{}\n{}", hello.cluster_id(),
                                                 hello.host(), hello.job_id());
        if (identity->payload != expected) {
            return Error{"the MUNGE credential was made for another attachment"};
        }
        auto peer = peer_address(context_->peer());
        if (!peer) {
            if (hello.underlay_address().empty()) {
                return Error{"hello: underlay_address is needed on a local socket"};
            }
            auto given = IpAddress::parse(hello.underlay_address());
            if (!given) {
                return Error{"hello: underlay_address: " + given.error().message};
            }
            return given->to_string();
        }
        if (crm_.options.check_pilot_address) {
            if (auto ok = host_has_address(hello.host(), *peer); !ok) {
                return ok.error();
            }
        }
        if (!hello.underlay_address().empty()) {
            auto given = IpAddress::parse(hello.underlay_address());
            if (!given) {
                return Error{"hello: underlay_address: " + given.error().message};
            }
            return given->to_string();
        }
        return peer->to_string();
    }

    CrmServer::Impl& crm_;
    grpc::CallbackServerContext* context_;
    std::shared_ptr<Outbox<v1::PilotCommand>> outbox_;
    std::shared_ptr<PilotLink> link_;
    v1::PilotReport in_;
    bool hello_seen_ = false;
};

class CrmService final : public v1::Crm::CallbackService {
  public:
    explicit CrmService(CrmServer::Impl& crm) : crm_(crm) {}

    grpc::ServerBidiReactor<v1::PilotReport, v1::PilotCommand>* Attach(
        grpc::CallbackServerContext* context) override {
        return new AttachReactor(crm_, context);
    }

    grpc::ServerUnaryReactor* CreateCluster(grpc::CallbackServerContext* context,
                                            const v1::CreateClusterRequest* request,
                                            v1::Cluster* response) override {
        auto* reactor = context->DefaultReactor();
        auto caller = caller_of(context, "CreateCluster");
        if (!caller) {
            reactor->Finish({grpc::StatusCode::UNAUTHENTICATED, caller.error().message});
            return reactor;
        }
        auto spec = crm_.check_create(*request, *caller);
        if (!spec) {
            reactor->Finish({grpc::StatusCode::INVALID_ARGUMENT, spec.error().message});
            return reactor;
        }
        crm_.post({[crm = &crm_, spec = *spec, response](Effects& effects) -> Status {
                       auto created = crm->create(spec, effects);
                       if (!created) {
                           return created.error();
                       }
                       crm->dirty.insert(created->id);
                       auto described = describe_cluster(crm->store, *created, true);
                       if (!described) {
                           return described.error();
                       }
                       *response = std::move(*described);
                       return {};
                   },
                   [reactor](const Status& status) {
                       reactor->Finish(to_grpc(grpc::StatusCode::FAILED_PRECONDITION, status));
                   }});
        return reactor;
    }

    grpc::ServerUnaryReactor* ListClusters(grpc::CallbackServerContext* context,
                                           const v1::ListClustersRequest* request,
                                           v1::ListClustersResponse* response) override {
        return list_clusters(crm_, context, caller_of(context, "ListClusters"), *request, response);
    }

    grpc::ServerUnaryReactor* GetCluster(grpc::CallbackServerContext* context,
                                         const v1::ClusterRef* request,
                                         v1::Cluster* response) override {
        return get_cluster(crm_, context, caller_of(context, "GetCluster"), request->id(),
                           response);
    }

    grpc::ServerUnaryReactor* ReleaseCluster(grpc::CallbackServerContext* context,
                                             const v1::ClusterRef* request,
                                             v1::Cluster* response) override {
        return lookup_cluster(
            crm_, context, caller_of(context, "ReleaseCluster"), request->id(),
            [this, response](ClusterRecord& cluster, Effects& effects) -> Status {
                if (from_grc(cluster)) {
                    return Error{fmt::format(
                        "cluster {} spans sites and belongs to the GRC: release it there "
                        "(vcctl --grc ... release {})",
                        cluster.id, cluster.id)};
                }
                if (cluster.state != v1::CLUSTER_STATE_RELEASED &&
                    cluster.state != v1::CLUSTER_STATE_RELEASING) {
                    if (auto ok = crm_.begin_release(cluster, "released by its owner", effects);
                        !ok) {
                        return ok;
                    }
                }
                return describe_current(crm_.store, cluster.id, response);
            });
    }

    grpc::ServerWriteReactor<v1::Cluster>* WatchCluster(grpc::CallbackServerContext* context,
                                                        const v1::ClusterRef* request) override {
        return watch_cluster(crm_, caller_of(context, "WatchCluster"), request->id());
    }

    grpc::ServerWriteReactor<v1::NodeOutput>* Run(
        grpc::CallbackServerContext* context, const v1::ClusterCommandRequest* request) override {
        return command(context, "Run", *request, false);
    }

    grpc::ServerWriteReactor<v1::NodeOutput>* Exec(
        grpc::CallbackServerContext* context, const v1::ClusterCommandRequest* request) override {
        return command(context, "Exec", *request, true);
    }

  private:
    Result<Caller> caller_of(grpc::CallbackServerContext* context, std::string_view method) {
        return munge_caller(*context, method, crm_.options.munge_socket);
    }

    grpc::ServerWriteReactor<v1::NodeOutput>* command(grpc::CallbackServerContext* context,
                                                      std::string_view method,
                                                      const v1::ClusterCommandRequest& request,
                                                      bool every_node) {
        auto* reactor = new WriterReactor<v1::NodeOutput>();
        auto link = reactor->link();
        auto caller = caller_of(context, method);
        if (!caller) {
            link->outbox->finish({grpc::StatusCode::UNAUTHENTICATED, caller.error().message});
            return reactor;
        }
        if (request.command().argv().empty()) {
            link->outbox->finish({grpc::StatusCode::INVALID_ARGUMENT, "command: argv is empty"});
            return reactor;
        }
        if (every_node && !caller->is_root()) {
            // EXEC runs as root on every node: only root may ask for it.
            link->outbox->finish({grpc::StatusCode::PERMISSION_DENIED,
                                  "only root may EXEC on a cluster's nodes; use run"});
            return reactor;
        }
        crm_.post({[this, link, request, caller = *caller, every_node](auto& effects) -> Status {
                       auto cluster = crm_.owned_cluster(request.id(), caller);
                       if (!cluster) {
                           return cluster.error();
                       }
                       if (cluster->state != v1::CLUSTER_STATE_READY) {
                           return Error{fmt::format("cluster {} is {}, not READY", cluster->id,
                                                    v1::ClusterState_Name(cluster->state))};
                       }
                       CrmServer::Impl::Command command;
                       command.deliver = [link](const v1::NodeOutput& output) {
                           link->outbox->send(output);
                       };
                       command.done = [link] { link->outbox->finish(grpc::Status::OK); };
                       return crm_.start_command(*cluster, request.command(), every_node,
                                                 !every_node, std::move(command), effects);
                   },
                   [link](const Status& status) {
                       if (!status) {
                           link->outbox->finish(
                               {grpc::StatusCode::FAILED_PRECONDITION, status.error().message});
                       }
                   }});
        return reactor;
    }

    CrmServer::Impl& crm_;
};

}  // namespace

// ---- CrmServer ----

CrmServer::CrmServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CrmServer::~CrmServer() {
    stop();
}

Result<std::unique_ptr<CrmServer>> CrmServer::start(CrmOptions options, ClusterStore store) {
    auto impl = std::make_unique<Impl>(std::move(options), std::move(store));
    // Reconcile: releases that were under way go on, with a fresh deadline (their pilots get it
    // when they attach again, and are told to stop).
    auto releasing = impl->store.in_states({v1::CLUSTER_STATE_RELEASING});
    if (!releasing) {
        return releasing.error();
    }
    for (const auto& cluster : *releasing) {
        impl->release_deadlines[cluster.id] = now_unix_ms() + impl->options.release_timeout.count();
    }
    if (!releasing->empty()) {
        spdlog::info("resuming the release of {} cluster(s)", releasing->size());
    }
    // Pilots that were attached before this start must attach again within the grace.
    auto live = impl->store.in_states({v1::CLUSTER_STATE_PENDING, v1::CLUSTER_STATE_READY});
    if (!live) {
        return live.error();
    }
    std::size_t awaited = 0;
    for (const auto& cluster : *live) {
        auto nodes = impl->store.nodes(cluster.id);
        if (!nodes) {
            return nodes.error();
        }
        for (const auto& node : *nodes) {
            if (!node.host.empty() && node.state != v1::PILOT_STATE_GONE) {
                impl->reattach_deadlines[{cluster.id, NodeKey{node.site, node.ordinal}}] =
                    now_unix_ms() + impl->options.reattach_grace.count();
                ++awaited;
            }
        }
    }
    if (awaited > 0) {
        spdlog::info("waiting up to {} s for {} pilot(s) to attach again",
                     impl->options.reattach_grace.count() / 1000, awaited);
    }
    if (auto ok = impl->walltimes.load(impl->store); !ok) {
        return ok.error();
    }
    if (impl->options.slurm) {
        impl->slurm.emplace(*impl->options.slurm);
        impl->slurm_thread = std::thread([raw = impl.get()] { raw->run_slurm(); });
    }
    impl->writer.start();
    // Pilot jobs that were being submitted when this CRM stopped: submitted now, unless Slurm
    // already has one (found by the cluster's name).
    impl->post(
        {[raw = impl.get()](Effects& effects) -> Status {
             auto held = raw->store.in_states({v1::CLUSTER_STATE_PENDING, v1::CLUSTER_STATE_READY});
             if (!held) {
                 return held.error();
             }
             for (const auto& cluster : *held) {
                 if (auto ok = raw->want_pilot_job(cluster, effects); !ok) {
                     spdlog::error("cluster {}: {}", cluster.id, ok.error().message);
                 }
             }
             return {};
         },
         {}});
    if (impl->options.grc) {
        impl->uplink_thread = std::thread([raw = impl.get()] { raw->run_uplink(); });
    }
    return std::unique_ptr<CrmServer>(new CrmServer(std::move(impl)));
}

grpc::Service* CrmServer::service() {
    if (!service_) {
        service_ = std::make_unique<CrmService>(*impl_);
    }
    return service_.get();
}

void CrmServer::stop() {
    if (!impl_) {
        return;
    }
    {
        std::lock_guard lock(impl_->uplink_mutex);
        impl_->uplink_stopping = true;
    }
    impl_->uplink_changed.notify_all();
    if (impl_->uplink_thread.joinable()) {
        impl_->uplink_thread.join();
    }
    impl_->writer.stop();
    // After the writer: what it queued last still runs (a cancel of a released cluster's job);
    // what the commands post back is refused by the stopped writer, and done again at the next
    // start.
    {
        std::lock_guard lock(impl_->slurm_mutex);
        impl_->slurm_stopping = true;
    }
    impl_->slurm_changed.notify_all();
    if (impl_->slurm_thread.joinable()) {
        impl_->slurm_thread.join();
    }
}

}  // namespace vcpilot::coordinator
