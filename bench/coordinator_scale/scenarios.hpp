// The three scenarios of coordinator-scale-bench, each in a file of its own. Each prints its own
// lines as it goes and returns its figures for the table and the JSON line (main.cpp); each
// makes what it needs below `dir` and stops what it started before it returns.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bench/coordinator_scale/options.hpp"
#include "tests/support/test_munged.hpp"
#include "vcpilot/v1/coordinator.pb.h"

namespace vcpilot::coordinator::scale_bench {

// ---- 1. ready.cpp: a cluster of S sites x N nodes through the GRC ----

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

struct ReadyFigures {
    std::map<v1::KeyMode, ScaleFigures> scale;  // per key mode run
    // Exchange mode's bytes per node computed by common_view: for the cluster measured (a check)
    // and for the full shape.
    std::optional<double> exchange_check, exchange_full;
};

// One GRC and --sites CRM engines in this process, --sites x --nodes simulated pilots in
// --pilot-workers processes; a cluster per --modes.
ReadyFigures ready_scenario(const Options& options, const std::filesystem::path& dir,
                            const testing::TestMunged& munged);

// ---- 2. small.cpp: 1 site x 4 nodes at a standalone CRM ----

struct SmallFigures {
    std::vector<double> ready_ms;  // create + (pilots start -> the CRM says READY), per run
    std::vector<double> create_ms;
    double median_ms = 0, p95_ms = 0, create_median_ms = 0;
    bool ok = false;
};

SmallFigures small_scenario(const Options& options, const std::filesystem::path& dir,
                            const testing::TestMunged& munged);

// ---- 3. throughput.cpp: create+release pairs per second ----

struct ThroughputFigures {
    std::size_t pairs = 0, errors = 0;
    double seconds = 0;
    double per_s = 0;
    double pair_median_ms = 0, pair_p95_ms = 0;
    double drain_s = 0;  // GRC: after the last call, until no cluster is left unreleased
    std::string first_error;
    bool ok = false;
};

struct ThroughputResults {
    ThroughputFigures crm;  // at a standalone CRM
    ThroughputFigures grc;  // at the GRC with 2 CRMs
};

ThroughputResults throughput_scenario(const Options& options, const std::filesystem::path& dir,
                                      const testing::TestMunged& munged);

}  // namespace vcpilot::coordinator::scale_bench
