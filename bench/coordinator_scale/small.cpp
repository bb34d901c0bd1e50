// 2. ready_ms_4: a 1-site x 4-node cluster at a standalone CRM (its own pool; MUNGE): the median
// of --small-runs runs of create + (pilots start -> the CRM says READY, watched).
#include <optional>

#include "bench/coordinator_scale/coordinators.hpp"
#include "bench/coordinator_scale/pilots.hpp"
#include "bench/coordinator_scale/scenarios.hpp"

namespace vcpilot::coordinator::scale_bench {
namespace {

using namespace std::chrono_literals;

constexpr std::uint32_t kNodes = 4;

// The pilots of run `run`, their credentials minted.
std::vector<SimPilotSpec> pilots_of(const v1::Cluster& cluster, int run,
                                    const std::vector<KeyPair>& keys,
                                    const std::string& munge_socket) {
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
    mint_credentials(all, munge_socket, 1);
    return specs;
}

struct RunTimes {
    double ready_ms = 0;   // create + (pilots start -> the CRM says READY)
    double create_ms = 0;  // the create call
};

// One run: create, the pilots start, the CRM says READY (watched), release. Nothing if the
// cluster did not become READY in time.
std::optional<RunTimes> one_run(const CrmEngine& crm, const ClusterClient& client, int run,
                                const std::vector<KeyPair>& keys, const std::string& munge_socket,
                                Clock::time_point deadline) {
    const auto request = request_for({{"solo", kNodes}}, v1::KEY_MODE_CA);
    auto context = must(client.context("CreateCluster"), "credential");
    const auto t_create = Clock::now();
    v1::Cluster cluster;
    must_ok(create(client, request, &cluster, std::move(context)), "creating a cluster");
    const auto t_created = Clock::now();
    SimPilotFleet fleet(separate_channels(crm.target, kNodes),
                        pilots_of(cluster, run, keys, munge_socket));
    std::optional<RunTimes> times;
    {
        Watch watch(client, cluster.id(), 30s);
        if (!watch.wait_for(v1::CLUSTER_STATE_PENDING, deadline)) {
            throw std::runtime_error("the CRM's watch did not start");
        }
        const auto t_start = Clock::now();
        fleet.start();
        if (auto t_ready =
                watch.wait_for(v1::CLUSTER_STATE_READY, std::min(deadline, t_start + 30s))) {
            const double create_s = seconds_between(t_create, t_created);
            times =
                RunTimes{1000 * (create_s + seconds_between(t_start, *t_ready)), 1000 * create_s};
        }
    }
    must_ok(release(client, cluster.id()), "releasing a cluster");
    fleet.wait_done(30s);
    return times;
}

}  // namespace

SmallFigures small_scenario(const Options& options, const std::filesystem::path& dir,
                            const testing::TestMunged& munged) {
    fmt::print("\n== 2. 1 site x 4 nodes at a standalone CRM, {} runs\n", options.small_runs);
    SmallFigures figures;
    CrmEngine crm = start_crm(dir, standalone_crm_options("solo", munged.socket()));
    ClusterClient client = root_at(crm, munged.socket());
    const auto keys = make_keys(kNodes, 1);
    {  // the first call connects; not a run
        v1::ListClustersResponse response;
        must_ok(list(client, &response), "listing clusters");
    }
    const auto deadline = Clock::now() + std::chrono::seconds(options.timeout_s);
    bool every_run_ready = true;
    for (int run = 0; run < options.small_runs && Clock::now() < deadline; ++run) {
        const auto times = one_run(crm, client, run, keys, munged.socket(), deadline);
        if (!times) {
            fmt::print(stderr, "  run {}: the cluster did not become READY\n", run + 1);
            every_run_ready = false;
            break;
        }
        figures.ready_ms.push_back(times->ready_ms);
        figures.create_ms.push_back(times->create_ms);
    }
    if (every_run_ready) {  // else no figure: 0 and not ok
        figures.median_ms = median(figures.ready_ms);
        figures.p95_ms = percentile(figures.ready_ms, 0.95);
        figures.create_median_ms = median(figures.create_ms);
        figures.ok = static_cast<int>(figures.ready_ms.size()) == options.small_runs;
    }
    fmt::print(
        "  create -> READY: median {:.1f} ms, p95 {:.1f} ms (create call median {:.1f} "
        "ms)\n",
        figures.median_ms, figures.p95_ms, figures.create_median_ms);
    (void)std::fflush(stdout);
    return figures;
}

}  // namespace vcpilot::coordinator::scale_bench
