#include "grc/grc.hpp"

#include <algorithm>
#include <fmt/format.h>
#include <map>
#include <spdlog/spdlog.h>

#include "common/text.hpp"
#include "coordinator/auth.hpp"
#include "coordinator/cluster_methods.hpp"
#include "coordinator/cluster_view.hpp"
#include "coordinator/lease_store.hpp"
#include "coordinator/sshcert.hpp"
#include "coordinator/streams.hpp"
#include "coordinator/writer.hpp"

namespace vcpilot::coordinator {

namespace {

using store_detail::now_unix_ms;

constexpr std::string_view kCrmPrefix = "crm:";

// One site's CRM, connected.
struct SiteLink {
    explicit SiteLink(std::shared_ptr<Outbox<v1::SiteCommand>> outbox_)
        : outbox(std::move(outbox_)) {}
    const std::shared_ptr<Outbox<v1::SiteCommand>> outbox;
    std::string site;              // from the certificate, checked against the hello
    bool attached = false;         // the hello was accepted
    std::set<std::string> viewed;  // clusters whose view this stream carried
};

}  // namespace

Result<std::string> tls_identity(const grpc::CallbackServerContext& context) {
    const auto auth = context.auth_context();
    if (!auth || !auth->IsPeerAuthenticated()) {
        return Error{"no verified client certificate: the GRC accepts mutual TLS only"};
    }
    const auto names = auth->FindPropertyValues("x509_common_name");
    if (names.size() != 1 || names.front().empty()) {
        return Error{"the client certificate has no single common name"};
    }
    return std::string(names.front().data(), names.front().size());
}

struct GrcServer::Impl {
    Impl(GrcOptions options_, ClusterStore store_)
        : options(std::move(options_)), store(std::move(store_)) {}

    const GrcOptions options;
    ClusterStore store;  // the writer thread's alone

    Writer writer{store.leases().database(), store.leases().path(),
                  WriterHooks{[this](Effects& effects) {
                                  settle_reported(effects);
                                  expire_releases();
                                  expire_walltimes(effects);
                              },
                              [this] {
                                  watchers.notify(store, dirty);
                                  dirty.clear();
                              },
                              [this] {
                                  cas.clear();
                                  dirty.clear();
                                  reported.clear();
                                  summaries.clear();
                              },
                              [this] { return next_release_deadline(); }}};

    // Writer-thread state: open streams, and what is derived from stored rows.
    std::map<std::string, std::shared_ptr<SiteLink>> sites;  // connected CRMs by site
    Watchers watchers;
    std::map<std::string, std::int64_t> release_deadlines;
    Walltimes walltimes;
    // What each site's CRM said at its last hello: its nodes cannot be reached from outside.
    std::map<std::string, bool> behind_nat;
    // Resolves OVERLAY_AUTO and refuses VXLAN across a site behind NAT.
    Status choose_overlay(ClusterSpec& spec) const;
    CaCache cas;
    std::set<std::string> dirty;
    // Clusters whose nodes sites reported in this batch: their state and the barrier are settled
    // once, at the end of the batch, not once per message (a cluster of 10,000 nodes gets
    // thousands of messages).
    std::set<std::string> reported;
    // Node counts of clusters (barrier, READY), so that a batch need not count 10,000 rows:
    // loaded from the store on first use, then kept up to date by node_reports, the only change
    // to node rows here but create (a new id) and release (forgotten then). Dropped with a failed
    // commit.
    std::map<std::string, NodeSummary> summaries;
    Result<NodeSummary> summary_of(const std::string& id);
    struct Command {
        std::shared_ptr<WriterLink<v1::NodeOutput>> caller;
        std::set<std::string> pending;  // sites still running it
    };
    std::map<std::uint64_t, Command> commands;
    std::uint64_t next_command = 1;

    void post(Work work) { writer.post(std::move(work)); }

    Result<Caller> user(const grpc::CallbackServerContext& context) const;
    Result<ClusterRecord> owned_cluster(const std::string& id, const Caller& caller);
    Result<ClusterSpec> check_create(const v1::CreateClusterRequest& request,
                                     const Caller& caller) const;

    Status site_hello(const std::shared_ptr<SiteLink>& link, const v1::SiteHello& hello,
                      Effects& effects);
    Status node_reports(const std::shared_ptr<SiteLink>& link, const v1::NodeReports& reports,
                        Effects& effects);
    Status site_released(const std::shared_ptr<SiteLink>& link, const std::string& id,
                         Effects& effects);
    void site_output(const std::shared_ptr<SiteLink>& link, const v1::SiteCommandOutput& out,
                     Effects& effects);
    void closed(const std::shared_ptr<SiteLink>& link, Effects& effects);

