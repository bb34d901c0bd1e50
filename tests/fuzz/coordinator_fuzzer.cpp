// libFuzzer target for what the coordinators take from the network before it reaches their
// store: a user's CreateClusterRequest (validate_create, then ClusterStore::create), a GRC's
// SiteAssignment (ClusterStore::adopt, at a CRM) and a CRM's NodeReport (check_node_report, at
// the GRC). Whatever the bytes, nothing crashes, every answer is given the same way twice, every
// error is one clean line, and
//   - a request validate_create refuses is refused with an error that starts with the field it
//     is about; a spec it returns is the request's, with the defaults filled in;
//   - ClusterStore::create either records a cluster whose blocks lie in the pool, overlap no
//     other lease and hold the sites' nodes, with the lowest free VNI, one node row per node and
//     node names a pilot accepts as its hostname; or refuses with a one-line error about the
//     VNIs or a site of the request (never a database error), and the savepoint rollback leaves
//     the store as it was;
//   - ClusterStore::adopt records exactly the assignment, refuses exactly the assignments that
//     are invalid or collide with the store's leases and VNIs, and changes nothing for a cluster
//     it already holds (assignments it would record with more than 1024 nodes are skipped: a
//     million node rows take tens of seconds);
//   - check_node_report accepts exactly the reports whose fields are bounded single lines, with
//     a parseable underlay address, Ed25519 key pairs and a known state.
//
// The store is a temporary file made once per process (LLVMFuzzerInitialize) and removed at
// exit, holding a few clusters that every input is checked against: local ones, one assigned by
// the GRC, released ones. Each request runs as the coordinators' writer runs it (BEGIN IMMEDIATE,
// SAVEPOINT, ROLLBACK TO on failure) and the transaction is then rolled back, so the store never
// grows and every input sees the same one.
//
// Input: one selector byte, then a serialized message. selector % 3: 0 CreateClusterRequest,
// 1 SiteAssignment, 2 NodeReport. For a CreateClusterRequest, selector / 3 % 4 picks the policy:
// 0 the IPv4 pools with a free VNI and the CA held, 1 every VNI in use, 2 an IPv6 pool, 3 the
// IPv4 pools without a CA. A broken invariant is printed and abort()s, which libFuzzer reports
// as a crash together with the input that caused it.
//
// The seeds are in corpus/coordinator/ (made by make-coordinator-seeds.sh); VCPILOT_FUZZ_VERBOSE=1
// prints what each input came to. To read one:
//   tail -c +2 FILE |
//       protoc -I proto --decode=vcpilot.v1.SiteAssignment vcpilot/v1/coordinator.proto

#include <SQLiteCpp/Column.h>
#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>
#include <algorithm>
#include <cctype>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <google/protobuf/message.h>
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/util/message_differencer.h>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "common/text.hpp"
#include "coordinator/cluster_store.hpp"
#include "coordinator/cluster_view.hpp"
#include "coordinator/ipam.hpp"
#include "coordinator/lease_store.hpp"
#include "coordinator/sshcert.hpp"
#include "pilot/privileged/paths.hpp"
#include "proto_mutator.hpp"

