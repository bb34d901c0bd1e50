// task_init_privileged: the task joins the job's virtual node, or does not run. It waits (up to
// ready_timeout) for this node's pilot to be READY, then enters the namespaces its holder
// thread keeps (network, UTS, mount), checking that they are the ones the pilot recorded, and
// tells the task where it is (VC_* variables, and Slurm's node lists in virtual names). Any failure
// returns an error, and slurmstepd then does not exec the task: a --vc task never runs on the host
// network.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fmt/format.h>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.hpp"
#include "common/node_names.hpp"
#include "common/result.hpp"
#include "spank/contexts.hpp"
#include "spank/pilot_files.hpp"
#include "spank/pmix_bridge.hpp"

namespace vcpilot::spank {

namespace {

using Clock = std::chrono::steady_clock;

// slurm.h's SLURM_EXTERN_CONT: the step id of a job's extern step.
constexpr std::uint32_t kExternStep = 0xfffffffc;

volatile sig_atomic_t g_cancelled = 0;

void on_cancel(int) {
    g_cancelled = 1;
}

// While the task waits, the signals of a cancelled step (scancel, srun interrupted) reach it:
// slurmstepd ignores or blocks them in a task that has not exec'd yet, and would otherwise
// kill it only after KillWait. Restores what was there when it goes out of scope.
class CancelWatch {
  public:
    CancelWatch() {
        g_cancelled = 0;
        struct sigaction action {};
        action.sa_handler = on_cancel;
        sigemptyset(&action.sa_mask);
        sigset_t set;
        sigemptyset(&set);
        for (std::size_t i = 0; i < kSignals.size(); ++i) {
            ::sigaction(kSignals[i], &action, &saved_[i]);
            sigaddset(&set, kSignals[i]);
        }
        // pthread_sigmask, not sigprocmask, which POSIX leaves unspecified in a process with
        // threads; the task has one, so the two do the same.
        ::pthread_sigmask(SIG_UNBLOCK, &set, &mask_);
    }
    ~CancelWatch() {
        ::pthread_sigmask(SIG_SETMASK, &mask_, nullptr);
        for (std::size_t i = 0; i < kSignals.size(); ++i) {
            ::sigaction(kSignals[i], &saved_[i], nullptr);
        }
    }
    CancelWatch(const CancelWatch&) = delete;
    CancelWatch& operator=(const CancelWatch&) = delete;

  private:
    static constexpr std::array<int, 3> kSignals = {SIGTERM, SIGINT, SIGHUP};
    std::array<struct sigaction, 3> saved_{};
    sigset_t mask_{};
};

// Sleeps until something is renamed into or written in the pilot's run directory (the pilot
// replaces state.json by rename), a signal arrives, or `most` passes: the task wakes when the
// state changes, not on a polling interval. Before the directory exists, it just sleeps.
class StateWatch {
  public:
    explicit StateWatch(std::filesystem::path dir) : dir_(std::move(dir)) {}

    void wait(std::chrono::milliseconds most) {
        if (!fd_) {
            fd_.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
            if (fd_ && ::inotify_add_watch(fd_.get(), dir_.c_str(),
                                           IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE_SELF) < 0) {
                fd_.reset();
            }
        }
        if (!fd_) {
            std::this_thread::sleep_for(most);
            return;
        }
        pollfd ready{fd_.get(), POLLIN, 0};
        if (::poll(&ready, 1, static_cast<int>(most.count())) > 0) {
            std::array<char, 4096> events{};  // drained: only "something changed" matters
            while (::read(fd_.get(), events.data(), events.size()) > 0) {
            }
        }
    }

