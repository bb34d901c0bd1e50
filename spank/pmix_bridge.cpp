#include "spank/pmix_bridge.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace vcpilot::spank {

namespace {

constexpr std::size_t kMaxBuffered = std::size_t{64} * 1024;  // per direction of a connection
constexpr std::size_t kMaxConnections = 4096;  // a node's tasks of one step, generously

// In a child just forked from the task: end with the task, hold only `keep` (moved to 3, 4,
// ...) and /dev/null as stdio, so that neither srun's view of the task's output nor anything
// else of the task's is held open. Returns false if the task is already gone.
bool detach_from_task(pid_t task, std::initializer_list<int> keep) {
    if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || ::getppid() != task) {
        return false;
    }
    sigset_t none;
    sigemptyset(&none);
    // NOLINTNEXTLINE(concurrency-mt-unsafe): a forked child has one thread
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    (void)::signal(SIGTERM, SIG_DFL);
    (void)::signal(SIGPIPE, SIG_IGN);
    // Each above every target first, so that no dup2 overwrites a descriptor still to move.
    std::array<int, 2> high{-1, -1};
    std::size_t count = 0;
    for (const int fd : keep) {
        if (count == high.size() || (high[count] = ::fcntl(fd, F_DUPFD_CLOEXEC, 64)) < 0) {
            return false;
        }
        ++count;
    }
    int target = 3;
    for (std::size_t i = 0; i < count; ++i) {
        if (::dup2(high[i], target++) < 0) {
            return false;
        }
    }
    const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0 || ::dup2(null, 0) < 0 || ::dup2(null, 1) < 0 || ::dup2(null, 2) < 0) {
        return false;
    }
    ::closefrom(target);
    return true;
}

void set_nonblocking(int fd) {
    const int flags = ::fcntl(fd, F_GETFL);
    (void)::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return address;
}

// The ports on which `pid` has sockets listening on 127.0.0.1 (in the caller's network
// namespace): the socket inodes among its descriptors, found in /proc/net/tcp.
std::set<std::uint16_t> loopback_listeners_of(pid_t pid) {
    std::set<unsigned long> inodes;
    const std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(fd_dir, ec)) {
        const std::string target = std::filesystem::read_symlink(entry.path(), ec).string();
        if (!ec && target.starts_with("socket:[") && target.ends_with("]")) {
            inodes.insert(std::strtoul(target.c_str() + 8, nullptr, 10));
        }
    }
    std::set<std::uint16_t> ports;
    std::ifstream tcp("/proc/net/tcp");
    std::string line;
    std::getline(tcp, line);  // the header
    while (std::getline(tcp, line)) {
        // "  0: 0100007F:D6D1 00000000:0000 0A ... uid timeout inode ..."
        std::istringstream fields(line);
        std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout;
        unsigned long inode = 0;
        fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >>
            timeout >> inode;
        if (fields && state == "0A" && local.starts_with("0100007F:") && inodes.contains(inode)) {
            ports.insert(static_cast<std::uint16_t>(std::strtoul(local.c_str() + 9, nullptr, 16)));
        }
    }
    return ports;
}