namespace vcpilot::coordinator {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kMaxErrorLength = 4096;
constexpr std::string_view kOwner = "alice";
constexpr std::uint32_t kMaxVni = 16777215;
// The VNIs the coordinator hands out; the fixture's local clusters hold 100..102.
constexpr std::uint32_t kVniFirst = 100;
constexpr std::uint32_t kVniLast = 103;
constexpr std::uint32_t kVniLastInUse = 102;
// The ids of the fixture's clusters from the GRC (local ones get random ids).
constexpr std::string_view kGrcLive = "grc-live";
constexpr std::string_view kGrcReleased = "grc-released";
// check_node_report's limits.
constexpr std::size_t kMaxReportField = 255;
constexpr std::size_t kMaxReportReason = 4 * kMaxReportField;
constexpr std::size_t kMaxKeyLine = 1024;

[[noreturn]] void broken(std::string_view invariant, std::string_view detail) {
    const std::string shown = single_line(detail);
    std::fprintf(stderr, "coordinator_fuzzer: invariant broken: %.*s\n  detail: %s\n",
                 static_cast<int>(invariant.size()), invariant.data(), shown.c_str());
    std::abort();
}

void require(bool holds, std::string_view invariant, std::string_view detail = {}) {
    if (!holds) {
        broken(invariant, detail);
    }
}

template <typename T>
T must(Result<T> result, std::string_view what) {
    if (!result) {
        broken(what, result.error().message);
    }
    return std::move(*result);
}

void must(const Status& status, std::string_view what) {
    if (!status) {
        broken(what, status.error().message);
    }
}

Cidr cidr(std::string_view text) {
    return must(Cidr::parse(text), "a constant block parses");
}

// ---- the store every input sees ----

struct Fixture {
    fs::path dir;
    ClusterStore store;
    AddressPool v4_pool;
    AddressPool v6_pool;
    // Every table as the fixture left it, and what the checks need to know of it.
    std::string snapshot;
    std::vector<Cidr> live_blocks;
    std::set<std::uint32_t> vnis;
    std::set<std::string> live_ids;
    std::set<std::string> live_grc_ids;  // live clusters the GRC assigned
};

Fixture* fixture = nullptr;
// VCPILOT_FUZZ_VERBOSE=1: print every outcome, to see what the seeds and a crashing input do.
bool verbose = false;

void show(std::string_view kind, std::string_view outcome) {
    if (verbose) {
        std::fprintf(stderr, "coordinator_fuzzer: %.*s: %.*s\n", static_cast<int>(kind.size()),
                     kind.data(), static_cast<int>(outcome.size()), outcome.data());
    }
}

SQLite::Database& database() {
    return fixture->store.leases().database();
}

// Every row of the tables the coordinators write, in a stable order: equal snapshots mean an
// unchanged store.
std::string snapshot(SQLite::Database& db) {
    std::string out;
    for (const char* table : {"counters", "leases", "clusters", "sites", "nodes"}) {
        SQLite::Statement query(db, std::string("SELECT * FROM ") + table + " ORDER BY rowid");
        out += table;
        out += '\n';
        while (query.executeStep()) {
            for (int i = 0; i < query.getColumnCount(); ++i) {
                const SQLite::Column column = query.getColumn(i);
                if (column.isNull()) {
                    out += "NULL";
                } else if (column.isBlob()) {
                    out += "blob:" + std::to_string(column.getBytes());
                } else {
                    out += quote(column.getString(), 1 << 20);
                }
                out += '|';
            }
            out += '\n';
        }
    }
    return out;
}

struct Policy {
    CreatePolicy create;
    std::uint32_t expected_vni = 0;  // 0: every VNI of the range is in use
};

Policy policy_for(std::uint8_t selector) {
    Policy policy;
    policy.create.pool = &fixture->v4_pool;
    policy.create.vni_first = kVniFirst;
    policy.create.vni_last = kVniLast;
    policy.create.hold_ca = true;
    policy.create.n2n_supernode = "192.0.2.1:7654";  // n2n clusters are made too
    policy.expected_vni = kVniLast;
    switch (selector / 3 % 4) {
        case 1:
            policy.create.vni_last = kVniLastInUse;
            policy.expected_vni = 0;
            break;
        case 2:
            policy.create.pool = &fixture->v6_pool;
            policy.create.hold_ca = false;
            break;
        case 3:
            policy.create.hold_ca = false;
            break;
        default:
            break;
    }
    return policy;
}

// As the coordinators' writer runs a request: a savepoint inside a write transaction, rolled
// back to when the request fails. The caller checks the outcome and then calls rollback().
template <typename F>
auto as_writer(F body) -> decltype(body()) {
    SQLite::Database& db = database();
    db.exec("BEGIN IMMEDIATE");
    db.exec("SAVEPOINT work");
    auto outcome = body();
    if (!outcome) {
        db.exec("ROLLBACK TO work");
    }
    db.exec("RELEASE work");
    return outcome;
}

void rollback() {
    database().exec("ROLLBACK");
}

void make_fixture() {
    // Under $TMPDIR: run-fuzzer.sh points it into its work directory, removed even after a crash.
    std::error_code error;
    const fs::path base = fs::temp_directory_path(error);
    std::string dir = (error ? fs::path("/tmp") : base) / "vcpilot-coordinator-fuzz.XXXXXX";
    if (::mkdtemp(dir.data()) == nullptr) {
        broken("a temporary directory for the store can be made", dir);
    }
    auto leases = must(LeaseStore::open(fs::path(dir) / "state.db"), "the store opens");
    fixture = new Fixture{
        .dir = dir,
        .store = ClusterStore(std::move(leases)),
        .v4_pool = must(AddressPool::create({cidr("10.96.0.0/22"), cidr("10.97.0.0/24")}),
                        "the IPv4 pools"),
        .v6_pool = must(AddressPool::create({cidr("fd96::/118")}), "the IPv6 pool"),
        .snapshot = {},
        .live_blocks = {},
        .vnis = {},
        .live_ids = {},
        .live_grc_ids = {},
    };
    std::atexit([] {
        std::error_code ignored;
        fs::remove_all(fixture->dir, ignored);
    });

    ClusterStore& store = fixture->store;
    SQLite::Database& db = database();
    CreatePolicy policy;
    policy.pool = &fixture->v4_pool;
    policy.vni_first = kVniFirst;
    policy.vni_last = kVniLast;
    policy.hold_ca = true;
    const auto create = [&](const v1::CreateClusterRequest& request, const CreatePolicy& with) {
        auto spec = must(validate_create(request, std::string(kOwner)), "a fixture spec");
        return must(store.create(spec, with), "a fixture cluster").id;
    };
    const auto adopt = [&](std::string_view id, std::string_view block, std::uint32_t vni) {
        v1::SiteAssignment assignment;
        assignment.set_cluster_id(std::string(id));
        assignment.set_owner("bob");
        assignment.set_vni(vni);
        assignment.set_site("s1");
        assignment.set_block(std::string(block));
        assignment.set_nodes(40);
        must(store.adopt(assignment), "a fixture assignment");
    };

    db.exec("BEGIN IMMEDIATE");
    // VNI 100: two nodes in an explicit block near the start of the pool.
    v1::CreateClusterRequest small;
    auto* site = small.add_sites();
    site->set_site("s1");
    site->set_nodes(2);
    site->set_block("10.96.0.4/30");
    create(small, policy);
    // VNI 101: 30 nodes, a /27 placed first-fit around it, exchange mode, options.
    v1::CreateClusterRequest options;
    site = options.add_sites();
    site->set_site("s1");
    site->set_nodes(30);
    site = options.add_sites();
    site->set_site("s2");
    site->set_nodes(1);
    options.set_key_mode(v1::KEY_MODE_EXCHANGE);
    options.set_name_prefix("node");
    options.set_slots(4);
    options.set_image("/srv/images/base.sqsh");
    options.set_image_mount("/opt/base");
    create(options, policy);
    // VNI 102, in the IPv6 pool.
    v1::CreateClusterRequest v6;
    site = v6.add_sites();
    site->set_site("s6");
    site->set_nodes(10);
    CreatePolicy v6_policy = policy;
    v6_policy.pool = &fixture->v6_pool;
    create(v6, v6_policy);
    // Released: its block and VNI are free again, its row stays.
    v1::CreateClusterRequest gone;
    site = gone.add_sites();
    site->set_site("s1");
    site->set_nodes(100);
    must(store.finish_release(create(gone, policy)), "the fixture releases a cluster");
    // From the GRC: a live one with a block in the pool and a VNI outside the range, and a
    // released one (an assignment for it again is recorded afresh).
    adopt(kGrcLive, "10.96.1.0/26", 5000);
    adopt(kGrcReleased, "10.96.2.0/26", 5001);
    must(store.finish_release(kGrcReleased), "the fixture releases a GRC cluster");
    db.exec("COMMIT");

    fixture->snapshot = snapshot(db);
    for (const auto& lease : must(store_detail::live_leases(db), "the fixture's leases")) {
        fixture->live_blocks.push_back(lease.lease.block);
    }
    for (const auto& cluster : must(store.list("", true), "the fixture's clusters")) {
        if (cluster.state != v1::CLUSTER_STATE_RELEASED) {
            fixture->live_ids.insert(cluster.id);
            if (cluster.origin == kOriginGrc) {
                fixture->live_grc_ids.insert(cluster.id);
            }
        }
        if (cluster.vni) {
            fixture->vnis.insert(*cluster.vni);
        }
    }
    require(fixture->vnis == std::set<std::uint32_t>{100, 101, 102, 5000} &&
                fixture->live_blocks.size() == 5 && fixture->live_ids.size() == 4,
            "the fixture is as described", fixture->snapshot);
}

void require_unchanged(std::string_view invariant) {
    const std::string now = snapshot(database());
    require(now == fixture->snapshot, invariant, now);
}

// ---- errors ----

bool is_control(char c) {
    const auto byte = static_cast<unsigned char>(c);
    return byte < 0x20 || byte == 0x7f;
}

// What the user sees: one line, not empty, not a flood; and never a failure of the store itself,
// which is healthy here (a database error means a constraint the code should have checked).
void check_error_line(const Error& error) {
    const std::string& message = error.message;
    require(!message.empty(), "an error message is not empty");
    require(message.size() <= kMaxErrorLength, "an error message is at most 4 KiB",
            message.substr(0, 200));
    require(std::none_of(message.begin(), message.end(), is_control),
            "an error message is one line without control characters", message);
    require(!message.starts_with("lease store "), "a request never fails inside the database",
            message);
}

// "<field>: ..." or "<field> ..." ("image and image_mount come together").
bool starts_with_field(std::string_view message, std::string_view field) {
    return message.starts_with(field) && (message.substr(field.size()).starts_with(": ") ||
                                          message.substr(field.size()).starts_with(' '));
}

void check_create_error(const Error& error) {
    check_error_line(error);
    static constexpr std::string_view kFields[] = {
        "sites",       "name_prefix", "key_mode",         "slots",  "image",
        "image_mount", "pilots",      "walltime_minutes", "overlay"};
    require(std::any_of(
                std::begin(kFields), std::end(kFields),
                [&](std::string_view field) { return starts_with_field(error.message, field); }),
            "a CreateCluster error starts with the field it is about", error.message);
}

// ---- CreateClusterRequest ----

bool same_spec(const ClusterSpec& a, const ClusterSpec& b) {
    return a.owner == b.owner && a.key_mode == b.key_mode && a.name_prefix == b.name_prefix &&
           a.slots == b.slots && a.image == b.image && a.image_mount == b.image_mount &&
           a.sites.size() == b.sites.size() &&
           std::equal(a.sites.begin(), a.sites.end(), b.sites.begin(),
                      [](const v1::SiteRequest& x, const v1::SiteRequest& y) {
                          return google::protobuf::util::MessageDifferencer::Equals(x, y);
                      });
}

bool is_label(std::string_view text, std::size_t max) {
    return !text.empty() && text.size() <= max && text.front() != '-' && text.back() != '-' &&
           std::all_of(text.begin(), text.end(), [](char c) {
               return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
           });
}

bool is_printable_absolute(std::string_view path) {
    return path.starts_with('/') && std::none_of(path.begin(), path.end(), is_control);
}

void check_spec(const ClusterSpec& spec, const v1::CreateClusterRequest& request) {
    require(spec.owner == kOwner, "the owner is the caller", spec.owner);
    require(spec.sites.size() == static_cast<std::size_t>(request.sites_size()) &&
                !spec.sites.empty() && spec.sites.size() <= 256,
            "the spec has the request's sites, 1..256", std::to_string(spec.sites.size()));
    std::set<std::string> names;
    for (std::size_t i = 0; i < spec.sites.size(); ++i) {
        const v1::SiteRequest& site = spec.sites[i];
        require(google::protobuf::util::MessageDifferencer::Equals(
                    site, request.sites(static_cast<int>(i))),
                "the spec's sites are the request's, in order", site.site());
        require(is_label(site.site(), 32) && names.insert(site.site()).second,
                "site names are distinct labels", site.site());
        require(site.nodes() >= 1 && site.nodes() <= kMaxNodesPerBlock,
                "a site has 1..kMaxNodesPerBlock nodes", std::to_string(site.nodes()));
        // Whether or not the pool has room for it: the last node's name is the longest.
        const Status label = pilot::check_host_label(
            "node_name", node_name(spec.name_prefix, site.site(), site.nodes()));
        require(label.ok(), "a valid request's node names are hostnames the pilot accepts",
                label.ok() ? "" : label.error().message);
        if (!site.block().empty()) {
            auto block = Cidr::parse(site.block());
            require(block.ok(), "an explicit block parses", site.block());
            require(block->size() >= uint128{site.nodes()} + 2,
                    "an explicit block holds the site's nodes", site.block());
        }
    }
    require(spec.name_prefix == (request.name_prefix().empty() ? "vc" : request.name_prefix()) &&
                is_label(spec.name_prefix, 32),
            "the name prefix is the request's (or vc), a label", spec.name_prefix);
    require(
        spec.key_mode == (request.key_mode() == v1::KEY_MODE_EXCHANGE ? v1::KEY_MODE_EXCHANGE
                                                                      : v1::KEY_MODE_CA) &&
            (request.key_mode() == v1::KEY_MODE_UNSPECIFIED ||
             request.key_mode() == v1::KEY_MODE_CA || request.key_mode() == v1::KEY_MODE_EXCHANGE),
        "the key mode is the request's (or CA), a known one");
    require(spec.slots == (request.slots() == 0 ? 1 : request.slots()) && spec.slots <= 4096,
            "slots are the request's (or 1), at most 4096", std::to_string(spec.slots));
    require(spec.image == request.image() && spec.image_mount == request.image_mount() &&
                spec.image.empty() == spec.image_mount.empty() &&
                (spec.image.empty() ||
                 (is_printable_absolute(spec.image) && is_printable_absolute(spec.image_mount))),
            "image and mount point are the request's, absolute, given together", spec.image);
}

bool same_sites(const std::vector<SiteRecord>& a, const std::vector<SiteRecord>& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                      [](const SiteRecord& x, const SiteRecord& y) {
                          return x.site == y.site && x.nodes == y.nodes && x.block == y.block &&
                                 x.released == y.released;
                      });
}

