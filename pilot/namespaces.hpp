// The job's network, mount and UTS namespaces.
//
// They are held by a small process, the holder, that the pilot forks: it unshares the three
// namespaces, sets them up from inside (hostname, mounts), then sleeps. sshd, RUN commands and
// the SPANK plugin enter them through /proc/<holder>/ns/*. The holder dies with the pilot
// (PR_SET_PDEATHSIG), and with it the namespaces, unless a process is still inside: teardown
// finds such processes by the namespaces' inode numbers, recorded in the job's run directory.
//
// Why not bind-mount the namespace files, as `ip netns` does: persisting a mount namespace that
// way failed with EINVAL here (kernel 6.18) whenever the pilot itself ran in a mount namespace
// holding a file bind mount, and a killed pilot would leave the mounts behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "pilot/files.hpp"
#include "pilot/paths.hpp"

namespace vcpilot::pilot {

struct NamespaceFiles {
    std::filesystem::path net;
    std::filesystem::path mnt;
    std::filesystem::path uts;

    static NamespaceFiles of_process(pid_t pid);
};

Result<UniqueFd> open_namespace(const std::filesystem::path& file);

// Runs `work` on a short-lived thread that has entered the network namespace of `netns_fd` (a
// thread's network namespace is its own, so the caller's stays as it was); sockets `work` makes
// belong to that namespace for good. Fails without running `work` if the thread cannot start
// or enter the namespace; `which` names it in the message ("enter the job network namespace
// (fd 7): ..."). `work` must not throw.
Status in_network_namespace(int netns_fd, std::string_view which,
                            const std::function<void()>& work);

// The three namespaces of a job, opened for setns (in a child between fork and exec, where
// only async-signal-safe calls are allowed: enter() is one).
class JobNamespaceFds {
  public:
    static Result<JobNamespaceFds> open(const NamespaceFiles& files);
    // setns into net, uts and mnt (mnt last: it changes the root and cwd). Returns 0 or errno.
    int enter() const noexcept;

  private:
    UniqueFd net_, mnt_, uts_;
};

// Runs in the holder, inside the fresh namespaces, before anything else: mounts and the like.
// The holder is single-threaded.
using InsideSetup = std::function<Status()>;

struct JobNamespaces {
    pid_t holder = -1;
    NamespaceFiles files() const { return NamespaceFiles::of_process(holder); }
};

// Forks the holder: new network, mount and UTS namespaces with `hostname`, `inside` run in
// them, and their identity recorded in the run directory. Must be called from a thread that
// lives as long as the pilot (PR_SET_PDEATHSIG follows the creating thread). On any error
// nothing is left behind.
Result<JobNamespaces> create_job_namespaces(const JobPaths& paths, std::string_view hostname,
                                            const InsideSetup& inside);

// Processes inside the job's network or mount namespace, as recorded in the run directory.
std::vector<pid_t> processes_in_job_namespaces(const JobPaths& paths);

enum class TeardownScope {
    everything,    // the whole run directory
    keep_control,  // all but the control socket and the state file (after a failed SETUP)
};

// Stops every process inside the job's namespaces, the holder included (SIGTERM, waiting until
// they have exited; SIGKILL to any still there after `grace`), and removes the run directory.
// The job's overlay link goes with its network namespace. Idempotent: safe on a job that is
// half built, already gone, or whose pilot was killed.
Status teardown_job(const JobPaths& paths, std::chrono::milliseconds grace, TeardownScope scope);

}  // namespace vcpilot::pilot
