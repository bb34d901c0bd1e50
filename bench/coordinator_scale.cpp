// coordinator-scale-bench: the coordinators at scale, driven by simulated pilots (real gRPC
// clients of Crm.Attach over unix sockets, SimPilotFleet) and by vcctl's client code.
//
//  1. ready: one GRC engine and S CRM engines (default 100) in this process. Each CRM has its
//     own store (SQLite WAL, synchronous=FULL: an fsync per commit batch) in a temporary
//     directory and its own gRPC server on a unix socket, and connects to the GRC (mutual TLS on
//     127.0.0.1) with its site certificate from scripts/make-test-ca.sh. A user makes one
//     cluster of S sites x N nodes (default 100 x 100) through the GRC; then S x N simulated
//     pilots (N per CRM, over a few connections per CRM) attach, report keys and states, get the
//     view and report READY. The pilots run in --pilot-workers processes of their own (4), as
//     pilots run on nodes of their own (see PilotWorkers for why it matters here). Timed: create ->
//     every CRM holds its share, pilots start -> every pilot has the view, and pilots start -> the
//     GRC says READY (polled once every pilot has the view, so that watching 10,000 nodes does not
//     load the GRC; --observe watch streams WatchCluster instead). Pilots need the cluster's id in
//     their MUNGE credential, so the credentials are minted after the create and before the pilots
//     start, outside the timer (each real pilot mints its own, on its own node, in parallel); keys
//     are generated once, beforehand. ready = (create -> assigned) + (pilots start -> GRC READY).
//     Bytes per node = what the pilots received (SimPilotOutcome.bytes_received) / nodes. In
//     exchange mode every node receives every key (2 MB per node at 100 x 100, 20 GB for one
//     process holding both ends), so that mode runs at S x --exchange-nodes and its bytes per
//     node for S x N are computed with common_view, the code the GRC builds views with, on the
//     CA run's cluster; the same computation is checked against the run that was measured.
//  2. ready_ms_4: a 1-site x 4-node cluster at a standalone CRM (its own pool; MUNGE): the
//     median of R runs of create + (pilots start -> the CRM says READY, watched).
//  3. create+release per second: C client threads, each with its own ClusterClient, make and
//     release 1-site x P-node clusters for T seconds against a standalone CRM (no pilots, so a
//     release finishes at once), then the same against the GRC with 2 connected CRMs.
//
// Prints a table, then one JSON line. Everything lives in one temporary directory, removed at
// the end, on errors, on SIGINT/SIGTERM/SIGHUP and past --max-rss-gb of memory, as is the
// private munged this starts.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <grpcpp/grpcpp.h>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <spdlog/spdlog.h>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/grpc_runtime.hpp"
#include "coordinator/ipam.hpp"
#include "common/munge.hpp"
#include "coordinator/sshcert.hpp"
#include "coordinator/lease_store.hpp"
#include "vcctl/client.hpp"
#include "coordinator/cluster_store.hpp"
#include "coordinator/cluster_view.hpp"
#include "crm/crm.hpp"
#include "coordinator/daemon.hpp"
#include "grc/grc.hpp"
#include "tests/support/cleanup.hpp"
#include "tests/support/sim_pilot.hpp"
#include "coordinator/streams.hpp"
#include "tests/support/test_munged.hpp"

namespace vcpilot::coordinator {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

double seconds_between(Clock::time_point from, Clock::time_point to) {
    return std::chrono::duration<double>(to - from).count();
}

template <typename T>
T must(Result<T> result, std::string_view doing) {
    if (!result) {
        throw std::runtime_error(fmt::format("{}: {}", doing, result.error().message));
    }
    return std::move(*result);
}

void must_ok(const grpc::Status& status, std::string_view doing) {
    if (!status.ok()) {
        throw std::runtime_error(fmt::format("{}: {} (code {})", doing, status.error_message(),
                                             static_cast<int>(status.error_code())));
    }
}

// ---- cleanup on every path ----

// What must not outlive this process: the temporary directory (and the munged, which
// tests/support's leftovers know). Normal exits and exceptions clean up through destructors; a
// stop signal through this, from its own thread.
class Leftovers {
  public:
    static Leftovers& get() {
        static Leftovers leftovers;
        return leftovers;
    }
    void set_dir(const std::filesystem::path& dir) {
        std::lock_guard lock(mutex_);
        dir_ = dir;
    }
    void remove_dir() {
        std::lock_guard lock(mutex_);
        if (!dir_.empty()) {
            std::error_code ignored;
            std::filesystem::remove_all(dir_, ignored);
            dir_.clear();
        }
    }

  private:
    std::mutex mutex_;
    std::filesystem::path dir_;
};

// Blocks the stop signals in every thread (call before any thread starts) and handles them in
// one thread of its own: clean up, then exit.
void handle_stop_signals() {
    sigset_t signals;
    sigemptyset(&signals);
    for (int signal : {SIGINT, SIGTERM, SIGHUP}) {
        sigaddset(&signals, signal);
    }
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    std::thread([signals] {
        int signal = 0;
        sigwait(&signals, &signal);
        fmt::print(stderr, "coordinator-scale-bench: signal {}: cleaning up\n", signal);
        Leftovers::get().remove_dir();
        testing::leftovers::clean_up_and_exit(128 + signal);
    }).detach();
}

// On a shared machine a runaway simulation must not take every byte of memory (and have the
// kernel kill this process, or another, with no cleanup): past `limit_bytes` of resident memory,
// clean up and exit.
void watch_memory(std::uint64_t limit_bytes) {
    std::thread([limit_bytes] {
        const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
        for (;;) {
            std::this_thread::sleep_for(100ms);
            std::ifstream statm("/proc/self/statm");
            std::uint64_t size = 0, resident = 0;
            if (!(statm >> size >> resident) || resident * page <= limit_bytes) {
                continue;
            }
            fmt::print(stderr,
                       "coordinator-scale-bench: {:.1f} GB resident, more than the {:.1f} GB "
                       "allowed (--max-rss-gb): cleaning up and stopping\n",
                       static_cast<double>(resident * page) / 1e9,
                       static_cast<double>(limit_bytes) / 1e9);
            Leftovers::get().remove_dir();
            testing::leftovers::clean_up_and_exit(3);
        }
    }).detach();
}

class Workspace {
  public:
    explicit Workspace(const std::filesystem::path& base) {
        std::string name = (base / "vcpilot-bench-XXXXXX").string();
        if (::mkdtemp(name.data()) == nullptr) {
            throw std::runtime_error("cannot make a temporary directory in " + base.string());
        }
        path_ = name;
        Leftovers::get().set_dir(path_);
        ::chmod(path_.c_str(), 0755);  // munged's socket must be reachable through it
    }
    ~Workspace() { Leftovers::get().remove_dir(); }
    Workspace(const Workspace&) = delete;
    Workspace& operator=(const Workspace&) = delete;
    const std::filesystem::path& path() const { return path_; }

  private:
    std::filesystem::path path_;
};

// A private munged (own key, own socket), as user munge (tests/support); a stop signal kills it
// through the support library's leftovers.
using Munged = testing::TestMunged;

// ---- the coordinators ----

// Serves as the daemons do (serve_on) and says which port was chosen for HOST:0.
std::unique_ptr<grpc::Server> serve(const std::string& listen,
                                    std::shared_ptr<grpc::ServerCredentials> credentials,
                                    grpc::Service* service, int* port) {
    std::vector<int> ports;
    auto server = must(serve_on({listen}, {std::move(credentials)}, service, &ports), "serving");
    *port = ports.at(0);
    return server;
}

struct Pki {
    std::string ca, grc_cert, grc_key, alice_cert, alice_key;
    std::map<std::string, std::pair<std::string, std::string>> crm;  // site -> cert, key
};

Pki make_pki(const std::filesystem::path& source_dir, const std::filesystem::path& out,
             const std::vector<std::string>& sites) {
    std::string site_flags;
    for (const auto& site : sites) {
        site_flags += " --site " + site;
    }
    const auto log = out.parent_path() / "make-test-ca.log";
    const std::string command = fmt::format(
        "'{}/scripts/make-test-ca.sh' --out '{}' --grc-address 127.0.0.1{} --user "
        "alice >'{}' 2>&1",
        source_dir.string(), out.string(), site_flags, log.string());
    if (std::system(command.c_str()) != 0) {
        std::ifstream in(log);
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        throw std::runtime_error("make-test-ca.sh failed: " + text);
    }
    auto pem = [&](const std::string& name) {
        return must(read_pem("pki", (out / name).string()), "reading the test PKI");
    };
    Pki pki{pem("ca.pem"),         pem("grc.pem"),        pem("grc.key"),
            pem("user-alice.pem"), pem("user-alice.key"), {}};
    for (const auto& site : sites) {
        pki.crm[site] = {pem("crm-" + site + ".pem"), pem("crm-" + site + ".key")};
    }
    return pki;
}

struct CrmEngine {
    std::string site;
    std::string target;  // unix:PATH
    std::unique_ptr<CrmServer> crm;
    std::unique_ptr<grpc::Server> server;

