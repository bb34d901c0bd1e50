#include "pilot/privileged/namespaces.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <fmt/format.h>
#include <fstream>
#include <future>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/job_record.hpp"
#include "common/process.hpp"
#include "common/text.hpp"
#include "pilot/privileged/files.hpp"

namespace vcpilot::pilot {

namespace fs = std::filesystem;

namespace {

// A namespace's identity: the nsfs inode number of /proc/<pid>/ns/<kind>.
std::optional<ino_t> namespace_inode(const fs::path& file) {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) {
        return std::nullopt;
    }
    return st.st_ino;
}

std::optional<RecordedNamespaces> read_recorded(const JobPaths& paths) {
    return read_namespaces_record(paths.namespaces_file());
}

Status record(const JobPaths& paths, pid_t holder) {
    const auto files = NamespaceFiles::of_process(holder);
    const auto net = namespace_inode(files.net);
    const auto mnt = namespace_inode(files.mnt);
    if (!net || !mnt) {
        return sys_error("read the namespaces of the holder, pid " + std::to_string(holder));
    }
    return write_namespaces_record(paths.namespaces_file(), {holder, *net, *mnt});
}

// What the holder thread says once its namespaces are set up, or why they are not.
struct HolderReport {
    pid_t tid = -1;
    Status setup;
};

// The holder thread's life: unshare and set the namespaces up, report, then wait to be
// released (`release_fd` readable).
void hold(std::promise<HolderReport> report, const std::string& hostname, const InsideSetup& inside,
          int release_fd) {
    ::prctl(PR_SET_NAME, "vc-ns-holder");
    HolderReport result{static_cast<pid_t>(::gettid()), {}};
    // A thread that shares its filesystem context (root, cwd, umask) with others cannot change
    // mount namespace: it takes a copy of its own first.
    if (::unshare(CLONE_FS) != 0) {
        result.setup = sys_error("unshare(fs)");
    } else if (::unshare(CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWUTS) != 0) {
        result.setup = sys_error("unshare(net, mnt, uts)");
    } else if (::sethostname(hostname.data(), hostname.size()) != 0) {
        result.setup = sys_error("sethostname " + quote(hostname));
    } else {
        result.setup = inside();
    }
    // On failure the namespaces, mounts included, go as this thread ends.
    const bool held = result.setup.ok();
    report.set_value(std::move(result));
    while (held) {
        pollfd released{release_fd, POLLIN, 0};
        if (::poll(&released, 1, -1) > 0 || errno != EINTR) {
            return;
        }
    }
}

}  // namespace

NamespaceFiles NamespaceFiles::of_process(pid_t pid) {
    const fs::path ns = fs::path("/proc") / std::to_string(pid) / "ns";
    return {ns / "net", ns / "mnt", ns / "uts"};
}

Result<UniqueFd> open_namespace(const fs::path& file) {
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return sys_error("open namespace " + file.string());
    }
    return UniqueFd(fd);
}

Status in_network_namespace(int netns_fd, std::string_view which,
                            const std::function<void()>& work) {
    Status entered;
    try {
        std::thread helper([&] {
            if (::setns(netns_fd, CLONE_NEWNET) != 0) {
                const int errnum = errno;
                entered = Error{
                    fmt::format("enter the {} network namespace (fd {}): {}{}", which, netns_fd,
                                errno_text(errnum),
                                errnum == EINVAL ? " (the fd is not a network namespace)" : ""),
                    errnum};
                return;
            }
            work();
        });
        helper.join();
    } catch (const std::system_error& error) {
        return Error{fmt::format("start a thread to enter the {} network namespace: {}", which,
                                 error.what())};
    }
    return entered;
}

