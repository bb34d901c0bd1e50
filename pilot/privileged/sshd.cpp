#include "pilot/privileged/sshd.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/process/args.hpp>
#include <boost/process/child.hpp>
#include <boost/process/env.hpp>
#include <boost/process/environment.hpp>
#include <boost/process/exe.hpp>
#include <boost/process/extend.hpp>
#include <boost/process/posix.hpp>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <mutex>
#include <sstream>
#include <string_view>
#include <system_error>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "common/fd.hpp"
#include "common/text.hpp"

namespace vcpilot::pilot {

namespace fs = std::filesystem;
namespace bp = boost::process;

namespace {

constexpr const char* kPrivsepDir = "/run/sshd";

// ---- spec checks -------------------------------------------------------------------------

bool is_config_path_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' ||
           c == '.' || c == '_' || c == '-' || c == '+' || c == '@';
}

Status check_config_path(std::string_view field, const fs::path& path, bool optional) {
    const std::string& text = path.native();
    if (text.empty()) {
        if (optional) {
            return {};
        }
        return Error{std::string(field) + ": required"};
    }
    if (text.size() > 1024) {
        return Error{std::string(field) + ": " + quote(text) + " is longer than 1024 bytes"};
    }
    if (!path.is_absolute()) {
        return Error{std::string(field) + ": " + quote(text) + " must be an absolute path"};
    }
    if (!std::all_of(text.begin(), text.end(), is_config_path_char)) {
        return Error{std::string(field) + ": " + quote(text) +
                     " may hold only letters, digits and '/', '.', '_', '-', '+', '@'"};
    }
    if (path.lexically_normal() != path || text.back() == '/') {
        return Error{std::string(field) + ": " + quote(text) +
                     " must be a normalized path (no '.', '..', '//' or trailing '/')"};
    }
    return {};
}

// A portable user name as useradd accepts it by default, which also keeps AllowUsers free of
// pattern characters ('*', '?', '!', '@', ',').
Status check_user_name(std::string_view field, std::string_view name) {
    const auto ok_char = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '.' || c == '-';
    };
    if (name.empty() || name.size() > 32 || !std::all_of(name.begin(), name.end(), ok_char) ||
        name.front() == '-' || name.front() == '.') {
        return Error{std::string(field) + ": " + quote(name) +
                     " must be a user name of 1 to 32 letters, digits, '_', '.' or '-', not "
                     "starting with '-' or '.'"};
    }
    return {};
}

const char* log_level_name(SshdLogLevel level) {
    switch (level) {
        case SshdLogLevel::info:
            return "INFO";
        case SshdLogLevel::verbose:
            return "VERBOSE";
        case SshdLogLevel::debug:
            return "DEBUG";
    }
    return "INFO";
}

// ---- files -------------------------------------------------------------------------------

// A directory that only root may enter: created if missing, refused if anyone else owns it.
Status ensure_root_only_dir(const fs::path& dir) {
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
        return sys_error("create " + dir.native(), errno);
    }
    UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
        return sys_error("open " + dir.native(), errno);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        return sys_error("stat " + dir.native(), errno);
    }
    if (st.st_uid != 0) {
        return Error{dir.native() + " belongs to uid " + std::to_string(st.st_uid) +
                     ", not root; refusing to put sshd's config there"};
    }
    if (::fchmod(fd.get(), 0700) != 0) {
        return sys_error("chmod " + dir.native(), errno);
    }
    return {};
}

Status write_root_file(const fs::path& file, std::string_view content) {
    const fs::path temp = file.parent_path() / ("." + file.filename().native() + ".tmp");
    ::unlink(temp.c_str());
    UniqueFd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) {
        return sys_error("create " + temp.native(), errno);
    }
    while (!content.empty()) {
        const ssize_t n = ::write(fd.get(), content.data(), content.size());
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            const int error = errno;
            ::unlink(temp.c_str());
            return sys_error("write " + temp.native(), error);
        }
        content.remove_prefix(static_cast<std::size_t>(n));
    }
    if (::rename(temp.c_str(), file.c_str()) != 0) {
        const int error = errno;
        ::unlink(temp.c_str());
        return sys_error("rename " + temp.native() + " to " + file.native(), error);
    }
    return {};
}

