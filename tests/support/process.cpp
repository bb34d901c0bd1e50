#include "tests/support/process.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "common/error.hpp"
#include "tests/support/cleanup.hpp"

namespace vcpilot::testing {
namespace {

using namespace std::chrono_literals;

// A signal's description, thread-safe unlike strsignal.
std::string signal_text(int number) {
    const char* text = ::sigdescr_np(number);
    return text != nullptr ? text : "signal " + std::to_string(number);
}

bool connects(int fd, const sockaddr* address, socklen_t length) {
    if (fd < 0) {
        return false;
    }
    const bool ok = ::connect(fd, address, length) == 0;
    ::close(fd);
    return ok;
}

sockaddr_in loopback(int port) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return address;
}

// The program's path: argv[0] itself if it has a '/', else the first match in PATH. Done before
// fork, so that the child only calls execv (execvp is not async-signal-safe).
std::string resolve_program(const std::string& program) {
    if (program.find('/') != std::string::npos) {
        return program;
    }
    const char* path = std::getenv("PATH");
    const std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
    for (std::size_t start = 0; start <= dirs.size();) {
        const std::size_t end = std::min(dirs.find(':', start), dirs.size());
        std::string candidate = dirs.substr(start, end - start) + "/" + program;
        if (::access(candidate.c_str(), X_OK) == 0) {
            return candidate;
        }
        start = end + 1;
    }
    return program;  // execv fails with ENOENT, which the child reports
}

// Closes every descriptor above stderr but `keep`.
void close_all_but(int keep) {
    const auto fd = static_cast<unsigned>(keep);
    if (fd > 3) {
        ::close_range(3, fd - 1, 0);
    }
    ::close_range(fd + 1, ~0U, 0);
}

// In a child right after fork: die with the thread that started it, and give up if the parent
// is gone already. Async-signal-safe.
void die_with_parent(pid_t parent) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) {
        ::_exit(127);
    }
}

// Async-signal-safe: writes `prefix`, errno's three digits and a newline to stderr.
void report_errno(const std::string& prefix, int error) {
    const char digits[] = {static_cast<char>('0' + error / 100 % 10),
                           static_cast<char>('0' + error / 10 % 10),
                           static_cast<char>('0' + error % 10), '\n'};
    [[maybe_unused]] auto ignored = ::write(STDERR_FILENO, prefix.data(), prefix.size());
    ignored = ::write(STDERR_FILENO, digits, sizeof digits);
}

// The child's side of ChildProcess::start: only async-signal-safe calls, as the parent may
// have threads.
[[noreturn]] void exec_in_child(char* const* args, int output_fd, pid_t parent,
                                const std::string& exec_failed) {
    die_with_parent(parent);
    sigset_t none;
    sigemptyset(&none);
    // NOLINTNEXTLINE(concurrency-mt-unsafe): the forked child has this one thread only
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (const int signal_number : {SIGTERM, SIGINT, SIGHUP, SIGPIPE}) {
        (void)::signal(signal_number, SIG_DFL);
    }
    const int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) {
        ::dup2(null_fd, STDIN_FILENO);
    }
    ::dup2(output_fd, STDOUT_FILENO);
    ::dup2(output_fd, STDERR_FILENO);
    ::close_range(3, ~0U, 0);
    ::execv(args[0], args);
    report_errno(exec_failed, errno);
    ::_exit(127);
}

std::string milliseconds_text(std::chrono::milliseconds duration) {
    return std::to_string(duration.count()) + " ms";
}

}  // namespace

bool accepts_connections(const Endpoint& endpoint) {
    if (!endpoint.unix_socket.empty()) {
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        (void)std::snprintf(address.sun_path, sizeof address.sun_path, "%s",
                            endpoint.unix_socket.c_str());
        return connects(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0),
                        reinterpret_cast<const sockaddr*>(&address), sizeof address);
    }
    const sockaddr_in address = loopback(endpoint.tcp_port);
    return connects(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0),
                    reinterpret_cast<const sockaddr*>(&address), sizeof address);
}