    CrmEngine() = default;
    CrmEngine(CrmEngine&&) = default;
    CrmEngine& operator=(CrmEngine&&) = default;
    ~CrmEngine() { stop(); }
    void stop() {
        if (server) {
            server->Shutdown(std::chrono::system_clock::now() + 1s);
            server.reset();
        }
        crm.reset();  // stops the writer and the uplink
    }
};

CrmEngine start_crm(const std::filesystem::path& dir, CrmOptions options) {
    CrmEngine engine;
    engine.site = options.site;
    engine.target = "unix:" + (dir / ("crm-" + options.site + ".sock")).string();
    auto store = must(LeaseStore::open(dir / ("crm-" + options.site + ".db")), "CRM store");
    engine.crm = must(CrmServer::start(std::move(options), ClusterStore(std::move(store))),
                      "starting a CRM");
    int port = 0;
    engine.server =
        serve(engine.target, grpc::InsecureServerCredentials(), engine.crm->service(), &port);
    return engine;
}

struct GrcEngine {
    std::string target;  // 127.0.0.1:PORT
    std::unique_ptr<GrcServer> grc;
    std::unique_ptr<grpc::Server> server;

    ~GrcEngine() { stop(); }
    void stop() {
        if (server) {
            server->Shutdown(std::chrono::system_clock::now() + 1s);
            server.reset();
        }
        grc.reset();
    }
};

std::unique_ptr<GrcEngine> start_grc(const std::filesystem::path& dir, const Pki& pki,
                                     const std::vector<std::string>& sites) {
    GrcOptions options{
        .sites = {sites.begin(), sites.end()},
        .pool = must(AddressPool::create({must(Cidr::parse("10.96.0.0/12"), "")}), "GRC pool")};
    options.vni_first = 100000;
    options.vni_last = 199999;
    auto engine = std::make_unique<GrcEngine>();
    auto store = must(LeaseStore::open(dir / "grc.db"), "GRC store");
    engine->grc = must(GrcServer::start(std::move(options), ClusterStore(std::move(store))),
                       "starting the GRC");
    int port = 0;
    engine->server = serve("127.0.0.1:0", mutual_tls(pki.ca, pki.grc_cert, pki.grc_key),
                           engine->grc->service(), &port);
    engine->target = fmt::format("127.0.0.1:{}", port);
    return engine;
}

CrmOptions crm_options(const std::string& site, const std::string& munge_socket) {
    CrmOptions options;
    options.site = site;
    options.munge_socket = munge_socket;
    return options;
}

CrmOptions site_crm_options(const std::string& site, const std::string& munge_socket,
                            const GrcEngine& grc, const Pki& pki) {
    CrmOptions options = crm_options(site, munge_socket);
    const auto& [cert, key] = pki.crm.at(site);
    options.grc = GrcUplinkOptions{grc.target, pki.ca, cert, key};
    return options;
}

CrmOptions standalone_crm_options(const std::string& site, const std::string& munge_socket) {
    CrmOptions options = crm_options(site, munge_socket);
    options.pool = must(AddressPool::create({must(Cidr::parse("10.64.0.0/16"), "")}), "CRM pool");
    options.vni_first = 1000;
    options.vni_last = 1999;
    return options;
}

ClusterClient alice_at(const GrcEngine& grc, const Pki& pki) {
    return must(ClusterClient::grc({grc.target, pki.ca, pki.alice_cert, pki.alice_key}),
                "GRC client");
}

ClusterClient root_at(const CrmEngine& crm, const std::string& munge_socket) {
    return must(ClusterClient::crm({crm.target, munge_socket}), "CRM client");
}

// ---- calls ----

v1::CreateClusterRequest request_for(
    const std::vector<std::pair<std::string, std::uint32_t>>& sites, v1::KeyMode mode) {
    v1::CreateClusterRequest request;
    for (const auto& [name, nodes] : sites) {
        auto* site = request.add_sites();
        site->set_site(name);
        site->set_nodes(nodes);
    }
    request.set_key_mode(mode);
    return request;
}

grpc::Status create(const ClusterClient& client, const v1::CreateClusterRequest& request,
                    v1::Cluster* cluster, std::unique_ptr<grpc::ClientContext> context = {}) {
    if (!context) {
        context = must(client.context("CreateCluster", 120s), "credential");
    }
    return client.call(
        [&](auto& stub) { return stub.CreateCluster(context.get(), request, cluster); });
}

grpc::Status get(const ClusterClient& client, const std::string& id, v1::Cluster* cluster) {
    v1::ClusterRef ref;
    ref.set_id(id);
    auto context = must(client.context("GetCluster", 30s), "credential");
    return client.call([&](auto& stub) { return stub.GetCluster(context.get(), ref, cluster); });
}

grpc::Status release(const ClusterClient& client, const std::string& id) {
    v1::ClusterRef ref;
    ref.set_id(id);
    v1::Cluster cluster;
    auto context = must(client.context("ReleaseCluster", 60s), "credential");
    return client.call(
        [&](auto& stub) { return stub.ReleaseCluster(context.get(), ref, &cluster); });
}

grpc::Status list(const ClusterClient& client, v1::ListClustersResponse* response) {
    v1::ListClustersRequest request;
    auto context = must(client.context("ListClusters", 30s), "credential");
    return client.call(
        [&](auto& stub) { return stub.ListClusters(context.get(), request, response); });
}

// Polls (bounded) until `client` sees the cluster in `state`; when it did, or nothing.
std::optional<Clock::time_point> poll_state(const ClusterClient& client, const std::string& id,
                                            v1::ClusterState state, Clock::time_point deadline,
                                            std::chrono::milliseconds interval) {
    while (Clock::now() < deadline) {
        v1::Cluster cluster;
        if (get(client, id, &cluster).ok() && cluster.state() == state) {
            return Clock::now();
        }
        std::this_thread::sleep_for(interval);
    }
    return std::nullopt;
}

// A WatchCluster stream, read by a thread of its own: when each state was first seen.
class Watch {
  public:
    Watch(const ClusterClient& client, const std::string& id, std::chrono::milliseconds timeout)
        : context_(must(client.context("WatchCluster", timeout), "credential")) {
        v1::ClusterRef ref;
        ref.set_id(id);
        reader_ = client.call([&](auto& stub) { return stub.WatchCluster(context_.get(), ref); });
        thread_ = std::thread([this] { read(); });
    }
    ~Watch() {
        context_->TryCancel();
        thread_.join();
    }
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;

    // When the stream first carried `state`, waiting for it until `deadline`.
    std::optional<Clock::time_point> wait_for(v1::ClusterState state, Clock::time_point deadline) {
        std::unique_lock lock(mutex_);
        changed_.wait_until(lock, deadline, [&] { return ended_ || seen_.contains(state); });
        auto found = seen_.find(state);
        return found == seen_.end() ? std::nullopt : std::optional{found->second};
    }
    std::size_t messages() const {
        std::lock_guard lock(mutex_);
        return messages_;
    }
    std::uint64_t bytes() const {
        std::lock_guard lock(mutex_);
        return bytes_;
    }

    // What each message said about the nodes: attached, CONFIGURED or later, READY.
    struct Point {
        Clock::time_point at;
        std::size_t attached = 0, configured = 0, ready = 0;
    };
    std::vector<Point> timeline() const {
        std::lock_guard lock(mutex_);
        return timeline_;
    }

  private:
    void read() {
        v1::Cluster cluster;
        while (reader_->Read(&cluster)) {
            const auto now = Clock::now();
            Point point{now};
            for (const auto& node : cluster.nodes()) {
                point.attached += node.host().empty() ? 0 : 1;
                point.configured += node.state() >= v1::PILOT_STATE_CONFIGURED &&
                                            node.state() <= v1::PILOT_STATE_READY
                                        ? 1
                                        : 0;
                point.ready += node.state() == v1::PILOT_STATE_READY ? 1 : 0;
            }
            std::lock_guard lock(mutex_);
            ++messages_;
            bytes_ += cluster.ByteSizeLong();
            seen_.emplace(cluster.state(), now);
            timeline_.push_back(point);
            changed_.notify_all();
        }
        reader_->Finish();
        std::lock_guard lock(mutex_);
        ended_ = true;
        changed_.notify_all();
    }

    std::unique_ptr<grpc::ClientContext> context_;
    std::unique_ptr<grpc::ClientReader<v1::Cluster>> reader_;
    mutable std::mutex mutex_;
    std::condition_variable changed_;
    std::map<v1::ClusterState, Clock::time_point> seen_;
    std::vector<Point> timeline_;
    std::size_t messages_ = 0;
    std::uint64_t bytes_ = 0;
    bool ended_ = false;
    std::thread thread_;
};

// ---- CPU accounting ----

// CPU seconds used so far by this process's threads, by thread name (the coordinators' writers
// carry the program's name; gRPC names its own threads).
std::map<std::string, double> cpu_by_thread_name() {
    std::map<std::string, double> out;
    const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
    std::error_code error;
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task", error)) {
        std::ifstream in(task.path() / "stat");
        std::string line;
        if (!std::getline(in, line)) {
            continue;
        }
        const auto open = line.find('(');
        const auto close = line.rfind(')');
        if (open == std::string::npos || close == std::string::npos) {
            continue;
        }
        std::string name = line.substr(open + 1, close - open - 1);
        std::istringstream rest(line.substr(close + 2));
        std::string field;
        double utime = 0, stime = 0;
        for (int i = 3; i <= 15 && rest >> field; ++i) {  // fields 14 and 15: utime, stime
            if (i == 14) {
                utime = std::stod(field);
            } else if (i == 15) {
                stime = std::stod(field);
            }
        }
        out[name] += (utime + stime) / tick;
    }
    return out;
}