    void send_assignment(const ClusterRecord& cluster, const SiteRecord& site,
                         const std::shared_ptr<SiteLink>& link, Effects& effects);
    Status send_views(const ClusterRecord& cluster, Effects& effects);
    void settle_reported(Effects& effects);
    Status begin_release(const ClusterRecord& cluster, std::string_view reason, Effects& effects);
    Status maybe_finish_release(const ClusterRecord& cluster);
    std::optional<std::int64_t> next_release_deadline() const;
    void expire_releases();
    void expire_walltimes(Effects& effects);
    Status pilot_job(const std::shared_ptr<SiteLink>& link, const v1::PilotJob& job);
    std::shared_ptr<SiteLink> link_of(const std::string& site) const;
};

Result<Caller> GrcServer::Impl::user(const grpc::CallbackServerContext& context) const {
    auto name = tls_identity(context);
    if (!name) {
        return name.error();
    }
    if (name->starts_with(kCrmPrefix)) {
        return Error{fmt::format("{} is a site's certificate, not a user's", quote(*name, 80))};
    }
    if (auto ok = store_detail::check_name("user name", *name); !ok) {
        return ok.error();
    }
    Caller caller;
    caller.name = *name;
    // The certificate's name is the user; only "root" is root (uid stays unknown otherwise).
    if (caller.name == "root") {
        caller.uid = 0;
    }
    return caller;
}

Result<ClusterRecord> GrcServer::Impl::owned_cluster(const std::string& id, const Caller& caller) {
    auto cluster = store.find(id);
    if (!cluster) {
        return cluster.error();
    }
    if (!*cluster || (!caller.is_root() && (*cluster)->owner != caller.name)) {
        return Error{fmt::format("no cluster {}", quote(id, 80))};
    }
    return std::move(**cluster);
}

Result<ClusterSpec> GrcServer::Impl::check_create(const v1::CreateClusterRequest& request,
                                                  const Caller& caller) const {
    auto spec = validate_create(request, caller.name);
    if (!spec) {
        return spec.error();
    }
    for (const auto& site : spec->sites) {
        if (!options.sites.contains(site.site())) {
            return Error{fmt::format("sites: unknown site {}; this GRC serves {}",
                                     quote(site.site()), fmt::join(options.sites, ", "))};
        }
    }
    if (spec->overlay == v1::OVERLAY_N2N && options.n2n_supernode.empty()) {
        return Error{"overlay: this GRC has no n2n supernode (vc-grcd --n2n-supernode)"};
    }
    return spec;
}

Status GrcServer::Impl::choose_overlay(ClusterSpec& spec) const {
    std::vector<std::string> natted;
    for (const auto& site : spec.sites) {
        if (auto found = behind_nat.find(site.site()); found != behind_nat.end() && found->second) {
            natted.push_back(site.site());
        }
    }
    const bool across_nat = spec.sites.size() > 1 && !natted.empty();
    if (spec.overlay == v1::OVERLAY_AUTO) {
        spec.overlay = across_nat ? v1::OVERLAY_N2N : v1::OVERLAY_VXLAN;
        if (across_nat && options.n2n_supernode.empty()) {
            return Error{
                fmt::format("overlay: site {} is behind NAT and this GRC has no n2n "
                            "supernode (vc-grcd --n2n-supernode)",
                            natted.front())};
        }
    }
    if (spec.overlay == v1::OVERLAY_VXLAN && across_nat) {
        const bool one = natted.size() == 1;
        return Error{fmt::format(
            "overlay vxlan: {} {} {} behind NAT ({}): {} nodes cannot be reached from the other "
            "sites; use --overlay n2n (or auto)",
            one ? "site" : "sites", fmt::join(natted, " and "), one ? "is" : "are",
            one ? "its CRM says so" : "their CRMs say so", one ? "its" : "their")};
    }
    return {};
}

std::shared_ptr<SiteLink> GrcServer::Impl::link_of(const std::string& site) const {
    auto found = sites.find(site);
    return found == sites.end() ? nullptr : found->second;
}

void GrcServer::Impl::send_assignment(const ClusterRecord& cluster, const SiteRecord& site,
                                      const std::shared_ptr<SiteLink>& link, Effects& effects) {
    v1::SiteCommand command;
    auto* assign = command.mutable_assign();
    assign->set_cluster_id(cluster.id);
    assign->set_owner(cluster.owner);
    assign->set_key_mode(cluster.key_mode);
    assign->set_vni(cluster.vni.value_or(0));
    assign->set_name_prefix(cluster.name_prefix);
    assign->set_slots(cluster.slots);
    assign->set_image(cluster.image);
    assign->set_image_mount(cluster.image_mount);
    assign->set_site(site.site);
    assign->set_block(site.block.to_string());
    assign->set_nodes(site.nodes);
    assign->set_pilots(cluster.pilots);
    assign->set_walltime_minutes(cluster.walltime_minutes);
    assign->set_overlay(cluster.overlay);
    assign->set_n2n_key(cluster.n2n_key);
    assign->set_n2n_supernode(cluster.n2n_supernode);
    effects.push_back([link, command = std::move(command)] { link->outbox->send(command); });
}

// The barrier across sites: once every node of every site has reported its keys, each connected
// site that has not had the view on its current stream gets it, with its nodes' certificates.
Status GrcServer::Impl::send_views(const ClusterRecord& cluster, Effects& effects) {
    // Cheap checks first: a connected site still lacks the view, and every node is keyed.
    const bool wanted =
        std::any_of(cluster.sites.begin(), cluster.sites.end(), [&](const auto& site) {
            auto link = link_of(site.site);
            return link && !link->viewed.contains(cluster.id);
        });
    if (!wanted) {
        return {};
    }
    auto summary = summary_of(cluster.id);
    if (!summary) {
        return summary.error();
    }
    if (summary->keyed != summary->total) {
        return {};
    }
    auto nodes = store.nodes(cluster.id);
    if (!nodes) {
        return nodes.error();
    }
    if (!every_node_keyed(*nodes)) {
        return {};
    }
    auto common = common_view(store, cas, cluster, *nodes);
    if (!common) {
        return common.error();
    }
    std::map<std::string_view, std::vector<const NodeRecord*>> by_site;
    for (const auto& node : *nodes) {
        by_site[node.site].push_back(&node);
    }
    for (const auto& site : cluster.sites) {
        auto link = link_of(site.site);
        if (!link || link->viewed.contains(cluster.id)) {
            continue;
        }
        link->viewed.insert(cluster.id);
        v1::SiteCommand command;
        auto* view = command.mutable_view();
        view->set_cluster_id(cluster.id);
        *view->mutable_common() = *common;
        if (cluster.key_mode == v1::KEY_MODE_CA) {
            for (const NodeRecord* node : by_site[site.site]) {
                auto& certificates = (*view->mutable_certificates())[node->ordinal];
                certificates.set_host_certificate(node->host_certificate);
                certificates.set_user_certificate(node->user_certificate);
            }
        }
        effects.push_back([link, command = std::move(command)] { link->outbox->send(command); });
    }
    return {};
}

// A CRM (re)connects: it gets every assignment of its site it lacks, the views of clusters past
// the barrier, and a release for every cluster it holds that is over here.
Status GrcServer::Impl::site_hello(const std::shared_ptr<SiteLink>& link,
                                   const v1::SiteHello& hello, Effects& effects) {
    if (hello.site() != link->site) {
        return Error{fmt::format("hello: site {} but the certificate is of site {}",
                                 quote(hello.site(), 80), link->site)};
    }
    if (!options.sites.contains(link->site)) {
        return Error{fmt::format("site {} is not one of this GRC's sites", link->site)};
    }
    std::shared_ptr<SiteLink> replaced = link_of(link->site);
    sites[link->site] = link;
    link->attached = true;
    behind_nat[link->site] = hello.behind_nat();
    const std::set<std::string> held(hello.clusters().begin(), hello.clusters().end());
    std::set<std::string> live;
    auto clusters = store.in_states({v1::CLUSTER_STATE_PENDING, v1::CLUSTER_STATE_READY,
                                     v1::CLUSTER_STATE_FAILED, v1::CLUSTER_STATE_RELEASING});
    if (!clusters) {
        return clusters.error();
    }
    // Releases go out before assignments: a cluster released here without the site's
    // confirmation (its release timed out while the site was away) may still hold a block or VNI
    // at the site that a newer cluster got since, and the CRM refuses an assignment that
    // overlaps what it holds.
    Effects assignments;
    for (const auto& cluster : *clusters) {
        const SiteRecord* site = site_of(cluster, link->site);
        if (site == nullptr || site->released) {
            continue;
        }
        if (cluster.state == v1::CLUSTER_STATE_RELEASING) {
            v1::SiteCommand release;
            release.set_release(cluster.id);
            effects.push_back([link, release] { link->outbox->send(release); });
            live.insert(cluster.id);
            continue;
        }
        live.insert(cluster.id);
        if (!held.contains(cluster.id)) {
            send_assignment(cluster, *site, link, assignments);
        }
        if (auto ok = send_views(cluster, assignments); !ok) {
            spdlog::warn("cluster {}: {}", cluster.id, ok.error().message);
        }
    }
    for (const auto& id : held) {
        if (!live.contains(id)) {
            v1::SiteCommand release;
            release.set_release(id);
            effects.push_back([link, release] { link->outbox->send(release); });
        }
    }
    for (auto& effect : assignments) {
        effects.push_back(std::move(effect));
    }
    effects.push_back([replaced, link] {
        if (replaced && replaced != link) {
            replaced->outbox->finish(
                {grpc::StatusCode::ABORTED, "the site's CRM connected again on another stream"});
        }
    });
    spdlog::info("site {} connected: {} cluster(s) live there", link->site, live.size());
    return {};
}

Status GrcServer::Impl::node_reports(const std::shared_ptr<SiteLink>& link,
                                     const v1::NodeReports& reports, Effects&) {
    if (!link->attached) {
        return Error{"node reports before the hello"};
    }
    // Checked whole before anything is written: a bad report refuses the batch.
    for (const auto& report : reports.nodes()) {
        if (auto ok = check_node_report(report); !ok) {
            return ok;
        }
    }
    std::map<std::string, std::vector<const v1::NodeReport*>> by_cluster;
    for (const auto& report : reports.nodes()) {
        by_cluster[report.cluster_id()].push_back(&report);
    }
    // How the counts of each cluster change; applied to `summaries` only if all of this succeeds
    // (a failure rolls the item's changes back).
    struct Delta {
        std::int64_t keyed = 0, ready = 0, failed = 0;
    };
    std::map<std::string, Delta> deltas;
    auto count = [](const NodeRecord& node, std::int64_t sign, Delta& delta) {
        delta.keyed += node.host_key.empty() ? 0 : sign;
        delta.ready += node.state == v1::PILOT_STATE_READY ? sign : 0;
        delta.failed +=
            node.state == v1::PILOT_STATE_FAILED || node.state == v1::PILOT_STATE_GONE ? sign : 0;
    };
    for (const auto& [id, list] : by_cluster) {
        auto found = store.find(id);
        if (!found) {
            return found.error();
        }
        if (!*found || (*found)->state == v1::CLUSTER_STATE_RELEASED) {
            continue;  // a late report of a released cluster: nothing to keep
        }
        const ClusterRecord& cluster = **found;
        const SiteRecord* site = site_of(cluster, link->site);
        if (site == nullptr) {
            return Error{fmt::format("cluster {} has no nodes at site {}", cluster.id, link->site)};
        }
        for (const v1::NodeReport* report : list) {
            if (report->ordinal() < 1 || report->ordinal() > site->nodes) {
                return Error{fmt::format("cluster {}: site {} has no node {}", cluster.id,
                                         link->site, report->ordinal())};
            }
            auto found_node = store.node(cluster.id, link->site, report->ordinal());
            if (!found_node) {
                return found_node.error();
            }
            if (!*found_node) {
                return Error{fmt::format("cluster {}: node {} of site {} is missing", cluster.id,
                                         report->ordinal(), link->site)};
            }
            NodeRecord* node = &**found_node;
            count(*node, -1, deltas[cluster.id]);
            const bool keys_changed =
                node->host_key != report->host_key() || node->user_key != report->user_key();
            node->host = report->host();
            node->underlay = report->underlay_address();
            node->host_key = report->host_key();
            node->user_key = report->user_key();
            node->state = report->state();
            node->reason = report->reason();
            if (keys_changed) {
                node->host_certificate.clear();
                node->user_certificate.clear();
            }
            if (cluster.key_mode == v1::KEY_MODE_CA && !node->host_key.empty() &&
                node->host_certificate.empty()) {
                auto ca = cas.get(store, cluster.id);
                if (!ca) {
                    return ca.error();
                }
                if (auto ok = certify_node(**ca, cluster, *node, options.certificate_lifetime);
                    !ok) {
                    return ok;
                }
            }
            if (auto ok = store.update_node(cluster.id, *node); !ok) {
                return ok;
            }
            count(*node, +1, deltas[cluster.id]);
        }
        dirty.insert(cluster.id);
        if (cluster.state == v1::CLUSTER_STATE_RELEASING) {
            continue;
        }
        reported.insert(cluster.id);
    }
    for (const auto& [id, delta] : deltas) {
        if (auto found = summaries.find(id); found != summaries.end()) {
            found->second.keyed = static_cast<std::uint32_t>(found->second.keyed + delta.keyed);
            found->second.ready = static_cast<std::uint32_t>(found->second.ready + delta.ready);
            found->second.failed = static_cast<std::uint32_t>(found->second.failed + delta.failed);
        }
    }
    return {};
}

Result<NodeSummary> GrcServer::Impl::summary_of(const std::string& id) {
    if (auto found = summaries.find(id); found != summaries.end()) {
        return found->second;
    }
    auto loaded = store.node_summary(id);
    if (!loaded) {
        return loaded.error();
    }
    summaries.emplace(id, *loaded);
    return *loaded;
}

// At the end of a batch, inside its transaction: the state and the barrier of each cluster whose
// nodes were reported, once (as node_reports did per message, on the clusters as they are now).
void GrcServer::Impl::settle_reported(Effects& effects) {
    for (const auto& id : reported) {
        auto found = store.find(id);
        if (!found || !*found) {
            if (!found) {
                spdlog::error("cluster {}: {}", id, found.error().message);
            }
            continue;
        }
        const ClusterRecord& cluster = **found;
        if (cluster.state == v1::CLUSTER_STATE_RELEASING ||
            cluster.state == v1::CLUSTER_STATE_RELEASED) {
            continue;
        }
        auto summary = summary_of(id);
        if (!summary) {
            spdlog::error("cluster {}: {}", id, summary.error().message);
            continue;
        }
        if (auto settled = settle_state(store, cluster, *summary); !settled) {
            spdlog::error("cluster {}: {}", id, settled.error().message);
            continue;
        }
        if (auto ok = send_views(cluster, effects); !ok) {
            spdlog::error("cluster {}: {}", id, ok.error().message);
        }
    }
    reported.clear();
}

Status GrcServer::Impl::begin_release(const ClusterRecord& cluster, std::string_view reason,
                                      Effects& effects) {
    const std::int64_t deadline = now_unix_ms() + options.release_timeout.count();
    if (auto ok = store.set_state(cluster.id, v1::CLUSTER_STATE_RELEASING, reason, deadline); !ok) {
        return ok;
    }
    release_deadlines[cluster.id] = deadline;
    walltimes.forget(cluster.id);
    dirty.insert(cluster.id);
    v1::SiteCommand release;
    release.set_release(cluster.id);
    for (const auto& site : cluster.sites) {
        if (auto link = link_of(site.site); link && !site.released) {
            effects.push_back([link, release] { link->outbox->send(release); });
        }
    }
    return maybe_finish_release(cluster);
}

// Released once every site has confirmed that it holds nothing of the cluster any more.
Status GrcServer::Impl::maybe_finish_release(const ClusterRecord& cluster) {
    for (const auto& site : cluster.sites) {
        if (!site.released) {
            return {};
        }
    }
    if (auto ok = store.finish_release(cluster.id); !ok) {
        return ok;
    }
    release_deadlines.erase(cluster.id);
    cas.forget(cluster.id);
    summaries.erase(cluster.id);
    dirty.insert(cluster.id);
    return {};
}

Status GrcServer::Impl::site_released(const std::shared_ptr<SiteLink>& link, const std::string& id,
                                      Effects&) {
    if (!link->attached) {
        return Error{"released before the hello"};
    }
    auto found = store.find(id);
    if (!found) {
        return found.error();
    }
    if (!*found || (*found)->state == v1::CLUSTER_STATE_RELEASED ||
        site_of(**found, link->site) == nullptr) {
        return {};
    }
    if ((*found)->state != v1::CLUSTER_STATE_RELEASING) {
        // The site let go of a live cluster (its pilots' jobs ended): the cluster has failed.
        if (auto ok = store.set_state(id, v1::CLUSTER_STATE_FAILED,
                                      fmt::format("site {} released its nodes", link->site));
            !ok) {
            return ok;
        }
    }
    if (auto ok = store.set_site_released(id, link->site); !ok) {
        return ok;
    }
    dirty.insert(id);
    auto again = store.find(id);
    if (!again || !*again) {
        return again ? Status{} : Status{again.error()};
    }
    if ((*again)->state == v1::CLUSTER_STATE_RELEASING) {
        return maybe_finish_release(**again);
    }
    return {};
}

void GrcServer::Impl::site_output(const std::shared_ptr<SiteLink>& link,
                                  const v1::SiteCommandOutput& out, Effects& effects) {
    auto command = commands.find(out.request());
    if (command == commands.end() || !command->second.pending.contains(link->site)) {
        return;
    }
    if (out.last()) {
        command->second.pending.erase(link->site);
    }
    const bool finished = command->second.pending.empty();
    auto caller = command->second.caller;
    if (finished) {
        commands.erase(command);
    }
    effects.push_back([caller, output = out.output(), has_output = out.has_output(), finished] {
        if (has_output) {
            caller->outbox->send(output);
        }
        if (finished) {
            caller->outbox->finish(grpc::Status::OK);
        }
    });
}

void GrcServer::Impl::closed(const std::shared_ptr<SiteLink>& link, Effects& effects) {
    if (!link->attached) {
        return;
    }
    if (auto current = sites.find(link->site); current != sites.end() && current->second == link) {
        sites.erase(current);
        spdlog::info("site {} disconnected", link->site);
    } else {
        return;  // replaced by a newer stream of the same CRM
    }
    for (auto it = commands.begin(); it != commands.end();) {
        if (it->second.pending.erase(link->site) == 0) {
            ++it;
            continue;
        }
        v1::NodeOutput lost;
        lost.set_node(link->site);
        lost.mutable_output()->set_stderr(
            fmt::format("vcpilot: the CRM of site {} went away\n", link->site));
        v1::NodeOutput status;
        status.set_node(link->site);
        status.mutable_output()->set_exit_status(255);
        const bool finished = it->second.pending.empty();
        effects.push_back([caller = it->second.caller, lost, status, finished] {
            caller->outbox->send(lost);
            caller->outbox->send(status);
            if (finished) {
                caller->outbox->finish(grpc::Status::OK);
            }
        });
        it = finished ? commands.erase(it) : std::next(it);
    }
}

std::optional<std::int64_t> GrcServer::Impl::next_release_deadline() const {
    std::optional<std::int64_t> next = walltimes.next();
    for (const auto& [id, deadline] : release_deadlines) {
        next = next ? std::min(*next, deadline) : deadline;
    }
    return next;
}

// A site that does not confirm a release in time (its CRM is down or cut off) does not hold
// the blocks forever; when it comes back, its hello lists the cluster and it is told to release.
void GrcServer::Impl::expire_releases() {
    const std::int64_t now = now_unix_ms();
    std::vector<std::string> expired;
    for (const auto& [id, deadline] : release_deadlines) {
        if (deadline <= now) {
            expired.push_back(id);
        }
    }
    for (const auto& id : expired) {
        spdlog::warn("cluster {}: not every site confirmed the release in time; freeing it", id);
        if (auto ok = store.finish_release(id); !ok) {
            spdlog::error("cluster {}: {}", id, ok.error().message);
            continue;
        }
        release_deadlines.erase(id);
        cas.forget(id);
        summaries.erase(id);
        dirty.insert(id);
    }
}

void GrcServer::Impl::expire_walltimes(Effects& effects) {
    walltimes.release_due(store, now_unix_ms(),
                          [&](const ClusterRecord& cluster, const std::string& reason) {
                              return begin_release(cluster, reason, effects);
                          });
}

// A site's CRM submitted the Slurm job that holds the cluster's nodes there.
Status GrcServer::Impl::pilot_job(const std::shared_ptr<SiteLink>& link, const v1::PilotJob& job) {
    if (!link->attached) {
        return Error{"a pilot job before the hello"};
    }
    if (job.job_id().empty() || job.job_id().size() > 20 ||
        job.job_id().find_first_not_of("0123456789") != std::string::npos) {
        return Error{
            fmt::format("pilot_job: job_id {} is not a Slurm job id", quote(job.job_id(), 40))};
    }
    auto found = store.find(job.cluster_id());
    if (!found) {
        return found.error();
    }
    if (!*found || (*found)->state == v1::CLUSTER_STATE_RELEASED ||
        site_of(**found, link->site) == nullptr) {
        return {};
    }
    if (auto ok = store.set_pilot_job(job.cluster_id(), link->site, job.job_id()); !ok) {
        return ok;
    }
    dirty.insert(job.cluster_id());
    return {};
}

// ---- the service ----

namespace {

class ConnectReactor final : public grpc::ServerBidiReactor<v1::SiteReport, v1::SiteCommand> {
  public:
    ConnectReactor(GrcServer::Impl& grc, grpc::CallbackServerContext* context)
        : grc_(grc),
          outbox_(std::make_shared<Outbox<v1::SiteCommand>>(
              [this](const v1::SiteCommand* c) { StartWrite(c); },
              [this](const grpc::Status& s) { Finish(s); })),
          link_(std::make_shared<SiteLink>(outbox_)) {
        auto name = tls_identity(*context);
        if (!name || !name->starts_with(kCrmPrefix)) {
            const std::string why =
                name ? fmt::format("{} is not a CRM's certificate (crm:<site>)", quote(*name, 80))
                     : name.error().message;
            spdlog::warn("site connection refused: {}", why);
            outbox_->finish({grpc::StatusCode::UNAUTHENTICATED, why});
            return;
        }
        link_->site = name->substr(kCrmPrefix.size());
        StartRead(&in_);
    }