// The child replaces descriptors 0-2 with these; a descriptor that already is 0-2 (a daemon
// started with stdio closed) would be overwritten before it is copied.
Status move_above_stdio(UniqueFd& fd) {
    if (fd.get() > STDERR_FILENO) {
        return {};
    }
    const int moved = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
    if (moved < 0) {
        return sys_error("fcntl(F_DUPFD_CLOEXEC)", errno);
    }
    fd = UniqueFd(moved);
    return {};
}

// ---- the child between fork and exec -----------------------------------------------------

enum class ChildStep : int { none, deathsig, parent_gone, signals, enter, redirect, close, hook };

const char* describe(ChildStep step) {
    switch (step) {
        case ChildStep::none:
            return "start";
        case ChildStep::deathsig:
            return "set PR_SET_PDEATHSIG";
        case ChildStep::parent_gone:
            return "the pilot's listener ended while sshd was starting";
        case ChildStep::signals:
            return "reset the signal mask";
        case ChildStep::enter:
            return "enter the job's namespaces (setns)";
        case ChildStep::redirect:
            return "redirect stdin/stdout/stderr";
        case ChildStep::close:
            return "mark inherited descriptors close-on-exec";
        case ChildStep::hook:
            return "the before-exec hook (seccomp)";
    }
    return "start";
}

struct ChildReport {
    ChildStep step = ChildStep::none;
    int error = 0;
};

struct ChildSetup {
    pid_t parent;
    const JobNamespaceFds* namespaces;
    int connection_fd;
    int log_fd;
    int report_fd;
    const std::function<int()>* before_exec;
};

// Runs in the child of vfork, which shares the pilot's memory until it execs: system calls
// only, nothing that allocates, locks or writes anything but this stack frame. Returns only if
// every step worked; reports the failed step on report_fd and exits otherwise.
void prepare_child(const ChildSetup& setup) {
    const auto fail = [&](ChildStep step, int error) {
        const ChildReport report{step, error};
        [[maybe_unused]] const ssize_t ignored = ::write(setup.report_fd, &report, sizeof report);
        ::_exit(127);
    };
    if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) {
        fail(ChildStep::deathsig, errno);
    }
    if (::getppid() != setup.parent) {
        fail(ChildStep::parent_gone, ESRCH);
    }
    // Signal masks and ignored signals survive exec; the pilot's (signalfd, SIGPIPE) must not
    // reach sshd or the users' sessions. Dispositions first, then the mask: this child shares
    // the pilot's memory until it execs (vfork), and no handler of the pilot may run in it.
    struct sigaction default_action {};
    default_action.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) {
        ::sigaction(sig, &default_action, nullptr);  // fails harmlessly for SIGKILL, SIGSTOP
    }
    sigset_t none;
    ::sigemptyset(&none);
    if (::pthread_sigmask(SIG_SETMASK, &none, nullptr) != 0) {
        fail(ChildStep::signals, errno);
    }
    // Its own session: terminal signals meant for the pilot do not reach sshd.
    ::setsid();
    if (const int error = setup.namespaces->enter(); error != 0) {
        fail(ChildStep::enter, error);
    }
    // sshd -i speaks SSH on stdin and stdout and logs to stderr (-e).
    if (::dup2(setup.connection_fd, STDIN_FILENO) < 0 ||
        ::dup2(setup.connection_fd, STDOUT_FILENO) < 0 || ::dup2(setup.log_fd, STDERR_FILENO) < 0) {
        fail(ChildStep::redirect, errno);
    }
    // Nothing of the pilot (gRPC sockets, other jobs' files) may leak into sshd.
    if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
        fail(ChildStep::close, errno);
    }
    if (*setup.before_exec) {
        if (const int error = (*setup.before_exec)(); error != 0) {
            fail(ChildStep::hook, error);
        }
    }
}

}  // namespace

