// `vc-bcast send`: the head of a broadcast. Starts a receiver on every node (over ssh, the
// cluster's own trust) or waits for receivers started by someone else, orders them into a
// ring, pushes the file into it, bypasses nodes that die, stall or fail, shows progress, and
// reports per node.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace vcpilot::bcast {

struct SendOptions {
    std::filesystem::path file;
    std::filesystem::path dest;            // the path on every node
    std::vector<std::string> nodes;        // ring order
    bool launch = true;                    // start the receivers over ssh
    std::string program;                   // vc-bcast on the nodes
    std::vector<std::string> ssh_options;  // extra `ssh -o` options
    std::string listen = "0.0.0.0";        // address of the control service (any port)
    std::string advertise;                 // the nodes reach us there; empty: our address
                                           // towards the first node
    std::optional<std::filesystem::path> secret_file;  // without launch: written for receivers
    std::optional<std::filesystem::path> port_file;    // the control port, once listening
    std::uint32_t chunk_size = 4u << 20;
    std::size_t memory_bytes = 64u << 20;
    std::chrono::milliseconds stall_timeout{15000};
    std::chrono::milliseconds join_timeout{30000};
    bool progress = true;
};

// 0: every node holds the file, checked; 1: some failed (the others finished); 2: nothing
// could start (the reason is on stderr).
int run_sender(const SendOptions& options);

}  // namespace vcpilot::bcast