double process_cpu_seconds() {
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
    return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// "name 1.2 s, other 0.3 s" for the threads that used at least 0.05 s between two snapshots
// (threads that ended in between are missing).
std::string cpu_difference(const std::map<std::string, double>& before,
                           const std::map<std::string, double>& after) {
    std::vector<std::pair<double, std::string>> used;
    for (const auto& [name, seconds] : after) {
        auto found = before.find(name);
        const double delta = seconds - (found == before.end() ? 0 : found->second);
        if (delta >= 0.05) {
            used.emplace_back(delta, name);
        }
    }
    std::sort(used.rbegin(), used.rend());
    std::string text;
    for (const auto& [seconds, name] : used) {
        text += fmt::format("{}{} {:.1f} s", text.empty() ? "" : ", ", name, seconds);
    }
    return text;
}

// ---- pilots ----

struct KeyPair {
    std::string host, user;
};

// Distinct ed25519 keys for `count` nodes, as each node generates its own.
std::vector<KeyPair> make_keys(std::size_t count, unsigned threads) {
    std::vector<KeyPair> keys(count);
    std::vector<std::thread> workers;
    std::atomic<bool> failed = false;
    for (unsigned t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            for (std::size_t i = t; i < count; i += threads) {
                auto host = SshCa::generate();
                auto user = SshCa::generate();
                if (!host || !user) {
                    failed = true;
                    return;
                }
                keys[i] = {host->public_key_line("host"), user->public_key_line("user")};
            }
        });
    }
    for (auto& worker : workers) {
        worker.join();
    }
    if (failed) {
        throw std::runtime_error("cannot generate ed25519 keys");
    }
    return keys;
}

std::string host_of(const std::string& site, std::uint32_t node) {
    return fmt::format("{}-node{}", site, node);
}

// Node `node` (1-based) of site number `site` (1-based): 10.<site>.<node / 256>.<node % 256>.
std::string underlay_of(std::uint32_t site, std::uint32_t node) {
    return fmt::format("10.{}.{}.{}", site, node >> 8, node & 255);
}

// One credential per pilot, minted by root through the private munged, a few threads at once.
void mint_credentials(std::vector<SimPilotSpec*>& specs, const std::string& munge_socket,
                      unsigned threads) {
    std::vector<std::thread> workers;
    std::atomic<bool> failed = false;
    std::string error;
    std::mutex error_mutex;
    for (unsigned t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            for (std::size_t i = t; i < specs.size() && !failed; i += threads) {
                SimPilotSpec& spec = *specs[i];
                auto credential = munge_encode(
                    fmt::format("vcpilot-attach\n{}\n{}\n{}", spec.cluster, spec.host, spec.job),
                    munge_socket);
                if (!credential) {
                    std::lock_guard lock(error_mutex);
                    error = credential.error().message;
                    failed = true;
                    return;
                }
                spec.credential = std::move(*credential);
            }
        });
    }
    for (auto& worker : workers) {
        worker.join();
    }
    if (failed) {
        throw std::runtime_error("minting pilot credentials: " + error);
    }
}

// Waits (bounded) until every pilot of every fleet has the view; the number that do.
std::size_t wait_all_ready(const std::vector<std::unique_ptr<SimPilotFleet>>& fleets,
                           Clock::time_point deadline) {
    std::size_t ready = 0;
    for (const auto& fleet : fleets) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::max(deadline - Clock::now(), Clock::duration::zero()));
        ready += fleet->wait_ready(fleet->size(), left);
    }
    return ready;
}

// Why pilots did not get there: the first few distinct stream endings.
void explain_failures(const std::vector<std::unique_ptr<SimPilotFleet>>& fleets) {
    std::map<std::string, std::size_t> reasons;
    std::size_t no_setup = 0, no_view = 0;
    for (const auto& fleet : fleets) {
        for (std::size_t i = 0; i < fleet->size(); ++i) {
            const auto outcome = fleet->outcome(i);
            no_setup += outcome.got_setup ? 0 : 1;
            no_view += outcome.got_view ? 0 : 1;
            if (outcome.done && !outcome.final_status.ok()) {
                ++reasons[outcome.final_status.error_message()];
            }
        }
    }
    fmt::print(stderr, "  pilots without SETUP: {}, without the view: {}\n", no_setup, no_view);
    std::size_t shown = 0;
    for (const auto& [reason, count] : reasons) {
        if (++shown > 5) {
            break;
        }
        fmt::print(stderr, "  {} pilot(s) ended with: {}\n", count, reason);
    }
}

// ---- 1: a cluster of S sites x N nodes through the GRC ----

struct Options {
    std::filesystem::path source_dir = VCPILOT_SOURCE_DIR;
    std::filesystem::path tmp_dir = std::filesystem::temp_directory_path();
    std::uint32_t sites = 100;
    std::uint32_t nodes = 100;
    std::uint32_t channels_per_site = 10;
    std::string observe = "poll";
    std::vector<std::string> modes = {"ca", "exchange"};
    // Exchange mode sends every node every key: at 100 x 100 that is 2 MB per node, 20 GB for
    // one process holding both ends. It runs at this many nodes per site, and the full shape's
    // bytes per node are computed (and checked against the measured run).
    std::uint32_t exchange_nodes = 10;
    int small_runs = 20;
    double seconds = 5;
    int clients = 16;
    std::uint32_t pair_nodes = 4;
    int timeout_s = 120;
    std::vector<std::string> phases = {"ready", "small", "throughput"};
    std::string log_level = "warn";
    unsigned mint_threads = 4;
    // Processes the simulated pilots of the big cluster run in (see PilotWorkers).
    unsigned pilot_workers = 4;
    double max_rss_gb = 8;
    bool timeline = false;
};

struct ScaleFigures {
    v1::KeyMode mode = v1::KEY_MODE_CA;
    double create_s = 0;     // the CreateCluster call
    double assigned_s = 0;   // create -> every CRM holds its share
    double mint_s = 0;       // minting the pilots' credentials (not timed)
    double views_s = 0;      // pilots start -> every pilot has the view
    double grc_ready_s = 0;  // pilots start -> the GRC says READY
    double ready_s = 0;      // assigned_s + grc_ready_s
    double release_s = 0;    // release -> the GRC says RELEASED
    double bytes_per_node = 0;
    std::size_t watch_messages = 0;
    std::uint64_t watch_bytes = 0;
    double cpu_s = 0;         // CPU seconds of this process, pilots start -> GRC READY
    std::string cpu_threads;  // the same by thread name
    std::uint32_t nodes_per_site = 0;
    double setup_bytes_per_node = 0;  // of bytes_per_node, the SETUP commands
    v1::Cluster cluster;              // as CreateCluster returned it
    bool ok = false;
};

// ---- pilot workers ----
//
// The big cluster's simulated pilots run in processes of their own, as pilots run on nodes of
// their own. In one process with the GRC and the CRMs, every call shares gRPC's one callback
// completion queue, and Debian's libgrpc (built without NDEBUG) looks through every outstanding
// operation of that queue at each completion (cq_check_tag in completion_queue.cc): at 10,000
// pilots some 40,000 operations, 12 % of all CPU, growing with the square of the pilots. The
// workers are forked before this process first uses gRPC and take commands over a pipe, a line
// each:
//   prepare CLUSTER NODES JOB TARGET...  (a CRM target per site of the worker) -> prepared MINT_S
//   go                                   -> views READY TOTAL STEADY_NS BYTES SETUP_BYTES
//   drain MS                             -> drained
//   exit

struct WorkerSite {
    std::uint32_t number;  // 1-based: site "s<number>"
};

// Reads one line from `fd`, waiting at most until `deadline`; nothing on end of file or time.
std::optional<std::string> read_line(int fd, Clock::time_point deadline) {
    std::string line;
    for (;;) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) {
            return std::nullopt;
        }
        pollfd readable{fd, POLLIN, 0};
        const int ready = ::poll(&readable, 1, static_cast<int>(left.count()));
        if (ready < 0 && errno == EINTR) {
            continue;
        }
        if (ready <= 0) {
            return std::nullopt;
        }
        char c = 0;
        const ssize_t n = ::read(fd, &c, 1);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return std::nullopt;
        }
        if (c == '\n') {
            return line;
        }
        line += c;
    }
}

void write_line(int fd, const std::string& line) {
    if (::dprintf(fd, "%s\n", line.c_str()) != static_cast<int>(line.size() + 1)) {
        throw std::runtime_error("a pilot worker's pipe broke");
    }
}

