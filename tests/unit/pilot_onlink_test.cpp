// On-link routes to other sites' blocks (pilot/net.hpp set_onlink_routes), on real overlays in
// private anonymous network namespaces (root only). As in net_test.cpp, every namespace here
// exists only as an fd of this process: nothing is named, nothing touches the machine's own
// network, and all of it goes when the test ends.
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <future>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "pilot/privileged/net.hpp"
#include "tests/unit/expect_error.hpp"
#include "tests/unit/literals.hpp"

namespace vcpilot::pilot {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::UnorderedElementsAre;

// A new, empty network namespace, alive while this object holds it.
class Netns {
  public:
    static std::optional<Netns> create() {
        int fd = -1;
        std::thread([&fd] {
            if (unshare(CLONE_NEWNET) == 0) {
                fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
            }
        }).join();
        if (fd < 0) {
            return std::nullopt;
        }
        return Netns(fd);
    }
    Netns(Netns&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    Netns& operator=(Netns&& other) noexcept {
        std::swap(fd_, other.fd_);
        return *this;
    }
    Netns(const Netns&) = delete;
    Netns& operator=(const Netns&) = delete;
    ~Netns() {
        if (fd_ >= 0) {
            close(fd_);
        }
    }
    int fd() const { return fd_; }

  private:
    explicit Netns(int fd) : fd_(fd) {}
    int fd_;
};

// Runs `work` on a thread inside `ns`; throws, running nothing, if the thread could not enter:
// a command meant for a test namespace must never run in the machine's own.
template <typename Work>
auto in_netns(const Netns& ns, Work work) -> decltype(work()) {
    std::optional<decltype(work())> result;
    bool entered = false;
    std::thread([&] {
        if (setns(ns.fd(), CLONE_NEWNET) != 0) {
            return;
        }
        entered = true;
        result.emplace(work());
    }).join();
    if (!entered) {
        throw std::runtime_error("could not enter a test network namespace");
    }
    return std::move(*result);
}

// A thread parked inside a namespace, whose thread id names it to `ip ... netns`.
class NetnsAnchor {
  public:
    explicit NetnsAnchor(const Netns& ns) {
        std::promise<pid_t> entered;
        std::future<pid_t> tid = entered.get_future();
        thread_ = std::thread([fd = ns.fd(), entered = std::move(entered),
                               release = release_.get_future()]() mutable {
            entered.set_value(setns(fd, CLONE_NEWNET) == 0 ? gettid() : -1);
            release.wait();
        });
        tid_ = tid.get();
    }
    NetnsAnchor(const NetnsAnchor&) = delete;
    NetnsAnchor& operator=(const NetnsAnchor&) = delete;
    ~NetnsAnchor() {
        release_.set_value();
        thread_.join();
    }
    pid_t tid() const { return tid_; }

