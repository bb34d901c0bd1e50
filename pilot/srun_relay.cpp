#include "pilot/srun_relay.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <spdlog/spdlog.h>
#include <system_error>

#include "pilot/srun_args.hpp"
#include "pilot/srun_wire.hpp"

namespace vcpilot::pilot {

namespace {

bool starts_with(std::string_view text, std::string_view prefix) {
    return text.substr(0, prefix.size()) == prefix;
}

// Reads exactly `size` bytes; false on end of stream or error.
bool read_all(int fd, void* data, std::size_t size) {
    auto* bytes = static_cast<char*>(data);
    while (size > 0) {
        const ssize_t n = ::read(fd, bytes, size);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        bytes += n;
        size -= static_cast<std::size_t>(n);
    }
    return true;
}

void write_all(int fd, std::string_view text) {
    while (!text.empty()) {
        const ssize_t n = ::write(fd, text.data(), text.size());
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return;
        }
        text.remove_prefix(static_cast<std::size_t>(n));
    }
}

// The request's length and vc-srun's three standard streams, which come with it.
struct Opening {
    std::uint32_t length = 0;
    UniqueFd streams[3];
};

Result<Opening> receive_opening(int connection) {
    Opening opening;
    iovec data{&opening.length, sizeof opening.length};
    alignas(cmsghdr) char control[CMSG_SPACE(3 * sizeof(int))] = {};
    msghdr message{};
    message.msg_iov = &data;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    ssize_t n = 0;
    do {
        n = ::recvmsg(connection, &message, MSG_CMSG_CLOEXEC | MSG_WAITALL);
    } while (n < 0 && errno == EINTR);
    // Take ownership of whatever descriptors came, before any check can return.
    int received = 0;
    for (cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr;
         header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        const std::size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
            int fd = -1;
            std::memcpy(&fd, CMSG_DATA(header) + i * sizeof(int), sizeof fd);
            UniqueFd owned(fd);
            if (received < 3) {
                opening.streams[received] = std::move(owned);
            }
            ++received;
        }
    }
    if (n != static_cast<ssize_t>(sizeof opening.length)) {
        return Error{"the request's length did not arrive"};
    }
    if (received != 3 || (message.msg_flags & MSG_CTRUNC) != 0) {
        return Error{"the request did not come with exactly three streams"};
    }
    if (opening.length > kMaxSrunRequestBytes) {
        return Error{"the request is too long"};
    }
    return opening;
}

// What srun gets of the job's environment: everything but what would change srun itself.
std::vector<std::string> srun_environment(const std::vector<std::string>& env,
                                          const std::string& slurm_conf) {
    std::vector<std::string> out;
    for (const auto& variable : env) {
        if (starts_with(variable, "LD_") ||
            (!slurm_conf.empty() && starts_with(variable, "SLURM_CONF=")) ||
            starts_with(variable, "SLURM_PROLOG=") || starts_with(variable, "SLURM_EPILOG=")) {
            continue;
        }
        out.push_back(variable);
    }
    if (!slurm_conf.empty()) {
        out.push_back("SLURM_CONF=" + slurm_conf);
    }
    return out;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
    std::vector<char*> out;
    out.reserve(strings.size() + 1);
    for (auto& s : strings) {
        out.push_back(s.data());
    }
    out.push_back(nullptr);
    return out;
}

}  // namespace

Result<std::unique_ptr<SrunRelay>> SrunRelay::start(SrunRelaySpec spec) {
    if (spec.max_sessions == 0) {
        return Error{"srun relay: max_sessions must be at least 1"};
    }
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (spec.socket.native().size() >= sizeof address.sun_path) {
        return Error{"srun relay: socket path too long: " + spec.socket.native()};
    }
    std::strncpy(address.sun_path, spec.socket.c_str(), sizeof address.sun_path - 1);
    int ngroups = 64;
    std::vector<gid_t> groups(static_cast<std::size_t>(ngroups));
    while (::getgrouplist(spec.user.c_str(), spec.gid, groups.data(), &ngroups) < 0) {
        if (ngroups > 65536) {
            return Error{"srun relay: cannot list the groups of " + spec.user};
        }
        groups.resize(static_cast<std::size_t>(ngroups));
    }
    groups.resize(static_cast<std::size_t>(ngroups));

    UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!listener) {
        return sys_error("srun relay: socket");
    }
    ::unlink(spec.socket.c_str());
    if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
        return sys_error("srun relay: bind " + spec.socket.native());
    }
    if (::chown(spec.socket.c_str(), spec.uid, spec.gid) != 0 ||
        ::chmod(spec.socket.c_str(), 0600) != 0) {
        const int error = errno;
        ::unlink(spec.socket.c_str());
        return sys_error("srun relay: give " + spec.socket.native() + " to " + spec.user, error);
    }
    if (::listen(listener.get(), 64) != 0) {
        const int error = errno;
        ::unlink(spec.socket.c_str());
        return sys_error("srun relay: listen", error);
    }
    int stop[2];
    if (::pipe2(stop, O_CLOEXEC) != 0) {
        const int error = errno;
        ::unlink(spec.socket.c_str());
        return sys_error("srun relay: pipe", error);
    }
    UniqueFd stop_read(stop[0]), stop_write(stop[1]);
    UniqueFd ended(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!ended) {
        const int error = errno;
        ::unlink(spec.socket.c_str());
        return sys_error("srun relay: eventfd", error);
    }
    return std::unique_ptr<SrunRelay>(new SrunRelay(std::move(spec), std::move(listener),
                                                    std::move(stop_read), std::move(stop_write),
                                                    std::move(ended), std::move(groups)));
}

