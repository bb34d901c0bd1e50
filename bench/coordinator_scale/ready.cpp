// 1. ready: one GRC engine and S CRM engines (default 100) in this process. Each CRM has its own
// store (SQLite WAL, synchronous=FULL: an fsync per commit batch) in a temporary directory and
// its own gRPC server on a unix socket, and connects to the GRC (mutual TLS on 127.0.0.1) with
// its site certificate from the test PKI. A user makes one cluster of S sites x N nodes (default
// 100 x 100) through the GRC; then S x N simulated pilots (N per CRM, over a few connections per
// CRM) attach, report keys and states, get the view and report READY. The pilots run in
// --pilot-workers processes of their own (4), as pilots run on nodes of their own (see
// pilot_workers.hpp for why it matters here). Timed: create -> every CRM holds its share, pilots
// start -> every pilot has the view, and pilots start -> the GRC says READY (polled once every
// pilot has the view, so that watching 10,000 nodes does not load the GRC; --observe watch
// streams WatchCluster instead). Pilots need the cluster's id in their MUNGE credential, so the
// credentials are minted after the create and before the pilots start, outside the timer (each
// real pilot mints its own, on its own node, in parallel); keys are generated once, beforehand.
// ready = (create -> assigned) + (pilots start -> GRC READY). Bytes per node = what the pilots
// received (SimPilotOutcome.bytes_received) / nodes. In exchange mode every node receives every
// key (2 MB per node at 100 x 100, 20 GB for one process holding both ends), so that mode runs
// at S x --exchange-nodes and its bytes per node for S x N are computed with common_view, the
// code the GRC builds views with, on the CA run's cluster; the same computation is checked
// against the run that was measured.
#include <algorithm>
#include <optional>

#include "bench/coordinator_scale/coordinators.hpp"
#include "bench/coordinator_scale/pilot_workers.hpp"
#include "bench/coordinator_scale/scenarios.hpp"
#include "coordinator/cluster_store.hpp"
#include "coordinator/cluster_view.hpp"

namespace vcpilot::coordinator::scale_bench {
namespace {

using namespace std::chrono_literals;

class ScaleBench {
  public:
    ScaleBench(const Options& options, const std::filesystem::path& dir,
               const testing::TestMunged& munged)
        : options_(options), dir_(dir), munged_(munged) {
        std::filesystem::create_directories(dir_);
        for (std::uint32_t s = 1; s <= options_.sites; ++s) {
            sites_.push_back(fmt::format("s{}", s));
        }
        auto t = Clock::now();
        pki_.emplace(must(testing::TestPki::make(dir_ / "pki", {.sites = sites_,
                                                                .users = {"alice"},
                                                                .source_dir = options_.source_dir}),
                          "the test PKI"));
        fmt::print("  test PKI for {} sites: {:.1f} s\n", sites_.size(),
                   seconds_between(t, Clock::now()));
        t = Clock::now();
        keys_ = make_keys(std::size_t{options_.sites} * options_.nodes, 2);
        fmt::print("  {} ed25519 key pairs: {:.1f} s\n", keys_.size(),
                   seconds_between(t, Clock::now()));
        workers_.emplace(options_, keys_, munged_.socket());  // before this process uses gRPC
        fmt::print("  the pilots run in {} worker process(es)\n", workers_->size());
        t = Clock::now();
        grc_ = start_grc(dir_, *pki_, sites_);
        for (const auto& site : sites_) {
            crms_.push_back(
                start_crm(dir_, site_crm_options(site, munged_.socket(), *grc_, *pki_)));
            crm_clients_.push_back(root_at(crms_.back(), munged_.socket()));
        }
        alice_.emplace(alice_at(*grc_, *pki_));
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
    ScaleBench(const ScaleBench&) = delete;
    ScaleBench& operator=(const ScaleBench&) = delete;

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
        if (views.ready < views.total) {
            fmt::print(stderr, "  only {} of {} pilots got the view in time\n", views.ready,
                       views.total);
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
                print_timeline(*watch, t_start);
            }
        }
        figures.create_s = seconds_between(t_create, t_created);
        figures.assigned_s = seconds_between(t_create, t_assigned);
        figures.views_s = seconds_between(t_start, views.last);
        figures.grc_ready_s = seconds_between(t_start, *t_ready);
        figures.ready_s = figures.assigned_s + figures.grc_ready_s;
        const auto total = static_cast<double>(views.total);
        figures.bytes_per_node = static_cast<double>(views.bytes) / total;
        figures.setup_bytes_per_node = static_cast<double>(views.setup_bytes) / total;
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

