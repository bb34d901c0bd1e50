// vc-crmd's side of the pilots' streams (the Attach reactor is in api.cpp): a pilot's hello
// attaches it to its node, its keys lead to the barrier and the views, its status and its
// commands' output are recorded or relayed; a stream that closes leaves the node a grace to
// attach again, and a pilot that does not come back in time is gone. Commands (RUN, EXEC) go to
// pilots from here.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/text.hpp"
#include "coordinator/sshcert.hpp"
#include "crm/impl.hpp"

namespace vcpilot::coordinator {

// ---- the streams ----

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

}  // namespace vcpilot::coordinator