  private:
    std::promise<void> release_;
    std::thread thread_;
    pid_t tid_ = -1;
};

int shell(const std::string& command, std::string* output = nullptr) {
    FILE* pipe = popen((command + " 2>&1").c_str(), "r");
    if (pipe == nullptr) {
        return -1;
    }
    std::string text;
    char buffer[512];
    while (fgets(buffer, sizeof buffer, pipe) != nullptr) {
        text += buffer;
    }
    const int status = pclose(pipe);
    if (output != nullptr) {
        *output = text;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Two nodes of two sites joined by a veth pair (172.30.0.1 and .2), one job namespace on each:
// the job on site 1 is 10.77.0.1/24 (its site's block), the one on site 2 is 10.78.0.1/24.
class OnLinkRoutes : public ::testing::Test {
  protected:
    void SetUp() override {
        if (geteuid() != 0) {
            GTEST_SKIP() << "needs root to create network namespaces";
        }
        for (auto* slot : {&node1_, &node2_, &job1_, &job2_}) {
            *slot = Netns::create();
            if (!*slot) {
                GTEST_SKIP() << "cannot create network namespaces here";
            }
        }
        const NetnsAnchor node2_anchor(*node2_);
        ASSERT_GT(node2_anchor.tid(), 0);
        std::string output;
        ASSERT_EQ(in_netns(*node1_,
                           [&] {
                               return shell("ip link add u type veth peer name u netns " +
                                                std::to_string(node2_anchor.tid()) +
                                                " && ip addr add 172.30.0.1/24 dev u && "
                                                "ip link set u up && ip link set lo up",
                                            &output);
                           }),
                  0)
            << output;
        ASSERT_EQ(in_netns(*node2_,
                           [&] {
                               return shell(
                                   "ip addr add 172.30.0.2/24 dev u && ip link set u up && "
                                   "ip link set lo up",
                                   &output);
                           }),
                  0)
            << output;
        create(*node1_, *job1_, "172.30.0.1", "10.77.0.1/24");
        create(*node2_, *job2_, "172.30.0.2", "10.78.0.1/24");
        const std::vector<OverlayPeer> peers{
            {ip("172.30.0.1"), ip("10.77.0.1"), mac_for_address(ip("10.77.0.1"))},
            {ip("172.30.0.2"), ip("10.78.0.1"), mac_for_address(ip("10.78.0.1"))}};
        ASSERT_TRUE(set_overlay_peers(job1_->fd(), peers).ok());
        ASSERT_TRUE(set_overlay_peers(job2_->fd(), peers).ok());
    }

    void create(const Netns& node, const Netns& job, std::string_view underlay,
                std::string_view address) {
        const InterfaceAddress interface_address = if_address(address);
        const OverlaySpec spec{.vni = 100,
                               .udp_port = 4789,
                               .local_underlay = ip(underlay),
                               .address = interface_address,
                               .mac = mac_for_address(interface_address.address()),
                               .mtu = 0,
                               .gateway = std::nullopt};
        const Status created = in_netns(node, [&] { return create_overlay(job.fd(), spec); });
        ASSERT_TRUE(created.ok()) << created.error().message;
    }

    std::string routes_of(const Netns& job) {
        std::string routes;
        EXPECT_EQ(in_netns(job, [&] { return shell("ip -4 route show", &routes); }), 0);
        return routes;
    }

    std::optional<Netns> node1_, node2_, job1_, job2_;
};

TEST_F(OnLinkRoutes, LetJobsOfDifferentSiteBlocksReachEachOther) {
    EXPECT_NE(in_netns(*job1_, [] { return shell("ping -c 1 -W 1 10.78.0.1"); }), 0)
        << "without a route the other site's block is unreachable";
    const std::vector<Cidr> to_site2{cidr("10.78.0.0/24")};
    const std::vector<Cidr> to_site1{cidr("10.77.0.0/24")};
    ASSERT_TRUE(set_onlink_routes(job1_->fd(), to_site2).ok());
    ASSERT_TRUE(set_onlink_routes(job2_->fd(), to_site1).ok());
    EXPECT_THAT(routes_of(*job1_), HasSubstr("10.78.0.0/24 dev eth0 proto static scope link"));
    EXPECT_EQ(in_netns(*job1_, [] { return shell("ping -c 1 -W 2 10.78.0.1"); }), 0);
    EXPECT_EQ(in_netns(*job2_, [] { return shell("ping -c 1 -W 2 10.77.0.1"); }), 0);
}

TEST_F(OnLinkRoutes, AreIdempotentAndBecomeExactlyTheGivenBlocks) {
    const std::vector<Cidr> first{cidr("10.78.0.0/24"), cidr("10.79.0.0/16")};
    ASSERT_TRUE(set_onlink_routes(job1_->fd(), first).ok());
    ASSERT_TRUE(set_onlink_routes(job1_->fd(), first).ok());
    EXPECT_THAT(onlink_routes(job1_->fd()).value(),
                UnorderedElementsAre(cidr("10.78.0.0/24"), cidr("10.79.0.0/16")));

    const std::vector<Cidr> second{cidr("10.79.0.0/16"), cidr("10.80.0.0/24")};
    ASSERT_TRUE(set_onlink_routes(job1_->fd(), second).ok());
    EXPECT_THAT(onlink_routes(job1_->fd()).value(),
                UnorderedElementsAre(cidr("10.79.0.0/16"), cidr("10.80.0.0/24")));

    ASSERT_TRUE(set_onlink_routes(job1_->fd(), {}).ok());
    EXPECT_THAT(onlink_routes(job1_->fd()).value(), IsEmpty());
    // eth0's own prefix route is the kernel's, and stays.
    EXPECT_THAT(routes_of(*job1_), HasSubstr("10.77.0.0/24 dev eth0 proto kernel scope link"));
}

TEST_F(OnLinkRoutes, RefuseAnotherAddressFamilyAndTheCallersOwnNamespace) {
    const std::vector<Cidr> v6{cidr("fd00::/64")};
    EXPECT_THAT(error_of(set_onlink_routes(job1_->fd(), v6)), HasSubstr("address family"));
    EXPECT_THAT(routes_of(*job1_), Not(HasSubstr("fd00")));
    const std::vector<Cidr> blocks{cidr("10.78.0.0/24")};
    EXPECT_THAT(error_of(in_netns(*job1_, [&] { return set_onlink_routes(job1_->fd(), blocks); })),
                HasSubstr("own network namespace"));
}

}  // namespace
}  // namespace vcpilot::pilot
