#include "pilot/sshd.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/process/args.hpp>
#include <boost/process/child.hpp>
#include <boost/process/env.hpp>
#include <boost/process/environment.hpp>
#include <boost/process/exe.hpp>
#include <boost/process/extend.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string_view>
#include <system_error>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "common/text.hpp"

namespace vcpilot::pilot {

namespace fs = std::filesystem;
namespace bp = boost::process;

namespace {

constexpr const char* kPrivsepDir = "/run/sshd";

std::string errno_text(int error) {
    return std::system_category().message(error);
}

Error sys_error(const std::string& what, int error) {
    return Error{what + ": " + errno_text(error)};
}

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

// The last few lines of sshd's log, on one line, for error messages.
std::string log_tail(const fs::path& log) {
    std::ifstream in(log, std::ios::binary);
    if (!in) {
        return {};
    }
    in.seekg(0, std::ios::end);
    const std::streamoff size = in.tellg();
    const std::streamoff start = std::max<std::streamoff>(0, size - 2048);
    in.seekg(start);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::string> lines;
    std::istringstream stream(text);
    for (std::string line; std::getline(stream, line);) {
        if (!line.empty()) {
            lines.push_back(line);
        }
    }
    if (start > 0 && !lines.empty()) {
        lines.erase(lines.begin());  // probably cut in the middle
    }
    std::string tail;
    const std::size_t first = lines.size() > 3 ? lines.size() - 3 : 0;
    for (std::size_t i = first; i < lines.size(); ++i) {
        tail += (tail.empty() ? "" : " | ") + single_line(lines[i]);
    }
    return tail;
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

Error with_log(std::string message, const fs::path& log) {
    const std::string tail = log_tail(log);
    if (!tail.empty()) {
        message += "; sshd log (" + log.native() + "): " + tail;
    }
    return Error{std::move(message)};
}

// ---- readiness ---------------------------------------------------------------------------

// sshd writes its pid file only after it has bound every listening socket (sshd.c: "after the
// sigterm handler is setup and the listen sockets are bound"), and exits if it cannot bind one:
// a pid file naming it means it listens. (Asking /proc/<pid>/net/tcp instead walks the kernel's
// whole TCP hash, every namespace's, for each look: milliseconds of CPU at every job start.)
bool pid_file_names(pid_t pid, const fs::path& pid_file) {
    // Through /proc/<pid>/root: the file as sshd sees it, inside the job's mount namespace.
    std::ifstream in("/proc/" + std::to_string(pid) + "/root" + pid_file.native());
    long value = 0;
    return static_cast<bool>(in >> value) && value == pid;
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
            return "the pilot exited while sshd was starting";
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
    int null_fd;
    int log_fd;
    int report_fd;
    const std::function<int()>* before_exec;
};

// Async-signal-safe only: the pilot is multi-threaded, and this runs in the forked copy.
void prepare_child(const ChildSetup& setup) {
    const auto fail = [&](ChildStep step, int error) {
        const ChildReport report{step, error};
        [[maybe_unused]] const ssize_t ignored = ::write(setup.report_fd, &report, sizeof report);
        ::_exit(127);  // never let boost go on to exec after a failed step
    };
    if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) {
        fail(ChildStep::deathsig, errno);
    }
    if (::getppid() != setup.parent) {
        fail(ChildStep::parent_gone, ESRCH);
    }
    // Signal masks and ignored signals survive exec; the pilot's (signalfd, SIGPIPE) must not
    // reach sshd or the users' sessions.
    sigset_t none;
    ::sigemptyset(&none);
    if (::pthread_sigmask(SIG_SETMASK, &none, nullptr) != 0) {
        fail(ChildStep::signals, errno);
    }
    struct sigaction default_action {};
    default_action.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) {
        ::sigaction(sig, &default_action, nullptr);  // fails harmlessly for SIGKILL, SIGSTOP
    }
    // Its own session: terminal signals meant for the pilot do not reach sshd.
    ::setsid();
    if (const int error = setup.namespaces->enter(); error != 0) {
        fail(ChildStep::enter, error);
    }
    if (::dup2(setup.null_fd, STDIN_FILENO) < 0 || ::dup2(setup.log_fd, STDOUT_FILENO) < 0 ||
        ::dup2(setup.log_fd, STDERR_FILENO) < 0) {
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
        .pid_file = paths.sshd_dir() / "sshd.pid",
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
        {"pid_file", &spec.pid_file, false},
    };
    for (const auto& [field, path, optional] : paths) {
        if (auto ok = check_config_path(field, *path, optional); !ok) {
            return ok;
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
    out << "PidFile " << spec.pid_file.native() << "\n"
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
        << "PermitUserEnvironment no\n"
        << "X11Forwarding no\n"
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

struct Sshd::Process {
    bp::child child;
    pid_t pid;
    fs::path log;
    std::chrono::milliseconds stop_timeout;
    bool stopped = false;
    // Until wait_until_listening() saw the pid file: what to look for, and until when.
    fs::path pid_file;
    std::string where;
    std::chrono::steady_clock::time_point ready_deadline;
    std::chrono::milliseconds ready_timeout;
    bool listening = false;
};

Sshd::Sshd(std::unique_ptr<Process> process) : process_(std::move(process)) {}
Sshd::Sshd(Sshd&& other) noexcept = default;

Sshd& Sshd::operator=(Sshd&& other) noexcept {
    if (this != &other) {
        [[maybe_unused]] Status ignored = stop();
        process_ = std::move(other.process_);
    }
    return *this;
}

Sshd::~Sshd() {
    [[maybe_unused]] Status ignored = stop();
}

pid_t Sshd::pid() const {
    return process_ ? process_->pid : -1;
}

const fs::path& Sshd::log_file() const {
    static const fs::path none;
    return process_ ? process_->log : none;
}

void Sshd::request_stop() {
    std::error_code ec;
    if (process_ && !process_->stopped && process_->child.running(ec)) {
        ::kill(process_->pid, SIGTERM);
    }
}

Status Sshd::stop() {
    if (!process_ || process_->stopped) {
        return {};
    }
    Process& process = *process_;
    std::error_code ec;
    if (process.child.running(ec)) {
        ::kill(process.pid, SIGTERM);
        const auto deadline = std::chrono::steady_clock::now() + process.stop_timeout;
        while (process.child.running(ec) && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        if (process.child.running(ec)) {
            process.child.terminate(ec);  // SIGKILL and reap
            if (ec) {
                return Error{"stop sshd (pid " + std::to_string(process.pid) +
                             "): " + ec.message()};
            }
        }
    }
    // ECHILD from running(): something else reaped it; either way it is gone.
    process.stopped = true;
    return {};
}

Result<Sshd> Sshd::start(const SshdSpec& spec, const NamespaceFiles& namespaces,
                         const SshdLaunch& launch) {
    auto sshd = spawn(spec, namespaces, launch);
    if (!sshd) {
        return sshd;
    }
    if (auto ok = sshd->wait_until_listening(); !ok) {
        return ok.error();
    }
    return sshd;
}

Result<Sshd> Sshd::spawn(const SshdSpec& spec, const NamespaceFiles& namespaces,
                         const SshdLaunch& launch) {
    auto config = render_sshd_config(spec);
    if (!config) {
        return config.error();
    }
    if (launch.dir.empty() || !launch.dir.is_absolute()) {
        return Error{"sshd directory " + quote(launch.dir.native()) + " must be an absolute path"};
    }
    if (auto ok = ensure_sshd_privsep_dir(); !ok) {
        return ok.error();
    }
    if (auto ok = ensure_root_only_dir(launch.dir); !ok) {
        return ok.error();
    }
    const fs::path config_file = launch.dir / "sshd_config";
    const fs::path log_file = launch.dir / "sshd.log";
    if (auto ok = write_root_file(config_file, *config); !ok) {
        return ok.error();
    }
    UniqueFd log(
        ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!log) {
        return sys_error("open " + log_file.native(), errno);
    }
    UniqueFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!null) {
        return sys_error("open /dev/null", errno);
    }
    for (UniqueFd* fd : {&log, &null}) {
        if (auto ok = move_above_stdio(*fd); !ok) {
            return Error{"start sshd: " + ok.error().message};
        }
    }
    auto fds = JobNamespaceFds::open(namespaces);
    if (!fds) {
        return Error{"start sshd: " + fds.error().message};
    }
    int report_pipe[2];
    if (::pipe2(report_pipe, O_CLOEXEC) != 0) {
        return sys_error("start sshd: pipe", errno);
    }
    UniqueFd report_read(report_pipe[0]);
    UniqueFd report_write(report_pipe[1]);

    const ChildSetup setup{::getpid(),         &*fds, null.get(), log.get(), report_write.get(),
                           &launch.before_exec};
    bp::environment environment;
    environment["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin";
    std::error_code ec;
    bp::child child(
        bp::exe = launch.binary.native(),
        bp::args = std::vector<std::string>{"-D", "-e", "-f", config_file.native()}, environment,
        bp::extend::on_exec_setup = [&setup](auto&) { prepare_child(setup); }, ec);
    if (ec) {
        return Error{"start " + launch.binary.native() + ": " + ec.message()};
    }
    const pid_t pid = child.id();
    // The child either exec'd (closing its end) or reported and exited.
    report_write = UniqueFd();
    ChildReport report;
    ssize_t got = 0;
    do {
        got = ::read(report_read.get(), &report, sizeof report);
    } while (got < 0 && errno == EINTR);
    if (got == static_cast<ssize_t>(sizeof report)) {
        child.wait(ec);
        return Error{std::string("start sshd: ") + describe(report.step) + ": " +
                     errno_text(report.error)};
    }

    return Sshd(std::make_unique<Process>(
        Process{.child = std::move(child),
                .pid = pid,
                .log = log_file,
                .stop_timeout = launch.stop_timeout,
                .stopped = false,
                .pid_file = spec.pid_file,
                .where = spec.listen.to_string() + " port " + std::to_string(spec.port),
                .ready_deadline = std::chrono::steady_clock::now() + launch.ready_timeout,
                .ready_timeout = launch.ready_timeout,
                .listening = false}));
}

Status Sshd::wait_until_listening() {
    if (!process_) {
        return Error{"sshd was not started"};
    }
    Process& process = *process_;
    if (process.listening) {
        return {};
    }
    std::error_code ec;
    auto pause = std::chrono::milliseconds(1);
    for (;;) {
        if (process.stopped || !process.child.running(ec)) {
            std::string message = "sshd exited (";
            message += process.stopped ? "stopped"
                       : ec            ? ec.message()
                                       : "exit status " + std::to_string(process.child.exit_code());
            message += ") before listening on " + process.where;
            process.stopped = true;
            return with_log(std::move(message), process.log);
        }
        if (pid_file_names(process.pid, process.pid_file)) {
            process.listening = true;
            return {};
        }
        if (std::chrono::steady_clock::now() >= process.ready_deadline) {
            [[maybe_unused]] Status ignored = stop();
            return with_log("sshd did not listen on " + process.where + " within " +
                                std::to_string(process.ready_timeout.count()) + " ms",
                            process.log);
        }
        // sshd is up within tens of milliseconds and a look costs one small read: a short,
        // steady pause keeps job start from waiting on the poll rather than on sshd.
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::milliseconds(2));
    }
}

}  // namespace vcpilot::pilot