std::vector<std::string> words_of(const std::string& line) {
    std::istringstream in(line);
    std::vector<std::string> words;
    for (std::string word; in >> word;) {
        words.push_back(word);
    }
    return words;
}

// The worker: runs the commands until "exit" or end of input, then _exits (the parent's
// workspace and daemons are the parent's to clean up).
[[noreturn]] void pilot_worker(int in, int out, const Options& options,
                               const std::vector<KeyPair>& keys, const std::string& munge_socket,
                               std::vector<std::uint32_t> sites) {
    try {
        std::vector<std::unique_ptr<SimPilotFleet>> fleets;
        const auto forever = Clock::now() + std::chrono::hours(24);
        while (auto line = read_line(in, forever)) {
            const auto words = words_of(*line);
            if (words.empty()) {
                continue;
            }
            if (words[0] == "prepare" && words.size() == 4 + sites.size()) {
                const std::string& cluster = words[1];
                const auto nodes = static_cast<std::uint32_t>(std::stoul(words[2]));
                const std::string& job = words[3];
                const auto t = Clock::now();
                std::vector<std::vector<SimPilotSpec>> specs(sites.size());
                std::vector<SimPilotSpec*> all;
                for (std::size_t k = 0; k < sites.size(); ++k) {
                    const std::uint32_t s = sites[k];
                    specs[k].resize(nodes);
                    for (std::uint32_t n = 0; n < nodes; ++n) {
                        SimPilotSpec& spec = specs[k][n];
                        spec.cluster = cluster;
                        spec.host = host_of(fmt::format("s{}", s), n + 1);
                        spec.job = job;
                        spec.underlay = underlay_of(s, n + 1);
                        spec.rank = n + 1;  // as Slurm starts them: the site's n-th node
                        const KeyPair& pair = keys[std::size_t{s - 1} * options.nodes + n];
                        spec.host_key = pair.host;
                        spec.user_key = pair.user;
                        all.push_back(&spec);
                    }
                }
                mint_credentials(all, munge_socket, options.mint_threads);
                fleets.clear();
                for (std::size_t k = 0; k < sites.size(); ++k) {
                    const std::size_t channels =
                        std::min<std::size_t>(options.channels_per_site, nodes);
                    fleets.push_back(std::make_unique<SimPilotFleet>(
                        separate_channels(words[4 + k], channels), std::move(specs[k])));
                }
                write_line(out, fmt::format("prepared {:.3f}", seconds_between(t, Clock::now())));
            } else if (words[0] == "go") {
                for (auto& fleet : fleets) {
                    fleet->start();
                }
                std::size_t total = 0;
                for (const auto& fleet : fleets) {
                    total += fleet->size();
                }
                const std::size_t ready =
                    wait_all_ready(fleets, Clock::now() + std::chrono::seconds(options.timeout_s));
                const auto t_views = Clock::now();
                if (ready < total) {
                    explain_failures(fleets);
                }
                std::uint64_t bytes = 0, setup_bytes = 0;
                for (const auto& fleet : fleets) {
                    bytes += fleet->bytes_received();
                    for (std::size_t i = 0; i < fleet->size(); ++i) {
                        v1::PilotCommand command;
                        *command.mutable_setup() = fleet->outcome(i).setup;
                        setup_bytes += command.ByteSizeLong();
                    }
                }
                write_line(out,
                           fmt::format("views {} {} {} {} {}", ready, total,
                                       t_views.time_since_epoch().count(), bytes, setup_bytes));
            } else if (words[0] == "drain" && words.size() == 2) {
                const std::chrono::milliseconds wait(std::stol(words[1]));
                const auto until = Clock::now() + wait;
                for (auto& fleet : fleets) {
                    fleet->wait_done(std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::max(until - Clock::now(), Clock::duration(10ms))));
                }
                fleets.clear();
                write_line(out, "drained");
            } else if (words[0] == "exit") {
                break;
            } else {
                throw std::runtime_error("unknown command " + *line);
            }
        }
        fleets.clear();
    } catch (const std::exception& error) {
        fmt::print(stderr, "pilot worker {}: {}\n", ::getpid(), error.what());
        std::fflush(stderr);
        ::_exit(1);
    }
    std::fflush(stdout);
    std::fflush(stderr);
    ::_exit(0);
}

// The parent's side: forks the workers (before any gRPC use in this process), sites dealt out
// in contiguous runs.
class PilotWorkers {
  public:
    struct Views {
        std::size_t ready = 0, total = 0;
        Clock::time_point last;  // when the last worker's last pilot had the view
        std::uint64_t bytes = 0, setup_bytes = 0;
    };

    PilotWorkers(const Options& options, const std::vector<KeyPair>& keys,
                 const std::string& munge_socket) {
        const unsigned count = std::max(1U, std::min(options.pilot_workers, options.sites));
        std::fflush(stdout);
        std::fflush(stderr);
        for (unsigned w = 0; w < count; ++w) {
            std::vector<std::uint32_t> sites;
            for (std::uint32_t s = w * options.sites / count + 1;
                 s <= (w + 1) * options.sites / count; ++s) {
                sites.push_back(s);
            }
            int down[2], up[2];
            if (::pipe2(down, O_CLOEXEC) != 0 || ::pipe2(up, O_CLOEXEC) != 0) {
                throw std::runtime_error("pipe for a pilot worker failed");
            }
            const pid_t pid = ::fork();
            if (pid < 0) {
                throw std::runtime_error("fork of a pilot worker failed");
            }
            if (pid == 0) {
                ::close(down[1]);
                ::close(up[0]);
                for (const auto& other : workers_) {
                    ::close(other.to);
                    ::close(other.from);
                }
                pilot_worker(down[0], up[1], options, keys, munge_socket, std::move(sites));
            }
            ::close(down[0]);
            ::close(up[1]);
            workers_.push_back({pid, down[1], up[0], std::move(sites)});
        }
    }
    ~PilotWorkers() {
        for (auto& worker : workers_) {
            try {
                write_line(worker.to, "exit");
            } catch (const std::exception&) {
            }
            ::close(worker.to);
        }
        for (auto& worker : workers_) {
            const auto deadline = Clock::now() + 30s;
            int status = 0;
            while (::waitpid(worker.pid, &status, WNOHANG) == 0) {
                if (Clock::now() > deadline) {
                    ::kill(worker.pid, SIGKILL);
                    ::waitpid(worker.pid, &status, 0);
                    break;
                }
                std::this_thread::sleep_for(10ms);
            }
            ::close(worker.from);
        }
    }
    PilotWorkers(const PilotWorkers&) = delete;
    PilotWorkers& operator=(const PilotWorkers&) = delete;

    // Each worker makes its pilots (credentials minted: not timed); the longest it took.
    double prepare(const std::string& cluster, std::uint32_t nodes, const std::string& job,
                   const std::vector<std::string>& targets, Clock::time_point deadline) {
        for (const auto& worker : workers_) {
            std::string line = fmt::format("prepare {} {} {}", cluster, nodes, job);
            for (const std::uint32_t s : worker.sites) {
                line += " " + targets[s - 1];
            }
            write_line(worker.to, line);
        }
        double longest = 0;
        for (const auto& words : answers("prepared", 2, deadline)) {
            longest = std::max(longest, std::stod(words[1]));
        }
        return longest;
    }

    void go() {
        for (const auto& worker : workers_) {
            write_line(worker.to, "go");
        }
    }

    Views wait_views(Clock::time_point deadline) {
        Views views;
        for (const auto& words : answers("views", 6, deadline + 10s)) {
            views.ready += std::stoull(words[1]);
            views.total += std::stoull(words[2]);
            views.last =
                std::max(views.last, Clock::time_point(Clock::duration(std::stoll(words[3]))));
            views.bytes += std::stoull(words[4]);
            views.setup_bytes += std::stoull(words[5]);
        }
        return views;
    }

    void drain(std::chrono::milliseconds wait) {
        for (const auto& worker : workers_) {
            write_line(worker.to, fmt::format("drain {}", wait.count()));
        }
        answers("drained", 1, Clock::now() + wait + 10s);
    }

    // CPU seconds the workers have used so far.
    double cpu_seconds() const {
        const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
        double total = 0;
        for (const auto& worker : workers_) {
            std::ifstream in("/proc/" + std::to_string(worker.pid) + "/stat");
            std::string line;
            std::getline(in, line);
            const auto close = line.rfind(')');
            if (close == std::string::npos) {
                continue;
            }
            std::istringstream rest(line.substr(close + 2));
            std::string field;
            for (int i = 3; i <= 15 && rest >> field; ++i) {  // fields 14 and 15: utime, stime
                if (i == 14 || i == 15) {
                    total += std::stod(field) / tick;
                }
            }
        }
        return total;
    }

    std::size_t size() const { return workers_.size(); }

  private:
    struct Worker {
        pid_t pid;
        int to, from;
        std::vector<std::uint32_t> sites;
    };

