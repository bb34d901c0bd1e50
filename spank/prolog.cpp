// job_prolog: start the job's pilot on this node, detached (the prolog returns at once; the
// pilot lives until the epilog stops it), attached to the site's CRM, which makes the job's
// cluster when the first pilot of the job arrives.
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fmt/format.h>
#include <vector>

#include "common/error.hpp"
#include "common/fd.hpp"
#include "common/hostlist.hpp"
#include "spank/contexts.hpp"
#include "spank/pilot_files.hpp"

namespace vcpilot::spank {

std::string node_name() {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) != 0) {
        return {};
    }
    return name;
}

std::string job_id(spank_t sp) {
    std::uint32_t id = 0;
    if (spank_get_item(sp, S_JOB_ID, &id) != ESPANK_SUCCESS) {
        slurm_error("vcpilot: Slurm gave no job id");
        return {};
    }
    return std::to_string(id);
}

std::vector<char*> exec_args(std::vector<std::string>& argv) {
    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (auto& arg : argv) {
        args.push_back(arg.data());
    }
    args.push_back(nullptr);
    return args;
}

namespace {

std::string user_name(uid_t uid) {
    std::vector<char> buffer(16384);
    passwd entry{};
    passwd* found = nullptr;
    if (::getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found) != 0 || found == nullptr) {
        return {};
    }
    return found->pw_name;
}

// The job's node count: Slurm gives it to the prolog in its environment.
std::uint32_t job_nodes(spank_t sp) {
    std::uint32_t nodes = 0;
    if (spank_get_item(sp, S_JOB_NNODES, &nodes) == ESPANK_SUCCESS && nodes > 0) {
        return nodes;
    }
    for (const char* name : {"SLURM_JOB_NUM_NODES", "SLURM_NNODES"}) {
        if (const char* value = std::getenv(name); value != nullptr) {
            const long parsed = std::strtol(value, nullptr, 10);
            if (parsed > 0) {
                return static_cast<std::uint32_t>(parsed);
            }
        }
    }
    return 0;
}

// This node's place in the job's node list (Slurm's order, 1-based), so that the CRM names the
// job's first node <prefix>-<site>-1 and so on; 0 when it cannot be told, and the CRM numbers
// the nodes in the order their pilots attach: never a reason to fail the job.
std::uint32_t job_rank(const std::string& job, std::uint32_t nodes) {
    // Slurm 23.02 and later name it SLURM_JOB_NODELIST in the prolog; 22.05 only SLURM_NODELIST.
    const char* nodelist = std::getenv("SLURM_JOB_NODELIST");
    if (nodelist == nullptr || *nodelist == '\0') {
        nodelist = std::getenv("SLURM_NODELIST");
    }
    // Slurm's name for this node, which may differ from its hostname.
    const char* slurm_name = std::getenv("SLURMD_NODENAME");
    const std::string node =
        slurm_name != nullptr && *slurm_name != '\0' ? std::string(slurm_name) : node_name();
    if (nodelist == nullptr || *nodelist == '\0') {
        slurm_info(
            "vcpilot: job %s: no SLURM_JOB_NODELIST or SLURM_NODELIST; nodes are "
            "numbered as they attach",
            job.c_str());
        return 0;
    }
    auto rank = rank_in_hostlist(nodelist, node);
    if (!rank || *rank > nodes) {
        slurm_info(
            "vcpilot: job %s: cannot tell the place of %s in the job's nodes %.200s "
            "(%s); nodes are numbered as they attach",
            job.c_str(), node.c_str(), nodelist,
            rank ? "beyond the job's node count" : rank.error().message.c_str());
        return 0;
    }
    return *rank;
}

}  // namespace

