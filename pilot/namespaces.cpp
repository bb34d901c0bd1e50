#include "pilot/namespaces.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fmt/format.h>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/job_record.hpp"
#include "common/process.hpp"
#include "common/text.hpp"
#include "pilot/files.hpp"

namespace vcpilot::pilot {

namespace fs = std::filesystem;

namespace {

Error sys_error(const std::string& what, int error = errno) {
    return Error{what + ": " + std::strerror(error)};
}

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

std::string read_all(int fd) {
    std::string text;
    char buffer[512];
    for (;;) {
        const ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n > 0) {
            text.append(buffer, static_cast<std::size_t>(n));
        } else if (n == 0 || errno != EINTR) {
            return text;
        }
    }
}

// The holder's life: set the namespaces up, report, then wait to be killed.
[[noreturn]] void be_holder(int report_fd, pid_t parent, const std::string& hostname,
                            const InsideSetup& inside) {
    std::string failure;
    // The pilot blocks its stop signals in every thread; its children must not inherit that.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) {
        failure = "the pilot went away while its namespace holder started";
    } else if (::unshare(CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWUTS) != 0) {
        failure = std::string("unshare(net, mnt, uts): ") + std::strerror(errno);
    } else if (::sethostname(hostname.data(), hostname.size()) != 0) {
        failure = "sethostname " + quote(hostname) + ": " + std::strerror(errno);
    } else if (auto ok = inside(); !ok) {
        failure = ok.error().message;
    }
    ::prctl(PR_SET_NAME, "vc-ns-holder");
    write_fully(report_fd, failure.empty() ? std::string_view("ok") : failure);
    ::close(report_fd);
    if (!failure.empty()) {
        ::_exit(1);
    }
    // Nothing to do but exist. Every fd but the standard ones is closed, so the holder keeps
    // nothing of the pilot's open.
    ::close_range(3, ~0U, 0);
    for (;;) {
        ::pause();
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
                                std::strerror(errnum),
                                errnum == EINVAL ? " (the fd is not a network namespace)" : "")};
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

Result<JobNamespaces> create_job_namespaces(const JobPaths& paths, std::string_view hostname,
                                            const InsideSetup& inside) {
    int report[2];
    if (::pipe2(report, O_CLOEXEC) != 0) {
        return sys_error("pipe");
    }
    const std::string name(hostname);
    const pid_t parent = ::getpid();
    const pid_t holder = ::fork();
    if (holder < 0) {
        const int error = errno;
        ::close(report[0]);
        ::close(report[1]);
        return sys_error("fork", error);
    }
    if (holder == 0) {
        ::close(report[0]);
        be_holder(report[1], parent, name, inside);
    }
    ::close(report[1]);
    const std::string message = read_all(report[0]);
    ::close(report[0]);
    Status status;
    if (message != "ok") {
        status = Error{message.empty() ? "the namespace holder died while starting" : message};
    } else {
        status = record(paths, holder);
    }
    if (!status) {
        ::kill(holder, SIGKILL);
        while (::waitpid(holder, nullptr, 0) < 0 && errno == EINTR) {
        }
        ::unlink(paths.namespaces_file().c_str());
        return status.error();
    }
    return JobNamespaces{holder};
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