    // Every worker's answer, which must start with `word` and have `words` words.
    std::vector<std::vector<std::string>> answers(const std::string& word, std::size_t words,
                                                  Clock::time_point deadline) {
        std::vector<std::vector<std::string>> out;
        for (const auto& worker : workers_) {
            auto line = read_line(worker.from, deadline);
            if (!line) {
                throw std::runtime_error(
                    fmt::format("pilot worker {} did not answer '{}' in time", worker.pid, word));
            }
            auto parts = words_of(*line);
            if (parts.size() != words || parts[0] != word) {
                throw std::runtime_error(
                    fmt::format("pilot worker {}: '{}', not '{}'", worker.pid, *line, word));
            }
            out.push_back(std::move(parts));
        }
        return out;
    }

    std::vector<Worker> workers_;
};

class ScaleBench {
  public:
    ScaleBench(const Options& options, const std::filesystem::path& dir, const Munged& munged)
        : options_(options), dir_(dir), munged_(munged) {
        std::filesystem::create_directories(dir_);
        for (std::uint32_t s = 1; s <= options_.sites; ++s) {
            sites_.push_back(fmt::format("s{}", s));
        }
        auto t = Clock::now();
        pki_ = make_pki(options_.source_dir, dir_ / "pki", sites_);
        fmt::print("  test PKI for {} sites: {:.1f} s\n", sites_.size(),
                   seconds_between(t, Clock::now()));
        t = Clock::now();
        keys_ = make_keys(std::size_t{options_.sites} * options_.nodes, 2);
        fmt::print("  {} ed25519 key pairs: {:.1f} s\n", keys_.size(),
                   seconds_between(t, Clock::now()));
        workers_.emplace(options_, keys_, munged_.socket());  // before this process uses gRPC
        fmt::print("  the pilots run in {} worker process(es)\n", workers_->size());
        t = Clock::now();
        grc_ = start_grc(dir_, pki_, sites_);
        for (const auto& site : sites_) {
            crms_.push_back(start_crm(dir_, site_crm_options(site, munged_.socket(), *grc_, pki_)));
            crm_clients_.push_back(root_at(crms_.back(), munged_.socket()));
        }
        alice_.emplace(alice_at(*grc_, pki_));
        warm_up();
        fmt::print("  GRC + {} CRMs up, every CRM connected: {:.1f} s\n", crms_.size(),
                   seconds_between(t, Clock::now()));
    }
    ~ScaleBench() {
        // The pilots first, then the sites (their streams to the GRC end), then the GRC.
        workers_.reset();
        crms_.clear();
        grc_.reset();
    }

    // One cluster of every site x `nodes` nodes (at most --nodes) in key mode `mode`.
    ScaleFigures run(v1::KeyMode mode, std::uint32_t nodes) {
        ScaleFigures figures;
        figures.mode = mode;
        figures.nodes_per_site = nodes;
        const auto deadline = Clock::now() + std::chrono::seconds(options_.timeout_s);
        std::vector<std::pair<std::string, std::uint32_t>> shape;
        for (const auto& site : sites_) {
            shape.emplace_back(site, nodes);
        }
        const auto request = request_for(shape, mode);
        auto context = must(alice_->context("CreateCluster", 120s), "credential");

        const auto t_create = Clock::now();
        v1::Cluster cluster;
        must_ok(create(*alice_, request, &cluster, std::move(context)), "creating the cluster");
        const auto t_created = Clock::now();
        const std::string id = cluster.id();
        if (!assigned_everywhere(id, deadline)) {
            fmt::print(stderr, "  not every CRM got its share of {} in time\n", id);
            return figures;
        }
        const auto t_assigned = Clock::now();

        // Untimed: what each pilot would do on its own node before it starts.
        const std::string job = mode == v1::KEY_MODE_CA ? "101" : "102";
        std::vector<std::string> targets;
        for (const auto& crm : crms_) {
            targets.push_back(crm.target);
        }
        figures.mint_s = workers_->prepare(id, nodes, job, targets, deadline);
        std::optional<Watch> watch;
        if (options_.observe == "watch") {
            watch.emplace(*alice_, id, std::chrono::seconds(options_.timeout_s + 60));
            if (!watch->wait_for(v1::CLUSTER_STATE_PENDING, deadline)) {
                fmt::print(stderr, "  the GRC's watch of {} did not start\n", id);
                return figures;
            }
        }

        const auto workers_cpu_before = workers_->cpu_seconds();
        const auto cpu_before = process_cpu_seconds();
        const auto threads_before = cpu_by_thread_name();
        const auto t_start = Clock::now();
        workers_->go();
        const auto views = workers_->wait_views(deadline);
        const std::size_t total = views.total;
        const auto t_views = views.last;
        if (views.ready < total) {
            fmt::print(stderr, "  only {} of {} pilots got the view in time\n", views.ready, total);
            release_and_drain(id, deadline);
            return figures;
        }
        std::optional<Clock::time_point> t_ready =
            watch ? watch->wait_for(v1::CLUSTER_STATE_READY, deadline)
                  : poll_state(*alice_, id, v1::CLUSTER_STATE_READY, deadline, 2ms);
        if (!t_ready) {
            fmt::print(stderr, "  the GRC did not say READY in time\n");
            release_and_drain(id, deadline);
            return figures;
        }
        const double workers_cpu = workers_->cpu_seconds() - workers_cpu_before;
        figures.cpu_s = process_cpu_seconds() - cpu_before + workers_cpu;
        figures.cpu_threads = fmt::format("pilot workers {:.1f} s; GRC and CRMs: {}", workers_cpu,
                                          cpu_difference(threads_before, cpu_by_thread_name()));
        if (watch) {
            figures.watch_messages = watch->messages();
            figures.watch_bytes = watch->bytes();
            if (options_.timeline) {
                fmt::print(
                    "  the GRC's view (WatchCluster), seconds after the pilots started: "
                    "attached / CONFIGURED+ / READY nodes\n");
                for (const auto& point : watch->timeline()) {
                    if (point.at >= t_start) {
                        fmt::print("    {:7.3f} s  {:6} {:6} {:6}\n",
                                   seconds_between(t_start, point.at), point.attached,
                                   point.configured, point.ready);
                    }
                }
            }
        }
        figures.create_s = seconds_between(t_create, t_created);
        figures.assigned_s = seconds_between(t_create, t_assigned);
        figures.views_s = seconds_between(t_start, t_views);
        figures.grc_ready_s = seconds_between(t_start, *t_ready);
        figures.ready_s = figures.assigned_s + figures.grc_ready_s;
        figures.bytes_per_node = static_cast<double>(views.bytes) / static_cast<double>(total);
        figures.setup_bytes_per_node =
            static_cast<double>(views.setup_bytes) / static_cast<double>(total);
        figures.cluster = cluster;
        watch.reset();
        const auto t_release = Clock::now();
        const auto released = release_and_drain(id, deadline);
        figures.release_s = released ? seconds_between(t_release, *released) : -1;
        figures.ok = true;
        return figures;
    }

    // What each node of `cluster` would receive in exchange mode: `setup_bytes` of SETUP, and the
    // view as the GRC builds it (common_view, the same code), with every node's keys (the keys
    // and underlay addresses the pilots of this benchmark use).
    double exchange_bytes_per_node(const v1::Cluster& cluster, double setup_bytes) const {
        ClusterRecord record;
        record.id = cluster.id();
        record.key_mode = v1::KEY_MODE_EXCHANGE;
        record.name_prefix = cluster.name_prefix();
        record.slots = cluster.slots();
        std::vector<NodeRecord> nodes;
        for (const auto& site : cluster.sites()) {
            record.sites.push_back({site.site(), site.nodes(),
                                    must(Cidr::parse(site.block()), "a site's block"), false, ""});
            const auto number = static_cast<std::uint32_t>(std::stoul(site.site().substr(1)));
            for (std::uint32_t n = 1; n <= site.nodes(); ++n) {
                NodeRecord node;
                node.site = site.site();
                node.ordinal = n;
                node.underlay = underlay_of(number, n);
                const KeyPair& keys = keys_[std::size_t{number - 1} * options_.nodes + (n - 1)];
                node.host_key = keys.host;
                node.user_key = keys.user;
                nodes.push_back(std::move(node));
            }
        }
        v1::PilotCommand command;
        *command.mutable_view() = must(common_view(record, nodes, nullptr), "the view");
        return setup_bytes + static_cast<double>(command.ByteSizeLong());
    }

  private:
    // Every CRM connected: a 1-node-per-site cluster reaches all of them, and is released.
    void warm_up() {
        const auto deadline = Clock::now() + std::chrono::seconds(options_.timeout_s);
        std::vector<std::pair<std::string, std::uint32_t>> shape;
        for (const auto& site : sites_) {
            shape.emplace_back(site, 1);
        }
        v1::Cluster cluster;
        must_ok(create(*alice_, request_for(shape, v1::KEY_MODE_CA), &cluster),
                "creating the warm-up cluster");
        if (!assigned_everywhere(cluster.id(), deadline)) {
            throw std::runtime_error("the CRMs did not all connect to the GRC in time");
        }
        must_ok(release(*alice_, cluster.id()), "releasing the warm-up cluster");
        if (!poll_state(*alice_, cluster.id(), v1::CLUSTER_STATE_RELEASED, deadline, 20ms)) {
            throw std::runtime_error("the warm-up cluster was not released in time");
        }
    }