  private:
    std::filesystem::path dir_;
    UniqueFd fd_;
};

// Waits for the pilot's READY; the error says how far it got.
Result<std::map<std::string, std::string>> wait_ready(const PilotDir& dir,
                                                      std::chrono::seconds timeout) {
    const auto deadline = Clock::now() + timeout;
    std::string last = "not started";
    bool seen = false;
    StateWatch watch(dir.root);
    for (;;) {
        auto state = read_pilot_state(dir);
        if (!state) {
            // Gone before or without its state: the prolog's record and the pilot's last words.
            const pid_t pid = read_pilot_pid(dir);
            if (seen || (pid > 0 && !process_alive(pid))) {
                const std::string said = last_log_line(dir);
                return Error{fmt::format("the pilot stopped{}{}", said.empty() ? "" : ": ", said)};
            }
        }
        if (state) {
            seen = true;
            const std::string current = (*state)["state"];
            if (current == "READY") {
                return *state;
            }
            if (current == "FAILED" || current == "STOPPING" || current == "GONE") {
                const std::string& reason = (*state)["reason"];
                return Error{fmt::format("the pilot is {}{}{}", current, reason.empty() ? "" : ": ",
                                         reason)};
            }
            const std::string& pid_text = (*state)["pid"];
            pid_t pid = 0;  // as atol: 0 when no number follows
            (void)std::from_chars(pid_text.data(), pid_text.data() + pid_text.size(), pid);
            if (!process_alive(pid)) {
                return Error{fmt::format("the pilot (pid {}) exited while {}", pid, current)};
            }
            last = current;
        }
        if (g_cancelled != 0) {
            return Error{"the step was cancelled while waiting for the virtual cluster"};
        }
        if (Clock::now() >= deadline) {
            return Error{
                fmt::format("the virtual cluster was not ready within {} s (this node's "
                            "pilot: {})",
                            timeout.count(), last)};
        }
        watch.wait(std::chrono::milliseconds(20));
    }
}

Status join(const RecordedNamespaces& recorded) {
    const std::string base = fmt::format("/proc/{}/ns/", recorded.holder);
    // Open all three first: once in the job's mount namespace, /proc paths may differ.
    const UniqueFd net(::open((base + "net").c_str(), O_RDONLY | O_CLOEXEC));
    const UniqueFd uts(::open((base + "uts").c_str(), O_RDONLY | O_CLOEXEC));
    const UniqueFd mnt(::open((base + "mnt").c_str(), O_RDONLY | O_CLOEXEC));
    if (!net || !uts || !mnt) {
        return Error{fmt::format("the namespaces' holder (thread {}) is gone", recorded.holder)};
    }
    struct stat net_stat {};
    struct stat mnt_stat {};
    if (::fstat(net.get(), &net_stat) != 0 || ::fstat(mnt.get(), &mnt_stat) != 0 ||
        net_stat.st_ino != recorded.net || mnt_stat.st_ino != recorded.mnt) {
        return Error{fmt::format("thread {} does not hold the job's namespaces", recorded.holder)};
    }
    for (const auto& [fd, kind, name] : {std::tuple{net.get(), CLONE_NEWNET, "network"},
                                         std::tuple{uts.get(), CLONE_NEWUTS, "UTS"},
                                         std::tuple{mnt.get(), CLONE_NEWNS, "mount"}}) {
        if (::setns(fd, kind) != 0) {
            return sys_error(fmt::format("cannot enter the job's {} namespace", name));
        }
    }
    return {};
}

// Slurm's variables that name the job's nodes, in virtual names: inside the job the allocation
// is the virtual cluster (common/node_names.hpp). A variable that cannot be read or renamed
// stays as Slurm set it.
void present_virtual_nodes(spank_t sp, const NameMap& to_virtual) {
    if (to_virtual.empty()) {
        return;
    }
    std::vector<char> value(std::size_t{64} * 1024);
    for (const std::string_view variable : kSlurmNodeVariables) {
        const std::string name(variable);
        spank_err_t got = ESPANK_NOSPACE;
        while ((got = spank_getenv(sp, name.c_str(), value.data(),
                                   static_cast<int>(value.size()))) == ESPANK_NOSPACE &&
               value.size() < std::size_t{16} * 1024 * 1024) {
            value.resize(value.size() * 4);
        }
        if (got != ESPANK_SUCCESS) {
            continue;
        }
        auto renamed = rename_hosts(value.data(), to_virtual);
        if (renamed && *renamed != value.data()) {
            (void)spank_setenv(sp, name.c_str(), renamed->c_str(), 1);
        }
    }
}

// srun --mpi=pmix: the connector of the bridge to Slurm's PMIx server (pmix_bridge.hpp), kept
// by the task until task_init, which starts the relay with it.
UniqueFd g_pmix_channel;

std::string job_env(spank_t sp, const char* name) {
    std::array<char, 256> value{};
    if (spank_getenv(sp, name, value.data(), static_cast<int>(value.size())) != ESPANK_SUCCESS) {
        return {};
    }
    return value.data();
}

// Before the task leaves the node's network: a step whose MPI is PMIx gets a connector there.
// A failure is logged; the task runs, and PMIx tells its ranks it cannot reach the server.
void prepare_pmix_bridge(spank_t sp, const std::string& job) {
    if (!job_env(sp, "SLURM_MPI_TYPE").starts_with("pmix")) {
        return;
    }
    uid_t uid = 0;
    gid_t gid = 0;
    int pair[2];
    if (spank_get_item(sp, S_JOB_UID, &uid) != ESPANK_SUCCESS ||
        spank_get_item(sp, S_JOB_GID, &gid) != ESPANK_SUCCESS ||
        ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
        slurm_error("vcpilot: job %s: cannot bridge to the PMIx server", job.c_str());
        return;
    }
    UniqueFd mine(pair[0]);
    // The task's parent is its slurmstepd, which runs the step's PMIx server.
    auto connector = start_pmix_connector(UniqueFd(pair[1]), ::getppid(), uid, gid);
    if (!connector) {
        slurm_error("vcpilot: job %s: %s", job.c_str(), connector.error().message.c_str());
        return;
    }
    g_pmix_channel = std::move(mine);
}

}  // namespace

int task_init(spank_t sp) {
    if (!g_pmix_channel) {
        return 0;
    }
    UniqueFd channel = std::move(g_pmix_channel);
    std::optional<std::uint16_t> port;
    for (const char* name : {"PMIX_SERVER_URI41", "PMIX_SERVER_URI4", "PMIX_SERVER_URI3",
                             "PMIX_SERVER_URI21", "PMIX_SERVER_URI2"}) {
        if ((port = pmix_loopback_port(job_env(sp, name)))) {
            break;
        }
    }
    if (!port) {
        return 0;  // no server on the node's loopback: nothing to bridge
    }
    auto relay = start_pmix_relay(*port, std::move(channel));
    if (!relay) {
        slurm_error("vcpilot: %s", relay.error().message.c_str());
    }
    return 0;
}

int task_init_privileged(spank_t sp, const SiteConfig& config, const JobOptions& options) {
    // The extern step (PrologFlags=Contain) holds what Slurm adopts from outside any step, such
    // as ssh logins through pam_slurm_adopt: it is the node's, not the job's program, and is
    // left on the host. Every other step of a --vc job (the batch script, srun steps made from
    // inside or outside the allocation, salloc's interactive step) joins the virtual node.
    std::uint32_t step = 0;
    if (spank_get_item(sp, S_JOB_STEPID, &step) == ESPANK_SUCCESS && step == kExternStep) {
        return 0;
    }
    const std::string job = job_id(sp);
    if (job.empty()) {
        return options.enabled ? -1 : 0;
    }
    const PilotDir dir = pilot_dir(config.run_dir, node_name(), job);
    // Whether the job asked for --vc is decided at its allocation: the prolog then starts a
    // pilot and records its pid. A step is not asked again: one that lost --vc on the way (an
    // srun whose SLURM_SPANK_* variables were dropped) still joins, and one that asks for it
    // in an allocation made without it is refused at once rather than after ready_timeout.
    std::error_code ec;
    const bool job_has_pilot = std::filesystem::exists(dir.pid_file(), ec);
    if (!job_has_pilot) {
        if (!options.enabled) {
            return 0;  // a job without --vc is none of our business
        }
        slurm_error(
            "vcpilot: job %s: no virtual cluster was made for this job on this node (was "
            "its allocation made without --vc? ask for --vc at salloc or sbatch); the task "
            "is not run",
            job.c_str());
        return -1;
    }
    auto state = [&] {
        CancelWatch watch;
        return wait_ready(dir, config.ready_timeout);
    }();
    if (!state) {
        slurm_error("vcpilot: job %s: %s; the task is not run", job.c_str(),
                    state.error().message.c_str());
        return -1;
    }
    auto recorded = read_namespaces(dir);
    if (!recorded) {
        slurm_error("vcpilot: job %s: %s; the task is not run", job.c_str(),
                    recorded.error().message.c_str());
        return -1;
    }
    auto to_virtual = read_virtual_names(dir);
    if (!to_virtual) {
        slurm_error("vcpilot: job %s: %s; the task is not run", job.c_str(),
                    to_virtual.error().message.c_str());
        return -1;
    }
    prepare_pmix_bridge(sp, job);
    if (auto ok = join(*recorded); !ok) {
        slurm_error("vcpilot: job %s: %s; the task is not run", job.c_str(),
                    ok.error().message.c_str());
        return -1;
    }
    std::string address = (*state)["address"];
    address = address.substr(0, address.find('/'));
    for (const auto& [name, value] :
         {std::pair<const char*, std::string>{"VC_CLUSTER_ID", (*state)["cluster"]},
          {"VC_NODE_NAME", (*state)["node_name"]},
          {"VC_ADDRESS", address},
          {"VC_HOSTFILE", dir.hostfile().string()},
          {"VC_NODELIST", dir.nodelist().string()}}) {
        if (spank_setenv(sp, name, value.c_str(), 1) != ESPANK_SUCCESS) {
            slurm_error("vcpilot: job %s: cannot set %s; the task is not run", job.c_str(), name);
            return -1;
        }
    }
    present_virtual_nodes(sp, *to_virtual);
    return 0;
}

}  // namespace vcpilot::spank