SrunRelay::SrunRelay(SrunRelaySpec spec, UniqueFd listener, UniqueFd stop_read, UniqueFd stop_write,
                     UniqueFd ended, std::vector<gid_t> groups)
    : spec_(std::move(spec)),
      listener_(std::move(listener)),
      stop_read_(std::move(stop_read)),
      stop_write_(std::move(stop_write)),
      ended_(std::move(ended)),
      groups_(std::move(groups)),
      acceptor_([this] { accept_loop(); }) {}

SrunRelay::~SrunRelay() {
    stopping_ = true;
    write_all(stop_write_.get(), "x");
    acceptor_.join();
    std::list<Session> sessions;
    {
        std::lock_guard lock(mutex_);
        for (const pid_t pid : running_) {
            ::kill(pid, SIGTERM);
        }
        sessions.swap(sessions_);
    }
    // srun cancels its step on SIGTERM; one that has not ended after 5 s is killed.
    for (int i = 0; i < 100; ++i) {
        {
            std::lock_guard lock(mutex_);
            if (running_.empty()) {
                break;
            }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    {
        std::lock_guard lock(mutex_);
        for (const pid_t pid : running_) {
            ::kill(pid, SIGKILL);
        }
    }
    for (auto& session : sessions) {
        session.thread.join();
    }
    ::unlink(spec_.socket.c_str());
}

void SrunRelay::set_slurm_names(NameMap to_slurm) {
    auto names = std::make_shared<const NameMap>(std::move(to_slurm));
    std::lock_guard lock(mutex_);
    slurm_names_ = std::move(names);
}

std::shared_ptr<const NameMap> SrunRelay::slurm_names() const {
    std::lock_guard lock(mutex_);
    return slurm_names_;
}

std::size_t SrunRelay::sessions() const {
    std::lock_guard lock(mutex_);
    return sessions_.size();
}

std::size_t SrunRelay::join_ended() {
    std::list<Session> ended;
    std::size_t left = 0;
    {
        std::lock_guard lock(mutex_);
        for (auto it = sessions_.begin(); it != sessions_.end();) {
            const auto next = std::next(it);
            if (it->ended) {
                ended.splice(ended.end(), sessions_, it);
            }
            it = next;
        }
        left = sessions_.size();
    }
    // Each has marked itself ended as its last step: these joins do not wait for an srun.
    for (auto& session : ended) {
        session.thread.join();
    }
    return left;
}

void SrunRelay::accept_loop() {
    for (;;) {
        // At the limit the listener is not watched: connections wait in its queue, and once
        // that is full, their vc-srun waits in connect().
        const bool full = join_ended() >= spec_.max_sessions;
        pollfd fds[3] = {{stop_read_.get(), POLLIN, 0},
                         {ended_.get(), POLLIN, 0},
                         {full ? -1 : listener_.get(), POLLIN, 0}};
        if (::poll(fds, 3, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            spdlog::error("srun relay: poll: {}", errno_text(errno));
            return;
        }
        if (fds[0].revents != 0 || stopping_) {
            return;
        }
        if (fds[1].revents != 0) {
            drain_eventfd(ended_.get());
        }
        if (fds[2].revents == 0) {
            continue;
        }
        UniqueFd connection(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!connection) {
            continue;
        }
        ucred peer{};
        socklen_t size = sizeof peer;
        if (::getsockopt(connection.get(), SOL_SOCKET, SO_PEERCRED, &peer, &size) != 0 ||
            peer.uid != spec_.uid) {
            spdlog::warn("srun relay: refused a connection from uid {} (the job's user is {})",
                         peer.uid, spec_.uid);
            continue;
        }
        std::lock_guard lock(mutex_);
        Session& session = sessions_.emplace_back();
        try {
            // The session marks itself under the lock held here, so not before `thread` is set.
            session.thread = std::thread(
                [this, &session, c = std::make_shared<UniqueFd>(std::move(connection))] {
                    serve(std::move(*c));
                    {
                        std::lock_guard ended(mutex_);
                        session.ended = true;
                    }
                    notify_eventfd(ended_.get());
                });
        } catch (const std::system_error& error) {
            // The connection closes: vc-srun says the pilot went away.
            sessions_.pop_back();
            spdlog::error("srun relay: cannot start a thread for an srun: {}", error.what());
        }
    }
}

void SrunRelay::serve(UniqueFd connection) {
    const int conn = connection.get();
    const auto answer = [conn](int wait_status) {
        const std::int32_t status = wait_status;
        write_all(conn, std::string_view(reinterpret_cast<const char*>(&status), sizeof status));
    };
    timeval timeout{10, 0};
    ::setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    auto opening = receive_opening(conn);
    if (!opening) {
        spdlog::warn("srun relay: {}", opening.error().message);
        return;
    }
    std::string bytes(opening->length, '\0');
    if (!read_all(conn, bytes.data(), bytes.size())) {
        spdlog::warn("srun relay: the request was cut short");
        return;
    }
    const int err = opening->streams[2].get();
    auto request = decode_srun_request(bytes);
    if (!request) {
        write_all(err, "vc-srun: " + request.error().message + "\n");
        answer(1 << 8);
        return;
    }
    if (auto ok = check_relayed_srun(request->argv); !ok) {
        write_all(err, "vc-srun: " + ok.error().message + "\n");
        answer(1 << 8);
        return;
    }
    timeval forever{0, 0};
    ::setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &forever, sizeof forever);

    const std::shared_ptr<const NameMap> to_slurm = slurm_names();
    std::vector<std::string> argv = srun_argv_in_slurm_names(request->argv, *to_slurm);
    argv[0] = spec_.srun.native();
    std::vector<std::string> env =
        srun_environment(srun_env_in_slurm_names(request->env, *to_slurm), spec_.slurm_conf);
    // The job's working directory may exist only in its mount namespace (its /tmp); srun then
    // starts from / and tells the step where to go.
    std::string cwd = request->cwd;
    struct stat cwd_stat {};
    if (cwd.empty() || cwd[0] != '/' || ::stat(cwd.c_str(), &cwd_stat) != 0 ||
        !S_ISDIR(cwd_stat.st_mode)) {
        if (!cwd.empty() && cwd[0] == '/') {
            argv.insert(argv.begin() + 1, "--chdir=" + cwd);
        }
        cwd = "/";
    }
    std::vector<char*> args = pointers(argv);
    std::vector<char*> envp = pointers(env);
    const int in = opening->streams[0].get();
    const int out = opening->streams[1].get();

    std::unique_lock lock(mutex_);
    if (stopping_) {
        return;
    }
    const pid_t child = ::fork();
    if (child == 0) {
        // Only async-signal-safe calls from here: the pilot has threads.
        sigset_t none;
        sigemptyset(&none);
        // NOLINTNEXTLINE(concurrency-mt-unsafe): the forked child has this one thread only
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        (void)::signal(SIGPIPE, SIG_DFL);
        ::setpgid(0, 0);
        if (::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) {
            ::_exit(127);
        }
        ::closefrom(3);
        if (::setgroups(groups_.size(), groups_.data()) != 0 || ::setgid(spec_.gid) != 0 ||
            ::setuid(spec_.uid) != 0 || ::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 ||
            ::chdir(cwd.c_str()) != 0) {
            static constexpr char kMessage[] = "vc-srun: cannot become the job's user\n";
            (void)(::write(2, kMessage, sizeof kMessage - 1) < 0);
            ::_exit(127);
        }
        ::execve(args[0], args.data(), envp.data());
        static constexpr char kMessage[] = "vc-srun: cannot run the real srun\n";
        (void)(::write(2, kMessage, sizeof kMessage - 1) < 0);
        ::_exit(127);
    }
    if (child < 0) {
        lock.unlock();
        write_all(err, "vc-srun: fork: " + errno_text(errno) + "\n");
        answer(1 << 8);
        return;
    }
    running_.insert(child);
    lock.unlock();
    // Nothing of the job's streams stays open here: srun alone holds them now.
    for (auto& stream : opening->streams) {
        stream = UniqueFd();
    }

    UniqueFd exited(static_cast<int>(::syscall(SYS_pidfd_open, child, 0)));
    bool peer_open = true;
    int status = 0;
    for (;;) {
        if (!exited) {
            // No pidfd: only wait (signals are not passed on).
            while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
            }
            break;
        }
        pollfd fds[2] = {{exited.get(), POLLIN, 0}, {peer_open ? conn : -1, POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            exited = UniqueFd();
            continue;
        }
        if (fds[0].revents != 0) {
            while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
            }
            break;
        }
        if (fds[1].revents != 0) {
            std::int32_t signal_number = 0;
            if (read_all(conn, &signal_number, sizeof signal_number)) {
                if (signal_number > 0 && signal_number < NSIG && signal_number != SIGKILL &&
                    signal_number != SIGSTOP) {
                    ::kill(child, signal_number);
                }
            } else {
                // vc-srun is gone (killed): srun must not outlive it.
                peer_open = false;
                ::kill(child, SIGTERM);
            }
        }
    }
    {
        std::lock_guard guard(mutex_);
        running_.erase(child);
    }
    answer(status);
}

}  // namespace vcpilot::pilot
