// What every scenario of coordinator-scale-bench uses: failing loudly, timing, statistics and
// CPU accounting.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace vcpilot::coordinator::scale_bench {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point from, Clock::time_point to);

// The value, or std::runtime_error "DOING: why": the benchmark stops at its first failure.
template <typename T>
T must(Result<T> result, std::string_view doing) {
    if (!result) {
        throw std::runtime_error(fmt::format("{}: {}", doing, result.error().message));
    }
    return std::move(*result);
}

// std::runtime_error "DOING: why" unless `status` is OK.
void must(const Status& status, std::string_view doing);

// std::runtime_error "DOING: message (code N)" unless `status` is OK.
void must_ok(const grpc::Status& status, std::string_view doing);

// The p-quantile (0 < p <= 1) by the nearest-rank method; 0 for no values.
double percentile(std::vector<double> values, double p);
double median(std::vector<double> values);

// CPU seconds used so far by this process's threads, by thread name (the coordinators' writers
// carry the program's name; gRPC names its own threads).
std::map<std::string, double> cpu_by_thread_name();
// CPU seconds used so far by this process, and by process `pid` (0 if it is gone).
double process_cpu_seconds();
double cpu_seconds_of(pid_t pid);
// "name 1.2 s, other 0.3 s" for the threads that used at least 0.05 s between two snapshots
// (threads that ended in between are missing).
std::string cpu_difference(const std::map<std::string, double>& before,
                           const std::map<std::string, double>& after);

}  // namespace vcpilot::coordinator::scale_bench
