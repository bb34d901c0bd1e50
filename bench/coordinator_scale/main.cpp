// coordinator-scale-bench: the coordinators at scale, driven by simulated pilots (real gRPC
// clients of Crm.Attach over unix sockets, SimPilotFleet) and by vcctl's client code. Three
// scenarios, each in a file of its own (scenarios.hpp):
//  1. ready.cpp: create -> S sites x N nodes READY through the GRC (default 100 x 100), and the
//     bytes each node receives, in both key modes;
//  2. small.cpp: create -> READY of a 1-site x 4-node cluster at a standalone CRM (a median);
//  3. throughput.cpp: create+release pairs per second at a standalone CRM and at the GRC.
//
// Prints a table, then one JSON line. Everything lives in one temporary directory, removed at
// the end, on errors, on SIGINT/SIGTERM/SIGHUP and past --max-rss-gb of memory, as is the
// private munged this starts (tests/support: TempDir, TestMunged, the leftovers).
#include <sys/resource.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <spdlog/spdlog.h>
#include <thread>

#include "bench/coordinator_scale/common.hpp"
#include "bench/coordinator_scale/scenarios.hpp"
#include "common/grpc_runtime.hpp"
#include "tests/support/cleanup.hpp"
#include "tests/support/temp_dir.hpp"

namespace vcpilot::coordinator::scale_bench {
namespace {

using namespace std::chrono_literals;

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
            testing::leftovers::clean_up_and_exit(3);
        }
    }).detach();
}

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

bool wanted(const Options& options, const std::string& phase) {
    return std::find(options.phases.begin(), options.phases.end(), phase) != options.phases.end();
}

// What the scenarios that ran found.
struct Results {
    ReadyFigures ready;
    std::optional<SmallFigures> small;
    std::optional<ThroughputResults> throughput;
};

// The table, row by row; whether every figure was measured.
class Table {
  public:
    Table() { fmt::print("\n{:<58} {:>12} {:>10} {:>6}\n", "figure", "value", "target", ""); }

    void row(const std::string& figure, bool ok, const std::string& value,
             const std::string& target = "", std::optional<bool> pass = std::nullopt) {
        fmt::print("{:<58} {:>12} {:>10} {:>6}\n", figure, ok ? value : "FAILED", target,
                   !ok    ? "fail"
                   : pass ? (*pass ? "pass" : "fail")
                          : "");
        all_ok_ = all_ok_ && ok;
    }
    bool all_ok() const { return all_ok_; }

  private:
    bool all_ok_ = true;
};

// The ready figure: the slower key mode among those run at the full shape; nothing unless every
// one of them succeeded.
std::optional<double> worst_full_ready(const Options& options, const ReadyFigures& ready) {
    std::optional<double> worst;
    for (const auto& [mode, figures] : ready.scale) {
        if (figures.nodes_per_site != options.nodes) {
            continue;
        }
        if (!figures.ok) {
            return std::nullopt;
        }
        worst = std::max(worst.value_or(0), figures.ready_s);
    }
    return worst;
}

void ready_rows(Table& table, const Options& options, const ReadyFigures& ready) {
    for (const auto& [mode, figures] : ready.scale) {
        const std::string name = mode == v1::KEY_MODE_CA ? "ca" : "exchange";
        const std::size_t count = std::size_t{options.sites} * figures.nodes_per_site;
        const bool full = figures.nodes_per_site == options.nodes;
        table.row(fmt::format("create -> {} nodes READY at the GRC, keys {} (s)", count, name),
                  figures.ok, fmt::format("{:.3f}", figures.ready_s), full ? "<= 5" : "",
                  full ? std::optional<bool>(figures.ready_s <= 5) : std::nullopt);
        table.row(fmt::format("  pilots start -> all {} have the view (s)", count), figures.ok,
                  fmt::format("{:.3f}", figures.views_s));
        table.row(fmt::format("bytes received per node, keys {}, {} nodes", name, count),
                  figures.ok, fmt::format("{:.0f}", figures.bytes_per_node));
    }
    if (ready.exchange_check) {
        table.row("  the same computed by common_view (a check)", true,
                  fmt::format("{:.0f}", *ready.exchange_check));
    }
    if (ready.exchange_full &&
        ready.scale.at(v1::KEY_MODE_EXCHANGE).nodes_per_site != options.nodes) {
        table.row(fmt::format("bytes per node, keys exchange, {} nodes (computed)",
                              std::size_t{options.sites} * options.nodes),
                  true, fmt::format("{:.0f}", *ready.exchange_full));
    }
}