// The connector's loop on its channel (fd 3): a port in, a connected socket (or none) out; only
// ports in `allowed`, the server's.
[[noreturn]] void serve_connector(const std::set<std::uint16_t>& allowed) {
    constexpr int kChannel = 3;
    for (;;) {
        std::uint16_t port = 0;
        const ssize_t n = ::recv(kChannel, &port, sizeof port, MSG_WAITALL);
        if (n != static_cast<ssize_t>(sizeof port)) {
            ::_exit(0);  // the relay and the task are gone
        }
        const int server =
            allowed.contains(port) ? ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) : -1;
        const sockaddr_in address = loopback(port);
        const bool connected =
            server >= 0 &&
            ::connect(server, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
        char status = connected ? 1 : 0;
        iovec data{&status, 1};
        alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int))> control{};
        msghdr message{};
        message.msg_iov = &data;
        message.msg_iovlen = 1;
        if (connected) {
            message.msg_control = control.data();
            message.msg_controllen = control.size();
            cmsghdr* header = CMSG_FIRSTHDR(&message);
            header->cmsg_level = SOL_SOCKET;
            header->cmsg_type = SCM_RIGHTS;
            header->cmsg_len = CMSG_LEN(sizeof(int));
            std::memcpy(CMSG_DATA(header), &server, sizeof server);
        }
        const bool sent = ::sendmsg(kChannel, &message, MSG_NOSIGNAL) == 1;
        if (server >= 0) {
            ::close(server);
        }
        if (!sent) {
            ::_exit(0);
        }
    }
}

constexpr int kConnectorGone = -2;

// A socket to the server from the connector; -1 if it could not connect, kConnectorGone.
int server_socket(int channel, std::uint16_t port) {
    if (::send(channel, &port, sizeof port, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof port)) {
        return kConnectorGone;
    }
    char status = 0;
    iovec data{&status, 1};
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int))> control{};
    msghdr message{};
    message.msg_iov = &data;
    message.msg_iovlen = 1;
    message.msg_control = control.data();
    message.msg_controllen = control.size();
    if (::recvmsg(channel, &message, MSG_CMSG_CLOEXEC) != 1) {
        return kConnectorGone;
    }
    if (status != 1) {
        return -1;
    }
    const cmsghdr* header = CMSG_FIRSTHDR(&message);
    if (header == nullptr || header->cmsg_type != SCM_RIGHTS ||
        header->cmsg_len != CMSG_LEN(sizeof(int))) {
        return -1;
    }
    int fd = -1;
    std::memcpy(&fd, CMSG_DATA(header), sizeof fd);
    return fd;
}

// One direction of a connection: bytes read from `from`, not yet written to `to`.
struct Flow {
    int from = -1;
    int to = -1;
    std::string pending;
    bool ended = false;  // `from` said end of stream
    bool shut = false;   // and `to` was told so

    bool done() const { return shut; }
};

struct Connection {
    UniqueFd client;
    UniqueFd server;
    Flow up;    // client -> server
    Flow down;  // server -> client
    bool broken = false;
};

// Reads what `flow` may take; false when the connection is broken.
bool pull(Flow& flow) {
    std::array<char, 16384> buffer{};
    while (!flow.ended && flow.pending.size() < kMaxBuffered) {
        const ssize_t n = ::read(flow.from, buffer.data(),
                                 std::min(buffer.size(), kMaxBuffered - flow.pending.size()));
        if (n > 0) {
            flow.pending.append(buffer.data(), static_cast<std::size_t>(n));
        } else if (n == 0) {
            flow.ended = true;
        } else {
            return errno == EAGAIN || errno == EINTR;
        }
    }
    return true;
}

// Writes what `flow` holds; false when the connection is broken.
bool push(Flow& flow) {
    while (!flow.pending.empty()) {
        const ssize_t n = ::send(flow.to, flow.pending.data(), flow.pending.size(), MSG_NOSIGNAL);
        if (n < 0) {
            return errno == EAGAIN || errno == EINTR;
        }
        flow.pending.erase(0, static_cast<std::size_t>(n));
    }
    if (flow.ended && !flow.shut) {
        (void)::shutdown(flow.to, SHUT_WR);
        flow.shut = true;
    }
    return true;
}