Result<JobNamespaceFds> JobNamespaceFds::open(const NamespaceFiles& files) {
    // Kept above 0-2: a child dup2()s onto those before it may still need these, and a
    // process started with stdio closed would otherwise get one as, say, descriptor 0, where
    // anything that restores stdin later replaces it.
    const auto open_above_stdio = [](const fs::path& file) -> Result<UniqueFd> {
        auto fd = open_namespace(file);
        if (!fd || fd->get() > STDERR_FILENO) {
            return fd;
        }
        const int moved = ::fcntl(fd->get(), F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
        if (moved < 0) {
            return sys_error("fcntl(F_DUPFD_CLOEXEC) " + file.string());
        }
        return UniqueFd(moved);
    };
    JobNamespaceFds fds;
    auto net = open_above_stdio(files.net);
    if (!net) {
        return net.error();
    }
    auto mnt = open_above_stdio(files.mnt);
    if (!mnt) {
        return mnt.error();
    }
    auto uts = open_above_stdio(files.uts);
    if (!uts) {
        return uts.error();
    }
    fds.net_ = std::move(*net);
    fds.mnt_ = std::move(*mnt);
    fds.uts_ = std::move(*uts);
    return fds;
}

int JobNamespaceFds::enter() const noexcept {
    if (::setns(net_.get(), CLONE_NEWNET) != 0 || ::setns(uts_.get(), CLONE_NEWUTS) != 0 ||
        ::setns(mnt_.get(), CLONE_NEWNS) != 0) {
        return errno;
    }
    return 0;
}

Result<std::unique_ptr<JobNamespaces>> JobNamespaces::create(const JobPaths& paths,
                                                             std::string_view hostname,
                                                             const InsideSetup& inside) {
    std::unique_ptr<JobNamespaces> namespaces(new JobNamespaces());
    namespaces->release_ = UniqueFd(::eventfd(0, EFD_CLOEXEC));
    if (!namespaces->release_) {
        return sys_error("eventfd");
    }
    std::promise<HolderReport> promise;
    std::future<HolderReport> reported = promise.get_future();
    try {
        namespaces->thread_ = std::thread(hold, std::move(promise), std::string(hostname), inside,
                                          namespaces->release_.get());
    } catch (const std::system_error& error) {
        return Error{std::string("start the namespace holder thread: ") + error.what()};
    }
    HolderReport report = reported.get();
    if (!report.setup) {
        namespaces->thread_.join();
        return report.setup.error();
    }
    namespaces->holder_ = report.tid;
    if (auto ok = record(paths, namespaces->holder_); !ok) {
        ::unlink(paths.namespaces_file().c_str());
        return ok.error();  // the holder is released as `namespaces` goes
    }
    return namespaces;
}

JobNamespaces::~JobNamespaces() {
    if (thread_.joinable()) {
        notify_eventfd(release_.get());
        thread_.join();
    }
}

std::vector<pid_t> processes_in_job_namespaces(const JobPaths& paths) {
    std::vector<pid_t> pids;
    const auto recorded = read_recorded(paths);
    if (!recorded) {
        return pids;
    }
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator("/proc", ec)) {
        const std::string name = entry.path().filename().string();
        if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) {
            continue;
        }
        const pid_t pid = static_cast<pid_t>(std::stol(name));
        if (pid == ::getpid()) {
            continue;
        }
        const auto files = NamespaceFiles::of_process(pid);
        if (namespace_inode(files.net) == recorded->net ||
            namespace_inode(files.mnt) == recorded->mnt) {
            pids.push_back(pid);
        }
    }
    return pids;
}

Status teardown_job(const JobPaths& paths, std::chrono::milliseconds grace, TeardownScope scope) {
    // The job's VXLAN device goes with its network namespace, which the kernel frees in the
    // background once the last process in it is gone. Deleting the device here would free its
    // VNI at once but cost every job end tens of milliseconds of RCU grace periods; the next
    // job to want that VNI on this node waits for it instead (create_overlay).
    // SIGTERM to everything in the job's namespaces, then a wait that ends the moment the last
    // of them exits; again for any that a dying process started meanwhile.
    const auto deadline = std::chrono::steady_clock::now() + grace;
    auto pids = processes_in_job_namespaces(paths);
    while (!pids.empty() && std::chrono::steady_clock::now() < deadline) {
        for (pid_t pid : pids) {
            ::kill(pid, SIGTERM);
        }
        wait_for_exit(pids, deadline);
        pids = processes_in_job_namespaces(paths);
    }
    for (pid_t pid : pids) {
        ::kill(pid, SIGKILL);
    }
    std::error_code ec;
    if (scope == TeardownScope::keep_control) {
        for (const auto& entry : fs::directory_iterator(paths.root(), ec)) {
            if (entry.path() != paths.socket() && entry.path() != paths.state_file()) {
                fs::remove_all(entry.path(), ec);
                if (ec) {
                    return Error{"remove " + entry.path().string() + ": " + ec.message()};
                }
            }
        }
        return {};
    }
    fs::remove_all(paths.root(), ec);
    if (ec) {
        return Error{"remove " + paths.root().string() + ": " + ec.message()};
    }
    // The node directory is shared with other jobs; it goes only when empty.
    fs::remove(paths.root().parent_path(), ec);
    return {};
}

}  // namespace vcpilot::pilot
