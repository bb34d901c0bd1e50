#include "spank/pilot_files.hpp"

#include <signal.h>

#include <cerrno>
#include <fmt/format.h>
#include <fstream>
#include <sstream>

namespace vcpilot::spank {

PilotDir pilot_dir(const std::string& run_dir, const std::string& node, const std::string& job) {
    return PilotDir{std::filesystem::path(run_dir) / node / job};
}

std::optional<std::map<std::string, std::string>> read_pilot_state(const PilotDir& dir) {
    std::ifstream in(dir.state_file());
    if (!in) {
        return std::nullopt;
    }
    std::map<std::string, std::string> state;
    std::string line;
    while (std::getline(in, line)) {
        const auto equals = line.find('=');
        if (equals != std::string::npos) {
            state[line.substr(0, equals)] = line.substr(equals + 1);
        }
    }
    return state;
}

Result<RecordedNamespaces> read_namespaces(const PilotDir& dir) {
    const auto recorded = read_namespaces_record(dir.namespaces_file());
    if (!recorded || recorded->holder <= 0 || recorded->net == 0 || recorded->mnt == 0) {
        return Error{fmt::format("{} is missing or incomplete", dir.namespaces_file().string())};
    }
    return *recorded;
}

Result<NameMap> read_virtual_names(const PilotDir& dir) {
    std::ifstream in(dir.slurm_nodes());
    if (!in) {
        return NameMap{};
    }
    std::stringstream text;
    text << in.rdbuf();
    auto names = parse_node_names(text.str(), NameDirection::to_virtual);
    if (!names) {
        return Error{fmt::format("{}: {}", dir.slurm_nodes().string(), names.error().message)};
    }
    return names;
}

pid_t read_pilot_pid(const PilotDir& dir) {
    std::ifstream in(dir.pid_file());
    long pid = 0;
    return (in >> pid) && pid > 0 ? static_cast<pid_t>(pid) : 0;
}

std::string last_log_line(const PilotDir& dir) {
    std::ifstream in(dir.log_file());
    std::string line, last;
    while (std::getline(in, line)) {
        if (!line.empty()) {
            last = line;
        }
    }
    // "2026-12-02T13:32:19.916 vc-pilot[19539] error: job 999: ..." -> "job 999: ..."
    if (const auto level = last.find("]: "); level != std::string::npos) {
        last = last.substr(level + 3);
    } else if (const auto bracket = last.find("] "); bracket != std::string::npos) {
        last = last.substr(bracket + 2);
        // npos (no colon) is past 10 too.
        if (const auto colon = last.find(": "); colon < 10) {
            last = last.substr(colon + 2);
        }
    }
    return last;
}

bool process_alive(pid_t pid) {
    if (pid <= 0 || (::kill(pid, 0) != 0 && errno != EPERM)) {
        return false;
    }
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text;
    std::getline(stat, text);
    const auto close = text.rfind(')');
    return close != std::string::npos && close + 2 < text.size() && text[close + 2] != 'Z';
}

}  // namespace vcpilot::spank
