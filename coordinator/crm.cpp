#include "coordinator/crm.hpp"

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
#include "common/sshcert.hpp"
#include "common/store_detail.hpp"
#include "common/text.hpp"
#include "coordinator/auth.hpp"
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
};

// A WatchCluster or Run/Exec caller.
template <typename T>
struct WriterLink {
    explicit WriterLink(std::shared_ptr<Outbox<T>> outbox_) : outbox(std::move(outbox_)) {}
    const std::shared_ptr<Outbox<T>> outbox;
};

}  // namespace

// ---- the writer thread ----

struct CrmServer::Impl {
    Impl(CrmOptions options_, ClusterStore store_)
        : options(std::move(options_)), store(std::move(store_)) {}

    const CrmOptions options;
    ClusterStore store;  // the writer thread's alone

    Writer writer{store.leases().database(), store.leases().path(),
                  WriterHooks{[this](Effects&) { expire_releases(); }, [this] { after_batch(); },
                              [this] {
                                  cas.clear();
                                  dirty.clear();
                              },
                              [this] { return next_release_deadline(); }}};

    // Writer-thread state. None of it is a fact the store lacks: links and watchers are open
    // connections, deadlines and CAs are derived from stored rows.
    std::map<std::pair<std::string, NodeKey>, std::shared_ptr<PilotLink>> links;
    std::map<std::string, std::vector<std::shared_ptr<WriterLink<v1::Cluster>>>> watchers;
    std::map<std::string, std::int64_t> release_deadlines;  // RELEASING clusters
    std::map<std::string, SshCa> cas;
    std::set<std::string> dirty;  // clusters changed in this batch
    struct Command {
        std::shared_ptr<WriterLink<v1::NodeOutput>> caller;
        std::map<std::shared_ptr<PilotLink>, std::string> pending;  // link -> node name
    };
    std::map<std::uint64_t, Command> commands;
    std::uint64_t next_command = 1;

    void post(Work work) { writer.post(std::move(work)); }
    std::optional<std::int64_t> next_release_deadline() const;
    void after_batch();
    void expire_releases();

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
    Result<ClusterRecord> create(const ClusterSpec& spec);
    Result<ClusterRecord> owned_cluster(const std::string& id, const Caller& caller);
    Status begin_release(const ClusterRecord& cluster, std::string_view reason, Effects& effects);
    Status maybe_finish_release(const std::string& id, Effects& effects);
    Status send_views(const ClusterRecord& cluster, Effects& effects);
    Result<v1::Cluster> describe(const ClusterRecord& cluster, bool with_nodes);
    Result<SshCa*> ca_of(const std::string& id);
    std::vector<std::shared_ptr<PilotLink>> links_of(const std::string& id);
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
    setup.set_user(cluster.owner);
    setup.set_image(cluster.image);
    setup.set_image_mount(cluster.image_mount);
    return setup;
}

const SiteRecord* site_of(const ClusterRecord& cluster, std::string_view site) {
    for (const auto& record : cluster.sites) {
        if (record.site == site) {
            return &record;
        }
    }
    return nullptr;
}

}  // namespace

Result<SshCa*> CrmServer::Impl::ca_of(const std::string& id) {
    if (auto found = cas.find(id); found != cas.end()) {
        return &found->second;
    }
    auto seed = store.ca_seed(id);
    if (!seed) {
        return seed.error();
    }
    if (!*seed) {
        return Error{fmt::format("cluster {}: this CRM holds no CA key for it", id)};
    }
    auto ca = SshCa::from_private_bytes(std::span<const std::uint8_t, 32>(**seed));
    if (!ca) {
        return ca.error();
    }
    return &cas.emplace(id, std::move(*ca)).first->second;
}

std::vector<std::shared_ptr<PilotLink>> CrmServer::Impl::links_of(const std::string& id) {
    std::vector<std::shared_ptr<PilotLink>> found;
    for (auto it = links.lower_bound({id, NodeKey{}}); it != links.end() && it->first.first == id;
         ++it) {
        found.push_back(it->second);
    }
    return found;
}