SshdSpec job_sshd_spec(const JobPaths& paths, const IpAddress& listen, const std::string& user,
                       bool certificates) {
    return SshdSpec{
        .listen = listen,
        .port = 22,
        .allow_user = user,
        .host_key = paths.host_key(),
        .host_certificate = certificates ? paths.host_certificate() : fs::path{},
        .authorized_keys = paths.user_ssh_dir() / "authorized_keys",
        .trusted_user_ca_keys = certificates ? paths.trusted_user_ca_keys() : fs::path{},
        .log_level = SshdLogLevel::info};
}

Status check_sshd_spec(const SshdSpec& spec) {
    if (spec.port == 0) {
        return Error{"port: must be 1 to 65535"};
    }
    if (auto ok = check_user_name("allow_user", spec.allow_user); !ok) {
        return ok;
    }
    const std::tuple<const char*, const fs::path*, bool> paths[] = {
        {"host_key", &spec.host_key, false},
        {"host_certificate", &spec.host_certificate, true},
        {"authorized_keys", &spec.authorized_keys, false},
        {"trusted_user_ca_keys", &spec.trusted_user_ca_keys, true},
    };
    for (const auto& [field, path, optional] : paths) {
        if (auto ok = check_config_path(field, *path, optional); !ok) {
            return ok;
        }
    }
    for (const auto& [name, value] : spec.environment) {
        const bool name_ok = !name.empty() && (name[0] < '0' || name[0] > '9') &&
                             std::all_of(name.begin(), name.end(), [](char c) {
                                 return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                                        (c >= '0' && c <= '9') || c == '_';
                             });
        const bool value_ok = std::all_of(value.begin(), value.end(), [](char c) {
            return c > ' ' && c != '"' && c != '\\' && c != '#' && c != 0x7f;
        });
        if (!name_ok || !value_ok) {
            return Error{fmt::format("environment: {} cannot be set in sshd_config",
                                     quote(fmt::format("{}={}", name, value)))};
        }
    }
    return {};
}

Result<std::string> render_sshd_config(const SshdSpec& spec) {
    if (auto ok = check_sshd_spec(spec); !ok) {
        return ok.error();
    }
    std::ostringstream out;
    out << "# sshd for one virtual-cluster job, written by vc-pilot; regenerated on every start.\n"
        << "Port " << spec.port << "\n"
        << "ListenAddress " << spec.listen.to_string() << "\n"
        << "AddressFamily " << (spec.listen.is_v4() ? "inet" : "inet6") << "\n"
        << "HostKey " << spec.host_key.native() << "\n";
    if (!spec.host_certificate.empty()) {
        out << "HostCertificate " << spec.host_certificate.native() << "\n";
    }
    // Run as `sshd -i`, one per connection: the pilot listens (Port and ListenAddress say
    // where), and no pid file names a process that serves one session.
    out << "PidFile none\n"
        << "LogLevel " << log_level_name(spec.log_level) << "\n"
        << "\n# Public keys (or user certificates) of the job user only.\n"
        << "AllowUsers " << spec.allow_user << "\n"
        << "PermitRootLogin " << (spec.allow_user == "root" ? "prohibit-password" : "no") << "\n"
        << "AuthenticationMethods publickey\n"
        << "PubkeyAuthentication yes\n"
        << "AuthorizedKeysFile " << spec.authorized_keys.native() << "\n";
    if (!spec.trusted_user_ca_keys.empty()) {
        out << "TrustedUserCAKeys " << spec.trusted_user_ca_keys.native() << "\n";
    }
    out << "PasswordAuthentication no\n"
        << "KbdInteractiveAuthentication no\n"
        << "HostbasedAuthentication no\n"
        << "PermitEmptyPasswords no\n"
        << "UsePAM " << (spec.use_pam ? "yes" : "no") << "\n"
        << "# The per-job key files live under the pilot's run directory, not in the home.\n"
        << "StrictModes no\n"
        << "\n# Nothing from the client's environment; no X11, no tunnel devices.\n"
        << "PermitUserEnvironment no\n";
    if (!spec.environment.empty()) {
        out << "SetEnv";
        for (const auto& [name, value] : spec.environment) {
            out << " " << name << "=" << value;
        }
        out << "\n";
    }
    out << "X11Forwarding no\n"
        << "PermitTunnel no\n"
        << "UseDNS no\n"
        << "PrintMotd no\n"
        << "Subsystem sftp internal-sftp\n";
    return out.str();
}