    void OnReadDone(bool ok) override {
        if (!ok) {
            outbox_->finish(grpc::Status::OK);
            return;
        }
        auto link = link_;
        if (!hello_seen_) {
            if (in_.report_case() != v1::SiteReport::kHello) {
                outbox_->finish({grpc::StatusCode::INVALID_ARGUMENT,
                                 "the first message of a CRM must be its hello"});
                return;
            }
            hello_seen_ = true;
        } else if (in_.report_case() == v1::SiteReport::kHello) {
            outbox_->finish({grpc::StatusCode::INVALID_ARGUMENT, "a second hello"});
            return;
        }
        v1::SiteReport report = std::move(in_);
        grc_.post({[grc = &grc_, link, report](Effects& effects) -> Status {
                       switch (report.report_case()) {
                           case v1::SiteReport::kHello:
                               return grc->site_hello(link, report.hello(), effects);
                           case v1::SiteReport::kAssigned:
                               return {};
                           case v1::SiteReport::kNodes:
                               return grc->node_reports(link, report.nodes(), effects);
                           case v1::SiteReport::kReleased:
                               return grc->site_released(link, report.released(), effects);
                           case v1::SiteReport::kOutput:
                               grc->site_output(link, report.output(), effects);
                               return {};
                           case v1::SiteReport::kPilotJob:
                               return grc->pilot_job(link, report.pilot_job());
                           default:
                               return Error{"a site report of an unknown kind"};
                       }
                   },
                   [link](const Status& status) {
                       if (!status) {
                           spdlog::warn("site {}: {}", link->site, status.error().message);
                           link->outbox->finish(
                               {grpc::StatusCode::INVALID_ARGUMENT, status.error().message});
                       }
                   }});
        StartRead(&in_);
    }