bool same_record(const ClusterRecord& a, const ClusterRecord& b) {
    return a.id == b.id && a.owner == b.owner && a.state == b.state && a.reason == b.reason &&
           a.key_mode == b.key_mode && a.vni == b.vni && a.name_prefix == b.name_prefix &&
           a.slots == b.slots && a.image == b.image && a.image_mount == b.image_mount &&
           same_sites(a.sites, b.sites) && a.created_unix_ms == b.created_unix_ms &&
           a.changed_unix_ms == b.changed_unix_ms && a.release_by_ms == b.release_by_ms &&
           a.origin == b.origin;
}

// What a pilot of the site will be told in SETUP: a hostname it accepts (pilot/paths.hpp) and,
// for IPv4, a host address of the block (the pilot takes IPv4 job networks only).
void check_site_for_pilots(const ClusterRecord& cluster, const SiteRecord& site) {
    require(site.nodes >= 1 && site.block.size() >= uint128{site.nodes} + 2,
            "a site's block holds its nodes and keeps network and broadcast out",
            site.block.to_string());
    for (const std::uint32_t ordinal : {std::uint32_t{1}, site.nodes}) {
        const std::string name = node_name(cluster.name_prefix, site.site, ordinal);
        const Status label = pilot::check_host_label("node_name", name);
        require(label.ok(), "a node name is a hostname the pilot accepts",
                label.ok() ? name : label.error().message);
        const IpAddress address = must(node_address(site.block, ordinal), "a node has an address");
        require(site.block.contains(address) && address != site.block.network() &&
                    address != site.block.last(),
                "a node address is a host address of its site's block", address.to_string());
    }
    if (site.block.family() == IpFamily::v4) {
        require(site.block.prefix() <= 30, "an IPv4 site block is at most a /30",
                site.block.to_string());
    }
}