Status ensure_sshd_privsep_dir() {
    if (::mkdir(kPrivsepDir, 0755) != 0 && errno != EEXIST) {
        return sys_error(std::string("create ") + kPrivsepDir, errno);
    }
    struct stat st {};
    if (::lstat(kPrivsepDir, &st) != 0) {
        return sys_error(std::string("stat ") + kPrivsepDir, errno);
    }
    if (!S_ISDIR(st.st_mode) || st.st_uid != 0 || (st.st_mode & 022) != 0) {
        return Error{std::string(kPrivsepDir) +
                     " must be a directory owned by root and not writable by group or others"};
    }
    return {};
}

namespace {

// A listening TCP socket on address:port, made inside the network namespace `netns` (a
// socket stays in the namespace it was made in, whoever uses it later).
Result<UniqueFd> listen_in(const fs::path& netns, const IpAddress& address, std::uint16_t port) {
    auto ns = open_namespace(netns);
    if (!ns) {
        return ns.error();
    }
    Result<UniqueFd> result = Error{"listen: not attempted"};
    auto entered = in_network_namespace(ns->get(), "job", [&] {
        sockaddr_storage storage{};
        socklen_t length = 0;
        if (address.is_v4()) {
            auto* in = reinterpret_cast<sockaddr_in*>(&storage);
            in->sin_family = AF_INET;
            in->sin_port = htons(port);
            std::memcpy(&in->sin_addr, address.bytes().data(), 4);
            length = sizeof(sockaddr_in);
        } else {
            auto* in6 = reinterpret_cast<sockaddr_in6*>(&storage);
            in6->sin6_family = AF_INET6;
            in6->sin6_port = htons(port);
            std::memcpy(&in6->sin6_addr, address.bytes().data(), 16);
            length = sizeof(sockaddr_in6);
        }
        const std::string where = address.to_string() + " port " + std::to_string(port);
        UniqueFd fd(::socket(storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        const int on = 1;
        if (!fd || ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0) {
            result = sys_error("socket for " + where, errno);
        } else if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&storage), length) != 0) {
            result = sys_error("listen on " + where + " in the job's network", errno);
        } else if (::listen(fd.get(), 128) != 0) {
            result = sys_error("listen on " + where, errno);
        } else {
            result = std::move(fd);
        }
    });
    if (!entered) {
        return entered.error();
    }
    return result;
}

// sshd reads these at every connection; a missing one would only show then, in its log.
Status check_readable(std::string_view field, const fs::path& path) {
    if (path.empty()) {
        return {};
    }
    if (::access(path.c_str(), R_OK) != 0) {
        return sys_error(std::string(field) + ": " + path.native(), errno);
    }
    return {};
}

Status write_config(const SshdSpec& spec, const fs::path& dir) {
    auto config = render_sshd_config(spec);
    if (!config) {
        return config.error();
    }
    for (const auto& [field, path] :
         {std::pair<const char*, const fs::path*>{"host_key", &spec.host_key},
          {"host_certificate", &spec.host_certificate},
          {"trusted_user_ca_keys", &spec.trusted_user_ca_keys}}) {
        if (auto ok = check_readable(field, *path); !ok) {
            return ok;
        }
    }
    return write_root_file(dir / "sshd_config", *config);
}

}  // namespace

struct Sshd::Listener {
    struct Session {
        bp::child process;
        UniqueFd pidfd;  // readable once it exited
    };

    fs::path binary;
    fs::path config;
    fs::path log;
    std::function<int()> before_exec;
    std::chrono::milliseconds stop_timeout{0};  // set from the launch, as is max_sessions
    std::size_t max_sessions = 0;
    JobNamespaceFds namespaces;
    UniqueFd listen_fd;
    UniqueFd log_fd;
    UniqueFd wake;  // eventfd: stop accepting
    mutable std::mutex mutex;
    std::vector<Session> sessions;  // guarded by mutex
    std::thread thread;
    bool stopped = false;

    // A line of the pilot's own in sshd's log, where the sessions' lines are.
    void note(const std::string& text) const {
        const std::string line = "vc-pilot: " + text + "\n";
        [[maybe_unused]] const ssize_t ignored = ::write(log_fd.get(), line.data(), line.size());
    }