    void OnWriteDone(bool ok) override { outbox_->write_done(ok); }

    void OnDone() override {
        outbox_->gone();
        auto link = link_;
        grc_.post({[grc = &grc_, link](Effects& effects) -> Status {
                       grc->closed(link, effects);
                       return {};
                   },
                   {}});
        delete this;
    }

  private:
    GrcServer::Impl& grc_;
    std::shared_ptr<Outbox<v1::SiteCommand>> outbox_;
    std::shared_ptr<SiteLink> link_;
    v1::SiteReport in_;
    bool hello_seen_ = false;
};

class GrcService final : public v1::Grc::CallbackService {
  public:
    explicit GrcService(GrcServer::Impl& grc) : grc_(grc) {}

    grpc::ServerBidiReactor<v1::SiteReport, v1::SiteCommand>* Connect(
        grpc::CallbackServerContext* context) override {
        return new ConnectReactor(grc_, context);
    }

    grpc::ServerUnaryReactor* CreateCluster(grpc::CallbackServerContext* context,
                                            const v1::CreateClusterRequest* request,
                                            v1::Cluster* response) override {
        auto* reactor = context->DefaultReactor();
        auto caller = grc_.user(*context);
        if (!caller) {
            reactor->Finish({grpc::StatusCode::UNAUTHENTICATED, caller.error().message});
            return reactor;
        }
        auto spec = grc_.check_create(*request, *caller);
        if (!spec) {
            reactor->Finish({grpc::StatusCode::INVALID_ARGUMENT, spec.error().message});
            return reactor;
        }
        grc_.post({[grc = &grc_, spec = *spec, response](Effects& effects) -> Status {
                       CreatePolicy policy;
                       policy.pool = &grc->options.pool;
                       policy.vni_first = grc->options.vni_first;
                       policy.vni_last = grc->options.vni_last;
                       policy.hold_ca = true;
                       policy.n2n_supernode = grc->options.n2n_supernode;
                       ClusterSpec chosen = spec;
                       if (auto ok = grc->choose_overlay(chosen); !ok) {
                           return ok;
                       }
                       auto created = grc->store.create(chosen, policy);
                       if (!created) {
                           return created.error();
                       }
                       grc->dirty.insert(created->id);
                       grc->walltimes.track(*created);
                       for (const auto& site : created->sites) {
                           if (auto link = grc->link_of(site.site); link) {
                               grc->send_assignment(*created, site, link, effects);
                           }
                       }
                       auto described = describe_cluster(grc->store, *created, true);
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
        return list_clusters(grc_, context, grc_.user(*context), *request, response);
    }

    grpc::ServerUnaryReactor* GetCluster(grpc::CallbackServerContext* context,
                                         const v1::ClusterRef* request,
                                         v1::Cluster* response) override {
        return get_cluster(grc_, context, grc_.user(*context), request->id(), response);
    }

    grpc::ServerUnaryReactor* ReleaseCluster(grpc::CallbackServerContext* context,
                                             const v1::ClusterRef* request,
                                             v1::Cluster* response) override {
        return lookup_cluster(
            grc_, context, grc_.user(*context), request->id(),
            [this, response](ClusterRecord& cluster, Effects& effects) -> Status {
                if (cluster.state != v1::CLUSTER_STATE_RELEASED &&
                    cluster.state != v1::CLUSTER_STATE_RELEASING) {
                    if (auto ok = grc_.begin_release(cluster, "released by its owner", effects);
                        !ok) {
                        return ok;
                    }
                }
                return describe_current(grc_.store, cluster.id, response);
            });
    }

    grpc::ServerWriteReactor<v1::Cluster>* WatchCluster(grpc::CallbackServerContext* context,
                                                        const v1::ClusterRef* request) override {
        return watch_cluster(grc_, grc_.user(*context), request->id());
    }

    grpc::ServerWriteReactor<v1::NodeOutput>* Run(
        grpc::CallbackServerContext* context, const v1::ClusterCommandRequest* request) override {
        return command(context, *request, false);
    }

    grpc::ServerWriteReactor<v1::NodeOutput>* Exec(
        grpc::CallbackServerContext* context, const v1::ClusterCommandRequest* request) override {
        return command(context, *request, true);
    }

  private:
    // RUN goes to the site of the first node, EXEC to every site; each site's CRM runs it on
    // its pilots and streams the output back.
    grpc::ServerWriteReactor<v1::NodeOutput>* command(grpc::CallbackServerContext* context,
                                                      const v1::ClusterCommandRequest& request,
                                                      bool every_node) {
        auto* reactor = new WriterReactor<v1::NodeOutput>();
        auto link = reactor->link();
        auto caller = grc_.user(*context);
        if (!caller) {
            link->outbox->finish({grpc::StatusCode::UNAUTHENTICATED, caller.error().message});
            return reactor;
        }
        if (request.command().argv().empty()) {
            link->outbox->finish({grpc::StatusCode::INVALID_ARGUMENT, "command: argv is empty"});
            return reactor;
        }
        if (every_node && !caller->is_root()) {
            link->outbox->finish({grpc::StatusCode::PERMISSION_DENIED,
                                  "only root may EXEC on a cluster's nodes; use run"});
            return reactor;
        }
        grc_.post({[grc = &grc_, link, request, caller = *caller,
                    every_node](Effects& effects) -> Status {
                       auto cluster = grc->owned_cluster(request.id(), caller);
                       if (!cluster) {
                           return cluster.error();
                       }
                       if (cluster->state != v1::CLUSTER_STATE_READY) {
                           return Error{fmt::format("cluster {} is {}, not READY", cluster->id,
                                                    v1::ClusterState_Name(cluster->state))};
                       }
                       const std::uint64_t id = grc->next_command++;
                       v1::SiteCommand command;
                       auto* run = command.mutable_run();
                       run->set_request(id);
                       run->set_cluster_id(cluster->id);
                       *run->mutable_command() = request.command();
                       run->set_as_root(every_node);
                       run->set_first_node_only(!every_node);
                       std::vector<std::shared_ptr<SiteLink>> targets;
                       for (const auto& site : cluster->sites) {
                           auto site_link = grc->link_of(site.site);
                           if (!site_link) {
                               return Error{
                                   fmt::format("the CRM of site {} is not connected", site.site)};
                           }
                           targets.push_back(site_link);
                           if (!every_node) {
                               break;  // sites are in name order: node 1 of the first site
                           }
                       }
                       auto& pending = grc->commands[id];
                       pending.caller = link;
                       for (const auto& target : targets) {
                           pending.pending.insert(target->site);
                           effects.push_back([target, command] { target->outbox->send(command); });
                       }
                       return {};
                   },
                   [link](const Status& status) {
                       if (!status) {
                           link->outbox->finish(
                               {grpc::StatusCode::FAILED_PRECONDITION, status.error().message});
                       }
                   }});
        return reactor;
    }

    GrcServer::Impl& grc_;
};

}  // namespace

GrcServer::GrcServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GrcServer::~GrcServer() {
    stop();
}

Result<std::unique_ptr<GrcServer>> GrcServer::start(GrcOptions options, ClusterStore store) {
    auto impl = std::make_unique<Impl>(std::move(options), std::move(store));
    // Reconcile: releases under way go on with a fresh deadline; sites that come back are told.
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
    if (auto ok = impl->walltimes.load(impl->store); !ok) {
        return ok.error();
    }
    impl->writer.start();
    return std::unique_ptr<GrcServer>(new GrcServer(std::move(impl)));
}

grpc::Service* GrcServer::service() {
    if (!service_) {
        service_ = std::make_unique<GrcService>(*impl_);
    }
    return service_.get();
}

void GrcServer::stop() {
    if (impl_) {
        impl_->writer.stop();
    }
}

}  // namespace vcpilot::coordinator