Result<v1::Cluster> CrmServer::Impl::describe(const ClusterRecord& cluster, bool with_nodes) {
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
    auto nodes = store.nodes(cluster.id);
    if (!nodes) {
        return nodes.error();
    }
    for (const auto& site : cluster.sites) {
        auto* info = out.add_sites();
        info->set_site(site.site);
        info->set_nodes(site.nodes);
        info->set_block(site.block.to_string());
    }
    for (const auto& node : *nodes) {
        const SiteRecord* site = site_of(cluster, node.site);
        if (site == nullptr) {
            continue;
        }
        if (node.state == v1::PILOT_STATE_READY) {
            for (auto& info : *out.mutable_sites()) {
                if (info.site() == node.site) {
                    info.set_ready(info.ready() + 1);
                }
            }
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

Result<ClusterSpec> CrmServer::Impl::check_create(const v1::CreateClusterRequest& request,
                                                  const Caller& caller) const {
    auto spec = validate_create(request, caller.name);
    if (!spec) {
        return spec.error();
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
    return spec;
}

Result<ClusterRecord> CrmServer::Impl::create(const ClusterSpec& spec) {
    CreatePolicy policy;
    policy.pool = &*options.pool;
    policy.vni_first = options.vni_first;
    policy.vni_last = options.vni_last;
    policy.hold_ca = true;
    return store.create(spec, policy);
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

Status CrmServer::Impl::hello(const std::shared_ptr<PilotLink>& link, const v1::PilotHello& hello,
                              const std::string& underlay, Effects& effects) {
    auto found = store.find(hello.cluster_id());
    if (!found) {
        return found.error();
    }
    if (!*found || (*found)->state == v1::CLUSTER_STATE_RELEASED) {
        return Error{
            fmt::format("no cluster {} at site {}", quote(hello.cluster_id(), 80), options.site)};
    }
    const ClusterRecord& cluster = **found;
    if (cluster.state == v1::CLUSTER_STATE_RELEASING) {
        return Error{fmt::format("cluster {} is being released", cluster.id)};
    }
    auto node = store.attach(cluster.id, hello.host(), hello.job_id(), underlay);
    if (!node) {
        return node.error();
    }
    const SiteRecord* site = site_of(cluster, node->site);
    if (site == nullptr) {
        return Error{fmt::format("cluster {} has no site {}", cluster.id, node->site)};
    }
    const v1::PilotState reported =
        hello.has_status() ? hello.status().state() : v1::PILOT_STATE_NEW;
    node->state = reported == v1::PILOT_STATE_UNSPECIFIED ? v1::PILOT_STATE_NEW : reported;
    node->reason = hello.has_status() ? hello.status().reason() : "";
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
    dirty.insert(cluster.id);
    const bool needs_setup = node->state == v1::PILOT_STATE_NEW;
    v1::PilotCommand command;
    if (needs_setup) {
        *command.mutable_setup() = setup_for(cluster, *site, *node);
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
    auto nodes = store.nodes(cluster.id);
    if (!nodes) {
        return nodes.error();
    }
    NodeRecord* node = nullptr;
    bool all_keyed = true;
    for (auto& candidate : *nodes) {
        if (candidate.site == link->node.site && candidate.ordinal == link->node.ordinal) {
            node = &candidate;
        } else if (candidate.host_key.empty()) {
            all_keyed = false;
        }
    }
    if (node == nullptr) {
        return Error{"the pilot's node is gone"};
    }
    const bool changed = node->host_key != keys.host_key() || node->user_key != keys.user_key();
    node->host_key = keys.host_key();
    node->user_key = keys.user_key();
    if (cluster.key_mode == v1::KEY_MODE_CA && (changed || node->host_certificate.empty())) {
        auto ca = ca_of(cluster.id);
        if (!ca) {
            return ca.error();
        }
        const SiteRecord* site = site_of(cluster, node->site);
        const std::string name = node_name(cluster.name_prefix, node->site, node->ordinal);
        const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
        CertificateRequest request;
        request.serial = node->ordinal;
        request.valid_after_unix = now - 300;
        request.valid_before_unix =
            now +
            std::chrono::duration_cast<std::chrono::seconds>(options.certificate_lifetime).count();
        request.type = CertificateType::Host;
        request.public_key_line = node->host_key;
        request.key_id = fmt::format("{}:{}:host", cluster.id, name);
        request.principals = {name, node_address(site->block, node->ordinal)->to_string()};
        auto host_cert = (*ca)->sign(request);
        if (!host_cert) {
            return host_cert.error();
        }
        request.type = CertificateType::User;
        request.public_key_line = node->user_key;
        request.key_id = fmt::format("{}:{}:user", cluster.id, name);
        request.principals = {cluster.owner};
        auto user_cert = (*ca)->sign(request);
        if (!user_cert) {
            return user_cert.error();
        }
        node->host_certificate = std::move(*host_cert);
        node->user_certificate = std::move(*user_cert);
    }
    if (auto ok = store.update_node(cluster.id, *node); !ok) {
        return ok;
    }
    dirty.insert(cluster.id);
    if (all_keyed) {
        return send_views(cluster, effects);
    }
    return {};
}

// The barrier: every node has reported its keys. Each attached pilot that has not had the view
// on its current stream gets it now (one that attaches later gets it when it reports its keys).
Status CrmServer::Impl::send_views(const ClusterRecord& cluster, Effects& effects) {
    auto nodes = store.nodes(cluster.id);
    if (!nodes) {
        return nodes.error();
    }
    v1::ClusterView common;
    common.set_cluster_id(cluster.id);
    common.set_name_prefix(cluster.name_prefix);
    common.set_slots(cluster.slots);
    std::map<std::string, v1::SiteView*> sites;
    for (const auto& site : cluster.sites) {
        auto* view = common.add_sites();
        view->set_site(site.site);
        view->set_block(site.block.to_string());
        view->set_nodes(site.nodes);
        sites[site.site] = view;
    }
    for (const auto& node : *nodes) {
        auto* view = sites.at(node.site);
        auto underlay = IpAddress::parse(node.underlay);
        if (!underlay) {
            return Error{fmt::format("node {} of site {} has no usable underlay address {}",
                                     node.ordinal, node.site, quote(node.underlay))};
        }
        const auto bytes = underlay->bytes();
        view->mutable_underlay()->append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
        if (cluster.key_mode == v1::KEY_MODE_EXCHANGE) {
            view->add_host_keys(node.host_key);
            view->add_user_keys(node.user_key);
        }
    }
    if (cluster.key_mode == v1::KEY_MODE_CA) {
        auto ca = ca_of(cluster.id);
        if (!ca) {
            return ca.error();
        }
        common.set_ca_key((*ca)->public_key_line("vcpilot-ca:" + cluster.id));
    }
    auto shared = std::make_shared<const v1::ClusterView>(std::move(common));
    for (const auto& node : *nodes) {
        auto link = links.find({cluster.id, NodeKey{node.site, node.ordinal}});
        if (link == links.end() || link->second->view_sent) {
            continue;
        }
        link->second->view_sent = true;
        effects.push_back([link = link->second, shared, host_cert = node.host_certificate,
                           user_cert = node.user_certificate] {
            v1::PilotCommand command;
            *command.mutable_view() = *shared;
            command.mutable_view()->set_host_certificate(host_cert);
            command.mutable_view()->set_user_certificate(user_cert);
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
    auto found = store.find(link->cluster);
    if (!found || !*found) {
        return found ? Error{"the cluster is gone"} : found.error();
    }
    ClusterRecord& cluster = **found;
    auto nodes = store.nodes(cluster.id);
    if (!nodes) {
        return nodes.error();
    }
    std::size_t ready = 0;
    for (auto& node : *nodes) {
        if (node.site == link->node.site && node.ordinal == link->node.ordinal) {
            if (node.state == status.state() && node.reason == status.reason()) {
                return {};
            }
            node.state = status.state();
            node.reason = status.reason();
            if (auto ok = store.update_node(cluster.id, node); !ok) {
                return ok;
            }
        }
        if (node.state == v1::PILOT_STATE_READY) {
            ++ready;
        }
    }
    dirty.insert(cluster.id);
    if (status.state() == v1::PILOT_STATE_FAILED &&
        (cluster.state == v1::CLUSTER_STATE_PENDING || cluster.state == v1::CLUSTER_STATE_READY)) {
        return store.set_state(
            cluster.id, v1::CLUSTER_STATE_FAILED,
            fmt::format("node {}: {}",
                        node_name(cluster.name_prefix, link->node.site, link->node.ordinal),
                        status.reason()));
    }
    if (cluster.state == v1::CLUSTER_STATE_PENDING && ready == nodes->size()) {
        return store.set_state(cluster.id, v1::CLUSTER_STATE_READY, "");
    }
    if (cluster.state == v1::CLUSTER_STATE_RELEASING) {
        return maybe_finish_release(cluster.id, effects);
    }
    return {};
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
    const bool last_of_node = out.output().has_exit_status();
    if (last_of_node) {
        command->second.pending.erase(pending);
    }
    const bool finished = command->second.pending.empty();
    auto caller = command->second.caller;
    if (finished) {
        commands.erase(command);
    }
    effects.push_back([caller, output = std::move(output), finished] {
        caller->outbox->send(output);
        if (finished) {
            caller->outbox->finish(grpc::Status::OK);
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
        effects.push_back([caller = it->second.caller, lost, status, finished] {
            caller->outbox->send(lost);
            caller->outbox->send(status);
            if (finished) {
                caller->outbox->finish(grpc::Status::OK);
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
        return {};  // the pilot may come back; its node stays its own
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
    dirty.insert(cluster.id);
    v1::PilotCommand command;
    command.mutable_shutdown()->set_reason(fmt::format("cluster {} released", cluster.id));
    for (const auto& link : links_of(cluster.id)) {
        effects.push_back([link, command] { link->outbox->send(command); });
    }
    return maybe_finish_release(cluster.id, effects);
}

// A releasing cluster is released once no pilot of it is attached any more.
Status CrmServer::Impl::maybe_finish_release(const std::string& id, Effects&) {
    if (!links_of(id).empty()) {
        return {};
    }
    if (auto ok = store.finish_release(id); !ok) {
        return ok;
    }
    release_deadlines.erase(id);
    cas.erase(id);
    dirty.insert(id);
    return {};
}

std::optional<std::int64_t> CrmServer::Impl::next_release_deadline() const {
    std::optional<std::int64_t> next;
    for (const auto& [id, deadline] : release_deadlines) {
        next = next ? std::min(*next, deadline) : deadline;
    }
    return next;
}

// Releases whose pilots did not confirm in time end anyway: the blocks are freed, and a pilot
// that comes back later is told its cluster is gone.
void CrmServer::Impl::expire_releases() {
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
        if (auto ok = store.finish_release(id); !ok) {
            spdlog::error("cluster {}: {}", id, ok.error().message);
            continue;
        }
        release_deadlines.erase(id);
        cas.erase(id);
        dirty.insert(id);
    }
}

// Watchers learn of every change once it is durable.
void CrmServer::Impl::after_batch() {
    for (const auto& id : dirty) {
        auto watching = watchers.find(id);
        if (watching == watchers.end()) {
            continue;
        }
        auto found = store.find(id);
        if (!found || !*found) {
            continue;
        }
        auto described = describe(**found, true);
        if (!described) {
            continue;
        }
        const bool last = (*found)->state == v1::CLUSTER_STATE_RELEASED;
        auto& list = watching->second;
        std::erase_if(list, [&](const auto& watcher) {
            if (!watcher->outbox->send(*described)) {
                return true;
            }
            if (last) {
                watcher->outbox->finish(grpc::Status::OK);
            }
            return last;
        });
        if (list.empty()) {
            watchers.erase(watching);
        }
    }
    dirty.clear();
}

// ---- the service ----

namespace {

grpc::Status to_grpc(grpc::StatusCode code, const Status& status) {
    return status ? grpc::Status::OK : grpc::Status(code, status.error().message);
}

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
        crm_.post({[crm = &crm_, spec = *spec, response](auto&) -> Status {
                       auto created = crm->create(spec);
                       if (!created) {
                           return created.error();
                       }
                       crm->dirty.insert(created->id);
                       auto described = crm->describe(*created, true);
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
        auto* reactor = context->DefaultReactor();
        auto caller = caller_of(context, "ListClusters");
        if (!caller) {
            reactor->Finish({grpc::StatusCode::UNAUTHENTICATED, caller.error().message});
            return reactor;
        }
        if (request->all() && !caller->is_root()) {
            reactor->Finish(
                {grpc::StatusCode::PERMISSION_DENIED, "only root may list every user's clusters"});
            return reactor;
        }
        crm_.post({[this, response, all = request->all(), caller = *caller](auto&) -> Status {
                       auto clusters = crm_.store.list(all ? "" : caller.name, false);
                       if (!clusters) {
                           return clusters.error();
                       }
                       for (const auto& cluster : *clusters) {
                           auto described = crm_.describe(cluster, false);
                           if (!described) {
                               return described.error();
                           }
                           *response->add_clusters() = std::move(*described);
                       }
                       return {};
                   },
                   [reactor](const Status& status) {
                       reactor->Finish(to_grpc(grpc::StatusCode::INTERNAL, status));
                   }});
        return reactor;
    }

    grpc::ServerUnaryReactor* GetCluster(grpc::CallbackServerContext* context,
                                         const v1::ClusterRef* request,
                                         v1::Cluster* response) override {
        return lookup(context, "GetCluster", request->id(),
                      [this, response](ClusterRecord& cluster, Effects&) -> Status {
                          auto described = crm_.describe(cluster, true);
                          if (!described) {
                              return described.error();
                          }
                          *response = std::move(*described);
                          return {};
                      });
    }

    grpc::ServerUnaryReactor* ReleaseCluster(grpc::CallbackServerContext* context,
                                             const v1::ClusterRef* request,
                                             v1::Cluster* response) override {
        return lookup(
            context, "ReleaseCluster", request->id(),
            [this, response](ClusterRecord& cluster, Effects& effects) -> Status {
                if (cluster.state != v1::CLUSTER_STATE_RELEASED &&
                    cluster.state != v1::CLUSTER_STATE_RELEASING) {
                    if (auto ok = crm_.begin_release(cluster, "released by its owner", effects);
                        !ok) {
                        return ok;
                    }
                }
                auto again = crm_.store.find(cluster.id);
                if (!again || !*again) {
                    return again ? Status{Error{"the cluster vanished"}} : Status{again.error()};
                }
                auto described = crm_.describe(**again, false);
                if (!described) {
                    return described.error();
                }
                *response = std::move(*described);
                return {};
            });
    }

    grpc::ServerWriteReactor<v1::Cluster>* WatchCluster(grpc::CallbackServerContext* context,
                                                        const v1::ClusterRef* request) override {
        auto* reactor = new WriterReactor<v1::Cluster>();
        auto caller = caller_of(context, "WatchCluster");
        auto link = reactor->link();
        if (!caller) {
            link->outbox->finish({grpc::StatusCode::UNAUTHENTICATED, caller.error().message});
            return reactor;
        }
        crm_.post(
            {[this, link, id = request->id(), caller = *caller](auto&) -> Status {
                 auto cluster = crm_.owned_cluster(id, caller);
                 if (!cluster) {
                     return cluster.error();
                 }
                 auto described = crm_.describe(*cluster, true);
                 if (!described) {
                     return described.error();
                 }
                 link->outbox->send(std::move(*described));
                 if (cluster->state == v1::CLUSTER_STATE_RELEASED) {
                     link->outbox->finish(grpc::Status::OK);
                 } else {
                     crm_.watchers[id].push_back(link);
                 }
                 return {};
             },
             [link](const Status& status) {
                 if (!status) {
                     link->outbox->finish({grpc::StatusCode::NOT_FOUND, status.error().message});
                 }
             }});
        return reactor;
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

    template <typename Body>
    grpc::ServerUnaryReactor* lookup(grpc::CallbackServerContext* context, std::string_view method,
                                     const std::string& id, Body body) {
        auto* reactor = context->DefaultReactor();
        auto caller = caller_of(context, method);
        if (!caller) {
            reactor->Finish({grpc::StatusCode::UNAUTHENTICATED, caller.error().message});
            return reactor;
        }
        auto not_found = std::make_shared<bool>(false);
        crm_.post({[this, id, caller = *caller, body, not_found](auto& effects) -> Status {
                       auto cluster = crm_.owned_cluster(id, caller);
                       if (!cluster) {
                           *not_found = true;
                           return cluster.error();
                       }
                       return body(*cluster, effects);
                   },
                   [reactor, not_found](const Status& status) {
                       reactor->Finish(to_grpc(*not_found ? grpc::StatusCode::NOT_FOUND
                                                          : grpc::StatusCode::FAILED_PRECONDITION,
                                               status));
                   }});
        return reactor;
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
                       auto links = crm_.links_of(cluster->id);
                       if (links.empty()) {
                           return Error{"no pilot of the cluster is attached to this CRM"};
                       }
                       if (!every_node) {
                           links.resize(1);
                       }
                       const std::uint64_t id = crm_.next_command++;
                       auto& pending = crm_.commands[id];
                       pending.caller = link;
                       v1::PilotCommand command;
                       command.mutable_run()->set_request(id);
                       *command.mutable_run()->mutable_command() = request.command();
                       command.mutable_run()->set_as_root(every_node);
                       for (const auto& pilot : links) {
                           pending.pending[pilot] = node_name(
                               cluster->name_prefix, pilot->node.site, pilot->node.ordinal);
                           effects.push_back([pilot, command] { pilot->outbox->send(command); });
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
    impl->writer.start();
    auto server = std::unique_ptr<CrmServer>(new CrmServer(std::move(impl)));
    return server;
}

grpc::Service* CrmServer::service() {
    if (!service_) {
        service_ = std::make_unique<CrmService>(*impl_);
    }
    return service_.get();
}

void CrmServer::stop() {
    if (impl_) {
        impl_->writer.stop();
    }
}

}  // namespace vcpilot::coordinator
