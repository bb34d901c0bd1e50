// job_epilog: stop this node's pilot (SIGTERM: it tears the job's namespaces, links, mounts
// and sshd down and tells the CRM, which releases the job's cluster), then check that nothing
// of the job is left. What the pilot left is removed with `vc-pilot cleanup`; if even that
// leaves something, the epilog fails, so that Slurm drains the node instead of hiding a leak.
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include "common/fd.hpp"
#include "spank/contexts.hpp"
#include "spank/pilot_files.hpp"

namespace vcpilot::spank {

namespace {

using Clock = std::chrono::steady_clock;

// Waits until the pilot has torn the job down or has died, at most `timeout`; true if the job
// is gone. Its run directory is the last thing the pilot removes, so once it has gone nothing
// of the job is left, and the pilot's last moments (GONE to the CRM, its gRPC server stopping,
// bounded by its own deadlines) are not waited for. A pilot that died but left its directory
// was killed: only `vc-pilot cleanup` will remove it. The pilot's death wakes this at once
// through a pidfd; the directory is looked at every 2 ms.
bool wait_gone(const PilotDir& dir, pid_t pid, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    const auto gone = [&] {
        std::error_code ec;
        return !std::filesystem::exists(dir.root, ec) && !ec;
    };
    const UniqueFd died(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    while (!gone() && process_alive(pid) && Clock::now() < deadline) {
        if (died) {
            pollfd exited{died.get(), POLLIN, 0};
            ::poll(&exited, 1, 2);
        } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
    }
    return gone();
}

// Runs `vc-pilot cleanup` for the job and waits for it (bounded by the pilot's own teardown
// grace).
bool cleanup(const SiteConfig& config, const std::string& job, const std::string& node) {
    std::vector<std::string> argv = {config.pilot, "cleanup", "--job",     job,
                                     "--node",     node,      "--run-dir", config.run_dir};
    std::vector<char*> args = exec_args(argv);
    const pid_t child = ::fork();
    if (child < 0) {
        return false;
    }
    if (child == 0) {
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace

int job_epilog(spank_t sp, const SiteConfig& config, const JobOptions& options) {
    if (!options.enabled) {
        return 0;
    }
    const std::string job = job_id(sp);
    if (job.empty()) {
        return -1;
    }
    const std::string node = node_name();
    const PilotDir dir = pilot_dir(config.run_dir, node, job);
    pid_t pid = read_pilot_pid(dir);
    if (auto state = read_pilot_state(dir)) {
        const std::string& text = (*state)["pid"];
        pid_t recorded = 0;  // as atol: 0 when the state has no number
        (void)std::from_chars(text.data(), text.data() + text.size(), recorded);
        pid = recorded;
    }
    if (process_alive(pid)) {
        ::kill(pid, SIGTERM);
    }
    bool clean = wait_gone(dir, pid, std::chrono::seconds(15));
    if (!clean) {
        slurm_error(
            "vcpilot: job %s: the pilot (pid %d) did not clean up in time; running "
            "vc-pilot cleanup",
            job.c_str(), static_cast<int>(pid));
        if (process_alive(pid)) {
            ::kill(pid, SIGKILL);
        }
        clean = cleanup(config, job, node) && wait_gone(dir, pid, std::chrono::seconds(5));
    }
    std::error_code ec;
    if (!clean) {
        slurm_error(
            "vcpilot: job %s: %s is still there after cleanup (pilot log: %s); failing "
            "the epilog so that the node is drained",
            job.c_str(), dir.root.c_str(), dir.log_file().c_str());
        return -1;
    }
    std::filesystem::remove(dir.log_file(), ec);
    std::filesystem::remove(dir.pid_file(), ec);
    std::filesystem::remove(dir.root.parent_path(), ec);  // the node's directory, once empty
    return 0;
}

}  // namespace vcpilot::spank