// The store's view of a cluster: the record, its node rows (one per node, NEW, free), its
// description, and its leases (one per site, nothing else in the store changed).
void check_recorded(const ClusterRecord& cluster, std::string_view lease_owner,
                    const std::function<bool(const Cidr&, const Cidr&)>& pool_ok) {
    ClusterStore& store = fixture->store;
    auto found = must(store.find(cluster.id), "a recorded cluster can be read");
    require(found.has_value() && same_record(*found, cluster),
            "the store holds the cluster as recorded", cluster.id);
    require(
        std::is_sorted(cluster.sites.begin(), cluster.sites.end(),
                       [](const SiteRecord& a, const SiteRecord& b) { return a.site < b.site; }),
        "a cluster's sites are in name order");

    const auto nodes = must(store.nodes(cluster.id), "the nodes of a recorded cluster");
    std::size_t next = 0;
    for (const SiteRecord& site : cluster.sites) {
        for (std::uint32_t ordinal = 1; ordinal <= site.nodes; ++ordinal, ++next) {
            require(next < nodes.size(), "one node row per node", std::to_string(nodes.size()));
            const NodeRecord& node = nodes[next];
            require(node.site == site.site && node.ordinal == ordinal,
                    "node rows are the sites' ordinals 1..n", node.site);
            require(node.host.empty() && node.job.empty() && node.host_key.empty() &&
                        node.state == v1::PILOT_STATE_NEW,
                    "a new node is free and NEW", node.host);
        }
    }
    require(next == nodes.size(), "no node rows beyond the sites' nodes",
            std::to_string(nodes.size()));

    const auto described =
        must(describe_cluster(store, cluster, true), "a recorded cluster can be described");
    require(described.nodes_size() == static_cast<int>(nodes.size()) &&
                described.sites_size() == static_cast<int>(cluster.sites.size()),
            "the description has every site and node");
    std::set<std::string> names;
    std::set<std::string> addresses;
    for (const auto& node : described.nodes()) {
        require(names.insert(node.name()).second, "node names are unique in a cluster",
                node.name());
        require(addresses.insert(node.address()).second, "node addresses are unique in a cluster",
                node.address());
    }

    // Leases: the fixture's, and one per site of this cluster.
    std::vector<Cidr> expected = fixture->live_blocks;
    for (const SiteRecord& site : cluster.sites) {
        for (const Cidr& other : expected) {
            require(!site.block.overlaps(other), "a new block overlaps no other lease",
                    site.block.to_string() + " " + other.to_string());
        }
        expected.push_back(site.block);
    }
    std::sort(expected.begin(), expected.end());
    const auto live = must(store_detail::live_leases(database()), "the live leases");
    std::vector<Cidr> blocks;
    for (const auto& lease : live) {
        blocks.push_back(lease.lease.block);
        if (lease.cluster == cluster.id) {
            require(lease.lease.owner == lease_owner && pool_ok(lease.lease.block, lease.pool),
                    "a new lease is the cluster owner's, from the right pool",
                    lease.lease.block.to_string());
        }
    }
    std::sort(blocks.begin(), blocks.end());
    require(blocks == expected, "the leases are the fixture's and one per new site");
}