// The relay's loop: the listener at fd 3, the connector's channel at fd 4.
[[noreturn]] void serve_relay(std::uint16_t port) {
    constexpr int kListener = 3;
    constexpr int kChannel = 4;
    std::vector<Connection> connections;
    std::vector<pollfd> fds;
    for (;;) {
        fds.clear();
        fds.push_back({connections.size() < kMaxConnections ? kListener : -1, POLLIN, 0});
        for (const auto& c : connections) {
            for (const Flow* flow : {&c.up, &c.down}) {
                const short want_in =
                    !flow->ended && flow->pending.size() < kMaxBuffered ? POLLIN : 0;
                fds.push_back({flow->from, want_in, 0});
                fds.push_back({flow->to, flow->pending.empty() ? short{0} : short{POLLOUT}, 0});
            }
        }
        if (::poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) {
            ::_exit(1);
        }
        // A few connections per node: each is tried at every wake-up (non-blocking).
        for (Connection& c : connections) {
            c.broken = c.broken || !pull(c.up) || !pull(c.down) || !push(c.up) || !push(c.down);
        }
        std::erase_if(connections, [](const Connection& c) {
            return c.broken || (c.up.done() && c.down.done());
        });
        if (fds[0].revents != 0) {
            UniqueFd client(::accept4(kListener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
            if (!client) {
                continue;
            }
            const int socket = server_socket(kChannel, port);
            if (socket == kConnectorGone) {
                ::_exit(0);  // nothing more can be carried
            }
            UniqueFd server(socket);
            if (!server) {
                continue;  // the client sees its connection closed, as with no server
            }
            set_nonblocking(server.get());
            Connection& c = connections.emplace_back();
            c.up = {client.get(), server.get(), {}, false, false};
            c.down = {server.get(), client.get(), {}, false, false};
            c.client = std::move(client);
            c.server = std::move(server);
        }
    }
}

}  // namespace

std::optional<std::uint16_t> pmix_loopback_port(std::string_view uri) {
    constexpr std::string_view kLoopback = "tcp4://127.0.0.1:";
    const std::size_t at = uri.find(kLoopback);
    if (at == std::string_view::npos) {
        return std::nullopt;
    }
    const std::string_view digits = uri.substr(at + kLoopback.size());
    unsigned port = 0;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
    if (error != std::errc() || end != digits.data() + digits.size() || port == 0 || port > 65535) {
        return std::nullopt;
    }
    return static_cast<std::uint16_t>(port);
}

Result<pid_t> start_pmix_connector(UniqueFd channel, pid_t server, uid_t uid, gid_t gid) {
    const pid_t task = ::getpid();
    const pid_t child = ::fork();
    if (child < 0) {
        return sys_error("pmix bridge: fork the connector");
    }
    if (child == 0) {
        // Read while still root (the server's descriptors are root's), then become the user.
        const std::set<std::uint16_t> allowed = loopback_listeners_of(server);
        if (!detach_from_task(task, {channel.get()}) || ::setgroups(0, nullptr) != 0 ||
            ::setgid(gid) != 0 || ::setuid(uid) != 0) {
            ::_exit(1);
        }
        serve_connector(allowed);
    }
    return child;
}

int pmix_connector_socket(int channel, std::uint16_t port) {
    return server_socket(channel, port);
}

Result<std::optional<pid_t>> start_pmix_relay(std::uint16_t port, UniqueFd channel) {
    UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!listener) {
        return sys_error("pmix bridge: socket");
    }
    const int on = 1;
    (void)::setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    const sockaddr_in address = loopback(port);
    if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
        if (errno == EADDRINUSE) {
            return std::optional<pid_t>();
        }
        return sys_error("pmix bridge: bind 127.0.0.1:" + std::to_string(port));
    }
    if (::listen(listener.get(), 128) != 0) {
        return sys_error("pmix bridge: listen");
    }
    const pid_t task = ::getpid();
    const pid_t child = ::fork();
    if (child < 0) {
        return sys_error("pmix bridge: fork the relay");
    }
    if (child == 0) {
        if (!detach_from_task(task, {listener.get(), channel.get()})) {
            ::_exit(1);
        }
        serve_relay(port);
    }
    return std::optional<pid_t>(child);
}

}  // namespace vcpilot::spank