    bool assigned_everywhere(const std::string& id, Clock::time_point deadline) {
        for (const auto& client : crm_clients_) {
            v1::Cluster cluster;
            while (!get(client, id, &cluster).ok()) {
                if (Clock::now() > deadline) {
                    return false;
                }
                std::this_thread::sleep_for(1ms);
            }
        }
        return true;
    }

    // Releases the cluster at the GRC, waits (bounded) for the GRC to say RELEASED and the
    // pilots to stop; when the GRC did.
    std::optional<Clock::time_point> release_and_drain(const std::string& id,
                                                       Clock::time_point deadline) {
        if (auto status = release(*alice_, id); !status.ok()) {
            fmt::print(stderr, "  release of {}: {}\n", id, status.error_message());
        }
        const auto wait = deadline + 30s;
        auto released = poll_state(*alice_, id, v1::CLUSTER_STATE_RELEASED, wait, 5ms);
        workers_->drain(std::chrono::duration_cast<std::chrono::milliseconds>(
            std::max(wait - Clock::now(), Clock::duration(10ms))));
        return released;
    }

    const Options& options_;
    std::filesystem::path dir_;
    const Munged& munged_;
    std::vector<std::string> sites_;
    Pki pki_;
    std::vector<KeyPair> keys_;
    std::optional<PilotWorkers> workers_;
    std::unique_ptr<GrcEngine> grc_;
    std::vector<CrmEngine> crms_;
    std::vector<ClusterClient> crm_clients_;
    std::optional<ClusterClient> alice_;
};

// ---- 2: 1 site x 4 nodes at a standalone CRM ----

struct SmallFigures {
    std::vector<double> ready_ms;  // create + (pilots start -> the CRM says READY), per run
    std::vector<double> create_ms;
    double median_ms = 0, p95_ms = 0, create_median_ms = 0;
    bool ok = false;
};

double percentile(std::vector<double> values, double p) {
    if (values.empty()) {
        return 0;
    }
    std::sort(values.begin(), values.end());
    const auto index = static_cast<std::size_t>(std::max(0.0, std::ceil(p * values.size()) - 1));
    return values[std::min(index, values.size() - 1)];
}

double median(std::vector<double> values) {
    if (values.empty()) {
        return 0;
    }
    std::sort(values.begin(), values.end());
    const std::size_t n = values.size();
    return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

SmallFigures small_cluster(const Options& options, const std::filesystem::path& dir,
                           const Munged& munged) {
    constexpr std::uint32_t kNodes = 4;
    SmallFigures figures;
    CrmEngine crm = start_crm(dir, standalone_crm_options("solo", munged.socket()));
    ClusterClient client = root_at(crm, munged.socket());
    const auto keys = make_keys(kNodes, 1);
    const auto request = request_for({{"solo", kNodes}}, v1::KEY_MODE_CA);
    {  // the first call connects; not a run
        v1::ListClustersResponse response;
        must_ok(list(client, &response), "listing clusters");
    }
    const auto deadline = Clock::now() + std::chrono::seconds(options.timeout_s);
    for (int run = 0; run < options.small_runs && Clock::now() < deadline; ++run) {
        auto context = must(client.context("CreateCluster"), "credential");
        const auto t_create = Clock::now();
        v1::Cluster cluster;
        must_ok(create(client, request, &cluster, std::move(context)), "creating a cluster");
        const auto t_created = Clock::now();
        std::vector<SimPilotSpec> specs(kNodes);
        std::vector<SimPilotSpec*> all;
        for (std::uint32_t n = 0; n < kNodes; ++n) {
            specs[n].cluster = cluster.id();
            specs[n].host = host_of("solo", n + 1);
            specs[n].job = fmt::format("{}", 1000 + run);
            specs[n].underlay = underlay_of(200, n + 1);
            specs[n].rank = n + 1;
            specs[n].host_key = keys[n].host;
            specs[n].user_key = keys[n].user;
            all.push_back(&specs[n]);
        }
        mint_credentials(all, munged.socket(), 1);
        SimPilotFleet fleet(separate_channels(crm.target, kNodes), std::move(specs));
        std::optional<Clock::time_point> t_ready;
        {
            Watch watch(client, cluster.id(), 30s);
            if (!watch.wait_for(v1::CLUSTER_STATE_PENDING, deadline)) {
                throw std::runtime_error("the CRM's watch did not start");
            }
            const auto t_start = Clock::now();
            fleet.start();
            t_ready = watch.wait_for(v1::CLUSTER_STATE_READY, std::min(deadline, t_start + 30s));
            if (t_ready) {
                figures.ready_ms.push_back(1000 * (seconds_between(t_create, t_created) +
                                                   seconds_between(t_start, *t_ready)));
                figures.create_ms.push_back(1000 * seconds_between(t_create, t_created));
            }
        }
        must_ok(release(client, cluster.id()), "releasing a cluster");
        fleet.wait_done(30s);
        if (!t_ready) {
            fmt::print(stderr, "  run {}: the cluster did not become READY\n", run + 1);
            return figures;
        }
    }
    figures.median_ms = median(figures.ready_ms);
    figures.p95_ms = percentile(figures.ready_ms, 0.95);
    figures.create_median_ms = median(figures.create_ms);
    figures.ok = static_cast<int>(figures.ready_ms.size()) == options.small_runs;
    return figures;
}

// ---- 3: create+release throughput ----

struct ThroughputFigures {
    std::size_t pairs = 0, errors = 0;
    double seconds = 0;
    double per_s = 0;
    double pair_median_ms = 0, pair_p95_ms = 0;
    double drain_s = 0;  // GRC: after the last call, until no cluster is left unreleased
    std::string first_error;
    bool ok = false;
};

ThroughputFigures create_release(const Options& options, const std::vector<ClusterClient>& clients,
                                 const v1::CreateClusterRequest& request) {
    constexpr std::size_t kMaxPairsPerClient = 1000000;
    constexpr std::size_t kMaxErrorsPerClient = 10;
    struct PerClient {
        std::size_t pairs = 0, errors = 0;
        std::vector<double> pair_ms;
        std::string first_error;
        Clock::time_point finished;
    };
    std::vector<PerClient> results(clients.size());
    std::vector<std::thread> threads;
    std::mutex start_mutex;
    std::condition_variable start_signal;
    bool go = false;
    Clock::time_point start, stop;
    for (std::size_t c = 0; c < clients.size(); ++c) {
        threads.emplace_back([&, c] {
            {
                std::unique_lock lock(start_mutex);
                start_signal.wait(lock, [&] { return go; });
            }
            PerClient& out = results[c];
            const ClusterClient& client = clients[c];
            auto fail = [&](const grpc::Status& status, std::string_view what) {
                ++out.errors;
                if (out.first_error.empty()) {
                    out.first_error = fmt::format("{}: {}", what, status.error_message());
                }
            };
            while (Clock::now() < stop && out.pairs < kMaxPairsPerClient &&
                   out.errors < kMaxErrorsPerClient) {
                const auto t = Clock::now();
                v1::Cluster cluster;
                if (auto status = create(client, request, &cluster); !status.ok()) {
                    fail(status, "create");
                    continue;
                }
                if (auto status = release(client, cluster.id()); !status.ok()) {
                    fail(status, "release");
                    continue;
                }
                ++out.pairs;
                out.pair_ms.push_back(1000 * seconds_between(t, Clock::now()));
            }
            out.finished = Clock::now();
        });
    }
    {
        std::lock_guard lock(start_mutex);
        start = Clock::now();
        stop = start + std::chrono::duration_cast<Clock::duration>(
                           std::chrono::duration<double>(options.seconds));
        go = true;
    }
    start_signal.notify_all();
    for (auto& thread : threads) {
        thread.join();
    }
    ThroughputFigures figures;
    Clock::time_point last = start;
    std::vector<double> pair_ms;
    for (const auto& result : results) {
        figures.pairs += result.pairs;
        figures.errors += result.errors;
        last = std::max(last, result.finished);
        pair_ms.insert(pair_ms.end(), result.pair_ms.begin(), result.pair_ms.end());
        if (figures.first_error.empty()) {
            figures.first_error = result.first_error;
        }
    }
    figures.seconds = seconds_between(start, last);
    figures.per_s = figures.seconds > 0 ? static_cast<double>(figures.pairs) / figures.seconds : 0;
    figures.pair_median_ms = median(pair_ms);
    figures.pair_p95_ms = percentile(pair_ms, 0.95);
    figures.ok = figures.errors == 0 && figures.pairs > 0;
    return figures;
}

ThroughputFigures throughput_crm(const Options& options, const std::filesystem::path& dir,
                                 const Munged& munged) {
    std::filesystem::create_directories(dir);
    CrmEngine crm = start_crm(dir, standalone_crm_options("tput", munged.socket()));
    std::vector<ClusterClient> clients;
    for (int c = 0; c < options.clients; ++c) {
        clients.push_back(root_at(crm, munged.socket()));
        v1::ListClustersResponse response;
        must_ok(list(clients.back(), &response), "listing clusters");  // connects
    }
    return create_release(options, clients,
                          request_for({{"tput", options.pair_nodes}}, v1::KEY_MODE_CA));
}

ThroughputFigures throughput_grc(const Options& options, const std::filesystem::path& dir,
                                 const Munged& munged) {
    std::filesystem::create_directories(dir);
    const std::vector<std::string> sites = {"s1", "s2"};
    const Pki pki = make_pki(options.source_dir, dir / "pki", sites);
    auto grc = start_grc(dir, pki, sites);
    std::vector<CrmEngine> crms;
    for (const auto& site : sites) {
        crms.push_back(start_crm(dir, site_crm_options(site, munged.socket(), *grc, pki)));
    }
    std::vector<ClusterClient> clients;
    for (int c = 0; c < options.clients; ++c) {
        clients.push_back(alice_at(*grc, pki));
        v1::ListClustersResponse response;
        must_ok(list(clients.back(), &response), "listing clusters");  // connects (TLS)
    }
    // Both CRMs connected: a cluster reaches both and is released everywhere.
    {
        const auto deadline = Clock::now() + std::chrono::seconds(options.timeout_s);
        v1::Cluster cluster;
        must_ok(create(clients[0], request_for({{"s1", 1}, {"s2", 1}}, v1::KEY_MODE_CA), &cluster),
                "creating the warm-up cluster");
        for (const auto& crm : crms) {
            const auto client = root_at(crm, munged.socket());
            v1::Cluster there;
            while (!get(client, cluster.id(), &there).ok()) {
                if (Clock::now() > deadline) {
                    throw std::runtime_error("a CRM did not connect to the GRC in time");
                }
                std::this_thread::sleep_for(5ms);
            }
        }
        must_ok(release(clients[0], cluster.id()), "releasing the warm-up cluster");
        if (!poll_state(clients[0], cluster.id(), v1::CLUSTER_STATE_RELEASED, deadline, 10ms)) {
            throw std::runtime_error("the warm-up cluster was not released in time");
        }
    }
    const std::uint32_t half = std::max<std::uint32_t>(1, options.pair_nodes / 2);
    auto figures = create_release(
        options, clients,
        request_for({{"s1", half}, {"s2", options.pair_nodes - half}}, v1::KEY_MODE_CA));
    // The releases finish when both sites confirm: until no cluster of alice is left.
    const auto t = Clock::now();
    const auto deadline = t + std::chrono::seconds(options.timeout_s);
    for (;;) {
        v1::ListClustersResponse response;
        if (list(clients[0], &response).ok() && response.clusters_size() == 0) {
            figures.drain_s = seconds_between(t, Clock::now());
            break;
        }
        if (Clock::now() > deadline) {
            figures.drain_s = -1;
            figures.ok = false;
            break;
        }
        std::this_thread::sleep_for(5ms);
    }
    crms.clear();
    grc.reset();
    return figures;
}

// ---- the program ----

void raise_file_limit() {
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    const rlim_t wanted = 262144;
    if (limit.rlim_max < wanted) {
        rlimit raised{wanted, wanted};
        if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
            return;
        }
    }
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
}

