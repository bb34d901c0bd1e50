// vc-crmd's engine, its writer core: the writer's hooks (deadlines, and what follows a commit),
// a cluster's creation, state and release, and CrmServer itself (start with its reconciliation
// of the store, stop). The rest of CrmServer::Impl is in the files impl.hpp lists.
#include <algorithm>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <thread>

#include "common/text.hpp"
#include "crm/impl.hpp"

namespace vcpilot::coordinator {

namespace {

constexpr int kReportsPerMessage = 1000;

}  // namespace

// ---- the writer thread ----

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

void CrmServer::Impl::expire_walltimes(Effects& effects) {
    walltimes.release_due(store, now_unix_ms(),
                          [&](const ClusterRecord& cluster, const std::string& reason) {
                              return begin_release(cluster, reason, effects);
                          });
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
        service_ = make_crm_service(*impl_);
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
