// vc-crmd and the site's Slurm: the pilot job it submits for a PILOT_SOURCE_SLURM cluster (on a
// thread of its own, since each Slurm command may take seconds), and the clusters of Slurm jobs
// that bring their own pilots: made by the job's first pilot (--vc), or reserved beforehand and
// joined by the job (--vc-cluster), whose nodes come back when the job's pilots stop.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/naming.hpp"
#include "common/text.hpp"
#include "crm/impl.hpp"

namespace vcpilot::coordinator {

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

// ---- jobs' own clusters ----

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

}  // namespace vcpilot::coordinator