// The outcome of one create, as comparable text: everything but the random id and the clock.
std::string create_once(const ClusterSpec& spec, const Policy& policy) {
    ClusterStore& store = fixture->store;
    auto created = as_writer([&] { return store.create(spec, policy.create); });
    std::string outcome;
    if (!created) {
        const std::string& message = created.error().message;
        check_error_line(created.error());
        if (policy.expected_vni == 0) {
            require(message.starts_with("every VNI of "),
                    "with every VNI in use, create refuses for that reason", message);
        } else if (spec.overlay == v1::OVERLAY_AUTO) {
            // The coordinator chooses the overlay before it creates; the store refuses 'auto'.
            require(message.starts_with("overlay: auto"),
                    "create refuses an overlay still 'auto', for that reason", message);
        } else {
            require(std::any_of(spec.sites.begin(), spec.sites.end(),
                                [&](const v1::SiteRequest& site) {
                                    const std::string named = "site " + site.site();
                                    return message.starts_with(named + ":") ||
                                           message.starts_with(named + " (");
                                }),
                    "create refuses because of a site of the request, and names it", message);
            // A request whose blocks are all explicit, in the pool, and free is placed as asked.
            std::vector<Cidr> taken = fixture->live_blocks;
            const bool placeable =
                std::all_of(spec.sites.begin(), spec.sites.end(), [&](const auto& site) {
                    if (site.block().empty()) {
                        return false;
                    }
                    const Cidr block = cidr(site.block());
                    if (policy.create.pool->pool_of(block) == nullptr ||
                        std::any_of(taken.begin(), taken.end(),
                                    [&](const Cidr& other) { return other.overlaps(block); })) {
                        return false;
                    }
                    taken.push_back(block);
                    return true;
                });
            require(!placeable, "free explicit blocks inside the pool are accepted", message);
        }
        require_unchanged("a refused create changes nothing once rolled back");
        outcome = "error: " + message;
    } else {
        const ClusterRecord& cluster = *created;
        require(policy.expected_vni != 0, "with every VNI in use, create refuses", cluster.id);
        require(cluster.id.size() == 11 && cluster.id.starts_with("vc-") &&
                    !fixture->live_ids.contains(cluster.id),
                "a new cluster has a new id vc-XXXXXXXX", cluster.id);
        require(cluster.owner == spec.owner && cluster.state == v1::CLUSTER_STATE_PENDING &&
                    cluster.reason.empty() && cluster.key_mode == spec.key_mode &&
                    cluster.name_prefix == spec.name_prefix && cluster.slots == spec.slots &&
                    cluster.image == spec.image && cluster.image_mount == spec.image_mount &&
                    cluster.origin.empty() && cluster.release_by_ms == 0,
                "a new cluster is PENDING, local, with the spec's settings", cluster.id);
        require(cluster.vni == policy.expected_vni, "a new cluster gets the lowest free VNI",
                std::to_string(cluster.vni.value_or(0)));
        require(cluster.sites.size() == spec.sites.size(), "a new cluster has every site");
        for (const SiteRecord& site : cluster.sites) {
            const auto asked = std::find_if(spec.sites.begin(), spec.sites.end(),
                                            [&](const auto& s) { return s.site() == site.site; });
            require(asked != spec.sites.end() && asked->nodes() == site.nodes && !site.released,
                    "a new site is one of the request's, with its node count", site.site);
            require(policy.create.pool->pool_of(site.block) != nullptr,
                    "a new block lies inside the pool", site.block.to_string());
            if (!asked->block().empty()) {
                require(site.block == cidr(asked->block()), "an explicit block is kept",
                        site.block.to_string());
            } else {
                const int prefix =
                    must(prefix_for_nodes(site.nodes, policy.create.pool->family()), "a prefix");
                require(site.block.prefix() == prefix,
                        "an allocated block is the smallest that holds the nodes",
                        site.block.to_string());
            }
            for (const SiteRecord& other : cluster.sites) {
                require(&other == &site || !other.block.overlaps(site.block),
                        "the blocks of a cluster do not overlap", other.block.to_string());
            }
            check_site_for_pilots(cluster, site);
        }
        check_recorded(cluster, spec.owner, [&](const Cidr& block, const Cidr& pool) {
            const Cidr* of = policy.create.pool->pool_of(block);
            return of != nullptr && *of == pool;
        });
        const auto seed = must(store.ca_seed(cluster.id), "the CA key can be read");
        require(seed.has_value() == (policy.create.hold_ca && cluster.key_mode == v1::KEY_MODE_CA),
                "a CA key is held exactly when the policy and the key mode say so");
        outcome =
            "vni " + std::to_string(*cluster.vni) + " mode " + std::to_string(cluster.key_mode);
        for (const SiteRecord& site : cluster.sites) {
            outcome +=
                " " + site.site + ":" + std::to_string(site.nodes) + "@" + site.block.to_string();
        }
    }
    rollback();
    return outcome;
}

