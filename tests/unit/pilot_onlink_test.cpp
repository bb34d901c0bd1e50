// On-link routes to other sites' blocks (pilot/net.hpp set_onlink_routes), on real overlays in
// private anonymous network namespaces (root only). As in net_test.cpp, every namespace here
// exists only as an fd of this process: nothing is named, nothing touches the machine's own
// network, and all of it goes when the test ends (tests/support/netns.hpp).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pilot/privileged/net.hpp"
#include "tests/support/netns.hpp"
#include "tests/unit/expect_error.hpp"
#include "tests/unit/literals.hpp"

namespace vcpilot::pilot {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::UnorderedElementsAre;
using ::vcpilot::testing::in_netns;
using ::vcpilot::testing::Netns;
using ::vcpilot::testing::shell;
using ::vcpilot::testing::TwoNodesOnVeth;

// Two nodes of two sites joined by a veth pair (172.30.0.1 and .2), one job namespace on each:
// the job on site 1 is 10.77.0.1/24 (its site's block), the one on site 2 is 10.78.0.1/24.
class OnLinkRoutes : public TwoNodesOnVeth {
  protected:
    void SetUp() override {
        TwoNodesOnVeth::SetUp();
        if (IsSkipped() || HasFatalFailure()) {
            return;
        }
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
