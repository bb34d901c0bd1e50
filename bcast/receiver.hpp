// `vc-bcast receive`: one node of a broadcast. Joins the sender's control stream, serves the
// ring (its predecessor pushes to it), writes DEST, forwards to its successor, and reports.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "bcast/integrity.hpp"

namespace vcpilot::bcast {

struct ReceiveOptions {
    std::string sender;  // host:port of the sender's control service
    std::string name;    // this node's name in the ring
    std::filesystem::path dest;
    Secret secret;
    std::string listen_host;  // empty: the address this node reaches the sender from
    std::size_t memory_bytes = 64u << 20;
    std::chrono::milliseconds stall_timeout{15000};
    std::optional<std::uint64_t> corrupt_chunk;  // testing: flip a bit of it once
};

// The exit status: 0 when DEST holds the file, checked; 1 otherwise (DEST is then removed).
int run_receiver(const ReceiveOptions& options);

// The local address this machine uses to reach `host` (an IPv4 address or a name): what a
// node tells the sender to reach it on. No packet is sent.
Result<std::string> local_address_towards(const std::string& host);

}  // namespace vcpilot::bcast
