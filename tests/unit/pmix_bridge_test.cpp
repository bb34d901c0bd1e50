// srun --mpi=pmix's bridge (spank/pmix_bridge.hpp): which server addresses it carries, and that
// its connector, which runs in the node's network on behalf of the job's user, reaches the
// step's PMIx server and nothing else on the node's loopback.
#include "spank/pmix_bridge.hpp"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace vcpilot::spank {
namespace {

TEST(PmixBridge, CarriesOnlyAServerOnTheIpv4Loopback) {
    EXPECT_EQ(pmix_loopback_port("pmix-server.31283;tcp4://127.0.0.1:55185"), 55185);
    EXPECT_EQ(pmix_loopback_port("tcp4://127.0.0.1:1"), 1);
    EXPECT_FALSE(pmix_loopback_port("pmix-server.1;tcp4://10.0.0.1:55185"));
    EXPECT_FALSE(pmix_loopback_port("pmix-server.1;tcp6://[::1]:55185"));
    EXPECT_FALSE(pmix_loopback_port("tcp4://127.0.0.1:0"));
    EXPECT_FALSE(pmix_loopback_port("tcp4://127.0.0.1:65536"));
    EXPECT_FALSE(pmix_loopback_port("tcp4://127.0.0.1:55185x"));
    EXPECT_FALSE(pmix_loopback_port(""));
}

// A socket listening on 127.0.0.1 at a port the kernel picks.
UniqueFd listening(std::uint16_t& port) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t size = sizeof address;
    EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    EXPECT_EQ(::listen(fd.get(), 4), 0);
    EXPECT_EQ(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&address), &size), 0);
    port = ntohs(address.sin_port);
    return fd;
}

TEST(PmixBridge, TheConnectorReachesTheServersPortsAndNoOther) {
    if (::geteuid() != 0) {
        GTEST_SKIP() << "needs root (the connector reads the server's descriptors, then drops)";
    }
    // The "server" is this process; another process listens on another loopback port, as the
    // node's other services (or another job's PMIx server) do.
    std::uint16_t server_port = 0;
    std::uint16_t other_port = 0;
    const UniqueFd server = listening(server_port);
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const pid_t other = ::fork();
    if (other == 0) {
        const UniqueFd held = listening(other_port);
        (void)(::write(ready[1], &other_port, sizeof other_port) < 0);
        while (held) {
            ::pause();  // listening until the test kills it
        }
        ::_exit(0);
    }
    ASSERT_EQ(::read(ready[0], &other_port, sizeof other_port),
              static_cast<ssize_t>(sizeof other_port));
    ::close(ready[0]);
    ::close(ready[1]);

    int pair[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    UniqueFd channel(pair[0]);
    auto connector = start_pmix_connector(UniqueFd(pair[1]), ::getpid(), 65534, 65534);
    ASSERT_TRUE(connector) << connector.error().message;

    const UniqueFd to_server(pmix_connector_socket(channel.get(), server_port));
    EXPECT_TRUE(to_server) << "the step's server was not reached";
    EXPECT_EQ(pmix_connector_socket(channel.get(), other_port), -1)
        << "the connector reached another service's port";
    EXPECT_EQ(pmix_connector_socket(channel.get(), 22), -1);

    channel = UniqueFd();  // the relay is gone: the connector ends
    int status = 0;
    EXPECT_EQ(::waitpid(*connector, &status, 0), *connector);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    ::kill(other, SIGKILL);
    ::waitpid(other, &status, 0);
}

}  // namespace
}  // namespace vcpilot::spank
