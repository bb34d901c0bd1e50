// What the plugin reads of a pilot's run directory (<run_dir>/<node>/<job>, see
// pilot/paths.hpp): its state file, the record of the job's namespaces and the job's node
// names. Pure C++.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "common/job_record.hpp"
#include "common/node_names.hpp"
#include "common/result.hpp"

namespace vcpilot::spank {

struct PilotDir {
    std::filesystem::path root;  // <run_dir>/<node>/<job>

    // Next to the run directory, written by the plugin's prolog: the pilot's pid and output,
    // which outlive the run directory when the pilot stops early, to tell the task why.
    std::filesystem::path pid_file() const {
        return root.parent_path() / ("pilot-" + root.filename().string() + ".pid");
    }
    std::filesystem::path log_file() const {
        return root.parent_path() / ("pilot-" + root.filename().string() + ".log");
    }
    std::filesystem::path state_file() const { return root / "state.json"; }
    std::filesystem::path namespaces_file() const { return root / "namespaces"; }
    std::filesystem::path hostfile() const { return root / "job" / "hostfile"; }
    std::filesystem::path nodelist() const { return root / "job" / "nodelist"; }
    std::filesystem::path slurm_nodes() const { return root / "job" / "slurm_nodes"; }
};

PilotDir pilot_dir(const std::string& run_dir, const std::string& node, const std::string& job);

// The state file's key=value lines; nothing if it does not exist (yet).
std::optional<std::map<std::string, std::string>> read_pilot_state(const PilotDir& dir);

// The pilot's record of the job's namespaces, complete (holder, net and mnt).
Result<RecordedNamespaces> read_namespaces(const PilotDir& dir);

// The job's nodes' virtual names by their Slurm names (common/node_names.hpp); empty when the
// pilot wrote none (it was not told its site's Slurm nodes).
Result<NameMap> read_virtual_names(const PilotDir& dir);

// The pid the prolog recorded; 0 if none (yet).
pid_t read_pilot_pid(const PilotDir& dir);
// The last non-empty line of the pilot's output, without its timestamp prefix.
std::string last_log_line(const PilotDir& dir);

// Whether `pid` is a live (not zombie) process.
bool process_alive(pid_t pid);

}  // namespace vcpilot::spank