void fuzz_create(const v1::CreateClusterRequest& request, std::uint8_t selector) {
    auto spec = validate_create(request, std::string(kOwner));
    auto again = validate_create(request, std::string(kOwner));
    require(spec.ok() == again.ok(), "validate_create is deterministic");
    if (!spec) {
        check_create_error(spec.error());
        require(spec.error().message == again.error().message,
                "validate_create gives the same error twice", spec.error().message);
        show("create refused", spec.error().message);
        return;
    }
    require(same_spec(*spec, *again), "validate_create gives the same spec twice");
    check_spec(*spec, request);

    const Policy policy = policy_for(selector);
    const std::string first = create_once(*spec, policy);
    const std::string second = create_once(*spec, policy);
    require(first == second, "the same request on the same store is answered the same way twice",
            first + " / " + second);
    require_unchanged("the transaction of a create is rolled back");
    show("create", first);
}

// ---- SiteAssignment ----

// Whether adopt must record the assignment (or accept it as one it already holds), from the
// fields and the fixture alone.
bool acceptable(const v1::SiteAssignment& assignment) {
    if (!validate_create(request_of(assignment), assignment.owner()) ||
        !store_detail::check_name("cluster id", assignment.cluster_id()) ||
        assignment.block().empty() || assignment.vni() < 1 || assignment.vni() > kMaxVni) {
        return false;
    }
    // The overlay is the one the GRC chose; n2n comes with its key and supernode, plain tokens.
    const auto token = [](std::string_view text, std::size_t low, std::size_t high) {
        return text.size() >= low && text.size() <= high &&
               std::all_of(text.begin(), text.end(), [](char c) {
                   return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
                          std::string_view(".:_-").find(c) != std::string_view::npos;
               });
    };
    if (assignment.overlay() == v1::OVERLAY_AUTO ||
        (assignment.overlay() == v1::OVERLAY_N2N &&
         (!token(assignment.n2n_key(), 16, 64) || !token(assignment.n2n_supernode(), 9, 21)))) {
        return false;
    }
    // An id held already: the GRC's own again is accepted (and changes nothing); one of the
    // site's own clusters is not the GRC's to take.
    if (fixture->live_ids.contains(assignment.cluster_id())) {
        return fixture->live_grc_ids.contains(assignment.cluster_id());
    }
    const Cidr block = cidr(assignment.block());
    return std::none_of(fixture->live_blocks.begin(), fixture->live_blocks.end(),
                        [&](const Cidr& other) { return other.overlaps(block); }) &&
           !fixture->vnis.contains(assignment.vni());
}