    static void print_timeline(const Watch& watch, Clock::time_point t_start) {
        fmt::print(
            "  the GRC's view (WatchCluster), seconds after the pilots started: "
            "attached / CONFIGURED+ / READY nodes\n");
        for (const auto& point : watch.timeline()) {
            if (point.at >= t_start) {
                fmt::print("    {:7.3f} s  {:6} {:6} {:6}\n", seconds_between(t_start, point.at),
                           point.attached, point.configured, point.ready);
            }
        }
    }

    const Options& options_;
    std::filesystem::path dir_;
    const testing::TestMunged& munged_;
    std::vector<std::string> sites_;
    std::optional<testing::TestPki> pki_;
    std::vector<KeyPair> keys_;
    std::optional<PilotWorkers> workers_;
    std::unique_ptr<GrcEngine> grc_;
    std::vector<CrmEngine> crms_;
    std::vector<ClusterClient> crm_clients_;
    std::optional<ClusterClient> alice_;
};

void print_run(const Options& options, const std::string& name, const ScaleFigures& figures) {
    if (!figures.ok) {
        fmt::print("  {} ({} x {}): FAILED\n", name, options.sites, figures.nodes_per_site);
        return;
    }
    fmt::print(
        "  {} ({} x {}): create {:.3f} s, assigned at every site {:.3f} s | (credentials "
        "minted {:.2f} s, not timed) | pilots start -> all views {:.3f} s, -> GRC READY "
        "{:.3f} s | release -> RELEASED {:.3f} s | {:.0f} bytes/node ({:.0f} of them "
        "SETUP)",
        name, options.sites, figures.nodes_per_site, figures.create_s, figures.assigned_s,
        figures.mint_s, figures.views_s, figures.grc_ready_s, figures.release_s,
        figures.bytes_per_node, figures.setup_bytes_per_node);
    if (options.observe == "watch") {
        fmt::print(" | watch: {} messages, {:.1f} MB", figures.watch_messages,
                   static_cast<double>(figures.watch_bytes) / 1e6);
    }
    fmt::print(
        "\n           CPU used from pilots start to GRC READY: {:.1f} s in {:.1f} s "
        "({}); by thread: {}\n",
        figures.cpu_s, figures.grc_ready_s,
        fmt::format("{:.2f} cores", figures.cpu_s / figures.grc_ready_s), figures.cpu_threads);
    (void)std::fflush(stdout);
}

// Exchange mode's bytes per node by common_view: for the cluster measured, and for the full
// shape (measured if exchange mode ran at full size, else computed on the CA run's cluster).
void compute_exchange_bytes(const Options& options, const ScaleBench& bench,
                            ReadyFigures& figures) {
    const auto exchange = figures.scale.find(v1::KEY_MODE_EXCHANGE);
    const auto ca = figures.scale.find(v1::KEY_MODE_CA);
    if (exchange == figures.scale.end() || !exchange->second.ok) {
        return;
    }
    const ScaleFigures& measured = exchange->second;
    figures.exchange_check =
        bench.exchange_bytes_per_node(measured.cluster, measured.setup_bytes_per_node);
    if (measured.nodes_per_site == options.nodes) {
        figures.exchange_full = measured.bytes_per_node;
    } else if (ca != figures.scale.end() && ca->second.ok) {
        // The full shape's cluster (blocks, id) and SETUP sizes are the CA run's.
        figures.exchange_full =
            bench.exchange_bytes_per_node(ca->second.cluster, ca->second.setup_bytes_per_node);
    }
    fmt::print(
        "  exchange bytes/node computed with common_view: {:.0f} for {} x {} "
        "(measured {:.0f}){}\n",
        *figures.exchange_check, options.sites, measured.nodes_per_site, measured.bytes_per_node,
        figures.exchange_full && measured.nodes_per_site != options.nodes
            ? fmt::format(", {:.0f} for {} x {}", *figures.exchange_full, options.sites,
                          options.nodes)
            : std::string());
}

}  // namespace

ReadyFigures ready_scenario(const Options& options, const std::filesystem::path& dir,
                            const testing::TestMunged& munged) {
    fmt::print("\n== 1. {} sites x {} nodes through the GRC ({} channel(s) per CRM, {})\n",
               options.sites, options.nodes, options.channels_per_site, options.observe);
    ReadyFigures figures;
    ScaleBench bench(options, dir, munged);
    for (const auto& name : options.modes) {
        const v1::KeyMode mode = name == "ca" ? v1::KEY_MODE_CA : v1::KEY_MODE_EXCHANGE;
        const std::uint32_t nodes = mode == v1::KEY_MODE_EXCHANGE
                                        ? std::min(options.exchange_nodes, options.nodes)
                                        : options.nodes;
        figures.scale[mode] = bench.run(mode, nodes);
        print_run(options, name, figures.scale[mode]);
    }
    compute_exchange_bytes(options, bench, figures);
    return figures;
}

}  // namespace vcpilot::coordinator::scale_bench