int job_prolog(spank_t sp, const SiteConfig& config, const JobOptions& options) {
    if (!options.enabled) {
        return 0;
    }
    const std::string job = job_id(sp);
    uid_t uid = 0;
    if (job.empty() || spank_get_item(sp, S_JOB_UID, &uid) != ESPANK_SUCCESS) {
        slurm_error("vcpilot: job %s: Slurm gave no job user", job.c_str());
        return -1;
    }
    const std::string user = user_name(uid);
    const std::uint32_t nodes = job_nodes(sp);
    const std::string node = node_name();
    if (user.empty() || nodes == 0 || node.empty()) {
        slurm_error(
            "vcpilot: job %s: cannot tell the job's user (%u), node count or this node's "
            "name",
            job.c_str(), static_cast<unsigned>(uid));
        return -1;
    }
    std::vector<std::string> argv = {
        config.pilot,   "serve", "--job",    job,           "--run-dir",
        config.run_dir, "--crm", config.crm, "--job-nodes", std::to_string(nodes),
        "--job-user",   user};
    if (!config.munge_socket.empty()) {
        argv.insert(argv.end(), {"--munge-socket", config.munge_socket});
    }
    const std::uint32_t rank = job_rank(job, nodes);
    if (rank > 0) {
        argv.insert(argv.end(), {"--rank", std::to_string(rank)});
    }
    if (!options.cluster.empty()) {
        // The cluster reserved with vcctl has its range, keys and names (check_options refused
        // those options at submission).
        argv.insert(argv.end(), {"--cluster", options.cluster});
    } else {
        if (options.net) {
            argv.insert(argv.end(), {"--job-net", options.net->to_string()});
        }
        const KeyMode keys = options.keys.value_or(config.keys);
        argv.insert(argv.end(), {"--job-keys", keys == KeyMode::Exchange ? "exchange" : "ca"});
        if (!options.hostname_prefix.empty()) {
            argv.insert(argv.end(), {"--job-prefix", options.hostname_prefix});
        }
        if (options.overlay.value_or(config.overlay) == Overlay::N2n) {
            argv.insert(argv.end(), {"--job-overlay", "n2n"});
        }
    }
    if (!options.image.empty()) {
        argv.insert(argv.end(),
                    {"--job-image", options.image, "--job-image-mount", config.image_mount});
        for (const auto& root : config.image_roots) {
            argv.insert(argv.end(), {"--image-root", root});
        }
    }
    // The pilot's pid and log sit next to its run directory (see PilotDir).
    const PilotDir dir = pilot_dir(config.run_dir, node, job);
    std::error_code ec;
    std::filesystem::create_directories(dir.root.parent_path(), ec);
    const std::string log = dir.log_file().string();
    const std::string pid_file = dir.pid_file().string();
    std::filesystem::remove(pid_file, ec);

    std::vector<char*> args = exec_args(argv);
    // Detached: a session of its own (the prolog's process group may be killed when it ends or
    // times out), stdin from /dev/null, stdout and stderr to its log, nothing else inherited,
    // default signal dispositions and an empty mask. posix_spawn does not copy slurmstepd's
    // address space as fork would (a page fault per page written afterwards, on every node at
    // every job start); when the prolog exits the pilot is reparented, as with a double fork.
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attributes);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    posix_spawnattr_setflags(&attributes,
                             POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setsigmask(&attributes, &none);
    posix_spawnattr_setsigdefault(&attributes, &all);
    pid_t pilot = -1;
    const int error = ::posix_spawn(&pilot, args[0], &actions, &attributes, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    if (error != 0) {
        slurm_error("vcpilot: job %s: start %s: %s", job.c_str(), args[0],
                    errno_text(error).c_str());
        return -1;
    }
    const UniqueFd fd(::open(pid_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (fd) {
        const std::string text = std::to_string(pilot) + "\n";
        (void)(::write(fd.get(), text.data(), text.size()) < 0);
    }
    slurm_info(
        "vcpilot: job %s: pilot started on %s (node %u of the job, 0: unknown) for %u "
        "node(s) of %s",
        job.c_str(), node.c_str(), rank, nodes, user.c_str());
    return 0;
}

int local_post_options(const JobOptions& options) {
    if (auto ok = check_options(options); !ok) {
        slurm_error("vcpilot: %s", ok.error().message.c_str());
        return -1;
    }
    return 0;
}

}  // namespace vcpilot::spank
