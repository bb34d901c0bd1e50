// coordinator-crash: the coordinators survive SIGKILL at random points.
//
// Real daemons run as child processes of this program, each with its state in a temporary
// directory:
//   crm: one vc-crmd with its own --pool on a unix socket (a private munged authenticates the
//        clients); the CRM is the one killed.
//   grc: vc-grcd on 127.0.0.1 with mutual TLS (a test PKI from scripts/make-test-ca.sh) and two
//        vc-crmd (sites a and b) connected to it; mostly the GRC is killed, sometimes a CRM.
// Client threads create clusters (sometimes with explicit blocks chosen to collide with each
// other's), look at them and release them, while the main thread SIGKILLs a daemon at random
// moments and restarts it on the same state file. Errors that mean "the daemon is not there"
// (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED) are expected; any other unexpected answer fails.
//
// Checked: the killed daemon's database right after each kill, and every database after the
// run (daemons stopped with SIGTERM, opened read-only): no two live leases overlap, every lease
// belongs to a live cluster, every live cluster holds exactly its sites' blocks, VNIs are
// distinct, node rows match their sites. With the GRC: once settled, every live GRC cluster is
// held by its sites' CRMs and no CRM holds a GRC cluster that is over. Through the clients:
// every cluster a client was told it created is still known (live or RELEASED); at the end all
// are released and nothing is left anywhere.
//
//   coordinator-crash [--scenario crm|grc|both] [--cycles N] [--kills N] [--seed S] ...
// Exit status: 0 every invariant held, 1 one did not, 2 bad usage, 77 skipped (needs root and
// munged).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fmt/format.h>
#include <functional>
#include <grpcpp/grpcpp.h>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/ip.hpp"
#include "coordinator/ipam.hpp"
#include "coordinator/lease_store.hpp"
#include "tests/support/cleanup.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_munged.hpp"
#include "tests/support/test_pki.hpp"
#include "vcctl/client.hpp"

namespace {

namespace fs = std::filesystem;
using namespace vcpilot;
using namespace vcpilot::coordinator;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using testing::TestMunged;

// ---- options ----

struct Options {
    std::string scenario = "both";
    int cycles = 200;  // answered creates per scenario, at least
    int kills = 20;    // SIGKILLs per scenario
    int clients = 4;   // client threads
    std::uint64_t seed = 20240605;
    int min_interval_ms = 20;  // between traffic resuming after a restart and the next kill
    int max_interval_ms = 300;
    double early_kill_share = 0.15;       // kills that hit a daemon again while it is starting
    double grc_scenario_crm_share = 0.3;  // kills in the grc scenario that hit a CRM
    double outage_share = 0.1;            // kills after which the daemon stays down for outage_ms
    int outage_ms = 1500;
    int grc_release_timeout_s = 1;  // vc-grcd --release-timeout: shorter than an outage
    int call_timeout_ms = 2000;
    int settle_s = 15;        // how long the GRC and the CRMs may take to agree
    int time_budget_s = 200;  // per scenario; running out is a failure (a hang)
    std::string crmd = VCPILOT_CRMD;
    std::string grcd = VCPILOT_GRCD;
    std::string source_dir = VCPILOT_SOURCE_DIR;
    bool keep = false;
    bool verbose = false;
};

// ---- failures ----

class Failures {
  public:
    void add(std::string what) {
        std::lock_guard lock(mutex_);
        fmt::print(stderr, "FAIL: {}\n", what);
        (void)std::fflush(stderr);
        list_.push_back(std::move(what));
    }
    std::size_t count() const {
        std::lock_guard lock(mutex_);
        return list_.size();
    }

  private:
    mutable std::mutex mutex_;
    std::vector<std::string> list_;
};

Failures g_failures;

// ---- the daemons ----

// One daemon of a scenario: a child process (tests/support) started again and again with the
// same command line on the same state file, by the main thread only. What goes wrong with it is
// one of the test's failures.
class Daemon {
  public:
    Daemon(std::string name, std::vector<std::string> argv, fs::path log, fs::path state,
           testing::Endpoint endpoint)
        : process_(std::move(name)),
          spec_{std::move(argv), std::move(log)},
          state_(std::move(state)),
          endpoint_(std::move(endpoint)) {}

    const std::string& name() const { return process_.name(); }
    const fs::path& state() const { return state_; }
    bool running() const { return process_.running(); }

    void start() {
        if (auto started = process_.start(spec_); !started) {
            throw std::runtime_error(started.error().message);
        }
    }

    // Whether it accepts connections within `timeout`; false also if it died meanwhile (a
    // failure).
    bool wait_ready(milliseconds timeout) {
        auto serving = process_.wait_serving(endpoint_, timeout);
        if (!serving && !process_.running()) {
            g_failures.add(serving.error().message);
        }
        return serving.ok();
    }

    // If it is no longer running, how it ended (and it is reaped); nothing while it runs.
    std::optional<std::string> exited() { return process_.exited(); }

    // SIGKILL and reap; false (and a failure) if it had already ended on its own.
    bool kill9() { return counted(process_.kill9()); }

    // SIGTERM; it must exit with status 0 within `timeout` (else SIGKILL and a failure).
    bool terminate(milliseconds timeout) { return counted(process_.terminate(timeout)); }

    std::string log_tail(std::size_t lines) const {
        return testing::tail_of_file(spec_.output, lines);
    }

  private:
    static bool counted(const Status& status) {
        if (!status) {
            g_failures.add(status.error().message);
        }
        return status.ok();
    }

