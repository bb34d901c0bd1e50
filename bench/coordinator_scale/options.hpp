// coordinator-scale-bench's options (main.cpp parses them; --help describes each).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace vcpilot::coordinator::scale_bench {

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

}  // namespace vcpilot::coordinator::scale_bench