std::string filesystem_of(const std::filesystem::path& path) {
    struct statfs info {};
    if (::statfs(path.c_str(), &info) != 0) {
        return "unknown";
    }
    switch (static_cast<unsigned long>(info.f_type)) {
        case 0x01021994:
            return "tmpfs (fsync costs nothing here: figures are optimistic)";
        case 0xEF53:
            return "ext2/3/4";
        case 0x58465342:
            return "xfs";
        case 0x9123683E:
            return "btrfs";
        case 0x794c7630:
            return "overlayfs";
        default:
            return fmt::format("type {:#x}", static_cast<unsigned long>(info.f_type));
    }
}

std::string json_number(bool ok, double value, int decimals) {
    return ok ? fmt::format("{:.{}f}", value, decimals) : "null";
}

int run(const Options& options) {
    const bool want_ready =
        std::find(options.phases.begin(), options.phases.end(), "ready") != options.phases.end();
    const bool want_small =
        std::find(options.phases.begin(), options.phases.end(), "small") != options.phases.end();
    const bool want_throughput = std::find(options.phases.begin(), options.phases.end(),
                                           "throughput") != options.phases.end();
    raise_file_limit();
    rlimit files{};
    ::getrlimit(RLIMIT_NOFILE, &files);
    Workspace workspace(options.tmp_dir);
    fmt::print("coordinator-scale-bench: {} CPU(s); stores in {} ({}); open files up to {}\n",
               std::thread::hardware_concurrency(), workspace.path().string(),
               filesystem_of(workspace.path()), static_cast<unsigned long long>(files.rlim_cur));
    Munged munged(workspace.path() / "munge");

    std::map<v1::KeyMode, ScaleFigures> scale;
    // Exchange mode's bytes per node computed by common_view: for the cluster measured (a check)
    // and for the full shape.
    std::optional<double> exchange_check, exchange_full;
    if (want_ready) {
        fmt::print("\n== 1. {} sites x {} nodes through the GRC ({} channel(s) per CRM, {})\n",
                   options.sites, options.nodes, options.channels_per_site, options.observe);
        ScaleBench bench(options, workspace.path() / "scale", munged);
        for (const auto& name : options.modes) {
            const v1::KeyMode mode = name == "ca" ? v1::KEY_MODE_CA : v1::KEY_MODE_EXCHANGE;
            const std::uint32_t nodes = mode == v1::KEY_MODE_EXCHANGE
                                            ? std::min(options.exchange_nodes, options.nodes)
                                            : options.nodes;
            auto figures = bench.run(mode, nodes);
            scale[mode] = figures;
            if (!figures.ok) {
                fmt::print("  {} ({} x {}): FAILED\n", name, options.sites, nodes);
                continue;
            }
            fmt::print(
                "  {} ({} x {}): create {:.3f} s, assigned at every site {:.3f} s | (credentials "
                "minted {:.2f} s, not timed) | pilots start -> all views {:.3f} s, -> GRC READY "
                "{:.3f} s | release -> RELEASED {:.3f} s | {:.0f} bytes/node ({:.0f} of them "
                "SETUP)",
                name, options.sites, nodes, figures.create_s, figures.assigned_s, figures.mint_s,
                figures.views_s, figures.grc_ready_s, figures.release_s, figures.bytes_per_node,
                figures.setup_bytes_per_node);
            if (options.observe == "watch") {
                fmt::print(" | watch: {} messages, {:.1f} MB", figures.watch_messages,
                           static_cast<double>(figures.watch_bytes) / 1e6);
            }
            fmt::print(
                "\n           CPU used from pilots start to GRC READY: {:.1f} s in {:.1f} s "
                "({}); by thread: {}\n",
                figures.cpu_s, figures.grc_ready_s,
                fmt::format("{:.2f} cores", figures.cpu_s / figures.grc_ready_s),
                figures.cpu_threads);
            std::fflush(stdout);
        }
        const auto exchange = scale.find(v1::KEY_MODE_EXCHANGE);
        const auto ca = scale.find(v1::KEY_MODE_CA);
        if (exchange != scale.end() && exchange->second.ok) {
            exchange_check = bench.exchange_bytes_per_node(exchange->second.cluster,
                                                           exchange->second.setup_bytes_per_node);
            if (exchange->second.nodes_per_site == options.nodes) {
                exchange_full = exchange->second.bytes_per_node;
            } else if (ca != scale.end() && ca->second.ok) {
                // The full shape's cluster (blocks, id) and SETUP sizes are the CA run's.
                exchange_full = bench.exchange_bytes_per_node(ca->second.cluster,
                                                              ca->second.setup_bytes_per_node);
            }
            fmt::print(
                "  exchange bytes/node computed with common_view: {:.0f} for {} x {} "
                "(measured {:.0f}){}\n",
                *exchange_check, options.sites, exchange->second.nodes_per_site,
                exchange->second.bytes_per_node,
                exchange_full && exchange->second.nodes_per_site != options.nodes
                    ? fmt::format(", {:.0f} for {} x {}", *exchange_full, options.sites,
                                  options.nodes)
                    : std::string());
        }
    }
    SmallFigures small;
    if (want_small) {
        fmt::print("\n== 2. 1 site x 4 nodes at a standalone CRM, {} runs\n", options.small_runs);
        small = small_cluster(options, workspace.path(), munged);
        fmt::print(
            "  create -> READY: median {:.1f} ms, p95 {:.1f} ms (create call median {:.1f} "
            "ms)\n",
            small.median_ms, small.p95_ms, small.create_median_ms);
        std::fflush(stdout);
    }
    ThroughputFigures crm_pairs, grc_pairs;
    if (want_throughput) {
        fmt::print("\n== 3. create+release of 1 site x {} nodes, {} clients, {:.0f} s\n",
                   options.pair_nodes, options.clients, options.seconds);
        crm_pairs = throughput_crm(options, workspace.path() / "tput-crm", munged);
        fmt::print(
            "  CRM: {} pairs in {:.2f} s = {:.0f}/s; a pair takes median {:.1f} ms, p95 "
            "{:.1f} ms; {} errors{}\n",
            crm_pairs.pairs, crm_pairs.seconds, crm_pairs.per_s, crm_pairs.pair_median_ms,
            crm_pairs.pair_p95_ms, crm_pairs.errors,
            crm_pairs.first_error.empty() ? "" : " (" + crm_pairs.first_error + ")");
        std::fflush(stdout);
        grc_pairs = throughput_grc(options, workspace.path() / "tput-grc", munged);
        fmt::print(
            "  GRC (2 CRMs, {} + {} nodes): {} pairs in {:.2f} s = {:.0f}/s; a pair takes "
            "median {:.1f} ms, p95 {:.1f} ms; {} errors{}; releases done {:.2f} s after "
            "the last call\n",
            std::max<std::uint32_t>(1, options.pair_nodes / 2),
            options.pair_nodes - std::max<std::uint32_t>(1, options.pair_nodes / 2),
            grc_pairs.pairs, grc_pairs.seconds, grc_pairs.per_s, grc_pairs.pair_median_ms,
            grc_pairs.pair_p95_ms, grc_pairs.errors,
            grc_pairs.first_error.empty() ? "" : " (" + grc_pairs.first_error + ")",
            grc_pairs.drain_s);
        std::fflush(stdout);
    }

    // The table, then the JSON line.
    const std::size_t nodes = std::size_t{options.sites} * options.nodes;
    bool all_ok = true;
    fmt::print("\n{:<58} {:>12} {:>10} {:>6}\n", "figure", "value", "target", "");
    auto row = [&](const std::string& figure, bool ok, const std::string& value,
                   const std::string& target, std::optional<bool> pass) {
        fmt::print("{:<58} {:>12} {:>10} {:>6}\n", figure, ok ? value : "FAILED", target,
                   !ok    ? "fail"
                   : pass ? (*pass ? "pass" : "fail")
                          : "");
        all_ok = all_ok && ok;
    };
    // The ready figure: the slower key mode among those run at the full shape.
    double ready_worst = 0;
    bool any_full = false, full_ok = true;
    for (const auto& [mode, figures] : scale) {
        const std::string name = mode == v1::KEY_MODE_CA ? "ca" : "exchange";
        const std::size_t count = std::size_t{options.sites} * figures.nodes_per_site;
        const bool full = figures.nodes_per_site == options.nodes;
        row(fmt::format("create -> {} nodes READY at the GRC, keys {} (s)", count, name),
            figures.ok, fmt::format("{:.3f}", figures.ready_s), full ? "<= 5" : "",
            full ? std::optional<bool>(figures.ready_s <= 5) : std::nullopt);
        row(fmt::format("  pilots start -> all {} have the view (s)", count), figures.ok,
            fmt::format("{:.3f}", figures.views_s), "", std::nullopt);
        row(fmt::format("bytes received per node, keys {}, {} nodes", name, count), figures.ok,
            fmt::format("{:.0f}", figures.bytes_per_node), "", std::nullopt);
        if (full) {
            any_full = true;
            full_ok = full_ok && figures.ok;
            ready_worst = std::max(ready_worst, figures.ready_s);
        }
    }
    const bool ready_ok = any_full && full_ok;
    if (exchange_check) {
        row(fmt::format("  the same computed by common_view (a check)"), true,
            fmt::format("{:.0f}", *exchange_check), "", std::nullopt);
    }
    if (exchange_full && scale.at(v1::KEY_MODE_EXCHANGE).nodes_per_site != options.nodes) {
        row(fmt::format("bytes per node, keys exchange, {} nodes (computed)", nodes), true,
            fmt::format("{:.0f}", *exchange_full), "", std::nullopt);
    }
    if (want_small) {
        row("create -> 1 site x 4 nodes READY at a CRM, median (ms)", small.ok,
            fmt::format("{:.1f}", small.median_ms), "", std::nullopt);
    }
    if (want_throughput) {
        row("create+release per second at a CRM", crm_pairs.ok,
            fmt::format("{:.0f}", crm_pairs.per_s), ">= 500", crm_pairs.per_s >= 500);
        row("create+release per second at the GRC (2 CRMs)", grc_pairs.ok,
            fmt::format("{:.0f}", grc_pairs.per_s), "", std::nullopt);
    }
    auto ca_bytes = [&] {
        auto found = scale.find(v1::KEY_MODE_CA);
        return found != scale.end() && found->second.ok &&
                       found->second.nodes_per_site == options.nodes
                   ? fmt::format("{:.0f}", found->second.bytes_per_node)
                   : std::string("null");
    };
    fmt::print(
        "{{\"ready_s_10000\":{},\"ready_ms_4\":{},\"create_release_per_s\":{},"
        "\"bytes_per_node_ca\":{},\"bytes_per_node_exchange\":{}}}\n",
        json_number(ready_ok, ready_worst, 3), json_number(small.ok, small.median_ms, 1),
        json_number(crm_pairs.ok, crm_pairs.per_s, 0), ca_bytes(),
        exchange_full ? fmt::format("{:.0f}", *exchange_full) : std::string("null"));
    std::fflush(stdout);
    return all_ok ? 0 : 1;
}

}  // namespace
}  // namespace vcpilot::coordinator

