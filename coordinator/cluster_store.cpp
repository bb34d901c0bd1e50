#include "coordinator/cluster_store.hpp"

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Exception.h>
#include <SQLiteCpp/Statement.h>
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fmt/format.h>
#include <random>
#include <set>

#include "common/image_mount.hpp"
#include "common/text.hpp"
#include "coordinator/lease_store.hpp"
#include "coordinator/sshcert.hpp"

namespace vcpilot::coordinator {

namespace {

using store_detail::db_error;
using store_detail::now_unix_ms;

constexpr std::size_t kMaxSites = 256;
constexpr std::size_t kMaxLabel = 32;
constexpr std::uint32_t kMaxSlots = 4096;
constexpr std::size_t kMaxPath = 4096;
constexpr std::uint32_t kMaxWalltimeMinutes = 366 * 24 * 60;
// A node's name is its hostname, one DNS label: the pilot refuses a longer one in SETUP.
constexpr std::size_t kMaxHostLabel = 63;

bool is_label(std::string_view text) {
    if (text.empty() || text.size() > kMaxLabel || text.front() == '-' || text.back() == '-') {
        return false;
    }
    return std::all_of(text.begin(), text.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
    });
}

Status check_path(std::string_view field, std::string_view path) {
    if (path.empty()) {
        return {};
    }
    if (path.size() > kMaxPath || path.front() != '/' ||
        std::any_of(path.begin(), path.end(),
                    [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
        return Error{fmt::format("{}: {} is not an absolute path of printable characters", field,
                                 quote(path))};
    }
    return {};
}

// Cluster ids: short enough to type, random so that ids of a released cluster are not reused by
// accident and do not reveal how many clusters others made.
std::string new_cluster_id() {
    static thread_local std::mt19937_64 random{std::random_device{}()};
    return fmt::format("vc-{:08x}", static_cast<std::uint32_t>(random()));
}

ClusterRecord read_cluster_row(SQLite::Statement& row) {
    ClusterRecord record;
    record.id = row.getColumn(0).getString();
    record.owner = row.getColumn(1).getString();
    record.state = static_cast<v1::ClusterState>(row.getColumn(2).getInt());
    record.reason = row.getColumn(3).getString();
    record.key_mode = static_cast<v1::KeyMode>(row.getColumn(4).getInt());
    if (!row.getColumn(5).isNull()) {
        record.vni = static_cast<std::uint32_t>(row.getColumn(5).getInt64());
    }
    record.name_prefix = row.getColumn(6).getString();
    record.slots = static_cast<std::uint32_t>(row.getColumn(7).getInt64());
    record.image = row.getColumn(8).getString();
    record.image_mount = row.getColumn(9).getString();
    record.created_unix_ms = row.getColumn(10).getInt64();
    record.changed_unix_ms = row.getColumn(11).getInt64();
    record.release_by_ms = row.getColumn(12).getInt64();
    record.origin = row.getColumn(13).getString();
    record.pilots = static_cast<v1::PilotSource>(row.getColumn(14).getInt());
    record.walltime_minutes = static_cast<std::uint32_t>(row.getColumn(15).getInt64());
    record.expires_unix_ms = row.getColumn(16).getInt64();
    record.overlay = static_cast<v1::Overlay>(row.getColumn(17).getInt());
    record.n2n_key = row.getColumn(18).getString();
    record.n2n_supernode = row.getColumn(19).getString();
    return record;
}

// An n2n community key: 32 random characters of [A-Za-z0-9].
std::string new_n2n_key() {
    static constexpr std::string_view kAlphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    std::random_device random;
    std::string key;
    for (int i = 0; i < 32; ++i) {
        key.push_back(kAlphabet[random() % kAlphabet.size()]);
    }
    return key;
}

constexpr const char* kClusterColumns =
    "SELECT id, owner, state, reason, key_mode, vni, name_prefix, slots, image, image_mount, "
    "created_unix_ms, changed_unix_ms, release_by_ms, origin, pilots, walltime_min, "
    "expires_unix_ms, overlay, n2n_key, n2n_supernode FROM clusters";

constexpr const char* kSitesQuery =
    "SELECT site, nodes, block, released, pilot_job FROM sites WHERE cluster = ? ORDER BY site";

// Resets a kept statement when its user is done with it, so that it holds no read snapshot.
class ResetAfter {
  public:
    explicit ResetAfter(SQLite::Statement& statement) : statement_(statement) {}
    ~ResetAfter() { statement_.tryReset(); }
    ResetAfter(const ResetAfter&) = delete;
    ResetAfter& operator=(const ResetAfter&) = delete;

  private:
    SQLite::Statement& statement_;
};

// `query` is kSitesQuery, prepared.
Result<std::vector<SiteRecord>> read_sites(SQLite::Statement& query, std::string_view id) {
    query.tryReset();
    ResetAfter done(query);
    query.bind(1, std::string(id));
    std::vector<SiteRecord> sites;
    while (query.executeStep()) {
        auto block = Cidr::parse(query.getColumn(2).getString());
        if (!block) {
            return Error{fmt::format("cluster {}: unreadable block {} (the store is damaged)", id,
                                     quote(query.getColumn(2).getString()))};
        }
        sites.push_back({query.getColumn(0).getString(),
                         static_cast<std::uint32_t>(query.getColumn(1).getInt64()), *block,
                         query.getColumn(3).getInt() != 0, query.getColumn(4).getString()});
    }
    return sites;
}

// `sites_query` is kSitesQuery, prepared.
Result<std::vector<ClusterRecord>> read_clusters(SQLite::Statement& query,
                                                 SQLite::Statement& sites_query) {
    std::vector<ClusterRecord> clusters;
    while (query.executeStep()) {
        clusters.push_back(read_cluster_row(query));
    }
    for (auto& cluster : clusters) {
        auto sites = read_sites(sites_query, cluster.id);
        if (!sites) {
            return sites.error();
        }
        cluster.sites = std::move(*sites);
    }
    return clusters;
}

Result<std::uint32_t> free_vni(SQLite::Database& db, const CreatePolicy& policy) {
    SQLite::Statement query(
        db,
        "SELECT vni FROM clusters WHERE vni IS NOT NULL AND vni >= ? AND vni <= ? ORDER BY vni");
    query.bind(1, static_cast<std::int64_t>(policy.vni_first));
    query.bind(2, static_cast<std::int64_t>(policy.vni_last));
    std::uint64_t candidate = policy.vni_first;
    while (query.executeStep()) {
        const auto used = static_cast<std::uint64_t>(query.getColumn(0).getInt64());
        if (used > candidate) {
            break;
        }
        candidate = used + 1;
    }
    if (candidate > policy.vni_last) {
        return Error{fmt::format("every VNI of {}-{} is in use by a live cluster", policy.vni_first,
                                 policy.vni_last)};
    }
    return static_cast<std::uint32_t>(candidate);
}

template <typename F>
auto guarded(std::string_view doing, const std::filesystem::path& path, F&& body)
    -> decltype(body()) {
    try {
        return body();
    } catch (const SQLite::Exception& error) {
        return db_error(doing, path, error);
    }
}

}  // namespace

ClusterStore::ClusterStore(LeaseStore store) : store_(std::move(store)) {}
ClusterStore::~ClusterStore() = default;
ClusterStore::ClusterStore(ClusterStore&&) noexcept = default;

SQLite::Statement& ClusterStore::prepared(const std::string& sql) {
    auto found = statements_.find(sql);
    if (found == statements_.end()) {
        return *statements_
                    .emplace(sql, std::make_unique<SQLite::Statement>(store_.database(), sql))
                    .first->second;
    }
    found->second->tryReset();
    found->second->clearBindings();
    return *found->second;
}

std::uint32_t ClusterRecord::node_count() const {
    std::uint32_t total = 0;
    for (const auto& site : sites) {
        total += site.nodes;
    }
    return total;
}

std::string node_name(std::string_view prefix, std::string_view site, std::uint32_t ordinal) {
    return fmt::format("{}-{}-{}", prefix, site, ordinal);
}

Result<IpAddress> node_address(const Cidr& block, std::uint32_t ordinal) {
    return block.nth(ordinal);
}

Result<ClusterSpec> validate_create(const v1::CreateClusterRequest& request, std::string owner) {
    ClusterSpec spec;
    if (auto status = store_detail::check_name("owner", owner); !status) {
        return status.error();
    }
    spec.owner = std::move(owner);
    if (request.sites().empty()) {
        return Error{"sites: a cluster needs at least one site"};
    }
    if (static_cast<std::size_t>(request.sites_size()) > kMaxSites) {
        return Error{fmt::format("sites: {} sites, more than the {} allowed", request.sites_size(),
                                 kMaxSites)};
    }
    spec.name_prefix = request.name_prefix().empty() ? "vc" : request.name_prefix();
    if (!is_label(spec.name_prefix)) {
        return Error{fmt::format(
            "name_prefix: {} is not a lowercase host name label of at most {} characters",
            quote(spec.name_prefix), kMaxLabel)};
    }
    std::set<std::string> seen;
    for (const auto& site : request.sites()) {
        if (!is_label(site.site())) {
            return Error{fmt::format(
                "sites: {} is not a site name (a lowercase label of at most {} characters)",
                quote(site.site()), kMaxLabel)};
        }
        if (!seen.insert(site.site()).second) {
            return Error{fmt::format("sites: site {} is named twice", site.site())};
        }
        if (site.nodes() == 0) {
            return Error{
                fmt::format("sites: site {} asks for 0 nodes; at least 1 is needed", site.site())};
        }
        if (site.nodes() > kMaxNodesPerBlock) {
            return Error{fmt::format("sites: site {} asks for {} nodes, more than the {} allowed",
                                     site.site(), site.nodes(), kMaxNodesPerBlock)};
        }
        // The last node's name is the longest.
        if (const std::string longest = node_name(spec.name_prefix, site.site(), site.nodes());
            longest.size() > kMaxHostLabel) {
            return Error{fmt::format(
                "sites: node names of site {} are too long for hostnames: {} has {} characters, "
                "more than {}; shorten the site name or name_prefix",
                site.site(), longest, longest.size(), kMaxHostLabel)};
        }
        if (!site.block().empty()) {
            auto block = Cidr::parse(site.block());
            if (!block) {
                return Error{
                    fmt::format("sites: block of site {}: {}", site.site(), block.error().message)};
            }
            auto needed = prefix_for_nodes(site.nodes(), block->family());
            if (!needed) {
                return needed.error();
            }
            if (block->prefix() > *needed) {
                return Error{fmt::format(
                    "sites: block {} of site {} holds {} nodes, fewer than the {} asked for",
                    block->to_string(), site.site(),
                    to_string(block->size() > 2 ? block->size() - 2 : 0), site.nodes())};
            }
        }
        spec.sites.push_back(site);
    }
    switch (request.key_mode()) {
        case v1::KEY_MODE_UNSPECIFIED:
        case v1::KEY_MODE_CA:
            spec.key_mode = v1::KEY_MODE_CA;
            break;
        case v1::KEY_MODE_EXCHANGE:
            spec.key_mode = v1::KEY_MODE_EXCHANGE;
            break;
        default:
            return Error{
                fmt::format("key_mode: unknown mode {}", static_cast<int>(request.key_mode()))};
    }
    spec.slots = request.slots() == 0 ? 1 : request.slots();
    if (spec.slots > kMaxSlots) {
        return Error{
            fmt::format("slots: {} per node, more than the {} allowed", spec.slots, kMaxSlots)};
    }
    if (auto status = check_path("image", request.image()); !status) {
        return status.error();
    }
    if (auto status = check_path("image_mount", request.image_mount()); !status) {
        return status.error();
    }
    if (request.image().empty() != request.image_mount().empty()) {
        return Error{"image and image_mount come together: give both or neither"};
    }
    // Every pilot would refuse it at SETUP; refused here, before anything is reserved.
    if (!request.image_mount().empty()) {
        if (auto status = check_image_mount_point(
                std::filesystem::path(request.image_mount()).lexically_normal());
            !status) {
            return Error{"image_mount: " + status.error().message};
        }
    }
    spec.image = request.image();
    spec.image_mount = request.image_mount();
    switch (request.pilots()) {
        case v1::PILOT_SOURCE_UNSPECIFIED:
        case v1::PILOT_SOURCE_JOBS:
            spec.pilots = v1::PILOT_SOURCE_JOBS;
            break;
        case v1::PILOT_SOURCE_SLURM:
            spec.pilots = v1::PILOT_SOURCE_SLURM;
            break;
        default:
            return Error{
                fmt::format("pilots: unknown source {}", static_cast<int>(request.pilots()))};
    }
    if (request.walltime_minutes() > kMaxWalltimeMinutes) {
        return Error{fmt::format("walltime_minutes: {} is more than a year ({})",
                                 request.walltime_minutes(), kMaxWalltimeMinutes)};
    }
    spec.walltime_minutes = request.walltime_minutes();
    switch (request.overlay()) {
        case v1::OVERLAY_UNSPECIFIED:
        case v1::OVERLAY_VXLAN:
            spec.overlay = v1::OVERLAY_VXLAN;
            break;
        case v1::OVERLAY_N2N:
            spec.overlay = v1::OVERLAY_N2N;
            break;
        case v1::OVERLAY_AUTO:
            spec.overlay = v1::OVERLAY_AUTO;  // the coordinator chooses before it creates
            break;
        default:
            return Error{
                fmt::format("overlay: unknown overlay {}", static_cast<int>(request.overlay()))};
    }
    return spec;
}

Result<ClusterRecord> ClusterStore::create(const ClusterSpec& spec, const CreatePolicy& policy) {
    return guarded("cannot create the cluster", store_.path(), [&]() -> Result<ClusterRecord> {
        SQLite::Database& db = store_.database();
        ClusterRecord record;
        for (int attempt = 0; policy.id.empty(); ++attempt) {
            record.id = new_cluster_id();
            SQLite::Statement exists(db, "SELECT 1 FROM clusters WHERE id = ?");
            exists.bind(1, record.id);
            if (!exists.executeStep()) {
                break;
            }
            if (attempt > 16) {
                return Error{"cannot find a free cluster id"};
            }
        }
        if (!policy.id.empty()) {
            if (auto ok = store_detail::check_name("cluster id", policy.id); !ok) {
                return ok.error();
            }
            SQLite::Statement exists(db, "SELECT 1 FROM clusters WHERE id = ?");
            exists.bind(1, policy.id);
            if (exists.executeStep()) {
                return Error{fmt::format("there is a cluster {} already", policy.id)};
            }
            record.id = policy.id;
        }
        record.origin = policy.origin;
        auto vni = free_vni(db, policy);
        if (!vni) {
            return vni.error();
        }
        record.owner = spec.owner;
        record.state = v1::CLUSTER_STATE_PENDING;
        record.key_mode = spec.key_mode;
        record.vni = *vni;
        record.name_prefix = spec.name_prefix;
        record.slots = spec.slots;
        record.image = spec.image;
        record.image_mount = spec.image_mount;
        record.pilots = spec.pilots;
        record.walltime_minutes = spec.walltime_minutes;
        if (spec.overlay == v1::OVERLAY_AUTO) {
            return Error{"overlay: auto was not resolved to vxlan or n2n"};
        }
        record.overlay = spec.overlay;
        if (spec.overlay == v1::OVERLAY_N2N) {
            if (policy.n2n_supernode.empty()) {
                return Error{"overlay: n2n needs a supernode, and this coordinator has none"};
            }
            record.n2n_key = new_n2n_key();
            record.n2n_supernode = policy.n2n_supernode;
        }
        record.created_unix_ms = record.changed_unix_ms = now_unix_ms();
        if (policy.keeps_walltime && spec.walltime_minutes > 0) {
            record.expires_unix_ms =
                record.created_unix_ms + std::int64_t{spec.walltime_minutes} * 60 * 1000;
        }

        std::optional<std::array<std::uint8_t, 32>> seed;
        if (policy.hold_ca && spec.key_mode == v1::KEY_MODE_CA) {
            auto ca = SshCa::generate();
            if (!ca) {
                return ca.error();
            }
            seed = ca->private_seed();
        }
        SQLite::Statement insert(
            db,
            "INSERT INTO clusters (id, owner, state, key_mode, vni, name_prefix, slots, image, "
            "image_mount, ca_seed, created_unix_ms, changed_unix_ms, origin, pilots, "
            "walltime_min, expires_unix_ms, overlay, n2n_key, n2n_supernode) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        insert.bind(1, record.id);
        insert.bind(2, record.owner);
        insert.bind(3, static_cast<int>(record.state));
        insert.bind(4, static_cast<int>(record.key_mode));
        insert.bind(5, static_cast<std::int64_t>(*record.vni));
        insert.bind(6, record.name_prefix);
        insert.bind(7, static_cast<std::int64_t>(record.slots));
        insert.bind(8, record.image);
        insert.bind(9, record.image_mount);
        if (seed) {
            insert.bind(10, seed->data(), static_cast<int>(seed->size()));
        } else {
            insert.bind(10);
        }
        insert.bind(11, record.created_unix_ms);
        insert.bind(12, record.changed_unix_ms);
        insert.bind(13, record.origin);
        insert.bind(14, static_cast<int>(record.pilots));
        insert.bind(15, static_cast<std::int64_t>(record.walltime_minutes));
        insert.bind(16, record.expires_unix_ms);
        insert.bind(17, static_cast<int>(record.overlay));
        insert.bind(18, record.n2n_key);
        insert.bind(19, record.n2n_supernode);
        insert.exec();

        for (const auto& site : spec.sites) {
            std::optional<Cidr> chosen;
            if (policy.pool == nullptr) {
                auto given = Cidr::parse(site.block());
                if (!given) {
                    return Error{fmt::format("site {} has no block", site.site())};
                }
                chosen = *given;
            } else {
                auto live = store_detail::live_leases(db);
                if (!live) {
                    return live.error();
                }
                std::vector<Lease> leases;
                for (const auto& lease : *live) {
                    leases.push_back(lease.lease);
                }
                if (!site.block().empty()) {
                    chosen = *Cidr::parse(site.block());
                    if (auto ok = policy.pool->check_explicit(*chosen, leases); !ok) {
                        return Error{fmt::format("site {}: {}", site.site(), ok.error().message)};
                    }
                } else {
                    auto prefix = prefix_for_nodes(site.nodes(), policy.pool->family());
                    if (!prefix) {
                        return prefix.error();
                    }
                    auto allocated = policy.pool->allocate(*prefix, leases);
                    if (!allocated) {
                        return Error{fmt::format("site {} ({} nodes): {}", site.site(),
                                                 site.nodes(), allocated.error().message)};
                    }
                    chosen = *allocated;
                }
                store_detail::insert_lease(db, *chosen, *policy.pool->pool_of(*chosen), spec.owner,
                                           record.id);
            }
            SQLite::Statement add_site(
                db, "INSERT INTO sites (cluster, site, nodes, block) VALUES (?, ?, ?, ?)");
            add_site.bind(1, record.id);
            add_site.bind(2, site.site());
            add_site.bind(3, static_cast<std::int64_t>(site.nodes()));
            const Cidr block = *chosen;
            add_site.bind(4, block.to_string());
            add_site.exec();
            SQLite::Statement add_node(
                db, "INSERT INTO nodes (cluster, site, ordinal, state) VALUES (?, ?, ?, ?)");
            for (std::uint32_t ordinal = 1; ordinal <= site.nodes(); ++ordinal) {
                add_node.bind(1, record.id);
                add_node.bind(2, site.site());
                add_node.bind(3, static_cast<std::int64_t>(ordinal));
                add_node.bind(4, static_cast<int>(v1::PILOT_STATE_NEW));
                add_node.exec();
                add_node.reset();
            }
            record.sites.push_back({site.site(), site.nodes(), block, false, ""});
        }
        std::sort(record.sites.begin(), record.sites.end(),
                  [](const SiteRecord& a, const SiteRecord& b) { return a.site < b.site; });
        return record;
    });
}

v1::CreateClusterRequest request_of(const v1::SiteAssignment& assignment) {
    v1::CreateClusterRequest request;
    auto* site = request.add_sites();
    site->set_site(assignment.site());
    site->set_nodes(assignment.nodes());
    site->set_block(assignment.block());
    request.set_key_mode(assignment.key_mode());
    request.set_name_prefix(assignment.name_prefix());
    request.set_slots(assignment.slots());
    request.set_image(assignment.image());
    request.set_image_mount(assignment.image_mount());
    request.set_pilots(assignment.pilots());
    request.set_walltime_minutes(assignment.walltime_minutes());
    request.set_overlay(assignment.overlay());
    return request;
}

Status ClusterStore::adopt(const v1::SiteAssignment& assignment) {
    // The GRC is trusted, but what it sends is still checked: a bad field is refused whole.
    auto spec = validate_create(request_of(assignment), assignment.owner());
    if (!spec) {
        return spec.error();
    }
    if (auto ok = store_detail::check_name("cluster id", assignment.cluster_id()); !ok) {
        return ok;
    }
    if (assignment.block().empty()) {
        return Error{"the assignment has no block"};
    }
    if (assignment.vni() < 1 || assignment.vni() > 16777215) {
        return Error{fmt::format("VNI {} is outside 1-16777215", assignment.vni())};
    }
    const auto token = [](std::string_view text, std::size_t low, std::size_t high) {
        return text.size() >= low && text.size() <= high &&
               std::all_of(text.begin(), text.end(), [](char c) {
                   return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' ||
                          c == ':' || c == '_' || c == '-';
               });
    };
    if (spec->overlay == v1::OVERLAY_AUTO) {
        return Error{"the assignment's overlay is 'auto', not the one the GRC chose"};
    }
    if (spec->overlay == v1::OVERLAY_N2N &&
        (!token(assignment.n2n_key(), 16, 64) || !token(assignment.n2n_supernode(), 9, 21))) {
        return Error{
            "an n2n assignment needs a key (16-64 characters) and a supernode (IPv4:port)"};
    }
    const Cidr block = *Cidr::parse(assignment.block());
    return guarded("cannot record the GRC's assignment", store_.path(), [&]() -> Status {
        SQLite::Database& db = store_.database();
        auto existing = find(assignment.cluster_id());
        if (!existing) {
            return existing.error();
        }
        if (*existing) {
            if ((*existing)->state != v1::CLUSTER_STATE_RELEASED) {
                // The GRC sending again what is held already changes nothing; a live cluster
                // of this site's own with the same id is not the GRC's to take.
                if ((*existing)->origin != kOriginGrc) {
                    return Error{
                        fmt::format("cluster id {} is taken here by a cluster of this "
                                    "site's own",
                                    assignment.cluster_id())};
                }
                return {};
            }
            SQLite::Statement remove(db, "DELETE FROM clusters WHERE id = ?");
            remove.bind(1, assignment.cluster_id());
            remove.exec();
        }
        auto live = store_detail::live_leases(db);
        if (!live) {
            return live.error();
        }
        for (const auto& lease : *live) {
            if (lease.lease.block.overlaps(block)) {
                return Error{fmt::format("block {} overlaps {}, leased here to cluster {}",
                                         block.to_string(), lease.lease.block.to_string(),
                                         lease.cluster)};
            }
        }
        SQLite::Statement vni_user(db, "SELECT id FROM clusters WHERE vni = ?");
        vni_user.bind(1, static_cast<std::int64_t>(assignment.vni()));
        if (vni_user.executeStep()) {
            return Error{fmt::format("VNI {} is already used here by cluster {}", assignment.vni(),
                                     vni_user.getColumn(0).getString())};
        }
        const std::int64_t now = now_unix_ms();
        SQLite::Statement insert(
            db,
            "INSERT INTO clusters (id, owner, state, key_mode, vni, name_prefix, slots, image, "
            "image_mount, created_unix_ms, changed_unix_ms, origin, pilots, walltime_min, "
            "overlay, n2n_key, n2n_supernode) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        insert.bind(1, assignment.cluster_id());
        insert.bind(2, spec->owner);
        insert.bind(3, static_cast<int>(v1::CLUSTER_STATE_PENDING));
        insert.bind(4, static_cast<int>(spec->key_mode));
        insert.bind(5, static_cast<std::int64_t>(assignment.vni()));
        insert.bind(6, spec->name_prefix);
        insert.bind(7, static_cast<std::int64_t>(spec->slots));
        insert.bind(8, spec->image);
        insert.bind(9, spec->image_mount);
        insert.bind(10, now);
        insert.bind(11, now);
        insert.bind(12, std::string(kOriginGrc));
        insert.bind(13, static_cast<int>(spec->pilots));
        insert.bind(14, static_cast<std::int64_t>(spec->walltime_minutes));
        insert.bind(15, static_cast<int>(spec->overlay));
        insert.bind(16, spec->overlay == v1::OVERLAY_N2N ? assignment.n2n_key() : "");
        insert.bind(17, spec->overlay == v1::OVERLAY_N2N ? assignment.n2n_supernode() : "");
        insert.exec();
        store_detail::insert_lease(db, block, block, spec->owner, assignment.cluster_id());
        SQLite::Statement add_site(
            db, "INSERT INTO sites (cluster, site, nodes, block) VALUES (?, ?, ?, ?)");
        add_site.bind(1, assignment.cluster_id());
        add_site.bind(2, assignment.site());
        add_site.bind(3, static_cast<std::int64_t>(assignment.nodes()));
        add_site.bind(4, block.to_string());
        add_site.exec();
        SQLite::Statement add_node(
            db, "INSERT INTO nodes (cluster, site, ordinal, state) VALUES (?, ?, ?, ?)");
        for (std::uint32_t ordinal = 1; ordinal <= assignment.nodes(); ++ordinal) {
            add_node.bind(1, assignment.cluster_id());
            add_node.bind(2, assignment.site());
            add_node.bind(3, static_cast<std::int64_t>(ordinal));
            add_node.bind(4, static_cast<int>(v1::PILOT_STATE_NEW));
            add_node.exec();
            add_node.reset();
        }
        return {};
    });
}

Status ClusterStore::forget_released(std::string_view id) {
    return guarded("cannot forget a released cluster", store_.path(), [&]() -> Status {
        SQLite::Statement remove(store_.database(),
                                 "DELETE FROM clusters WHERE id = ? AND state = ?");
        remove.bind(1, std::string(id));
        remove.bind(2, static_cast<int>(v1::CLUSTER_STATE_RELEASED));
        remove.exec();
        return {};
    });
}

Status ClusterStore::set_site_released(std::string_view id, std::string_view site) {
    return guarded("cannot record a site's release", store_.path(), [&]() -> Status {
        SQLite::Statement update(store_.database(),
                                 "UPDATE sites SET released = 1 WHERE cluster = ? AND site = ?");
        update.bind(1, std::string(id));
        update.bind(2, std::string(site));
        if (update.exec() != 1) {
            return Error{fmt::format("cluster {} has no site {}", id, site)};
        }
        return {};
    });
}

Status ClusterStore::set_pilot_job(std::string_view id, std::string_view site,
                                   std::string_view job) {
    return guarded("cannot record a pilot job", store_.path(), [&]() -> Status {
        SQLite::Statement update(store_.database(),
                                 "UPDATE sites SET pilot_job = ? WHERE cluster = ? AND site = ?");
        update.bind(1, std::string(job));
        update.bind(2, std::string(id));
        update.bind(3, std::string(site));
        if (update.exec() != 1) {
            return Error{fmt::format("cluster {} has no site {}", id, site)};
        }
        return {};
    });
}

Result<std::optional<ClusterRecord>> ClusterStore::find(std::string_view id) {
    return guarded(
        "cannot read a cluster", store_.path(), [&]() -> Result<std::optional<ClusterRecord>> {
            SQLite::Statement& query = prepared(std::string(kClusterColumns) + " WHERE id = ?");
            ResetAfter done(query);
            query.bind(1, std::string(id));
            auto clusters = read_clusters(query, prepared(kSitesQuery));
            if (!clusters) {
                return clusters.error();
            }
            if (clusters->empty()) {
                return std::optional<ClusterRecord>{};
            }
            return std::optional<ClusterRecord>{std::move(clusters->front())};
        });
}

Result<std::vector<ClusterRecord>> ClusterStore::list(std::string_view owner,
                                                      bool include_released) {
    return guarded("cannot list clusters", store_.path(),
                   [&]() -> Result<std::vector<ClusterRecord>> {
                       std::string sql = std::string(kClusterColumns) +
                                         " WHERE (?1 = '' OR owner = ?1) AND (?2 OR state <> ?3)"
                                         " ORDER BY created_unix_ms, id";
                       SQLite::Statement& query = prepared(sql);
                       ResetAfter done(query);
                       query.bind(1, std::string(owner));
                       query.bind(2, include_released ? 1 : 0);
                       query.bind(3, static_cast<int>(v1::CLUSTER_STATE_RELEASED));
                       return read_clusters(query, prepared(kSitesQuery));
                   });
}

Result<std::vector<ClusterRecord>> ClusterStore::in_states(
    const std::vector<v1::ClusterState>& states) {
    return guarded("cannot list clusters", store_.path(),
                   [&]() -> Result<std::vector<ClusterRecord>> {
                       std::string sql = std::string(kClusterColumns) + " WHERE state IN (";
                       for (std::size_t i = 0; i < states.size(); ++i) {
                           sql += i == 0 ? "" : ",";
                           sql += std::to_string(static_cast<int>(states[i]));
                       }
                       sql += ") ORDER BY created_unix_ms, id";
                       SQLite::Statement& query = prepared(sql);
                       ResetAfter done(query);
                       return read_clusters(query, prepared(kSitesQuery));
                   });
}

namespace {

constexpr const char* kNodeColumns =
    "SELECT site, ordinal, host, job, underlay, host_key, user_key, host_certificate, "
    "user_certificate, state, reason, lent FROM nodes";

NodeRecord read_node_row(SQLite::Statement& row) {
    NodeRecord node;
    node.site = row.getColumn(0).getString();
    node.ordinal = static_cast<std::uint32_t>(row.getColumn(1).getInt64());
    node.host = row.getColumn(2).getString();
    node.job = row.getColumn(3).getString();
    node.underlay = row.getColumn(4).getString();
    node.host_key = row.getColumn(5).getString();
    node.user_key = row.getColumn(6).getString();
    node.host_certificate = row.getColumn(7).getString();
    node.user_certificate = row.getColumn(8).getString();
    node.state = static_cast<v1::PilotState>(row.getColumn(9).getInt());
    node.reason = row.getColumn(10).getString();
    node.lent = row.getColumn(11).getInt() != 0;
    return node;
}

}  // namespace

Result<std::vector<NodeRecord>> ClusterStore::nodes(std::string_view id) {
    return guarded(
        "cannot read the nodes", store_.path(), [&]() -> Result<std::vector<NodeRecord>> {
            SQLite::Statement& query =
                prepared(std::string(kNodeColumns) + " WHERE cluster = ? ORDER BY site, ordinal");
            ResetAfter done(query);
            query.bind(1, std::string(id));
            std::vector<NodeRecord> nodes;
            while (query.executeStep()) {
                nodes.push_back(read_node_row(query));
            }
            return nodes;
        });
}

Result<std::optional<NodeRecord>> ClusterStore::node(std::string_view id, std::string_view site,
                                                     std::uint32_t ordinal) {
    return guarded("cannot read a node", store_.path(), [&]() -> Result<std::optional<NodeRecord>> {
        SQLite::Statement& query =
            prepared(std::string(kNodeColumns) + " WHERE cluster = ? AND site = ? AND ordinal = ?");
        ResetAfter done(query);
        query.bind(1, std::string(id));
        query.bind(2, std::string(site));
        query.bind(3, static_cast<std::int64_t>(ordinal));
        if (!query.executeStep()) {
            return std::optional<NodeRecord>{};
        }
        return std::optional<NodeRecord>{read_node_row(query)};
    });
}

Result<NodeSummary> ClusterStore::node_summary(std::string_view id) {
    return guarded("cannot count the nodes", store_.path(), [&]() -> Result<NodeSummary> {
        SQLite::Statement& query = prepared(
            "SELECT COUNT(*), COALESCE(SUM(host_key <> ''), 0), "
            "COALESCE(SUM(state = ?), 0), COALESCE(SUM(state IN (?, ?)), 0) "
            "FROM nodes WHERE cluster = ?");
        ResetAfter done(query);
        query.bind(1, static_cast<int>(v1::PILOT_STATE_READY));
        query.bind(2, static_cast<int>(v1::PILOT_STATE_FAILED));
        query.bind(3, static_cast<int>(v1::PILOT_STATE_GONE));
        query.bind(4, std::string(id));
        query.executeStep();  // an aggregate: always one row
        NodeSummary summary;
        summary.total = static_cast<std::uint32_t>(query.getColumn(0).getInt64());
        summary.keyed = static_cast<std::uint32_t>(query.getColumn(1).getInt64());
        summary.ready = static_cast<std::uint32_t>(query.getColumn(2).getInt64());
        summary.failed = static_cast<std::uint32_t>(query.getColumn(3).getInt64());
        return summary;
    });
}

Result<std::uint32_t> ClusterStore::nodes_open_to(std::string_view id, std::string_view site,
                                                  std::string_view job) {
    return guarded("cannot count the free nodes", store_.path(), [&]() -> Result<std::uint32_t> {
        SQLite::Statement& query = prepared(
            "SELECT COUNT(*) FROM nodes WHERE cluster = ? AND site = ? AND (host = '' OR job = ?)");
        ResetAfter done(query);
        query.bind(1, std::string(id));
        query.bind(2, std::string(site));
        query.bind(3, std::string(job));
        query.executeStep();  // an aggregate: always one row
        return static_cast<std::uint32_t>(query.getColumn(0).getInt64());
    });
}

Result<NodeRecord> ClusterStore::attach(std::string_view id, std::string_view host,
                                        std::string_view job, std::string_view underlay,
                                        std::uint32_t rank) {
    return guarded("cannot attach the pilot", store_.path(), [&]() -> Result<NodeRecord> {
        SQLite::Statement& mine =
            prepared(std::string(kNodeColumns) + " WHERE cluster = ? AND host = ? AND job = ?");
        ResetAfter mine_done(mine);
        mine.bind(1, std::string(id));
        mine.bind(2, std::string(host));
        mine.bind(3, std::string(job));
        NodeRecord node;
        if (mine.executeStep()) {
            node = read_node_row(mine);
        } else {
            // The node numbered `rank` if it is free, else the lowest free one. A CRM holds the
            // nodes of its own site only, so an ordinal names one node; matching the site
            // through the cluster's sites keeps the lookup on the primary key.
            SQLite::Statement& ranked = prepared(
                std::string(kNodeColumns) +
                " WHERE cluster = ?1 AND site IN (SELECT site FROM sites WHERE cluster = ?1) "
                "AND ordinal = ?2 AND host = '' ORDER BY site LIMIT 1");
            ResetAfter ranked_done(ranked);
            SQLite::Statement& lowest =
                prepared(std::string(kNodeColumns) +
                         " WHERE cluster = ? AND host = '' ORDER BY site, ordinal LIMIT 1");
            ResetAfter lowest_done(lowest);
            SQLite::Statement* free_node = nullptr;
            if (rank > 0) {
                ranked.bind(1, std::string(id));
                ranked.bind(2, static_cast<std::int64_t>(rank));
                if (ranked.executeStep()) {
                    free_node = &ranked;
                }
            }
            if (free_node == nullptr) {
                lowest.bind(1, std::string(id));
                if (!lowest.executeStep()) {
                    return Error{fmt::format(
                        "every node of cluster {} is already held by a pilot; {} (job {}) is one "
                        "too many",
                        id, host, job)};
                }
                free_node = &lowest;
            }
            node = read_node_row(*free_node);
            node.host = host;
            node.job = job;
        }
        node.underlay = underlay;
        if (auto ok = update_node(id, node); !ok) {
            return ok.error();
        }
        return node;
    });
}

Status ClusterStore::update_node(std::string_view id, const NodeRecord& node) {
    return guarded("cannot update a node", store_.path(), [&]() -> Status {
        SQLite::Statement& update = prepared(
            "UPDATE nodes SET host = ?, job = ?, underlay = ?, host_key = ?, user_key = ?, "
            "host_certificate = ?, user_certificate = ?, state = ?, reason = ?, lent = ? "
            "WHERE cluster = ? AND site = ? AND ordinal = ?");
        ResetAfter done(update);
        update.bind(1, node.host);
        update.bind(2, node.job);
        update.bind(3, node.underlay);
        update.bind(4, node.host_key);
        update.bind(5, node.user_key);
        update.bind(6, node.host_certificate);
        update.bind(7, node.user_certificate);
        update.bind(8, static_cast<int>(node.state));
        update.bind(9, node.reason);
        update.bind(10, node.lent ? 1 : 0);
        update.bind(11, std::string(id));
        update.bind(12, node.site);
        update.bind(13, static_cast<std::int64_t>(node.ordinal));
        if (update.exec() != 1) {
            return Error{
                fmt::format("cluster {} has no node {} of site {}", id, node.ordinal, node.site)};
        }
        return {};
    });
}

Status ClusterStore::set_state(std::string_view id, v1::ClusterState state, std::string_view reason,
                               std::int64_t release_by_ms) {
    return guarded("cannot change a cluster's state", store_.path(), [&]() -> Status {
        SQLite::Statement& update = prepared(
            "UPDATE clusters SET state = ?, reason = ?, changed_unix_ms = ?, "
            "release_by_ms = ? WHERE id = ?");
        ResetAfter done(update);
        update.bind(1, static_cast<int>(state));
        update.bind(2, std::string(reason));
        update.bind(3, now_unix_ms());
        update.bind(4, release_by_ms);
        update.bind(5, std::string(id));
        if (update.exec() != 1) {
            return Error{fmt::format("there is no cluster {}", id)};
        }
        return {};
    });
}

Status ClusterStore::finish_release(std::string_view id) {
    return guarded("cannot release a cluster", store_.path(), [&]() -> Status {
        SQLite::Database& db = store_.database();
        for (const char* sql :
             {"DELETE FROM leases WHERE cluster = ?", "DELETE FROM sites WHERE cluster = ?"}) {
            SQLite::Statement remove(db, sql);
            remove.bind(1, std::string(id));
            remove.exec();
        }
        SQLite::Statement update(db,
                                 "UPDATE clusters SET state = ?, vni = NULL, ca_seed = NULL, "
                                 "changed_unix_ms = ?, release_by_ms = 0 WHERE id = ?");
        update.bind(1, static_cast<int>(v1::CLUSTER_STATE_RELEASED));
        update.bind(2, now_unix_ms());
        update.bind(3, std::string(id));
        if (update.exec() != 1) {
            return Error{fmt::format("there is no cluster {}", id)};
        }
        return {};
    });
}

Result<std::optional<std::array<std::uint8_t, 32>>> ClusterStore::ca_seed(std::string_view id) {
    using Seed = std::optional<std::array<std::uint8_t, 32>>;
    return guarded("cannot read the cluster's CA", store_.path(), [&]() -> Result<Seed> {
        SQLite::Statement& query = prepared("SELECT ca_seed FROM clusters WHERE id = ?");
        ResetAfter done(query);
        query.bind(1, std::string(id));
        if (!query.executeStep() || query.getColumn(0).isNull()) {
            return Seed{};
        }
        const auto column = query.getColumn(0);
        if (column.getBytes() != 32) {
            return Error{fmt::format("cluster {}: the stored CA key is damaged", id)};
        }
        std::array<std::uint8_t, 32> seed{};
        std::copy_n(static_cast<const std::uint8_t*>(column.getBlob()), 32, seed.begin());
        return Seed{seed};
    });
}

Status ClusterStore::prune_released(std::int64_t before_unix_ms) {
    return guarded("cannot prune released clusters", store_.path(), [&]() -> Status {
        SQLite::Statement remove(store_.database(),
                                 "DELETE FROM clusters WHERE state = ? AND changed_unix_ms < ?");
        remove.bind(1, static_cast<int>(v1::CLUSTER_STATE_RELEASED));
        remove.bind(2, before_unix_ms);
        remove.exec();
        return {};
    });
}

}  // namespace vcpilot::coordinator