std::string adopt_once(const v1::SiteAssignment& assignment) {
    ClusterStore& store = fixture->store;
    const Status adopted = as_writer([&] { return store.adopt(assignment); });
    const bool expected = acceptable(assignment);
    std::string outcome;
    if (!adopted) {
        check_error_line(adopted.error());
        require(!expected, "a valid assignment of a free block and VNI is recorded",
                adopted.error().message);
        require_unchanged("a refused assignment changes nothing once rolled back");
        outcome = "error: " + adopted.error().message;
    } else if (fixture->live_ids.contains(assignment.cluster_id())) {
        require(expected, "only a valid assignment is accepted", assignment.cluster_id());
        require_unchanged("an assignment of a cluster already held changes nothing");
        outcome = "held";
    } else {
        require(expected, "only a valid assignment of a free block and VNI is recorded",
                assignment.cluster_id());
        const auto found = must(store.find(assignment.cluster_id()), "an adopted cluster");
        require(found.has_value(), "an adopted cluster is found", assignment.cluster_id());
        const ClusterRecord& cluster = *found;
        const auto mode = assignment.key_mode() == v1::KEY_MODE_EXCHANGE ? v1::KEY_MODE_EXCHANGE
                                                                         : v1::KEY_MODE_CA;
        require(cluster.owner == assignment.owner() && cluster.vni == assignment.vni() &&
                    cluster.state == v1::CLUSTER_STATE_PENDING && cluster.origin == kOriginGrc &&
                    cluster.key_mode == mode &&
                    cluster.name_prefix ==
                        (assignment.name_prefix().empty() ? "vc" : assignment.name_prefix()) &&
                    cluster.slots == (assignment.slots() == 0 ? 1 : assignment.slots()) &&
                    cluster.image == assignment.image() &&
                    cluster.image_mount == assignment.image_mount(),
                "an adopted cluster is the assignment's, from the GRC, PENDING",
                assignment.cluster_id());
        require(cluster.sites.size() == 1 && cluster.sites[0].site == assignment.site() &&
                    cluster.sites[0].nodes == assignment.nodes() &&
                    cluster.sites[0].block == cidr(assignment.block()),
                "an adopted cluster has the assigned site, block and nodes",
                assignment.cluster_id());
        check_site_for_pilots(cluster, cluster.sites[0]);
        check_recorded(cluster, assignment.owner(),
                       [](const Cidr& block, const Cidr& pool) { return block == pool; });
        outcome = "recorded";
    }
    rollback();
    return outcome;
}

// An assignment that is recorded puts one row per node in the store: a million of them take
// tens of seconds under ASan and reach no code that a thousand do not. Such inputs are skipped
// (validation of large counts is still fuzzed: refused assignments run whatever their size).
constexpr std::uint32_t kMaxRecordedNodes = 1024;

