// 3. create+release per second: --clients threads, each with its own ClusterClient, make and
// release 1-site x --pair-nodes clusters for --seconds against a standalone CRM (no pilots, so a
// release finishes at once), then the same against the GRC with 2 connected CRMs.
#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "bench/coordinator_scale/coordinators.hpp"
#include "bench/coordinator_scale/scenarios.hpp"

namespace vcpilot::coordinator::scale_bench {
namespace {

using namespace std::chrono_literals;

// What one client thread did.
struct PerClient {
    std::size_t pairs = 0, errors = 0;
    std::vector<double> pair_ms;
    std::string first_error;
    Clock::time_point finished;
};

// Creates and releases clusters until `stop` (or too many pairs or errors).
void client_loop(const ClusterClient& client, const v1::CreateClusterRequest& request,
                 Clock::time_point stop, PerClient& out) {
    constexpr std::size_t kMaxPairsPerClient = 1000000;
    constexpr std::size_t kMaxErrorsPerClient = 10;
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
}

ThroughputFigures sum_up(const std::vector<PerClient>& results, Clock::time_point start) {
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

// Every client at once, for --seconds.
ThroughputFigures create_release(const Options& options, const std::vector<ClusterClient>& clients,
                                 const v1::CreateClusterRequest& request) {
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
            client_loop(clients[c], request, stop, results[c]);
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
    return sum_up(results, start);
}

ThroughputFigures throughput_crm(const Options& options, const std::filesystem::path& dir,
                                 const testing::TestMunged& munged) {
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

// Both CRMs connected: a cluster reaches both and is released everywhere.
void warm_up(const Options& options, const ClusterClient& alice, const std::vector<CrmEngine>& crms,
             const std::string& munge_socket) {
    const auto deadline = Clock::now() + std::chrono::seconds(options.timeout_s);
    v1::Cluster cluster;
    must_ok(create(alice, request_for({{"s1", 1}, {"s2", 1}}, v1::KEY_MODE_CA), &cluster),
            "creating the warm-up cluster");
    for (const auto& crm : crms) {
        const auto client = root_at(crm, munge_socket);
        v1::Cluster there;
        while (!get(client, cluster.id(), &there).ok()) {
            if (Clock::now() > deadline) {
                throw std::runtime_error("a CRM did not connect to the GRC in time");
            }
            std::this_thread::sleep_for(5ms);
        }
    }
    must_ok(release(alice, cluster.id()), "releasing the warm-up cluster");
    if (!poll_state(alice, cluster.id(), v1::CLUSTER_STATE_RELEASED, deadline, 10ms)) {
        throw std::runtime_error("the warm-up cluster was not released in time");
    }
}

// The releases finish when both sites confirm: seconds until no cluster of alice is left, or
// -1 if that takes longer than --timeout.
double wait_released(const Options& options, const ClusterClient& alice) {
    const auto t = Clock::now();
    const auto deadline = t + std::chrono::seconds(options.timeout_s);
    for (;;) {
        v1::ListClustersResponse response;
        if (list(alice, &response).ok() && response.clusters_size() == 0) {
            return seconds_between(t, Clock::now());
        }
        if (Clock::now() > deadline) {
            return -1;
        }
        std::this_thread::sleep_for(5ms);
    }
}

ThroughputFigures throughput_grc(const Options& options, const std::filesystem::path& dir,
                                 const testing::TestMunged& munged) {
    std::filesystem::create_directories(dir);
    const std::vector<std::string> sites = {"s1", "s2"};
    const auto pki = must(
        testing::TestPki::make(
            dir / "pki", {.sites = sites, .users = {"alice"}, .source_dir = options.source_dir}),
        "the test PKI");
    auto grc = start_grc(dir, pki, sites);
    std::vector<CrmEngine> crms;
    crms.reserve(sites.size());
    for (const auto& site : sites) {
        crms.push_back(start_crm(dir, site_crm_options(site, munged.socket(), *grc, pki)));
    }
    std::vector<ClusterClient> clients;
    for (int c = 0; c < options.clients; ++c) {
        clients.push_back(alice_at(*grc, pki));
        v1::ListClustersResponse response;
        must_ok(list(clients.back(), &response), "listing clusters");  // connects (TLS)
    }
    warm_up(options, clients[0], crms, munged.socket());
    const std::uint32_t half = std::max<std::uint32_t>(1, options.pair_nodes / 2);
    auto figures = create_release(
        options, clients,
        request_for({{"s1", half}, {"s2", options.pair_nodes - half}}, v1::KEY_MODE_CA));
    figures.drain_s = wait_released(options, clients[0]);
    figures.ok = figures.ok && figures.drain_s >= 0;
    crms.clear();
    grc.reset();
    return figures;
}

std::string error_note(const ThroughputFigures& figures) {
    return figures.first_error.empty() ? "" : " (" + figures.first_error + ")";
}

}  // namespace

ThroughputResults throughput_scenario(const Options& options, const std::filesystem::path& dir,
                                      const testing::TestMunged& munged) {
    fmt::print("\n== 3. create+release of 1 site x {} nodes, {} clients, {:.0f} s\n",
               options.pair_nodes, options.clients, options.seconds);
    ThroughputResults results;
    results.crm = throughput_crm(options, dir / "tput-crm", munged);
    const ThroughputFigures& crm = results.crm;
    fmt::print(
        "  CRM: {} pairs in {:.2f} s = {:.0f}/s; a pair takes median {:.1f} ms, p95 "
        "{:.1f} ms; {} errors{}\n",
        crm.pairs, crm.seconds, crm.per_s, crm.pair_median_ms, crm.pair_p95_ms, crm.errors,
        error_note(crm));
    (void)std::fflush(stdout);
    results.grc = throughput_grc(options, dir / "tput-grc", munged);
    const ThroughputFigures& grc = results.grc;
    const std::uint32_t half = std::max<std::uint32_t>(1, options.pair_nodes / 2);
    fmt::print(
        "  GRC (2 CRMs, {} + {} nodes): {} pairs in {:.2f} s = {:.0f}/s; a pair takes "
        "median {:.1f} ms, p95 {:.1f} ms; {} errors{}; releases done {:.2f} s after "
        "the last call\n",
        half, options.pair_nodes - half, grc.pairs, grc.seconds, grc.per_s, grc.pair_median_ms,
        grc.pair_p95_ms, grc.errors, error_note(grc), grc.drain_s);
    (void)std::fflush(stdout);
    return results;
}

}  // namespace vcpilot::coordinator::scale_bench