    testing::ChildProcess process_;
    testing::ExecSpec spec_;
    fs::path state_;
    testing::Endpoint endpoint_;
};

// ---- the state databases, read-only ----

struct DbSite {
    std::string site;
    std::int64_t nodes = 0;
    std::string block;
    bool released = false;
};

struct DbCluster {
    std::string id, owner, origin;
    int state = 0;
    std::optional<std::int64_t> vni;
    std::vector<DbSite> sites;
};

struct DbLease {
    std::string block, pool, owner, cluster;
};

struct DbNode {
    std::string cluster, site;
    std::int64_t ordinal = 0;
};

struct DbSnapshot {
    std::map<std::string, DbCluster> clusters;
    std::vector<DbLease> leases;
    std::vector<DbNode> nodes;
    std::vector<std::pair<std::string, std::string>> stray_sites;  // sites of no cluster row
    std::string integrity;  // PRAGMA quick_check, when asked for
    int schema = 0;
};

constexpr int kReleased = v1::CLUSTER_STATE_RELEASED;
constexpr int kReleasing = v1::CLUSTER_STATE_RELEASING;

std::string state_name(int state) {
    return v1::ClusterState_IsValid(state)
               ? v1::ClusterState_Name(static_cast<v1::ClusterState>(state))
               : fmt::format("state {}", state);
}

// One consistent snapshot (one read transaction) of a store, which may belong to a running
// daemon (WAL: the reader never blocks it) or to a killed one.
Result<DbSnapshot> read_snapshot(const fs::path& path, bool integrity) {
    try {
        SQLite::Database db(path.string(), SQLite::OPEN_READONLY, 5000);
        DbSnapshot snapshot;
        if (integrity) {
            snapshot.integrity = db.execAndGet("PRAGMA quick_check").getString();
        }
        db.exec("BEGIN");
        snapshot.schema = db.execAndGet("SELECT version FROM schema_version").getInt();
        SQLite::Statement clusters(db, "SELECT id, owner, state, vni, origin FROM clusters");
        while (clusters.executeStep()) {
            DbCluster cluster;
            cluster.id = clusters.getColumn(0).getString();
            cluster.owner = clusters.getColumn(1).getString();
            cluster.state = clusters.getColumn(2).getInt();
            if (!clusters.getColumn(3).isNull()) {
                cluster.vni = clusters.getColumn(3).getInt64();
            }
            cluster.origin = clusters.getColumn(4).getString();
            snapshot.clusters[cluster.id] = std::move(cluster);
        }
        SQLite::Statement sites(db,
                                "SELECT cluster, site, nodes, block, released FROM sites "
                                "ORDER BY cluster, site");
        while (sites.executeStep()) {
            DbSite site{sites.getColumn(1).getString(), sites.getColumn(2).getInt64(),
                        sites.getColumn(3).getString(), sites.getColumn(4).getInt() != 0};
            const std::string id = sites.getColumn(0).getString();
            auto cluster = snapshot.clusters.find(id);
            if (cluster == snapshot.clusters.end()) {
                snapshot.stray_sites.emplace_back(id, site.site);
            } else {
                cluster->second.sites.push_back(std::move(site));
            }
        }
        SQLite::Statement leases(db, "SELECT block, pool, owner, cluster FROM leases");
        while (leases.executeStep()) {
            snapshot.leases.push_back(
                {leases.getColumn(0).getString(), leases.getColumn(1).getString(),
                 leases.getColumn(2).getString(), leases.getColumn(3).getString()});
        }
        SQLite::Statement nodes(db, "SELECT cluster, site, ordinal FROM nodes");
        while (nodes.executeStep()) {
            snapshot.nodes.push_back({nodes.getColumn(0).getString(),
                                      nodes.getColumn(1).getString(),
                                      nodes.getColumn(2).getInt64()});
        }
        db.exec("COMMIT");
        return snapshot;
    } catch (const std::exception& error) {
        return Error{fmt::format("cannot read {}: {}", path.string(), error.what())};
    }
}

// What one store must look like.
struct DbExpect {
    std::string label;            // for messages: "crm", "grc", "crm-a"
    std::set<std::string> sites;  // the site names its clusters may have
    std::optional<Cidr> pool;     // every lease lies inside
    std::string origin;           // every cluster's origin
};

// The invariants of one store. `empty`: every cluster must be RELEASED and nothing held.
std::vector<std::string> check_snapshot(const DbSnapshot& db, const DbExpect& expect, bool empty) {
    std::vector<std::string> problems;
    auto problem = [&](std::string what) {
        problems.push_back(fmt::format("{}: {}", expect.label, std::move(what)));
    };
    if (!db.integrity.empty() && db.integrity != "ok") {
        problem(fmt::format("quick_check says {}", db.integrity));
    }
    if (db.schema != LeaseStore::kSchemaVersion) {
        problem(fmt::format("schema version {}, not {}", db.schema, LeaseStore::kSchemaVersion));
    }
    for (const auto& [id, site] : db.stray_sites) {
        problem(fmt::format("site row {} of cluster {} that does not exist", site, id));
    }
    // Leases: well-formed, inside their pool, pairwise disjoint, each of a live cluster.
    std::vector<std::pair<Cidr, const DbLease*>> blocks;
    std::map<std::string, std::vector<const DbLease*>> leases_of;
    for (const auto& lease : db.leases) {
        auto block = Cidr::parse(lease.block);
        auto pool = Cidr::parse(lease.pool);
        if (!block || !pool) {
            problem(fmt::format("unreadable lease row {} (pool {})", lease.block, lease.pool));
            continue;
        }
        if (!pool->contains(*block)) {
            problem(fmt::format("lease {} lies outside its pool {}", lease.block, lease.pool));
        }
        if (expect.pool && !expect.pool->contains(*block)) {
            problem(fmt::format("lease {} lies outside {}", lease.block, expect.pool->to_string()));
        }
        blocks.emplace_back(*block, &lease);
        leases_of[lease.cluster].push_back(&lease);
        auto cluster = db.clusters.find(lease.cluster);
        if (cluster == db.clusters.end()) {
            problem(fmt::format("orphaned block: lease {} of cluster {}, which does not exist",
                                lease.block, lease.cluster));
        } else if (cluster->second.state == kReleased) {
            problem(fmt::format("orphaned block: lease {} of cluster {}, which is RELEASED",
                                lease.block, lease.cluster));
        } else if (cluster->second.owner != lease.owner) {
            problem(fmt::format("lease {} is owned by {}, its cluster {} by {}", lease.block,
                                lease.owner, lease.cluster, cluster->second.owner));
        }
    }
    std::sort(blocks.begin(), blocks.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    for (std::size_t i = 0; i < blocks.size(); ++i) {
        for (std::size_t j = i + 1; j < blocks.size(); ++j) {
            if (blocks[i].first.overlaps(blocks[j].first)) {
                problem(fmt::format("overlapping leases {} (cluster {}) and {} (cluster {})",
                                    blocks[i].second->block, blocks[i].second->cluster,
                                    blocks[j].second->block, blocks[j].second->cluster));
            }
        }
    }
    // Nodes: of an existing site, ordinals 1..nodes, each exactly once.
    std::map<std::pair<std::string, std::string>, std::set<std::int64_t>> ordinals;
    for (const auto& node : db.nodes) {
        ordinals[{node.cluster, node.site}].insert(node.ordinal);
        auto cluster = db.clusters.find(node.cluster);
        const DbSite* site = nullptr;
        if (cluster != db.clusters.end()) {
            for (const auto& candidate : cluster->second.sites) {
                if (candidate.site == node.site) {
                    site = &candidate;
                }
            }
        }
        if (site == nullptr) {
            problem(fmt::format("node {} of site {} of cluster {}: no such site row", node.ordinal,
                                node.site, node.cluster));
        } else if (node.ordinal < 1 || node.ordinal > site->nodes) {
            problem(fmt::format("node {} of site {} of cluster {}: outside 1..{}", node.ordinal,
                                node.site, node.cluster, site->nodes));
        }
    }
    // Clusters.
    std::map<std::int64_t, std::string> vnis;
    for (const auto& [id, cluster] : db.clusters) {
        if (!v1::ClusterState_IsValid(cluster.state) ||
            cluster.state == v1::CLUSTER_STATE_UNSPECIFIED) {
            problem(fmt::format("cluster {} is in unknown state {}", id, cluster.state));
        }
        if (cluster.origin != expect.origin) {
            problem(fmt::format("cluster {} has origin '{}', not '{}'", id, cluster.origin,
                                expect.origin));
        }
        const auto held = leases_of.find(id);
        const std::size_t lease_count = held == leases_of.end() ? 0 : held->second.size();
        if (cluster.state == kReleased) {
            if (cluster.vni) {
                problem(fmt::format("RELEASED cluster {} keeps VNI {}", id, *cluster.vni));
            }
            if (!cluster.sites.empty()) {
                problem(fmt::format("RELEASED cluster {} keeps {} site row(s)", id,
                                    cluster.sites.size()));
            }
            continue;
        }
        if (empty) {
            problem(fmt::format("cluster {} is still {} after everything was released", id,
                                state_name(cluster.state)));
        }
        if (!cluster.vni) {
            problem(fmt::format("live cluster {} ({}) has no VNI", id, state_name(cluster.state)));
        } else if (auto [other, fresh] = vnis.emplace(*cluster.vni, id); !fresh) {
            problem(
                fmt::format("clusters {} and {} share VNI {}", other->second, id, *cluster.vni));
        }
        if (cluster.sites.empty()) {
            problem(fmt::format("live cluster {} ({}) has no site", id, state_name(cluster.state)));
        }
        for (const auto& site : cluster.sites) {
            if (!expect.sites.contains(site.site)) {
                problem(fmt::format("cluster {} has unexpected site {}", id, site.site));
            }
            std::size_t matching = 0;
            if (held != leases_of.end()) {
                for (const DbLease* lease : held->second) {
                    matching += lease->block == site.block ? 1 : 0;
                }
            }
            if (matching != 1) {
                problem(
                    fmt::format("lost lease: live cluster {} ({}) site {} has block {} but "
                                "{} lease(s) of it",
                                id, state_name(cluster.state), site.site, site.block, matching));
            }
            const auto found = ordinals.find({id, site.site});
            const std::size_t count = found == ordinals.end() ? 0 : found->second.size();
            if (static_cast<std::int64_t>(count) != site.nodes) {
                problem(fmt::format("cluster {} site {} has {} node row(s) for {} node(s)", id,
                                    site.site, count, site.nodes));
            }
        }
        if (lease_count != cluster.sites.size()) {
            problem(fmt::format("live cluster {} holds {} lease(s) for {} site(s)", id, lease_count,
                                cluster.sites.size()));
        }
    }
    if (empty && !db.leases.empty()) {
        problem(fmt::format("{} lease(s) left after everything was released", db.leases.size()));
    }
    if (empty && !db.nodes.empty()) {
        problem(fmt::format("{} node row(s) left after everything was released", db.nodes.size()));
    }
    return problems;
}

// The GRC and its CRMs agree: every live GRC cluster is held by each of its (unreleased) sites,
// with the same block and VNI, and no CRM holds a GRC cluster the GRC does not have live.
// Nothing may be RELEASING any more: with every daemon up, releases complete.
std::vector<std::string> cross_check(const DbSnapshot& grc,
                                     const std::map<std::string, DbSnapshot>& crms) {
    std::vector<std::string> problems;
    for (const auto& [id, cluster] : grc.clusters) {
        if (cluster.state == kReleased) {
            continue;
        }
        if (cluster.state == kReleasing) {
            problems.push_back(fmt::format("grc: cluster {} is still RELEASING", id));
        }
        for (const auto& site : cluster.sites) {
            auto crm = crms.find(site.site);
            if (crm == crms.end()) {
                problems.push_back(
                    fmt::format("grc: cluster {} has site {} without a CRM", id, site.site));
                continue;
            }
            auto held = crm->second.clusters.find(id);
            const bool live_there =
                held != crm->second.clusters.end() && held->second.state != kReleased;
            if (site.released) {
                if (live_there) {
                    problems.push_back(fmt::format(
                        "crm-{} holds cluster {} ({}) whose release it confirmed to the GRC",
                        site.site, id, state_name(held->second.state)));
                }
                continue;
            }
            if (!live_there) {
                problems.push_back(fmt::format(
                    "grc: live cluster {} ({}) is {} at crm-{} (not adopted)", id,
                    state_name(cluster.state),
                    held == crm->second.clusters.end() ? "unknown" : state_name(held->second.state),
                    site.site));
                continue;
            }
            const DbCluster& there = held->second;
            if (there.state == kReleasing) {
                problems.push_back(
                    fmt::format("crm-{}: cluster {} is still RELEASING", site.site, id));
            }
            if (there.vni != cluster.vni || there.owner != cluster.owner ||
                there.sites.size() != 1 || there.sites[0].site != site.site ||
                there.sites[0].block != site.block || there.sites[0].nodes != site.nodes) {
                problems.push_back(fmt::format(
                    "crm-{}: cluster {} differs from the GRC's (vni {} vs {}, block {} vs {})",
                    site.site, id, there.vni.value_or(-1), cluster.vni.value_or(-1),
                    there.sites.empty() ? "none" : there.sites[0].block, site.block));
            }
        }
    }
    for (const auto& [site, crm] : crms) {
        for (const auto& [id, cluster] : crm.clusters) {
            auto at_grc = grc.clusters.find(id);
            if (at_grc == grc.clusters.end()) {
                problems.push_back(fmt::format("crm-{} has cluster {} ({}) that the GRC never made",
                                               site, id, state_name(cluster.state)));
                continue;
            }
            if (cluster.state == kReleased) {
                continue;
            }
            const DbSite* share = nullptr;
            for (const auto& candidate : at_grc->second.sites) {
                if (candidate.site == site) {
                    share = &candidate;
                }
            }
            if (at_grc->second.state == kReleased || share == nullptr || share->released) {
                problems.push_back(
                    fmt::format("crm-{} holds cluster {} ({}) that the GRC has released", site, id,
                                state_name(cluster.state)));
            }
        }
    }
    return problems;
}

// ---- clients ----

bool transient(grpc::StatusCode code) {
    return code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::DEADLINE_EXCEEDED ||
           code == grpc::StatusCode::CANCELLED;
}

std::string describe(const grpc::Status& status) {
    return fmt::format("code {} ({})", static_cast<int>(status.error_code()),
                       status.error_message());
}

template <typename F>
grpc::Status unary(const ClusterClient& client, std::string_view method, milliseconds timeout,
                   F&& body) {
    auto context = client.context(method, timeout);
    if (!context) {
        return {grpc::StatusCode::INTERNAL,
                "the client cannot make a context: " + context.error().message};
    }
    // Wait for the connection (within the deadline) instead of failing at once while it is down:
    // a blocking call is what drives a reconnection's TLS handshake in this process; with every
    // call failing fast, only gRPC's backup poller would, once every 5 s.
    (*context)->set_wait_for_ready(true);
    return client.call([&](auto& stub) { return body(stub, context->get()); });
}

grpc::Status get_cluster(const ClusterClient& client, const std::string& id, v1::Cluster* out,
                         milliseconds timeout) {
    v1::ClusterRef ref;
    ref.set_id(id);
    return unary(client, "GetCluster", timeout, [&](auto& stub, grpc::ClientContext* context) {
        return stub.GetCluster(context, ref, out);
    });
}

grpc::Status release_cluster(const ClusterClient& client, const std::string& id, v1::Cluster* out,
                             milliseconds timeout) {
    v1::ClusterRef ref;
    ref.set_id(id);
    return unary(client, "ReleaseCluster", timeout, [&](auto& stub, grpc::ClientContext* context) {
        return stub.ReleaseCluster(context, ref, out);
    });
}

// Calls `attempt` until it gives a non-transient answer or `budget` runs out (then the last
// transient status).
grpc::Status retrying(milliseconds budget, const std::function<grpc::Status()>& attempt,
                      std::atomic<long>* transients = nullptr) {
    const auto deadline = Clock::now() + budget;
    for (;;) {
        grpc::Status status = attempt();
        if (!transient(status.error_code()) || Clock::now() > deadline) {
            return status;
        }
        if (transients) {
            ++*transients;
        }
        std::this_thread::sleep_for(20ms);
    }
}

// A cluster some client was told it created.
struct Created {
    std::string id;
    std::string user;
    std::map<std::string, std::string> blocks;  // site -> block, from the create's answer
    bool release_answered = false;
};

// ---- a scenario ----

struct Stats {
    std::atomic<long> answered{0};  // creates with an answer (ok or refused): the cycles
    std::atomic<long> ok{0};
    std::atomic<long> refused{0};
    std::atomic<long> exhausted{0};    // refused: every block of the pool held (releases pending)
    std::atomic<long> held_checks{0};  // kept clusters seen held by every site's CRM
    std::atomic<long> transient{0};    // calls that met UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED
    std::atomic<long> ambiguous{0};    // creates without an answer: they may or may not have landed
    std::atomic<long> gets{0};
    std::atomic<long> releases{0};
    std::atomic<long> unreleased{0};  // releases that got no answer during the run
    int kills = 0;
    int early_kills = 0;
    int outages = 0;
    std::map<std::string, int> kills_of;
    long db_checks = 0;
    long cross_checks = 0;
    long leaked = 0;  // live clusters no client knew of (from ambiguous creates)
    long final_released = 0;
    milliseconds max_restart{0};
    milliseconds total_restart{0};
    int restarts = 0;
};

struct Scenario {
    std::string name;
    const Options* options = nullptr;
    fs::path dir;
    // The coordinator that answers the clients comes first.
    std::vector<std::unique_ptr<Daemon>> daemons;
    std::vector<DbExpect> expects;     // one per daemon
    std::vector<double> kill_weights;  // one per daemon
    bool with_grc = false;
    std::vector<std::string> users;                                   // one per client thread
    std::function<ClusterClient(const std::string& user)> client_of;  // "root" sees all
    // With a GRC: root at a site's CRM (MUNGE), to see that the site holds its share.
    std::function<ClusterClient(const std::string& site)> site_client_of;
    std::vector<std::string> sites;
    Cidr zone = *Cidr::parse("10.0.0.0/26");  // where explicit blocks collide
    Stats stats;
    std::mutex mutex;
    std::vector<Created> created;
    std::atomic<bool> stop{false};
    std::atomic<bool> killer_done{false};

    milliseconds call_timeout() const { return milliseconds(options->call_timeout_ms); }
};

std::string request_text(const v1::CreateClusterRequest& request) {
    std::string out;
    for (const auto& site : request.sites()) {
        out += fmt::format("{}{}:{}{}", out.empty() ? "" : " ", site.site(), site.nodes(),
                           site.block().empty() ? "" : ":" + site.block());
    }
    return out;
}

v1::CreateClusterRequest random_request(Scenario& s, std::mt19937_64& rng) {
    v1::CreateClusterRequest request;
    std::vector<std::string> sites = s.sites;
    std::shuffle(sites.begin(), sites.end(), rng);
    const std::size_t count = std::uniform_int_distribution<std::size_t>(1, sites.size())(rng);
    for (std::size_t i = 0; i < count; ++i) {
        auto* site = request.add_sites();
        site->set_site(sites[i]);
        const auto nodes = std::uniform_int_distribution<std::uint32_t>(1, 8)(rng);
        site->set_nodes(nodes);
        if (std::uniform_real_distribution<>(0, 1)(rng) < 0.25) {
            // A block in the small contended zone, as large as needed or twice that: explicit
            // requests of different clients (and of two sites of one request) overlap often.
            const int needed = *prefix_for_nodes(nodes);
            const int prefix = needed - std::uniform_int_distribution<int>(0, 1)(rng);
            const auto slots = std::uint64_t{1} << (prefix - s.zone.prefix());
            const auto index = std::uniform_int_distribution<std::uint64_t>(0, slots - 1)(rng);
            site->set_block(s.zone.subnet(prefix, index)->to_string());
        }
    }
    request.set_key_mode(std::uniform_int_distribution<int>(0, 1)(rng) != 0
                             ? v1::KEY_MODE_CA
                             : v1::KEY_MODE_EXCHANGE);
    return request;
}

// With a GRC: every site's CRM holds its share of the (live) cluster, with the same block,
// within the settle time (a CRM that was down or cut off gets it when it connects again).
bool sites_hold(Scenario& s, const std::map<std::string, ClusterClient>& sites,
                const Created& record, const std::function<void(std::string)>& fail) {
    const auto deadline = Clock::now() + std::chrono::seconds(s.options->settle_s);
    for (const auto& [site, block] : record.blocks) {
        const ClusterClient& crm = sites.at(site);
        for (;;) {
            v1::Cluster there;
            const auto got = get_cluster(crm, record.id, &there, s.call_timeout());
            if (got.ok() && there.sites_size() == 1 && there.sites(0).block() == block &&
                there.state() == v1::CLUSTER_STATE_PENDING) {
                break;
            }
            if (!got.ok() && !transient(got.error_code()) &&
                got.error_code() != grpc::StatusCode::NOT_FOUND) {
                fail(fmt::format("get of cluster {} at the CRM of site {}: {}", record.id, site,
                                 describe(got)));
                return false;
            }
            if (s.stop) {
                return true;
            }
            if (Clock::now() > deadline) {
                fail(fmt::format(
                    "cluster {} is live at the GRC but the CRM of site {} does not hold its "
                    "share ({}) after {} s",
                    record.id, site,
                    got.ok() ? fmt::format("{} with {} site(s)", state_name(there.state()),
                                           there.sites_size())
                             : describe(got),
                    s.options->settle_s));
                return false;
            }
            std::this_thread::sleep_for(50ms);
        }
    }
    ++s.stats.held_checks;
    return true;
}

// Reads the cluster back: same id and blocks, still PENDING (no pilot ever attaches here).
// False if it failed the test.
bool read_back(Scenario& s, const ClusterClient& client, const Created& record,
               const std::function<void(std::string)>& fail) {
    v1::Cluster seen;
    const auto got = retrying(
        10s, [&] { return get_cluster(client, record.id, &seen, s.call_timeout()); },
        &s.stats.transient);
    if (transient(got.error_code())) {
        return true;
    }
    if (!got.ok()) {
        fail(fmt::format("get of cluster {} it created: {}", record.id, describe(got)));
        return false;
    }
    ++s.stats.gets;
    std::map<std::string, std::string> blocks;
    for (const auto& site : seen.sites()) {
        blocks[site.site()] = site.block();
    }
    if (seen.id() != record.id || seen.state() != v1::CLUSTER_STATE_PENDING ||
        blocks != record.blocks) {
        fail(fmt::format("cluster {} reads back as {} in {} ({}) with {} site(s)", record.id,
                         seen.id(), state_name(seen.state()), seen.reason(), seen.sites_size()));
        return false;
    }
    return true;
}

// Releases a cluster this client created; false if it failed the test.
bool release_mine(Scenario& s, const ClusterClient& client, const Created& record, std::size_t slot,
                  const std::function<void(std::string)>& fail) {
    v1::Cluster released;
    const auto answer = retrying(
        10s, [&] { return release_cluster(client, record.id, &released, s.call_timeout()); },
        &s.stats.transient);
    if (transient(answer.error_code())) {
        ++s.stats.unreleased;  // the final check releases it
        return true;
    }
    if (!answer.ok()) {
        fail(fmt::format("release of cluster {} it created: {}", record.id, describe(answer)));
        return false;
    }
    ++s.stats.releases;
    const bool done = released.state() == v1::CLUSTER_STATE_RELEASED ||
                      (s.with_grc && released.state() == v1::CLUSTER_STATE_RELEASING);
    if (!done) {
        fail(fmt::format("release of cluster {} answered {}", record.id,
                         state_name(released.state())));
        return false;
    }
    std::lock_guard lock(s.mutex);
    s.created[slot].release_answered = true;
    return true;
}

// One client: create, sometimes read back, release; some clusters are kept alive for a while
// (up to kHeld per client, the oldest released first), so that live clusters span kills.
void client_loop(Scenario& s, std::size_t index) {
    constexpr std::size_t kHeld = 3;
    std::mt19937_64 rng(s.options->seed * 7919 + index * 104729 + (s.with_grc ? 1 : 0));
    const std::string user = s.users[index];
    const ClusterClient client = s.client_of(user);
    const auto timeout = s.call_timeout();
    // Bounded in count too; time (the scenario's budget) normally ends it first.
    const long cap = static_cast<long>(s.options->cycles) * 1000;
    const std::function<void(std::string)> fail = [&](std::string what) {
        g_failures.add(fmt::format("{} client {} ({}): {}", s.name, index, user, what));
        s.stop = true;
    };
    std::deque<std::pair<Created, std::size_t>> held;
    std::map<std::string, ClusterClient> sites;
    if (s.site_client_of) {
        for (const auto& site : s.sites) {
            sites.emplace(site, s.site_client_of(site));
        }
    }
    while (!s.stop) {
        if ((s.stats.answered >= s.options->cycles && s.killer_done) || s.stats.answered >= cap) {
            break;
        }
        const auto request = random_request(s, rng);
        v1::Cluster cluster;
        const grpc::Status created =
            unary(client, "CreateCluster", timeout, [&](auto& stub, grpc::ClientContext* c) {
                return stub.CreateCluster(c, request, &cluster);
            });
        if (transient(created.error_code())) {
            ++s.stats.transient;
            ++s.stats.ambiguous;
            std::this_thread::sleep_for(20ms);
            continue;
        }
        if (!created.ok()) {
            bool explicit_block = false;
            for (const auto& site : request.sites()) {
                explicit_block = explicit_block || !site.block().empty();
            }
            if (created.error_code() == grpc::StatusCode::FAILED_PRECONDITION && explicit_block &&
                created.error_message().find("overlaps") != std::string::npos) {
                ++s.stats.refused;
                ++s.stats.answered;
                continue;
            }
            // Released blocks stay held until every site confirms or the release times out;
            // with sites cut off while the GRC is killed again and again, that can fill a pool.
            if (created.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
                created.error_message().find("address pool exhausted") != std::string::npos) {
                ++s.stats.exhausted;
                ++s.stats.answered;
                std::this_thread::sleep_for(20ms);
                continue;
            }
            fail(fmt::format("create {} was answered with {}", request_text(request),
                             describe(created)));
            break;
        }
        ++s.stats.ok;
        ++s.stats.answered;
        Created record{cluster.id(), user, {}, false};
        for (const auto& site : cluster.sites()) {
            record.blocks[site.site()] = site.block();
        }
        if (cluster.owner() != user || cluster.state() != v1::CLUSTER_STATE_PENDING ||
            cluster.sites_size() != request.sites_size()) {
            fail(fmt::format("create {} answered with cluster {} of {} in {} with {} site(s)",
                             request_text(request), cluster.id(), cluster.owner(),
                             state_name(cluster.state()), cluster.sites_size()));
        }
        for (const auto& site : request.sites()) {
            if (!site.block().empty() && record.blocks[site.site()] != site.block()) {
                fail(fmt::format("create {}: site {} got block {}", request_text(request),
                                 site.site(), record.blocks[site.site()]));
            }
        }
        std::size_t slot = 0;
        {
            std::lock_guard lock(s.mutex);
            slot = s.created.size();
            s.created.push_back(record);
        }
        if (std::uniform_int_distribution<int>(0, 1)(rng) == 1 &&
            !read_back(s, client, record, fail)) {
            break;
        }
        if (std::uniform_real_distribution<>(0, 1)(rng) < 0.3) {
            held.emplace_back(std::move(record), slot);
            if (held.size() <= kHeld) {
                continue;
            }
            // The oldest kept cluster lived through whatever happened since: read it back first.
            std::tie(record, slot) = std::move(held.front());
            held.pop_front();
            if (!read_back(s, client, record, fail) ||
                (!sites.empty() && !sites_hold(s, sites, record, fail))) {
                break;
            }
        }
        if (!release_mine(s, client, record, slot, fail)) {
            break;
        }
    }
}

// ---- the main thread: killing, restarting, checking ----

bool all_alive(Scenario& s) {
    bool ok = true;
    for (auto& daemon : s.daemons) {
        if (auto gone = daemon->exited()) {
            g_failures.add(fmt::format("{}: {} {} on its own (not killed by this test)", s.name,
                                       daemon->name(), *gone));
            ok = false;
        }
    }
    return ok;
}

// Sleeps `duration` while watching that no daemon ends on its own.
bool watchful_sleep(Scenario& s, milliseconds duration) {
    const auto until = Clock::now() + duration;
    while (Clock::now() < until) {
        if (!all_alive(s)) {
            return false;
        }
        std::this_thread::sleep_for(std::min<milliseconds>(
            5ms, std::chrono::duration_cast<milliseconds>(until - Clock::now()) + 1ms));
    }
    return all_alive(s);
}

bool check_store(Scenario& s, std::size_t index, bool integrity, bool empty,
                 const std::string& when) {
    auto snapshot = read_snapshot(s.daemons[index]->state(), integrity);
    ++s.stats.db_checks;
    if (!snapshot) {
        g_failures.add(fmt::format("{} {}: {}", s.name, when, snapshot.error().message));
        return false;
    }
    const auto problems = check_snapshot(*snapshot, s.expects[index], empty);
    for (const auto& problem : problems) {
        g_failures.add(fmt::format("{} {}: {}", s.name, when, problem));
    }
    return problems.empty();
}

std::vector<std::string> cross_problems(Scenario& s) {
    auto grc = read_snapshot(s.daemons[0]->state(), false);
    if (!grc) {
        return {grc.error().message};
    }
    std::map<std::string, DbSnapshot> crms;
    for (std::size_t i = 1; i < s.daemons.size(); ++i) {
        auto crm = read_snapshot(s.daemons[i]->state(), false);
        if (!crm) {
            return {crm.error().message};
        }
        crms[*s.expects[i].sites.begin()] = std::move(*crm);
    }
    ++s.stats.cross_checks;
    return cross_check(*grc, crms);
}

// With a GRC: waits (bounded) until the GRC and the CRMs agree.
bool settle(Scenario& s, const std::string& when) {
    if (!s.with_grc) {
        return true;
    }
    const auto deadline = Clock::now() + std::chrono::seconds(s.options->settle_s);
    std::vector<std::string> problems;
    while (Clock::now() < deadline) {
        problems = cross_problems(s);
        if (problems.empty()) {
            return true;
        }
        if (!watchful_sleep(s, 100ms)) {
            return false;
        }
    }
    for (const auto& problem : problems) {
        g_failures.add(fmt::format("{} {}: not settled after {} s: {}", s.name, when,
                                   s.options->settle_s, problem));
    }
    return false;
}

bool start_all(Scenario& s) {
    for (auto& daemon : s.daemons) {
        if (!daemon->running()) {
            daemon->start();
        }
        if (!daemon->wait_ready(10s)) {
            g_failures.add(fmt::format("{}: {} did not accept connections within 10 s", s.name,
                                       daemon->name()));
            return false;
        }
    }
    return true;
}

bool stop_all(Scenario& s) {
    bool ok = true;
    // The CRMs first: a GRC that stops first only makes them reconnect, which is harmless too.
    for (std::size_t i = s.daemons.size(); i-- > 0;) {
        ok = s.daemons[i]->terminate(15s) && ok;
    }
    return ok;
}

void kill_and_restart(Scenario& s, std::mt19937_64& rng) {
    std::discrete_distribution<std::size_t> pick(s.kill_weights.begin(), s.kill_weights.end());
    const std::size_t target = pick(rng);
    Daemon& daemon = *s.daemons[target];
    const auto killed_at = Clock::now();
    if (!daemon.kill9()) {
        s.stop = true;
        return;
    }
    ++s.stats.kills;
    ++s.stats.kills_of[daemon.name()];
    // The store as the crash left it (nobody writes it now): every invariant must hold.
    check_store(s, target, true, false,
                fmt::format("after kill {} of {}", s.stats.kills, daemon.name()));
    if (std::uniform_real_distribution<>(0, 1)(rng) < s.options->outage_share) {
        // A long outage: releases that wait for this daemon time out meanwhile (at the GRC),
        // and what was freed is handed out again before it comes back.
        ++s.stats.outages;
        if (!watchful_sleep(s, milliseconds(s.options->outage_ms))) {
            s.stop = true;
            return;
        }
    }
    daemon.start();
    if (s.stats.kills < s.options->kills &&
        std::uniform_real_distribution<>(0, 1)(rng) < s.options->early_kill_share) {
        // Again while it starts: opening, checking and reconciling the store.
        std::this_thread::sleep_for(milliseconds(std::uniform_int_distribution<int>(0, 60)(rng)));
        if (!daemon.kill9()) {
            s.stop = true;
            return;
        }
        ++s.stats.kills;
        ++s.stats.early_kills;
        ++s.stats.kills_of[daemon.name()];
        check_store(s, target, true, false,
                    fmt::format("after early kill {} of {}", s.stats.kills, daemon.name()));
        daemon.start();
    }
    if (!daemon.wait_ready(10s)) {
        g_failures.add(fmt::format("{}: {} did not come back within 10 s of its restart", s.name,
                                   daemon.name()));
        s.stop = true;
        return;
    }
    const auto down = std::chrono::duration_cast<milliseconds>(Clock::now() - killed_at);
    s.stats.max_restart = std::max(s.stats.max_restart, down);
    s.stats.total_restart += down;
    ++s.stats.restarts;
    if (s.options->verbose) {
        fmt::print("  {}: kill {} of {}: back after {} ms; {} cycles so far\n", s.name,
                   s.stats.kills, daemon.name(), down.count(), s.stats.answered.load());
    }
}

void chaos(Scenario& s) {
    const auto deadline = Clock::now() + std::chrono::seconds(s.options->time_budget_s);
    std::vector<std::thread> clients;
    for (std::size_t i = 0; i < s.users.size(); ++i) {
        clients.emplace_back([&s, i] { client_loop(s, i); });
    }
    std::mt19937_64 rng(s.options->seed ^ (s.with_grc ? 0x9e3779b97f4a7c15ULL : 0x5bd1e995ULL));
    while (!s.stop && s.stats.kills < s.options->kills && Clock::now() < deadline) {
        // Let the clients come back first, so that every kill lands in the middle of traffic.
        const long before = s.stats.answered + s.stats.releases + s.stats.gets;
        const auto wait_until = Clock::now() + 10s;
        while (!s.stop && s.stats.answered + s.stats.releases + s.stats.gets < before + 2 &&
               Clock::now() < wait_until) {
            if (!watchful_sleep(s, 5ms)) {
                s.stop = true;
            }
        }
        if (s.stop) {
            break;
        }
        if (!watchful_sleep(s, milliseconds(std::uniform_int_distribution<int>(
                                   s.options->min_interval_ms, s.options->max_interval_ms)(rng)))) {
            s.stop = true;
            break;
        }
        kill_and_restart(s, rng);
    }
    s.killer_done = true;
    while (!s.stop && s.stats.answered < s.options->cycles && Clock::now() < deadline) {
        if (!watchful_sleep(s, 20ms)) {
            s.stop = true;
        }
    }
    if (!s.stop && (s.stats.answered < s.options->cycles || s.stats.kills < s.options->kills)) {
        g_failures.add(fmt::format("{}: only {} cycles and {} kills within {} s", s.name,
                                   s.stats.answered.load(), s.stats.kills,
                                   s.options->time_budget_s));
    }
    s.stop = true;
    for (auto& client : clients) {
        client.join();
    }
}

// After the chaos: settle, stop, check every store, start again, account for every cluster a
// client made, release everything, stop, check that nothing is left.
void finish(Scenario& s) {
    if (!all_alive(s) || !start_all(s)) {
        return;
    }
    settle(s, "after the kills");
    stop_all(s);
    for (std::size_t i = 0; i < s.daemons.size(); ++i) {
        check_store(s, i, true, false, "after the kills (stopped)");
    }
    if (s.with_grc) {
        for (const auto& problem : cross_problems(s)) {
            g_failures.add(fmt::format("{} after the kills (stopped): {}", s.name, problem));
        }
    }
    if (!start_all(s) || !settle(s, "after a clean restart")) {
        return;
    }

    // Every cluster a client was told it created is known: live (then released now) or RELEASED.
    const auto timeout = s.call_timeout();
    std::map<std::string, ClusterClient> clients;
    for (const auto& user : s.users) {
        if (!clients.contains(user)) {
            clients.emplace(user, s.client_of(user));
        }
    }
    clients.emplace("root", s.client_of("root"));
    std::set<std::string> known;
    std::vector<std::pair<std::string, std::string>> to_wait;  // id, user
    for (const auto& record : s.created) {
        known.insert(record.id);
        const ClusterClient& client = clients.at(record.user);
        v1::Cluster seen;
        auto got = retrying(10s, [&] { return get_cluster(client, record.id, &seen, timeout); });
        if (!got.ok()) {
            g_failures.add(fmt::format("{}: cluster {} that {} was told it created: {}", s.name,
                                       record.id, record.user, describe(got)));
            continue;
        }
        if (seen.state() == v1::CLUSTER_STATE_RELEASED) {
            continue;
        }
        if (record.release_answered &&
            !(s.with_grc && seen.state() == v1::CLUSTER_STATE_RELEASING)) {
            g_failures.add(fmt::format("{}: cluster {} is {} although its release was answered",
                                       s.name, record.id, state_name(seen.state())));
        }
        v1::Cluster released;
        auto answer =
            retrying(10s, [&] { return release_cluster(client, record.id, &released, timeout); });
        if (!answer.ok()) {
            g_failures.add(fmt::format("{}: final release of cluster {}: {}", s.name, record.id,
                                       describe(answer)));
            continue;
        }
        ++s.stats.final_released;
        to_wait.emplace_back(record.id, record.user);
    }
    // Clusters nobody was told about: creates whose answer was lost. Never more than those.
    v1::ListClustersRequest list;
    list.set_all(true);
    v1::ListClustersResponse listed;
    const ClusterClient& root = clients.at("root");
    auto all = retrying(10s, [&] {
        listed.Clear();
        return unary(root, "ListClusters", timeout, [&](auto& stub, grpc::ClientContext* c) {
            return stub.ListClusters(c, list, &listed);
        });
    });
    if (!all.ok()) {
        g_failures.add(fmt::format("{}: listing every cluster: {}", s.name, describe(all)));
        return;
    }
    for (const auto& cluster : listed.clusters()) {
        if (known.contains(cluster.id()) || cluster.state() == v1::CLUSTER_STATE_RELEASED) {
            continue;
        }
        ++s.stats.leaked;
        v1::Cluster released;
        auto answer =
            retrying(10s, [&] { return release_cluster(root, cluster.id(), &released, timeout); });
        if (!answer.ok()) {
            g_failures.add(fmt::format("{}: releasing unknown cluster {}: {}", s.name, cluster.id(),
                                       describe(answer)));
            continue;
        }
        to_wait.emplace_back(cluster.id(), "root");
    }
    if (s.stats.leaked > s.stats.ambiguous) {
        g_failures.add(
            fmt::format("{}: {} live clusters no client knew of, but only {} creates "
                        "went unanswered",
                        s.name, s.stats.leaked, s.stats.ambiguous.load()));
    }
    const auto deadline = Clock::now() + std::chrono::seconds(s.options->settle_s);
    for (const auto& [id, user] : to_wait) {
        v1::Cluster seen;
        for (;;) {
            auto got = get_cluster(clients.at(user), id, &seen, timeout);
            if (got.ok() && seen.state() == v1::CLUSTER_STATE_RELEASED) {
                break;
            }
            if (Clock::now() > deadline) {
                g_failures.add(fmt::format("{}: cluster {} not RELEASED within {} s ({})", s.name,
                                           id, s.options->settle_s,
                                           got.ok() ? state_name(seen.state()) : describe(got)));
                break;
            }
            std::this_thread::sleep_for(20ms);
        }
    }
    settle(s, "after releasing everything");
    stop_all(s);
    for (std::size_t i = 0; i < s.daemons.size(); ++i) {
        check_store(s, i, true, true, "at the end (stopped)");
    }
    // The coordinator's store knows every cluster a client created, RELEASED, and no more
    // clusters than creates that may have landed.
    auto coordinator = read_snapshot(s.daemons[0]->state(), false);
    if (coordinator) {
        for (const auto& record : s.created) {
            auto found = coordinator->clusters.find(record.id);
            if (found == coordinator->clusters.end() || found->second.state != kReleased) {
                g_failures.add(fmt::format(
                    "{}: at the end, cluster {} is {} in {}", s.name, record.id,
                    found == coordinator->clusters.end() ? "missing"
                                                         : state_name(found->second.state),
                    s.daemons[0]->name()));
            }
        }
        const long rows = static_cast<long>(coordinator->clusters.size());
        if (rows < s.stats.ok || rows > s.stats.ok + s.stats.ambiguous) {
            g_failures.add(fmt::format(
                "{}: {} holds {} clusters for {} created and {} unanswered "
                "creates",
                s.name, s.daemons[0]->name(), rows, s.stats.ok.load(), s.stats.ambiguous.load()));
        }
    }
    if (s.with_grc) {
        for (const auto& problem : cross_problems(s)) {
            g_failures.add(fmt::format("{} at the end (stopped): {}", s.name, problem));
        }
    }
}

void print_summary(const Scenario& s, milliseconds took, bool ok) {
    const Stats& st = s.stats;
    std::string kills_of;
    for (const auto& [name, count] : st.kills_of) {
        kills_of += fmt::format("{}{} {}", kills_of.empty() ? "" : ", ", name, count);
    }
    fmt::print("{}: {:.1f} s\n", s.name, std::chrono::duration<double>(took).count());
    fmt::print(
        "  cycles: {} creates answered: {} ok, {} refused (overlapping explicit blocks), {} "
        "refused (pool full); {} unanswered, of which {} had landed\n",
        st.answered.load(), st.ok.load(), st.refused.load(), st.exhausted.load(),
        st.ambiguous.load(), st.leaked);
    fmt::print(
        "  calls: {} gets, {} releases ({} unanswered), {} released at the end; {} calls "
        "met a dead daemon\n",
        st.gets.load(), st.releases.load(), st.unreleased.load(), st.final_released,
        st.transient.load());
    fmt::print(
        "  kills: {} ({}; {} while starting, {} followed by a {} ms outage); restart to "
        "ready {} ms on average, {} ms at most\n",
        st.kills, kills_of.empty() ? "none" : kills_of, st.early_kills, st.outages,
        s.options->outage_ms, st.restarts != 0 ? st.total_restart.count() / st.restarts : 0,
        st.max_restart.count());
    fmt::print("  checks: {} store snapshots{}: {}\n", st.db_checks,
               s.with_grc ? fmt::format(", {} GRC/CRM comparisons, {} kept clusters seen at "
                                        "every site",
                                        st.cross_checks, st.held_checks.load())
                          : "",
               ok ? "every invariant held" : "FAILED");
    (void)std::fflush(stdout);
}

void dump_logs(const Scenario& s) {
    for (const auto& daemon : s.daemons) {
        fmt::print(stderr, "--- last lines of {}'s log ---\n{}", daemon->name(),
                   daemon->log_tail(25));
    }
}

std::vector<std::string> crmd_args(const Options& o, const std::string& site, const fs::path& dir,
                                   const std::string& munge_socket) {
    return {o.crmd,
            "--site",
            site,
            "--state",
            (dir / fmt::format("crm-{}.db", site)).string(),
            "--listen",
            "unix:" + (dir / fmt::format("crm-{}.sock", site)).string(),
            "--munge-socket",
            munge_socket,
            "--release-timeout",
            "5",
            "--log-level",
            "info"};
}

// A crmd's place in `dir`: crm-SITE.sock, .db and .log.
std::unique_ptr<Daemon> crmd(const std::string& name, const std::string& site,
                             std::vector<std::string> args, const fs::path& dir) {
    return std::make_unique<Daemon>(
        name, std::move(args), dir / fmt::format("crm-{}.log", site),
        dir / fmt::format("crm-{}.db", site),
        testing::Endpoint{.unix_socket = (dir / fmt::format("crm-{}.sock", site)).string(),
                          .tcp_port = 0});
}

// Starts the daemons, kills them under load, checks, reports; whether it all held.
bool run_scenario(Scenario& s) {
    const auto started = Clock::now();
    const std::size_t failures = g_failures.count();
    if (start_all(s) && settle(s, "at the start")) {
        chaos(s);
        finish(s);
    }
    const bool ok = g_failures.count() == failures;
    print_summary(s, std::chrono::duration_cast<milliseconds>(Clock::now() - started), ok);
    if (!ok) {
        dump_logs(s);
    }
    stop_all(s);
    return ok;
}

bool run_crm_scenario(const Options& o, const TestMunged& munged, const fs::path& dir) {
    Scenario s;
    s.name = "crm";
    s.options = &o;
    s.dir = dir;
    s.sites = {"a"};
    s.zone = *Cidr::parse("10.50.255.0/26");
    auto args = crmd_args(o, "a", dir, munged.socket());
    args.insert(args.end(), {"--pool", "10.50.0.0/16", "--vni-range", "100-9999"});
    s.daemons.push_back(crmd("vc-crmd", "a", std::move(args), dir));
    s.expects.push_back({"crm", {"a"}, *Cidr::parse("10.50.0.0/16"), ""});
    s.kill_weights = {1.0};
    for (int i = 0; i < o.clients; ++i) {
        s.users.push_back("root");  // MUNGE says who calls: this program runs as root
    }
    const std::string target = "unix:" + (dir / "crm-a.sock").string();
    const std::string socket = munged.socket();
    s.client_of = [target, socket](const std::string&) {
        return ClusterClient::crm({target, socket}).value();
    };
    return run_scenario(s);
}

std::vector<std::string> grcd_args(const Options& o, const fs::path& dir,
                                   const std::string& address, const testing::TestPki& pki) {
    std::vector<std::string> args = {o.grcd,
                                     "--state",
                                     (dir / "grc.db").string(),
                                     "--listen",
                                     address,
                                     "--pool",
                                     "10.96.0.0/16",
                                     "--site",
                                     "a",
                                     "--site",
                                     "b",
                                     "--site",
                                     "c",
                                     "--vni-range",
                                     "5000-14999",
                                     "--release-timeout",
                                     std::to_string(o.grc_release_timeout_s),
                                     "--log-level",
                                     "info"};
    const auto tls = pki.tls_flags("grc");
    args.insert(args.end(), tls.begin(), tls.end());
    return args;
}

bool run_grc_scenario(const Options& o, const TestMunged& munged, const fs::path& dir) {
    const std::vector<std::string> names = {"alice", "bob", "root"};
    auto made = testing::TestPki::make(
        dir / "pki", {.sites = {"a", "b", "c"}, .users = names, .source_dir = o.source_dir});
    if (!made) {
        g_failures.add("cannot make the test PKI: " + made.error().message);
        return false;
    }
    const testing::TestPki& pki = *made;
    std::mt19937_64 port_rng(std::random_device{}());
    const int port = testing::free_loopback_port(port_rng);
    const std::string address = fmt::format("127.0.0.1:{}", port);
    Scenario s;
    s.name = "grc";
    s.options = &o;
    s.dir = dir;
    s.with_grc = true;
    s.sites = {"a", "b", "c"};
    s.zone = *Cidr::parse("10.96.255.0/26");
    s.daemons.push_back(std::make_unique<Daemon>(
        "vc-grcd", grcd_args(o, dir, address, pki), dir / "grc.log", dir / "grc.db",
        testing::Endpoint{.unix_socket = "", .tcp_port = port}));
    s.expects.push_back({"grc", {"a", "b", "c"}, *Cidr::parse("10.96.0.0/16"), ""});
    s.kill_weights.push_back(1.0 - o.grc_scenario_crm_share);
    for (const std::string& site : s.sites) {
        auto args = crmd_args(o, site, dir, munged.socket());
        const auto tls = pki.tls_flags("crm-" + site);
        args.insert(args.end(), {"--grc", address});
        args.insert(args.end(), tls.begin(), tls.end());
        s.daemons.push_back(crmd("vc-crmd-" + site, site, std::move(args), dir));
        s.expects.push_back({"crm-" + site, {site}, *Cidr::parse("10.96.0.0/16"), "grc"});
        s.kill_weights.push_back(o.grc_scenario_crm_share / static_cast<double>(s.sites.size()));
    }
    for (int i = 0; i < o.clients; ++i) {
        s.users.push_back(names[static_cast<std::size_t>(i) % names.size()]);
    }
    s.client_of = [address, pki](const std::string& user) {
        const auto& [cert, key] = pki.user(user);
        return ClusterClient::grc({address, pki.ca(), cert, key}).value();
    };
    s.site_client_of = [dir, socket = munged.socket()](const std::string& site) {
        return ClusterClient::crm(
                   {"unix:" + (dir / fmt::format("crm-{}.sock", site)).string(), socket})
            .value();
    };
    return run_scenario(s);
}

// main's body; main reports an exception that escapes it.
int run(int argc, char** argv) {
    Options o;
    CLI::App app{
        "coordinator-crash: SIGKILL vc-crmd and vc-grcd at random points under load and "
        "check that no lease is lost, duplicated or orphaned"};
    app.add_option("--scenario", o.scenario, "crm (one CRM killed), grc (GRC and CRMs), or both")
        ->check(CLI::IsMember({"crm", "grc", "both"}));
    app.add_option("--cycles", o.cycles, "answered creates per scenario, at least")
        ->check(CLI::Range(1, 100000));
    app.add_option("--kills", o.kills, "SIGKILLs per scenario")->check(CLI::Range(0, 10000));
    app.add_option("--clients", o.clients, "client threads")->check(CLI::Range(1, 64));
    app.add_option("--seed", o.seed, "random seed (kill times, targets, requests)");
    app.add_option("--min-interval", o.min_interval_ms, "ms of traffic before a kill, at least")
        ->check(CLI::Range(0, 60000));
    app.add_option("--max-interval", o.max_interval_ms, "ms of traffic before a kill, at most")
        ->check(CLI::Range(0, 60000));
    app.add_option("--early-kill-share", o.early_kill_share,
                   "share of kills followed by another while the daemon starts")
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--crm-kill-share", o.grc_scenario_crm_share,
                   "share of the grc scenario's kills that hit a CRM instead of the GRC")
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--outage-share", o.outage_share,
                   "share of kills after which the daemon stays down for --outage ms")
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--outage", o.outage_ms, "ms a daemon stays down after some kills")
        ->check(CLI::Range(0, 60000));
    app.add_option("--grc-release-timeout", o.grc_release_timeout_s,
                   "vc-grcd --release-timeout in s (a site down longer is released without it)")
        ->check(CLI::Range(1, 3600));
    app.add_option("--call-timeout", o.call_timeout_ms, "ms deadline of each client call")
        ->check(CLI::Range(50, 60000));
    app.add_option("--settle", o.settle_s, "s the GRC and the CRMs may take to agree")
        ->check(CLI::Range(1, 600));
    app.add_option("--time-budget", o.time_budget_s, "s per scenario before it counts as hung")
        ->check(CLI::Range(1, 3600));
    app.add_option("--vc-crmd", o.crmd, "the vc-crmd binary");
    app.add_option("--vc-grcd", o.grcd, "the vc-grcd binary");
    app.add_option("--source-dir", o.source_dir, "the source tree (for scripts/make-test-ca.sh)");
    app.add_flag("--keep", o.keep, "keep the temporary directory (logs, stores)");
    app.add_flag("-v,--verbose", o.verbose, "a line per kill");
    CLI11_PARSE(app, argc, argv);
    if (o.min_interval_ms > o.max_interval_ms) {
        (void)std::fprintf(stderr, "coordinator-crash: --min-interval is above --max-interval\n");
        return 2;
    }
    if (!TestMunged::available()) {
        std::printf("coordinator-crash: skipped: needs root and munged\n");
        return 77;
    }
    for (const auto& binary : {o.crmd, o.grcd}) {
        if (::access(binary.c_str(), X_OK) != 0) {
            (void)std::fprintf(stderr, "coordinator-crash: %s is not an executable\n",
                               binary.c_str());
            return 2;
        }
    }
    // Daemons and munged die with this program; a stop signal also removes the directory.
    testing::clean_up_on_signals("coordinator-crash");
    fmt::print("coordinator-crash: seed {}, {} cycles and {} kills per scenario, {} clients\n",
               o.seed, o.cycles, o.kills, o.clients);
    (void)std::fflush(stdout);
    bool ok = true;
    try {
        const testing::TempDir dir(
            {.prefix = "coordinator-crash", .searchable = true, .keep = o.keep});
        const TestMunged munged;
        if (o.scenario != "grc") {
            fs::create_directory(dir.path() / "crm");
            ok = run_crm_scenario(o, munged, dir.path() / "crm") && ok;
        }
        if (o.scenario != "crm") {
            fs::create_directory(dir.path() / "grc");
            ok = run_grc_scenario(o, munged, dir.path() / "grc") && ok;
        }
        if (o.keep) {
            fmt::print("kept the logs and stores in {}\n", dir.path().string());
        }
    } catch (const std::exception& error) {
        g_failures.add(std::string("aborted: ") + error.what());
        ok = false;
    }
    ok = ok && g_failures.count() == 0;
    fmt::print("coordinator-crash: {} ({} failure(s))\n", ok ? "PASS" : "FAIL", g_failures.count());
    return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& error) {
        (void)std::fprintf(stderr, "coordinator-crash: %s\n", error.what());
        return 1;
    }
}
