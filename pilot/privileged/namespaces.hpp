// The job's network, mount and UTS namespaces.
//
// They are held by a thread of the pilot, the holder: it unshares them (its filesystem context
// first, so that it alone changes mount namespace), sets them up from inside (hostname,
// mounts), then waits until it is released. sshd, RUN commands and the SPANK plugin enter them
// through /proc/<holder>/ns/*, the holder being the thread's id. The namespaces go when the
// holder ends, which the pilot's end (kill -9 included) ends too, unless a process is still
// inside: teardown finds such processes by the namespaces' inode numbers, recorded in the job's
// run directory.
//
// A thread, not a child process: forking the multi-threaded pilot copied its page tables and
// made every page either side then wrote a copy-on-write fault, a few milliseconds of each job
// node's start on a VM where such a fault costs 19 us.
//
// Why not bind-mount the namespace files, as `ip netns` does: persisting a mount namespace that
// way failed with EINVAL here (kernel 6.18) whenever the pilot itself ran in a mount namespace
// holding a file bind mount, and a killed pilot would leave the mounts behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "common/fd.hpp"
#include "common/result.hpp"
#include "pilot/privileged/files.hpp"
#include "pilot/privileged/paths.hpp"

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

// Runs on the holder thread, inside the fresh namespaces, before anything else: mounts and the
// like. Paths of the thread's own view are /proc/thread-self/..., not /proc/self/..., which is
// the pilot's main thread, outside.
using InsideSetup = std::function<Status()>;

class JobNamespaces {
  public:
    // Starts the holder: new network, mount and UTS namespaces with `hostname`, `inside` run in
    // them, and their identity recorded in the run directory. On any error nothing is left
    // behind.
    static Result<std::unique_ptr<JobNamespaces>> create(const JobPaths& paths,
                                                         std::string_view hostname,
                                                         const InsideSetup& inside);
    // Releases the holder and waits for its thread to end.
    ~JobNamespaces();
    JobNamespaces(const JobNamespaces&) = delete;
    JobNamespaces& operator=(const JobNamespaces&) = delete;

    pid_t holder() const { return holder_; }
    NamespaceFiles files() const { return NamespaceFiles::of_process(holder_); }

  private:
    JobNamespaces() = default;

    pid_t holder_ = -1;  // the holder thread's id
    UniqueFd release_;   // an eventfd: written, the holder ends
    std::thread thread_;
};

// Processes inside the job's network or mount namespace, as recorded in the run directory.
std::vector<pid_t> processes_in_job_namespaces(const JobPaths& paths);

enum class TeardownScope {
    everything,    // the whole run directory
    keep_control,  // all but the control socket and the state file (after a failed SETUP)
};

// Stops every process inside the job's namespaces (SIGTERM, waiting until they have exited;
// SIGKILL to any still there after `grace`), and removes the run directory. The holder, a
// thread of the pilot, is not one of them: the pilot releases it (or is gone).
// The job's overlay link goes with its network namespace. Idempotent: safe on a job that is
// half built, already gone, or whose pilot was killed.
Status teardown_job(const JobPaths& paths, std::chrono::milliseconds grace, TeardownScope scope);

}  // namespace vcpilot::pilot