// Returns false for an input that was skipped.
bool fuzz_adopt(const v1::SiteAssignment& assignment) {
    if (assignment.nodes() > kMaxRecordedNodes && acceptable(assignment) &&
        !fixture->live_ids.contains(assignment.cluster_id())) {
        return false;
    }
    const std::string first = adopt_once(assignment);
    const std::string second = adopt_once(assignment);
    require(first == second, "the same assignment is answered the same way twice",
            first + " / " + second);
    require_unchanged("the transaction of an assignment is rolled back");
    show("assignment", first);
    return true;
}

// ---- NodeReport ----

bool bounded_line(std::string_view text, std::size_t max) {
    return text.size() <= max && text.find_first_of(std::string_view("\n\r\0", 3)) == text.npos;
}

bool key_ok(const std::string& key) {
    return key.empty() || (key.size() <= kMaxKeyLine && parse_ed25519_public_key(key).ok());
}

void fuzz_node_report(const v1::NodeReport& report) {
    const Status checked = check_node_report(report);
    const Status again = check_node_report(report);
    require(checked.ok() == again.ok(), "check_node_report is deterministic");
    const bool expected =
        bounded_line(report.cluster_id(), kMaxReportField) &&
        bounded_line(report.host(), kMaxReportField) &&
        bounded_line(report.underlay_address(), kMaxReportField) &&
        bounded_line(report.reason(), kMaxReportReason) &&
        (report.underlay_address().empty() || IpAddress::parse(report.underlay_address()).ok()) &&
        report.host_key().empty() == report.user_key().empty() && key_ok(report.host_key()) &&
        key_ok(report.user_key()) && v1::PilotState_IsValid(report.state());
    if (!checked) {
        check_error_line(checked.error());
        require(checked.error().message == again.error().message,
                "check_node_report gives the same error twice", checked.error().message);
        require(checked.error().message.starts_with("node report "),
                "a node report error names the node report", checked.error().message);
        require(!expected, "a well-formed node report is accepted", checked.error().message);
    } else {
        require(expected, "only a well-formed node report is accepted", report.cluster_id());
    }
    show("node report", checked ? "accepted" : checked.error().message);
}

// ---- structure-aware mutation (proto_mutator.hpp) ----

// Values next to the limits the checks draw: nodes per block, slots, VNIs, enum ranges.
constexpr std::uint64_t kInterestingNumbers[] = {
    0,       1,       2,       3,           4,          7,          8,        254,
    255,     1022,    1023,    4096,        4097,       kVniFirst,  kVniLast, 5000,
    1048574, 1048575, kMaxVni, kMaxVni + 1, 0x7FFFFFFF, 0xFFFFFFFF, ~0ULL};

std::unique_ptr<google::protobuf::Message> request_for(std::uint8_t selector) {
    switch (selector % 3) {
        case 0:
            return std::make_unique<v1::CreateClusterRequest>();
        case 1:
            return std::make_unique<v1::SiteAssignment>();
        default:
            return std::make_unique<v1::NodeReport>();
    }
}

}  // namespace
}  // namespace vcpilot::coordinator

extern "C" std::size_t LLVMFuzzerCustomMutator(std::uint8_t* data, std::size_t size,
                                               std::size_t max_size, unsigned int seed) {
    return vcpilot::fuzz::mutate_input(data, size, max_size, seed,
                                       vcpilot::coordinator::request_for,
                                       vcpilot::coordinator::kInterestingNumbers);
}

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
    // Proto3 parsing logs every string that is not UTF-8; that is expected input here.
    google::protobuf::SetLogHandler(nullptr);
    const char* verbose = std::getenv("VCPILOT_FUZZ_VERBOSE");
    vcpilot::coordinator::verbose = verbose != nullptr && std::string_view(verbose) == "1";
    vcpilot::coordinator::make_fixture();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0 || size - 1 > static_cast<std::size_t>(INT_MAX)) {
        return -1;
    }
    const auto* body = data + 1;
    const int body_size = static_cast<int>(size - 1);
    auto request = vcpilot::coordinator::request_for(data[0]);
    // -1: an input protobuf refuses reaches no coordinator code; keep it out of the corpus.
    if (!request->ParseFromArray(body, body_size)) {
        return -1;
    }
    switch (data[0] % 3) {
        case 0:
            vcpilot::coordinator::fuzz_create(
                static_cast<const vcpilot::v1::CreateClusterRequest&>(*request), data[0]);
            break;
        case 1:
            if (!vcpilot::coordinator::fuzz_adopt(
                    static_cast<const vcpilot::v1::SiteAssignment&>(*request))) {
                return -1;
            }
            break;
        default:
            vcpilot::coordinator::fuzz_node_report(
                static_cast<const vcpilot::v1::NodeReport&>(*request));
            break;
    }
    return 0;
}
