// The simulated pilots' side of coordinator-scale-bench: their keys, names and addresses, their
// MUNGE credentials, and waiting for fleets of them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bench/coordinator_scale/common.hpp"
#include "tests/support/sim_pilot.hpp"

namespace vcpilot::coordinator::scale_bench {

struct KeyPair {
    std::string host, user;  // OpenSSH public key lines
};

// Distinct ed25519 keys for `count` nodes, as each node generates its own.
std::vector<KeyPair> make_keys(std::size_t count, unsigned threads);

// "SITE-nodeN".
std::string host_of(const std::string& site, std::uint32_t node);
// Node `node` (1-based) of site number `site` (1-based): 10.<site>.<node / 256>.<node % 256>.
std::string underlay_of(std::uint32_t site, std::uint32_t node);

// One credential per pilot, minted by root through the private munged, a few threads at once.
void mint_credentials(std::vector<SimPilotSpec*>& specs, const std::string& munge_socket,
                      unsigned threads);

// Waits (bounded) until every pilot of every fleet has the view; the number that do.
std::size_t wait_all_ready(const std::vector<std::unique_ptr<SimPilotFleet>>& fleets,
                           Clock::time_point deadline);

// Why pilots did not get there, on stderr: the first few distinct stream endings.
void explain_failures(const std::vector<std::unique_ptr<SimPilotFleet>>& fleets);

}  // namespace vcpilot::coordinator::scale_bench