int free_loopback_port(std::mt19937_64& rng) {
    int ephemeral_low = 32768;
    {
        std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
        range >> ephemeral_low;
    }
    const int low = 10000;
    const int high = std::max(low + 1000, ephemeral_low);
    for (int attempt = 0; attempt < 200; ++attempt) {
        const int port = std::uniform_int_distribution<int>(low, high - 1)(rng);
        const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            break;
        }
        const sockaddr_in address = loopback(port);
        const bool free =
            ::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
        ::close(fd);
        if (free) {
            return port;
        }
    }
    throw std::runtime_error("cannot find a free port on 127.0.0.1");
}

std::string describe_wait_status(int status) {
    if (WIFEXITED(status)) {
        return "exited with status " + std::to_string(WEXITSTATUS(status));
    }
    if (WIFSIGNALED(status)) {
        return "died of signal " + std::to_string(WTERMSIG(status)) + " (" +
               signal_text(WTERMSIG(status)) + ")" + (WCOREDUMP(status) ? ", core dumped" : "");
    }
    char hex[32];
    (void)std::snprintf(hex, sizeof hex, "%#x", static_cast<unsigned>(status));
    return std::string("wait status ") + hex;
}

std::string tail_of_file(const std::filesystem::path& file, std::size_t lines) {
    std::ifstream in(file);
    std::vector<std::string> all;
    for (std::string line; std::getline(in, line);) {
        all.push_back(std::move(line));
    }
    std::string out;
    for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) {
        out += "    " + all[i] + "\n";
    }
    return out;
}

// ---- LineChannel ----

LineChannel& LineChannel::operator=(LineChannel&& other) noexcept {
    if (this != &other) {
        if (fd_ >= 0) {
            ::close(fd_);
        }
        fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
}

LineChannel::~LineChannel() {
    if (fd_ >= 0) {
        ::close(fd_);
    }
}

// NOLINTNEXTLINE(readability-make-member-function-const): it writes to the socket.
Status LineChannel::send(const std::string& line) {
    const std::string message = line + "\n";
    std::size_t sent = 0;
    while (sent < message.size()) {
        const ssize_t n = ::send(fd_, message.data() + sent, message.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return sys_error("the other end is gone");
        }
        sent += static_cast<std::size_t>(n);
    }
    return {};
}

std::optional<std::string> LineChannel::receive(Clock::time_point deadline) {
    std::string line;
    for (;;) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) {
            return std::nullopt;
        }
        pollfd readable{fd_, POLLIN, 0};
        const int ready = ::poll(&readable, 1, static_cast<int>(left.count()));
        if (ready < 0 && errno == EINTR) {
            continue;
        }
        if (ready <= 0) {
            return std::nullopt;
        }
        // A byte at a time: what follows the line stays in the socket for the next call.
        char c = 0;
        const ssize_t n = ::read(fd_, &c, 1);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return std::nullopt;
        }
        if (c == '\n') {
            return line;
        }
        line += c;
    }
}

// NOLINTNEXTLINE(readability-make-member-function-const): it shuts the socket down.
void LineChannel::close_sending() {
    if (fd_ >= 0) {
        ::shutdown(fd_, SHUT_WR);
    }
}

// ---- ChildProcess ----

ChildProcess::~ChildProcess() {
    if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        reap_blocking();
    }
}

Status ChildProcess::check_startable() {
    if (pid_ > 0) {
        return Error{name_ + " is running already"};
    }
    ++starts_;
    return {};
}

void ChildProcess::started(pid_t pid) {
    pid_ = pid;
    leftovers::add_process(pid);
}

int ChildProcess::reap_blocking() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    leftovers::forget_process(pid_);
    pid_ = -1;
    return status;
}

Status ChildProcess::start(const ExecSpec& spec) {
    if (spec.argv.empty()) {
        return Error{name_ + ": nothing to run"};
    }
    if (auto startable = check_startable(); !startable) {
        return startable;
    }
    output_ = spec.output;
    // Everything the child needs is made here: between fork and exec it may not allocate.
    std::vector<std::string> argv = spec.argv;
    argv[0] = resolve_program(argv[0]);
    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (auto& arg : argv) {
        args.push_back(arg.data());
    }
    args.push_back(nullptr);
    const int output_fd = open_output();
    if (output_fd < 0) {
        return Error{"cannot open " + output_.string() + " for " + name_};
    }
    const std::string exec_failed = name_ + ": exec of " + argv[0] + " failed with errno ";
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid == 0) {
        exec_in_child(args.data(), output_fd, parent, exec_failed);
    }
    ::close(output_fd);
    if (pid < 0) {
        return Error{"fork failed for " + name_};
    }
    started(pid);
    return {};
}

