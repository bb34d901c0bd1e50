#include "coordinator/cluster_view.hpp"

#include <algorithm>
#include <fmt/format.h>

#include "common/hostlist.hpp"
#include "common/text.hpp"
#include "common/underlays.hpp"

namespace vcpilot::coordinator {

const SiteRecord* site_of(const ClusterRecord& cluster, std::string_view site) {
    for (const auto& record : cluster.sites) {
        if (record.site == site) {
            return &record;
        }
    }
    return nullptr;
}

Result<v1::Cluster> describe_cluster(ClusterStore& store, const ClusterRecord& cluster,
                                     bool with_nodes) {
    v1::Cluster out;
    out.set_id(cluster.id);
    out.set_owner(cluster.owner);
    out.set_state(cluster.state);
    out.set_reason(cluster.reason);
    out.set_key_mode(cluster.key_mode);
    out.set_vni(cluster.vni.value_or(0));
    out.set_name_prefix(cluster.name_prefix);
    out.set_slots(cluster.slots);
    out.set_created_unix_ms(static_cast<std::uint64_t>(cluster.created_unix_ms));
    out.set_changed_unix_ms(static_cast<std::uint64_t>(cluster.changed_unix_ms));
    out.set_pilots(cluster.pilots);
    out.set_walltime_minutes(cluster.walltime_minutes);
    out.set_expires_unix_ms(static_cast<std::uint64_t>(cluster.expires_unix_ms));
    out.set_overlay(cluster.overlay);
    auto nodes = store.nodes(cluster.id);
    if (!nodes) {
        return nodes.error();
    }
    std::map<std::string, v1::SiteInfo*> sites;
    for (const auto& site : cluster.sites) {
        auto* info = out.add_sites();
        info->set_site(site.site);
        info->set_nodes(site.nodes);
        info->set_block(site.block.to_string());
        info->set_pilot_job(site.pilot_job);
        sites[site.site] = info;
    }
    for (const auto& node : *nodes) {
        const SiteRecord* site = site_of(cluster, node.site);
        if (site == nullptr) {
            continue;
        }
        if (node.state == v1::PILOT_STATE_READY) {
            sites[node.site]->set_ready(sites[node.site]->ready() + 1);
        }
        if (!with_nodes) {
            continue;
        }
        auto* info = out.add_nodes();
        info->set_site(node.site);
        info->set_ordinal(node.ordinal);
        info->set_name(node_name(cluster.name_prefix, node.site, node.ordinal));
        info->set_address(node_address(site->block, node.ordinal)->to_string());
        info->set_host(node.host);
        info->set_underlay_address(node.underlay);
        info->set_state(node.state);
        info->set_reason(node.reason);
    }
    return out;
}

bool every_node_keyed(const std::vector<NodeRecord>& nodes) {
    return std::all_of(nodes.begin(), nodes.end(),
                       [](const NodeRecord& node) { return !node.host_key.empty(); });
}

Result<v1::ClusterView> common_view(const ClusterRecord& cluster,
                                    const std::vector<NodeRecord>& nodes, const SshCa* ca) {
    v1::ClusterView view;
    view.set_cluster_id(cluster.id);
    view.set_name_prefix(cluster.name_prefix);
    view.set_slots(cluster.slots);
    struct Site {
        v1::SiteView* view = nullptr;
        std::vector<IpAddress> underlays;
        std::vector<std::string> hosts;
    };
    std::map<std::string, Site, std::less<>> sites;
    for (const auto& site : cluster.sites) {
        auto* site_view = view.add_sites();
        site_view->set_site(site.site);
        site_view->set_block(site.block.to_string());
        site_view->set_nodes(site.nodes);
        sites[site.site] = Site{site_view, {}, {}};
    }
    // Nodes come ordered by site and ordinal, so node i of a site lands at index i-1.
    for (const auto& node : nodes) {
        auto found = sites.find(node.site);
        if (found == sites.end()) {
            return Error{fmt::format("cluster {}: node {} of unknown site {}", cluster.id,
                                     node.ordinal, node.site)};
        }
        auto underlay = IpAddress::parse(node.underlay);
        if (!underlay) {
            return Error{fmt::format("node {} of site {} has no usable underlay address {}",
                                     node.ordinal, node.site, quote(node.underlay))};
        }
        found->second.underlays.push_back(*underlay);
        found->second.hosts.push_back(node.host);
        if (cluster.key_mode == v1::KEY_MODE_EXCHANGE) {
            found->second.view->add_host_keys(node.host_key);
            found->second.view->add_user_keys(node.user_key);
        }
    }
    for (auto& [name, site] : sites) {
        if (auto ok = pack_underlays(site.underlays, *site.view); !ok) {
            return Error{fmt::format("cluster {}: {}", cluster.id, ok.error().message)};
        }
        // A node without a host, or a host no expression can carry: none of the site's is sent,
        // and its jobs see Slurm's node lists as Slurm wrote them.
        if (std::none_of(site.hosts.begin(), site.hosts.end(),
                         [](const std::string& host) { return host.empty(); })) {
            if (auto hosts = compress_hostlist(site.hosts)) {
                site.view->set_hosts(std::move(*hosts));
            }
        }
    }
    if (cluster.key_mode == v1::KEY_MODE_CA) {
        if (ca == nullptr) {
            return Error{fmt::format("cluster {}: no CA key to put in the view", cluster.id)};
        }
        view.set_ca_key(ca->public_key_line("vcpilot-ca:" + cluster.id));
    }
    return view;
}

Status certify_node(const SshCa& ca, const ClusterRecord& cluster, NodeRecord& node,
                    std::chrono::seconds lifetime) {
    const SiteRecord* site = site_of(cluster, node.site);
    if (site == nullptr) {
        return Error{fmt::format("cluster {} has no site {}", cluster.id, node.site)};
    }
    const std::string name = node_name(cluster.name_prefix, node.site, node.ordinal);
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    CertificateRequest request;
    request.serial = node.ordinal;
    request.valid_after_unix = now - 300;  // clock skew between the nodes
    request.valid_before_unix = now + lifetime.count();
    request.type = CertificateType::Host;
    request.public_key_line = node.host_key;
    request.key_id = fmt::format("{}:{}:host", cluster.id, name);
    request.principals = {name, node_address(site->block, node.ordinal)->to_string()};
    auto host_certificate = ca.sign(request);
    if (!host_certificate) {
        return host_certificate.error();
    }
    request.type = CertificateType::User;
    request.public_key_line = node.user_key;
    request.key_id = fmt::format("{}:{}:user", cluster.id, name);
    request.principals = {cluster.owner};
    auto user_certificate = ca.sign(request);
    if (!user_certificate) {
        return user_certificate.error();
    }
    node.host_certificate = std::move(*host_certificate);
    node.user_certificate = std::move(*user_certificate);
    return {};
}

Result<bool> settle_state(ClusterStore& store, const ClusterRecord& cluster,
                          const std::vector<NodeRecord>& nodes) {
    if (cluster.state != v1::CLUSTER_STATE_PENDING && cluster.state != v1::CLUSTER_STATE_READY) {
        return false;
    }
    std::size_t ready = 0;
    for (const auto& node : nodes) {
        // A pilot that stops while its cluster is not being released takes its node away.
        if (node.state == v1::PILOT_STATE_FAILED || node.state == v1::PILOT_STATE_GONE) {
            const std::string reason =
                fmt::format("node {}: {}", node_name(cluster.name_prefix, node.site, node.ordinal),
                            !node.reason.empty()                 ? node.reason
                            : node.state == v1::PILOT_STATE_GONE ? "its pilot stopped"
                                                                 : "failed");
            if (auto ok = store.set_state(cluster.id, v1::CLUSTER_STATE_FAILED, reason); !ok) {
                return ok.error();
            }
            return true;
        }
        ready += node.state == v1::PILOT_STATE_READY ? 1 : 0;
    }
    if (cluster.state == v1::CLUSTER_STATE_PENDING && ready == nodes.size() && !nodes.empty()) {
        if (auto ok = store.set_state(cluster.id, v1::CLUSTER_STATE_READY, ""); !ok) {
            return ok.error();
        }
        return true;
    }
    return false;
}

Result<bool> settle_state(ClusterStore& store, const ClusterRecord& cluster,
                          const NodeSummary& summary) {
    if (cluster.state != v1::CLUSTER_STATE_PENDING && cluster.state != v1::CLUSTER_STATE_READY) {
        return false;
    }
    if (summary.failed > 0) {
        auto nodes = store.nodes(cluster.id);
        if (!nodes) {
            return nodes.error();
        }
        return settle_state(store, cluster, *nodes);
    }
    if (cluster.state == v1::CLUSTER_STATE_PENDING && summary.ready == summary.total &&
        summary.total > 0) {
        if (auto ok = store.set_state(cluster.id, v1::CLUSTER_STATE_READY, ""); !ok) {
            return ok.error();
        }
        return true;
    }
    return false;
}

namespace {

constexpr std::size_t kMaxKeyLine = 1024;
constexpr std::size_t kMaxField = 255;

bool one_line(std::string_view text, std::size_t max) {
    return text.size() <= max &&
           text.find_first_of(std::string_view("\n\r\0", 3)) == std::string_view::npos;
}

}  // namespace

Status check_node_report(const v1::NodeReport& report) {
    const auto where = [&] {
        return fmt::format("node report {}/{}", quote(report.cluster_id(), 80), report.ordinal());
    };
    if (!one_line(report.cluster_id(), kMaxField) || !one_line(report.host(), kMaxField) ||
        !one_line(report.reason(), 4 * kMaxField) ||
        !one_line(report.underlay_address(), kMaxField)) {
        return Error{fmt::format("{}: a field is too long or not one line", where())};
    }
    if (!report.underlay_address().empty()) {
        if (auto ok = IpAddress::parse(report.underlay_address()); !ok) {
            return Error{fmt::format("{}: underlay_address: {}", where(), ok.error().message)};
        }
    }
    for (const auto* line : {&report.host_key(), &report.user_key()}) {
        if (!line->empty() && (line->size() > kMaxKeyLine || !parse_ed25519_public_key(*line))) {
            return Error{fmt::format("{}: a key is not an Ed25519 public key", where())};
        }
    }
    if (report.host_key().empty() != report.user_key().empty()) {
        return Error{fmt::format("{}: host and user keys come together", where())};
    }
    if (!v1::PilotState_IsValid(report.state())) {
        return Error{
            fmt::format("{}: unknown state {}", where(), static_cast<int>(report.state()))};
    }
    return {};
}

Result<const SshCa*> CaCache::get(ClusterStore& store, const std::string& id) {
    if (auto found = cas_.find(id); found != cas_.end()) {
        return &found->second;
    }
    auto seed = store.ca_seed(id);
    if (!seed) {
        return seed.error();
    }
    if (!*seed) {
        return Error{fmt::format("cluster {}: this coordinator holds no CA key for it", id)};
    }
    auto ca = SshCa::from_private_bytes(std::span<const std::uint8_t, 32>(**seed));
    if (!ca) {
        return ca.error();
    }
    return &cas_.emplace(id, std::move(*ca)).first->second;
}

Result<v1::ClusterView> common_view(ClusterStore& store, CaCache& cas, const ClusterRecord& cluster,
                                    const std::vector<NodeRecord>& nodes) {
    const SshCa* ca = nullptr;
    if (cluster.key_mode == v1::KEY_MODE_CA) {
        auto found = cas.get(store, cluster.id);
        if (!found) {
            return found.error();
        }
        ca = *found;
    }
    return common_view(cluster, nodes, ca);
}

Status Watchers::add(ClusterStore& store, const ClusterRecord& cluster, Link link) {
    auto described = describe_cluster(store, cluster, true);
    if (!described) {
        return described.error();
    }
    link->outbox->send(std::move(*described));
    if (cluster.state == v1::CLUSTER_STATE_RELEASED) {
        link->outbox->finish(grpc::Status::OK);
    } else {
        watchers_[cluster.id].push_back(std::move(link));
    }
    return {};
}

void Watchers::notify(ClusterStore& store, const std::set<std::string>& changed) {
    for (const auto& id : changed) {
        auto watching = watchers_.find(id);
        if (watching == watchers_.end()) {
            continue;
        }
        auto found = store.find(id);
        if (!found || !*found) {
            continue;
        }
        auto described = describe_cluster(store, **found, true);
        if (!described) {
            continue;
        }
        const bool last = (*found)->state == v1::CLUSTER_STATE_RELEASED;
        auto& list = watching->second;
        std::erase_if(list, [&](const Link& watcher) {
            if (!watcher->outbox->send(*described)) {
                return true;
            }
            if (last) {
                watcher->outbox->finish(grpc::Status::OK);
            }
            return last;
        });
        if (list.empty()) {
            watchers_.erase(watching);
        }
    }
}

grpc::Status to_grpc(grpc::StatusCode code, const Status& status) {
    return status ? grpc::Status::OK : grpc::Status(code, status.error().message);
}

Status Walltimes::load(ClusterStore& store) {
    auto live = store.in_states(
        {v1::CLUSTER_STATE_PENDING, v1::CLUSTER_STATE_READY, v1::CLUSTER_STATE_FAILED});
    if (!live) {
        return live.error();
    }
    for (const auto& cluster : *live) {
        track(cluster);
    }
    return {};
}

void Walltimes::track(const ClusterRecord& cluster) {
    if (cluster.expires_unix_ms > 0) {
        due_[cluster.id] = cluster.expires_unix_ms;
    }
}

std::optional<std::int64_t> Walltimes::next() const {
    std::optional<std::int64_t> next;
    for (const auto& [id, when] : due_) {
        next = next ? std::min(*next, when) : when;
    }
    return next;
}

std::vector<std::string> Walltimes::take_due(std::int64_t now_unix_ms) {
    std::vector<std::string> due;
    for (auto it = due_.begin(); it != due_.end();) {
        if (it->second <= now_unix_ms) {
            due.push_back(it->first);
            it = due_.erase(it);
        } else {
            ++it;
        }
    }
    return due;
}

}  // namespace vcpilot::coordinator
