#include "bench/coordinator_scale/pilots.hpp"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "coordinator/sshcert.hpp"

namespace vcpilot::coordinator::scale_bench {

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

std::string underlay_of(std::uint32_t site, std::uint32_t node) {
    return fmt::format("10.{}.{}.{}", site, node >> 8, node & 255);
}

void mint_credentials(std::vector<SimPilotSpec*>& specs, const std::string& munge_socket,
                      unsigned threads) {
    std::vector<std::thread> workers;
    std::atomic<bool> failed = false;
    std::string error;
    std::mutex error_mutex;
    for (unsigned t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            for (std::size_t i = t; i < specs.size() && !failed; i += threads) {
                if (auto minted = mint_credential(*specs[i], munge_socket); !minted) {
                    std::lock_guard lock(error_mutex);
                    error = minted.error().message;
                    failed = true;
                    return;
                }
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

}  // namespace vcpilot::coordinator::scale_bench