// The table, then the JSON line; whether every figure was measured.
bool report(const Options& options, const Results& results) {
    Table table;
    ready_rows(table, options, results.ready);
    if (results.small) {
        table.row("create -> 1 site x 4 nodes READY at a CRM, median (ms)", results.small->ok,
                  fmt::format("{:.1f}", results.small->median_ms));
    }
    if (results.throughput) {
        const auto& [crm, grc] = *results.throughput;
        table.row("create+release per second at a CRM", crm.ok, fmt::format("{:.0f}", crm.per_s),
                  ">= 500", crm.per_s >= 500);
        table.row("create+release per second at the GRC (2 CRMs)", grc.ok,
                  fmt::format("{:.0f}", grc.per_s));
    }
    const auto ready = worst_full_ready(options, results.ready);
    const auto ca = results.ready.scale.find(v1::KEY_MODE_CA);
    const bool ca_full = ca != results.ready.scale.end() && ca->second.ok &&
                         ca->second.nodes_per_site == options.nodes;
    const SmallFigures small = results.small.value_or(SmallFigures{});
    const ThroughputFigures crm =
        results.throughput ? results.throughput->crm : ThroughputFigures{};
    fmt::print(
        "{{\"ready_s_10000\":{},\"ready_ms_4\":{},\"create_release_per_s\":{},"
        "\"bytes_per_node_ca\":{},\"bytes_per_node_exchange\":{}}}\n",
        json_number(ready.has_value(), ready.value_or(0), 3),
        json_number(small.ok, small.median_ms, 1), json_number(crm.ok, crm.per_s, 0),
        json_number(ca_full, ca_full ? ca->second.bytes_per_node : 0, 0),
        json_number(results.ready.exchange_full.has_value(),
                    results.ready.exchange_full.value_or(0), 0));
    (void)std::fflush(stdout);
    return table.all_ok();
}

int run(const Options& options) {
    raise_file_limit();
    rlimit files{};
    ::getrlimit(RLIMIT_NOFILE, &files);
    // Searchable: the private munged's socket lies inside, and munged runs as user munge.
    const testing::TempDir workspace(
        {.base = options.tmp_dir, .prefix = "vcpilot-bench", .searchable = true});
    fmt::print("coordinator-scale-bench: {} CPU(s); stores in {} ({}); open files up to {}\n",
               std::thread::hardware_concurrency(), workspace.path().string(),
               filesystem_of(workspace.path()), static_cast<unsigned long long>(files.rlim_cur));
    const testing::TestMunged munged(workspace.path() / "munge");
    Results results;
    if (wanted(options, "ready")) {
        results.ready = ready_scenario(options, workspace.path() / "scale", munged);
    }
    if (wanted(options, "small")) {
        results.small = small_scenario(options, workspace.path(), munged);
    }
    if (wanted(options, "throughput")) {
        results.throughput = throughput_scenario(options, workspace.path(), munged);
    }
    return report(options, results) ? 0 : 1;
}

void add_options(CLI::App& app, Options& options) {
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
}

// main's body; main reports an exception that escapes it.
int run_main(int argc, char** argv) {
    vcpilot::tune_grpc_runtime();  // as the daemons do
    Options options;
    CLI::App app{"coordinator-scale-bench: the coordinators at scale with simulated pilots"};
    add_options(app, options);
    CLI11_PARSE(app, argc, argv);

    vcpilot::testing::clean_up_on_signals("coordinator-scale-bench");
    watch_memory(static_cast<std::uint64_t>(options.max_rss_gb * 1e9));
    spdlog::set_level(spdlog::level::from_str(options.log_level));
    if (::geteuid() != 0) {
        fmt::print(stderr,
                   "coordinator-scale-bench: run as root (it starts a private munged and "
                   "pilots' credentials must be root's)\n");
        return 2;
    }
    return run(options);
}

}  // namespace
}  // namespace vcpilot::coordinator::scale_bench

int main(int argc, char** argv) {
    try {
        return vcpilot::coordinator::scale_bench::run_main(argc, argv);
    } catch (const std::exception& error) {
        (void)std::fprintf(stderr, "coordinator-scale-bench: %s\n", error.what());
        return 1;
    }
}