int main(int argc, char** argv) {
    using vcpilot::coordinator::Options;
    vcpilot::tune_grpc_runtime();  // as the daemons do
    Options options;
    CLI::App app{"coordinator-scale-bench: the coordinators at scale with simulated pilots"};
    app.add_option("--source-dir", options.source_dir, "the source tree (for make-test-ca.sh)");
    app.add_option("--tmp-dir", options.tmp_dir, "where the temporary directory goes");
    app.add_option("--sites", options.sites, "sites of the big cluster")->check(CLI::Range(1, 200));
    app.add_option("--nodes", options.nodes, "nodes per site of the big cluster")
        ->check(CLI::Range(1, 1000));
    app.add_option("--pilot-workers", options.pilot_workers,
                   "processes the big cluster's simulated pilots run in")
        ->check(CLI::Range(1, 64));
    app.add_option("--channels-per-site", options.channels_per_site,
                   "separate connections from the pilots of a site to its CRM")
        ->check(CLI::Range(1, 1000));
    app.add_option("--observe", options.observe,
                   "how the GRC's READY is seen: watch (WatchCluster) or poll (GetCluster once "
                   "every pilot has the view)")
        ->check(CLI::IsMember({"watch", "poll"}));
    app.add_option("--exchange-nodes", options.exchange_nodes,
                   "nodes per site of the exchange-mode cluster (at most --nodes)")
        ->check(CLI::Range(1, 1000));
    app.add_option("--modes", options.modes, "key modes of the big cluster")
        ->check(CLI::IsMember({"ca", "exchange"}))
        ->delimiter(',');
    app.add_option("--small-runs", options.small_runs, "runs of the 4-node cluster")
        ->check(CLI::Range(1, 1000));
    app.add_option("--seconds", options.seconds, "how long each throughput test runs")
        ->check(CLI::Range(0.1, 600.0));
    app.add_option("--clients", options.clients, "concurrent clients of the throughput tests")
        ->check(CLI::Range(1, 256));
    app.add_option("--pair-nodes", options.pair_nodes, "nodes of each create+release cluster")
        ->check(CLI::Range(2, 1000));
    app.add_option("--timeout", options.timeout_s, "seconds any one phase may take")
        ->check(CLI::Range(1, 3600));
    app.add_option("--phases", options.phases, "which parts to run")
        ->check(CLI::IsMember({"ready", "small", "throughput"}))
        ->delimiter(',');
    app.add_option("--log-level", options.log_level, "the coordinators' log level");
    app.add_option("--mint-threads", options.mint_threads, "threads minting pilot credentials")
        ->check(CLI::Range(1, 64));
    app.add_flag("--timeline", options.timeline,
                 "print what the GRC's watch saw over time (with --observe watch)");
    app.add_option("--max-rss-gb", options.max_rss_gb,
                   "resident memory past which the benchmark cleans up and stops")
        ->check(CLI::Range(0.5, 1024.0));
    CLI11_PARSE(app, argc, argv);

    vcpilot::coordinator::handle_stop_signals();
    vcpilot::coordinator::watch_memory(static_cast<std::uint64_t>(options.max_rss_gb * 1e9));
    spdlog::set_level(spdlog::level::from_str(options.log_level));
    if (::geteuid() != 0) {
        fmt::print(stderr,
                   "coordinator-scale-bench: run as root (it starts a private munged and "
                   "pilots' credentials must be root's)\n");
        return 2;
    }
    try {
        return vcpilot::coordinator::run(options);
    } catch (const std::exception& error) {
        fmt::print(stderr, "coordinator-scale-bench: {}\n", error.what());
        return 1;
    }
}