int ChildProcess::open_output() const {
    if (output_.empty()) {
        return ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    }
    const int fd = ::open(output_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0) {
        const std::string mark = "=== start " + std::to_string(starts_) + " ===\n";
        [[maybe_unused]] const auto ignored = ::write(fd, mark.data(), mark.size());
    }
    return fd;
}

Result<LineChannel> ChildProcess::start_worker(const std::function<int(LineChannel&)>& body) {
    if (auto startable = check_startable(); !startable) {
        return startable.error();
    }
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
        return Error{"socketpair failed for " + name_};
    }
    (void)std::fflush(stdout);  // else the worker prints what this process buffered, again
    (void)std::fflush(stderr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
        ::close(pair[0]);
        ::close(pair[1]);
        return Error{"fork failed for " + name_};
    }
    if (pid == 0) {
        die_with_parent(parent);
        leftovers::forget_every_process();
        close_all_but(pair[1]);
        int code = 1;
        try {
            LineChannel channel(pair[1]);
            code = body(channel);
        } catch (const std::exception& error) {
            (void)std::fprintf(stderr, "%s (pid %d): %s\n", name_.c_str(), ::getpid(),
                               error.what());
        }
        (void)std::fflush(stdout);
        (void)std::fflush(stderr);
        ::_exit(code);
    }
    ::close(pair[1]);
    started(pid);
    return LineChannel(pair[0]);
}

std::optional<std::string> ChildProcess::exited() {
    if (pid_ <= 0) {
        return std::nullopt;
    }
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) != pid_) {
        return std::nullopt;
    }
    leftovers::forget_process(pid_);
    pid_ = -1;
    return describe_wait_status(status);
}

Status ChildProcess::wait_serving(const Endpoint& endpoint, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        if (auto gone = exited()) {
            return Error{name_ + " " + *gone + " while starting"};
        }
        if (accepts_connections(endpoint)) {
            return {};
        }
        std::this_thread::sleep_for(5ms);
    }
    return Error{name_ + " did not accept connections within " + milliseconds_text(timeout)};
}

Status ChildProcess::kill9() {
    if (pid_ <= 0) {
        return Error{name_ + " is not running when it should be killed"};
    }
    ::kill(pid_, SIGKILL);
    const int status = reap_blocking();
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
        return Error{name_ + " " + describe_wait_status(status) + " before it was killed"};
    }
    return {};
}

Status ChildProcess::terminate(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) {
        return {};
    }
    ::kill(pid_, SIGTERM);
    const auto status = wait_exit(timeout);
    if (!status) {
        return Error{name_ + " did not stop within " + milliseconds_text(timeout) +
                     " of SIGTERM (a hang)"};
    }
    if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
        return Error{name_ + " " + describe_wait_status(*status) +
                     " on SIGTERM instead of exiting with 0"};
    }
    return {};
}

Result<int> ChildProcess::wait_exit(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) {
        return Error{name_ + " is not running"};
    }
    const auto deadline = Clock::now() + timeout;
    int status = 0;
    for (;;) {
        const pid_t done = ::waitpid(pid_, &status, WNOHANG);
        if (done == pid_) {
            break;
        }
        if (done < 0 && errno != EINTR) {
            const std::string why = errno_text(errno);
            leftovers::forget_process(pid_);
            pid_ = -1;
            return Error{name_ + " cannot be waited for: " + why};
        }
        if (Clock::now() > deadline) {
            ::kill(pid_, SIGKILL);
            reap_blocking();
            return Error{name_ + " did not end within " + milliseconds_text(timeout) +
                         " and was killed"};
        }
        std::this_thread::sleep_for(5ms);
    }
    leftovers::forget_process(pid_);
    pid_ = -1;
    return status;
}

}  // namespace vcpilot::testing
