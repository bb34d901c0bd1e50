#include "bench/coordinator_scale/common.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

namespace vcpilot::coordinator::scale_bench {
namespace {

struct TaskStat {
    std::string name;
    double cpu_seconds = 0;  // utime + stime
};

// A /proc/.../stat line: the name between the parentheses, and fields 14 and 15 (utime, stime).
std::optional<TaskStat> parse_stat(const std::string& line) {
    const auto open = line.find('(');
    const auto close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close + 2 > line.size()) {
        return std::nullopt;
    }
    static const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
    TaskStat stat{line.substr(open + 1, close - open - 1)};
    std::istringstream rest(line.substr(close + 2));
    std::string field;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
        if (i == 14 || i == 15) {
            stat.cpu_seconds += std::stod(field) / tick;
        }
    }
    return stat;
}

std::optional<TaskStat> read_stat(const std::filesystem::path& file) {
    std::ifstream in(file);
    std::string line;
    if (!std::getline(in, line)) {
        return std::nullopt;
    }
    return parse_stat(line);
}

}  // namespace

double seconds_between(Clock::time_point from, Clock::time_point to) {
    return std::chrono::duration<double>(to - from).count();
}

void must(const Status& status, std::string_view doing) {
    if (!status) {
        throw std::runtime_error(fmt::format("{}: {}", doing, status.error().message));
    }
}

void must_ok(const grpc::Status& status, std::string_view doing) {
    if (!status.ok()) {
        throw std::runtime_error(fmt::format("{}: {} (code {})", doing, status.error_message(),
                                             static_cast<int>(status.error_code())));
    }
}

double percentile(std::vector<double> values, double p) {
    if (values.empty()) {
        return 0;
    }
    std::sort(values.begin(), values.end());
    const auto index = static_cast<std::size_t>(
        std::max(0.0, std::ceil(p * static_cast<double>(values.size())) - 1));
    return values[std::min(index, values.size() - 1)];
}

double median(std::vector<double> values) {
    if (values.empty()) {
        return 0;
    }
    std::sort(values.begin(), values.end());
    const std::size_t n = values.size();
    return n % 2 != 0 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

std::map<std::string, double> cpu_by_thread_name() {
    std::map<std::string, double> out;
    std::error_code error;
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task", error)) {
        if (auto stat = read_stat(task.path() / "stat")) {
            out[stat->name] += stat->cpu_seconds;
        }
    }
    return out;
}

double process_cpu_seconds() {
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    auto seconds = [](const timeval& t) {
        return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
    };
    return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

double cpu_seconds_of(pid_t pid) {
    const auto stat = read_stat(std::filesystem::path("/proc") / std::to_string(pid) / "stat");
    return stat ? stat->cpu_seconds : 0;
}

std::string cpu_difference(const std::map<std::string, double>& before,
                           const std::map<std::string, double>& after) {
    std::vector<std::pair<double, std::string>> used;
    for (const auto& [name, seconds] : after) {
        auto found = before.find(name);
        const double delta = seconds - (found == before.end() ? 0 : found->second);
        if (delta >= 0.05) {
            used.emplace_back(delta, name);
        }
    }
    std::sort(used.rbegin(), used.rend());
    std::string text;
    for (const auto& [seconds, name] : used) {
        text += fmt::format("{}{} {:.1f} s", text.empty() ? "" : ", ", name, seconds);
    }
    return text;
}

}  // namespace vcpilot::coordinator::scale_bench