    void spawn(UniqueFd connection) {
        {
            std::lock_guard lock(mutex);
            if (sessions.size() >= max_sessions) {
                note("refused a connection: " + std::to_string(max_sessions) +
                     " sessions are open already");
                return;
            }
        }
        if (auto ok = move_above_stdio(connection); !ok) {
            note("no sshd for a connection: " + ok.error().message);
            return;
        }
        int report_pipe[2];
        if (::pipe2(report_pipe, O_CLOEXEC) != 0) {
            note("no sshd for a connection: pipe: " + errno_text(errno));
            return;
        }
        UniqueFd report_read(report_pipe[0]);
        UniqueFd report_write(report_pipe[1]);
        const ChildSetup setup{::getpid(),   &namespaces,        connection.get(),
                               log_fd.get(), report_write.get(), &before_exec};
        bp::environment environment;
        environment["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin";
        std::error_code ec;
        // vfork: the pilot's address space is not copied (a page fault per page it writes
        // afterwards, at every connection); the child only makes system calls before exec.
        bp::child child(
            bp::exe = binary.native(),
            bp::args = std::vector<std::string>{"-i", "-e", "-f", config.native()}, environment,
            bp::posix::use_vfork,
            bp::extend::on_exec_setup = [&setup](auto&) { prepare_child(setup); }, ec);
        if (ec) {
            note("no sshd for a connection: start " + binary.native() + ": " + ec.message());
            return;
        }
        // The child either exec'd (closing its end) or reported and exited. The connection
        // stays open here until then: a client that is refused sees it closed only after the
        // reason is in the log.
        report_write = UniqueFd();
        ChildReport report;
        ssize_t got = 0;
        do {
            got = ::read(report_read.get(), &report, sizeof report);
        } while (got < 0 && errno == EINTR);
        if (got == static_cast<ssize_t>(sizeof report)) {
            child.wait(ec);
            note(std::string("no sshd for a connection: ") + describe(report.step) + ": " +
                 errno_text(report.error));
            return;
        }
        connection = UniqueFd();  // the session's now
        UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, child.id(), 0)));
        if (pidfd && !move_above_stdio(pidfd)) {
            pidfd = UniqueFd();  // looked at once a second instead
        }
        std::lock_guard lock(mutex);
        sessions.push_back({std::move(child), std::move(pidfd)});
    }

    // Reaps the sessions that ended.
    void reap() {
        std::lock_guard lock(mutex);
        std::erase_if(sessions, [](Session& session) {
            std::error_code ec;
            return !session.process.running(ec);  // ended and reaped, or not ours anymore
        });
    }

    void run() {
        for (;;) {
            std::vector<pollfd> fds{{wake.get(), POLLIN, 0}, {listen_fd.get(), POLLIN, 0}};
            bool blind = false;  // a session without a pidfd: looked at once a second
            {
                std::lock_guard lock(mutex);
                for (const Session& session : sessions) {
                    fds.push_back({session.pidfd.get(), POLLIN, 0});
                    blind = blind || !session.pidfd;
                }
            }
            if (::poll(fds.data(), fds.size(), blind ? 1000 : -1) < 0 && errno != EINTR) {
                note("poll: " + errno_text(errno));
                return;
            }
            if (fds[0].revents != 0) {
                return;
            }
            reap();
            if ((fds[1].revents & POLLIN) != 0) {
                UniqueFd connection(::accept4(listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
                if (connection) {
                    spawn(std::move(connection));
                }
            }
        }
    }

    void request_stop() {
        if (stopped) {
            return;
        }
        notify_eventfd(wake.get());
        if (thread.joinable()) {
            thread.join();  // sessions get SIGTERM from PR_SET_PDEATHSIG as the thread ends
        }
        listen_fd = UniqueFd();
        std::lock_guard lock(mutex);
        for (Session& session : sessions) {
            ::kill(session.process.id(), SIGTERM);
        }
    }

    Status stop() {
        request_stop();
        if (stopped) {
            return {};
        }
        const auto deadline = std::chrono::steady_clock::now() + stop_timeout;
        for (;;) {
            reap();
            std::lock_guard lock(mutex);
            if (sessions.empty()) {
                break;
            }
            if (std::chrono::steady_clock::now() >= deadline) {
                // bp::child's destructor kills (SIGKILL) and reaps a child still running.
                sessions.clear();
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        stopped = true;
        return {};
    }
};

Sshd::Sshd(std::unique_ptr<Listener> listener) : listener_(std::move(listener)) {}
Sshd::Sshd(Sshd&& other) noexcept = default;

Sshd& Sshd::operator=(Sshd&& other) noexcept {
    if (this != &other) {
        [[maybe_unused]] Status ignored = stop();
        listener_ = std::move(other.listener_);
    }
    return *this;
}

Sshd::~Sshd() {
    [[maybe_unused]] Status ignored = stop();
}

std::vector<pid_t> Sshd::sessions() const {
    std::vector<pid_t> pids;
    if (listener_) {
        std::lock_guard lock(listener_->mutex);
        for (const auto& session : listener_->sessions) {
            pids.push_back(session.process.id());
        }
    }
    return pids;
}

const fs::path& Sshd::log_file() const {
    static const fs::path none;
    return listener_ ? listener_->log : none;
}

void Sshd::request_stop() {
    if (listener_) {
        listener_->request_stop();
    }
}

Status Sshd::stop() {
    return listener_ ? listener_->stop() : Status{};
}

Status Sshd::reconfigure(const SshdSpec& spec) {
    if (!listener_) {
        return Error{"sshd was not started"};
    }
    return write_config(spec, listener_->config.parent_path());
}

Result<Sshd> Sshd::start(const SshdSpec& spec, const NamespaceFiles& namespaces,
                         const SshdLaunch& launch) {
    if (launch.dir.empty() || !launch.dir.is_absolute()) {
        return Error{"sshd directory " + quote(launch.dir.native()) + " must be an absolute path"};
    }
    if (auto ok = check_sshd_spec(spec); !ok) {
        return ok.error();
    }
    if (auto ok = ensure_sshd_privsep_dir(); !ok) {
        return ok.error();
    }
    if (auto ok = ensure_root_only_dir(launch.dir); !ok) {
        return ok.error();
    }
    if (auto ok = write_config(spec, launch.dir); !ok) {
        return ok.error();
    }
    auto listener = std::make_unique<Listener>();
    listener->binary = launch.binary;
    listener->config = launch.dir / "sshd_config";
    listener->log = launch.dir / "sshd.log";
    listener->before_exec = launch.before_exec;
    listener->stop_timeout = launch.stop_timeout;
    listener->max_sessions = launch.max_sessions;
    listener->log_fd = UniqueFd(::open(
        listener->log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!listener->log_fd) {
        return sys_error("open " + listener->log.native(), errno);
    }
    if (auto ok = move_above_stdio(listener->log_fd); !ok) {
        return Error{"start sshd: " + ok.error().message};
    }
    auto fds = JobNamespaceFds::open(namespaces);
    if (!fds) {
        return Error{"start sshd: " + fds.error().message};
    }
    listener->namespaces = std::move(*fds);
    auto listening = listen_in(namespaces.net, spec.listen, spec.port);
    if (!listening) {
        return listening.error();
    }
    listener->listen_fd = std::move(*listening);
    listener->wake = UniqueFd(::eventfd(0, EFD_CLOEXEC));
    if (!listener->wake) {
        return sys_error("start sshd: eventfd", errno);
    }
    // Like every descriptor the listener keeps: never 0-2, which a caller that restores its
    // stdio would replace underneath it.
    for (UniqueFd* fd : {&listener->listen_fd, &listener->wake}) {
        if (auto ok = move_above_stdio(*fd); !ok) {
            return Error{"start sshd: " + ok.error().message};
        }
    }
    listener->note("listening on " + spec.listen.to_string() + " port " +
                   std::to_string(spec.port) + "; an sshd -i for every connection");
    Listener* raw = listener.get();
    listener->thread = std::thread([raw] { raw->run(); });
    return Sshd(std::move(listener));
}

}  // namespace vcpilot::pilot
