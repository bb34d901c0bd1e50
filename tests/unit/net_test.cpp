#include "pilot/privileged/net.hpp"

#include <cstdint>
#include <fstream>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tests/support/netns.hpp"
#include "tests/unit/expect_error.hpp"
#include "tests/unit/literals.hpp"

namespace vcpilot::pilot {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;
using ::vcpilot::testing::in_netns;
using ::vcpilot::testing::Netns;
using ::vcpilot::testing::shell;
using ::vcpilot::testing::TwoNodesOnVeth;

// ---- parse_mac / to_string ----

TEST(ParseMac, ReadsSixHexPairsInEitherCase) {
    EXPECT_EQ(parse_mac("mac", "02:ab:CD:ef:01:23").value(),
              (MacAddress{0x02, 0xab, 0xcd, 0xef, 0x01, 0x23}));
    EXPECT_EQ(to_string(parse_mac("mac", "02:AB:CD:EF:01:23").value()), "02:ab:cd:ef:01:23");
}

TEST(ParseMac, RefusesMulticastAddresses) {
    const std::string message = error_of(parse_mac("peers[2].mac", "01:00:5e:00:00:01"));
    EXPECT_THAT(message, HasSubstr("peers[2].mac"));
    EXPECT_THAT(message, HasSubstr("multicast"));
    EXPECT_THAT(error_of(parse_mac("mac", "ff:ff:ff:ff:ff:ff")), HasSubstr("multicast"));
    EXPECT_THAT(error_of(parse_mac("mac", "33:33:00:00:00:01")), HasSubstr("multicast"));
}

TEST(ParseMac, RefusesAllZeros) {
    EXPECT_THAT(error_of(parse_mac("mac", "00:00:00:00:00:00")), HasSubstr("all-zeros"));
}

TEST(ParseMac, RefusesTheWrongLength) {
    for (const char* text : {"02:00:0a:00:00", "02:00:0a:00:00:01:02", "02:00:0a:00:00:1",
                             "2:0:a:0:0:1", "02:00:0a:00:00:011"}) {
        const std::string message = error_of(parse_mac("mac", text));
        EXPECT_THAT(message, HasSubstr("is not a MAC address")) << text;
        EXPECT_THAT(message, HasSubstr(text)) << text;
    }
}

TEST(ParseMac, RefusesGarbage) {
    for (const char* text :
         {"02-00-0a-00-00-01", "02:00:0a:00:00:0g", "zz:zz:zz:zz:zz:zz", "02:00:0a:00:00: 1",
          "0x:00:0a:00:00:01", "02.00.0a.00.00.01", "02:00:0a:00:00:01\n", "hello world!!!!!!"}) {
        EXPECT_THAT(error_of(parse_mac("mac", text)), HasSubstr("is not a MAC address")) << text;
    }
}

TEST(ParseMac, RefusesEmptyTextAndNamesTheField) {
    EXPECT_EQ(error_of(parse_mac("overlay.mac", "")), "overlay.mac: the MAC address is empty");
}

TEST(ParseMac, ReadsWhatToStringWrites) {
    const MacAddress mac{0x02, 0x00, 0x0a, 0xff, 0x10, 0x01};
    EXPECT_EQ(parse_mac("mac", to_string(mac)).value(), mac);
}

// ---- mac_for_address ----

TEST(MacForAddress, IsDeterministic) {
    EXPECT_EQ(mac_for_address(ip("10.77.0.1")), mac_for_address(ip("10.77.0.1")));
    EXPECT_EQ(mac_for_address(ip("fd00::5")), mac_for_address(ip("fd00::5")));
}

TEST(MacForAddress, IsLocallyAdministeredUnicast) {
    for (const char* text : {"10.77.0.1", "255.255.255.255", "0.0.0.1", "fd00::1", "ff02::1",
                             "2001:db8::ffff:ffff:ffff"}) {
        const MacAddress mac = mac_for_address(ip(text));
        EXPECT_EQ(mac[0] & 0x01, 0) << text << ": multicast bit set";
        EXPECT_EQ(mac[0] & 0x02, 0x02) << text << ": not locally administered";
        EXPECT_TRUE(parse_mac("mac", to_string(mac)).ok()) << text;
    }
}

TEST(MacForAddress, EmbedsTheIpv4AddressSoNoTwoCollide) {
    EXPECT_EQ(to_string(mac_for_address(ip("10.77.0.1"))), "02:00:0a:4d:00:01");
    EXPECT_NE(mac_for_address(ip("10.77.0.1")), mac_for_address(ip("10.77.0.2")));
    EXPECT_NE(mac_for_address(ip("10.77.0.1")), mac_for_address(ip("10.77.1.1")));
}

TEST(MacForAddress, UsesTheLastFiveBytesOfAnIpv6Address) {
    EXPECT_EQ(to_string(mac_for_address(ip("fd00::aa:bbcc:ddee"))), "02:aa:bb:cc:dd:ee");
    EXPECT_NE(mac_for_address(ip("fd00::1")), mac_for_address(ip("fd00::2")));
}

// ---- checks on the spec and the peer list (no namespace needed) ----

OverlaySpec valid_spec() {
    return OverlaySpec{.vni = 100,
                       .udp_port = 4789,
                       .local_underlay = ip("172.30.0.1"),
                       .address = if_address("10.77.0.1/24"),
                       .mac = mac_for_address(ip("10.77.0.1")),
                       .mtu = 0,
                       .gateway = std::nullopt};
}

TEST(CheckOverlaySpec, AcceptsAPlainSpec) {
    EXPECT_TRUE(check_overlay_spec(valid_spec()).ok());
    OverlaySpec with_gateway = valid_spec();
    with_gateway.gateway = ip("10.77.0.254");
    with_gateway.mtu = 1400;
    EXPECT_TRUE(check_overlay_spec(with_gateway).ok());
}

TEST(CheckOverlaySpec, RefusesAVniOutsideTwentyFourBits) {
    OverlaySpec spec = valid_spec();
    spec.vni = 0;
    EXPECT_THAT(error_of(check_overlay_spec(spec)), HasSubstr("vni: 0 is out of range"));
    spec.vni = 1U << 24;
    EXPECT_THAT(error_of(check_overlay_spec(spec)), HasSubstr("vni: 16777216"));
    spec.vni = (1U << 24) - 1;
    EXPECT_TRUE(check_overlay_spec(spec).ok());
}

TEST(CheckOverlaySpec, RefusesPortZeroAndAnUnspecifiedUnderlay) {
    OverlaySpec spec = valid_spec();
    spec.udp_port = 0;
    EXPECT_THAT(error_of(check_overlay_spec(spec)), HasSubstr("udp_port"));
    spec = valid_spec();
    spec.local_underlay = ip("0.0.0.0");
    EXPECT_THAT(error_of(check_overlay_spec(spec)), HasSubstr("local_underlay"));
}

TEST(CheckOverlaySpec, RefusesHostNetworkAndBroadcastAddresses) {
    OverlaySpec spec = valid_spec();
    spec.address = if_address("10.77.0.1/32");
    EXPECT_THAT(error_of(check_overlay_spec(spec)), HasSubstr("single host"));
    spec.address = if_address("10.77.0.0/24");
    EXPECT_THAT(error_of(check_overlay_spec(spec)), HasSubstr("network address"));
    spec.address = if_address("10.77.0.255/24");
    EXPECT_THAT(error_of(check_overlay_spec(spec)), HasSubstr("broadcast address"));
    spec.address = if_address("10.77.0.0/31");  // RFC 3021: both addresses are hosts
    EXPECT_TRUE(check_overlay_spec(spec).ok());
}

TEST(CheckOverlaySpec, RefusesAMulticastMac) {
    OverlaySpec spec = valid_spec();
    spec.mac = MacAddress{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01};
    EXPECT_THAT(error_of(check_overlay_spec(spec)), HasSubstr("mac: 01:00:5e:00:00:01"));
}

TEST(CheckOverlaySpec, RefusesAnMtuOutOfRange) {
    OverlaySpec spec = valid_spec();
    spec.mtu = 67;
    EXPECT_THAT(error_of(check_overlay_spec(spec)), HasSubstr("mtu: 67"));
    spec.mtu = 65536;
    EXPECT_THAT(error_of(check_overlay_spec(spec)), HasSubstr("mtu: 65536"));
    spec.address = if_address("fd00::1/64");
    spec.mac = mac_for_address(spec.address.address());
    spec.mtu = 1279;
    EXPECT_THAT(error_of(check_overlay_spec(spec)), HasSubstr("IPv6 overlay needs 1280"));
}

TEST(CheckOverlaySpec, RefusesAGatewayOutsideTheJobNetwork) {
    OverlaySpec spec = valid_spec();
    spec.gateway = ip("10.78.0.1");
    EXPECT_THAT(error_of(check_overlay_spec(spec)),
                HasSubstr("gateway: 10.78.0.1 must be another address inside 10.77.0.0/24"));
    spec.gateway = ip("10.77.0.1");
    EXPECT_THAT(error_of(check_overlay_spec(spec)), HasSubstr("gateway: 10.77.0.1"));
    spec.gateway = ip("fd00::1");
    EXPECT_THAT(error_of(check_overlay_spec(spec)), HasSubstr("gateway: fd00::1 is IPv6"));
}

TEST(CreateOverlay, ChecksTheSpecBeforeTouchingAnything) {
    OverlaySpec spec = valid_spec();
    spec.vni = 0;
    // fd -1 would fail any real step; the error must be the spec's.
    EXPECT_THAT(error_of(create_overlay(-1, spec)), HasSubstr("vni"));
}

OverlayPeer peer(std::string_view underlay, std::string_view address) {
    return OverlayPeer{ip(underlay), ip(address), mac_for_address(ip(address))};
}

TEST(CheckOverlayPeers, AcceptsDistinctPeersAndAnEmptyList) {
    const std::vector<OverlayPeer> peers{peer("172.30.0.1", "10.77.0.1"),
                                         peer("172.30.0.2", "10.77.0.2")};
    EXPECT_TRUE(check_overlay_peers(peers).ok());
    EXPECT_TRUE(check_overlay_peers({}).ok());
}

TEST(CheckOverlayPeers, RefusesDuplicateAddressesAndMacs) {
    std::vector<OverlayPeer> peers{peer("172.30.0.1", "10.77.0.1"),
                                   peer("172.30.0.2", "10.77.0.1")};
    EXPECT_THAT(error_of(check_overlay_peers(peers)),
                HasSubstr("peers[1].address: 10.77.0.1 is also peers[0]'s"));
    peers[1] = peer("172.30.0.2", "10.77.0.2");
    peers[1].mac = peers[0].mac;
    EXPECT_THAT(error_of(check_overlay_peers(peers)), HasSubstr("peers[1].mac"));
}

TEST(CheckOverlayPeers, RefusesMixedFamiliesAndMulticastMacs) {
    std::vector<OverlayPeer> peers{peer("172.30.0.1", "10.77.0.1"), peer("fd00::2", "10.77.0.2")};
    EXPECT_THAT(error_of(check_overlay_peers(peers)), HasSubstr("peers[1].underlay"));
    peers[1] = peer("172.30.0.2", "fd77::2");
    EXPECT_THAT(error_of(check_overlay_peers(peers)), HasSubstr("peers[1].address"));
    peers[1] = peer("172.30.0.2", "10.77.0.2");
    peers[1].mac[0] = 0x03;
    EXPECT_THAT(error_of(check_overlay_peers(peers)), HasSubstr("peers[1].mac"));
}

TEST(SetOverlayPeers, ChecksThePeersBeforeTouchingAnything) {
    const std::vector<OverlayPeer> peers{peer("172.30.0.1", "10.77.0.1"),
                                         peer("172.30.0.2", "10.77.0.1")};
    EXPECT_THAT(error_of(set_overlay_peers(-1, peers)), HasSubstr("peers[1].address"));
}

// ---- the real thing, in private anonymous namespaces (root only) ----
//
// Every namespace below exists only as an fd of this test process: nothing is named, nothing is
// linked to the machine's own network, and all of it disappears when the test ends, however it
// ends (tests/support/netns.hpp).

// Two nodes joined by a veth pair (172.30.0.1/24 and .2/24, MTU 1500), and one empty job
// namespace per node (vcpilot::testing::TwoNodesOnVeth).
class OverlayOnTwoNodes : public TwoNodesOnVeth {
  protected:
    static OverlaySpec spec_for(std::uint32_t vni, std::string_view underlay,
                                std::string_view address) {
        const InterfaceAddress interface_address = if_address(address);
        return OverlaySpec{.vni = vni,
                           .udp_port = 4789,
                           .local_underlay = ip(underlay),
                           .address = interface_address,
                           .mac = mac_for_address(interface_address.address()),
                           .mtu = 0,
                           .gateway = std::nullopt};
    }

    Status create_on(const Netns& node, const Netns& job, const OverlaySpec& spec) {
        return in_netns(node, [&] { return create_overlay(job.fd(), spec); });
    }

    std::vector<std::string> links_of(const Netns& ns) { return link_names(ns.fd()).value(); }

    // Both jobs' overlays, VNI 100, 10.77.0.1 on node 1 and 10.77.0.2 on node 2, peers set.
    void build_both() {
        ASSERT_TRUE(create_on(*node1_, *job1_, spec_for(100, "172.30.0.1", "10.77.0.1/24")).ok());
        ASSERT_TRUE(create_on(*node2_, *job2_, spec_for(100, "172.30.0.2", "10.77.0.2/24")).ok());
        ASSERT_TRUE(set_overlay_peers(job1_->fd(), both_peers_).ok());
        ASSERT_TRUE(set_overlay_peers(job2_->fd(), both_peers_).ok());
    }

    const std::vector<OverlayPeer> both_peers_{peer("172.30.0.1", "10.77.0.1"),
                                               peer("172.30.0.2", "10.77.0.2")};
};

TEST_F(OverlayOnTwoNodes, LeavesExactlyLoAndEth0InTheJobAndNothingOnTheNode) {
    const auto node_links = links_of(*node1_);
    ASSERT_TRUE(create_on(*node1_, *job1_, spec_for(100, "172.30.0.1", "10.77.0.1/24")).ok());
    EXPECT_THAT(links_of(*job1_), ElementsAre("lo", "eth0"));
    EXPECT_EQ(links_of(*node1_), node_links);
}

TEST_F(OverlayOnTwoNodes, TakesTheUnderlayMtuMinusFiftyAndTheGivenMac) {
    EXPECT_EQ(in_netns(*node1_, [] { return underlay_mtu(ip("172.30.0.1")); }).value(), 1500U);
    ASSERT_TRUE(create_on(*node1_, *job1_, spec_for(100, "172.30.0.1", "10.77.0.1/24")).ok());
    std::string link;
    ASSERT_EQ(in_netns(*job1_, [&] { return shell("ip -o link show dev eth0", &link); }), 0);
    EXPECT_THAT(link, HasSubstr("mtu 1450 "));
    EXPECT_THAT(link, HasSubstr("link/ether 02:00:0a:4d:00:01 "));
    EXPECT_THAT(link, HasSubstr(",UP,"));
}

TEST_F(OverlayOnTwoNodes, AddsADefaultRouteOnlyWhenAsked) {
    OverlaySpec spec = spec_for(100, "172.30.0.1", "10.77.0.1/24");
    ASSERT_TRUE(create_on(*node1_, *job1_, spec).ok());
    std::string routes;
    ASSERT_EQ(in_netns(*job1_, [&] { return shell("ip route show", &routes); }), 0);
    EXPECT_THAT(routes, ::testing::Not(HasSubstr("default")));

    spec = spec_for(100, "172.30.0.2", "10.77.0.2/24");
    spec.gateway = ip("10.77.0.254");
    ASSERT_TRUE(create_on(*node2_, *job2_, spec).ok());
    ASSERT_EQ(in_netns(*job2_, [&] { return shell("ip route show", &routes); }), 0);
    EXPECT_THAT(routes, HasSubstr("default via 10.77.0.254 dev eth0"));
}

TEST_F(OverlayOnTwoNodes, JobsPingEachOtherButNotTheUnderlay) {
    build_both();
    EXPECT_EQ(in_netns(*job1_, [] { return shell("ping -c 1 -W 2 10.77.0.2"); }), 0);
    // Full-size frames cross the overlay without fragmentation: 1450 - 20 - 8 = 1422.
    EXPECT_EQ(in_netns(*job1_, [] { return shell("ping -c 1 -W 2 -M do -s 1422 10.77.0.2"); }), 0);
    EXPECT_NE(in_netns(*job1_, [] { return shell("ping -c 1 -W 1 172.30.0.2"); }), 0);
    EXPECT_NE(in_netns(*job1_, [] { return shell("ping -c 1 -W 1 172.30.0.1"); }), 0);
}

TEST_F(OverlayOnTwoNodes, RefusesAVniAlreadyUsedOnTheNodeAndLeavesNothing) {
    ASSERT_TRUE(create_on(*node1_, *job1_, spec_for(100, "172.30.0.1", "10.77.0.1/24")).ok());
    const auto node_links = links_of(*node1_);
    auto other_job = Netns::create();
    ASSERT_TRUE(other_job);
    const std::string message =
        error_of(create_on(*node1_, *other_job, spec_for(100, "172.30.0.1", "10.77.0.3/24")));
    EXPECT_THAT(message, HasSubstr("create VXLAN device eth0"));
    EXPECT_THAT(message, HasSubstr("VNI"));
    EXPECT_THAT(links_of(*other_job), ElementsAre("lo"));
    EXPECT_EQ(links_of(*node1_), node_links);
}

// A job's teardown leaves its VXLAN device to the kernel, which frees it with the job's network
// namespace in the background; the next job on the node wanting that VNI waits for it.
TEST_F(OverlayOnTwoNodes, AVniOfAJobThatJustEndedIsWaitedFor) {
    ASSERT_TRUE(create_on(*node1_, *job1_, spec_for(100, "172.30.0.1", "10.77.0.1/24")).ok());
    job1_.reset();  // the last reference: the namespace and its eth0 go, asynchronously
    auto next_job = Netns::create();
    ASSERT_TRUE(next_job);
    const auto made = create_on(*node1_, *next_job, spec_for(100, "172.30.0.1", "10.77.0.1/24"));
    ASSERT_TRUE(made.ok()) << made.error().message;
    EXPECT_THAT(links_of(*next_job), ElementsAre("lo", "eth0"));
}

TEST_F(OverlayOnTwoNodes, RemovesEth0WhenAStepInsideTheJobFails) {
    // With IPv6 disabled in the job namespace, adding an IPv6 address fails after eth0 exists.
    const bool disabled = in_netns(*job1_, [] {
        std::ofstream("/proc/sys/net/ipv6/conf/default/disable_ipv6") << "1\n";
        std::ofstream("/proc/sys/net/ipv6/conf/all/disable_ipv6") << "1\n";
        std::ifstream check("/proc/sys/net/ipv6/conf/default/disable_ipv6");
        int value = 0;
        check >> value;
        return value == 1;
    });
    if (!disabled) {
        GTEST_SKIP() << "cannot disable IPv6 in a namespace here";
    }
    const std::string message =
        error_of(create_on(*node1_, *job1_, spec_for(100, "172.30.0.1", "fd77::1/64")));
    EXPECT_THAT(message, HasSubstr("add address fd77::1/64 to eth0"));
    EXPECT_THAT(links_of(*job1_), ElementsAre("lo"));
    // And the VNI is free again.
    EXPECT_TRUE(create_on(*node1_, *job2_, spec_for(100, "172.30.0.1", "10.77.0.1/24")).ok());
}

TEST_F(OverlayOnTwoNodes, RefusesASecondEth0AndTheCallersOwnNamespace) {
    ASSERT_TRUE(create_on(*node1_, *job1_, spec_for(100, "172.30.0.1", "10.77.0.1/24")).ok());
    EXPECT_THAT(error_of(create_on(*node1_, *job1_, spec_for(101, "172.30.0.1", "10.77.0.1/24"))),
                HasSubstr("already has an eth0"));
    EXPECT_THAT(error_of(create_on(*node1_, *node1_, spec_for(101, "172.30.0.1", "10.77.0.1/24"))),
                HasSubstr("caller's own network namespace"));
    EXPECT_THAT(error_of(create_on(*node1_, *job2_, spec_for(101, "172.30.0.9", "10.77.0.1/24"))),
                HasSubstr("no device in the node's network namespace has the address 172.30.0.9"));
}

TEST_F(OverlayOnTwoNodes, RefusesAnMtuTheUnderlayCannotCarry) {
    OverlaySpec spec = spec_for(100, "172.30.0.1", "10.77.0.1/24");
    spec.mtu = 1451;
    EXPECT_THAT(error_of(create_on(*node1_, *job1_, spec)), HasSubstr("so at most 1450"));
    EXPECT_THAT(links_of(*job1_), ElementsAre("lo"));
}

TEST_F(OverlayOnTwoNodes, PeersGiveFloodAndUnicastEntriesButSkipSelf) {
    build_both();
    const OverlayForwarding forwarding = overlay_forwarding(job1_->fd()).value();
    const MacAddress peer_mac = mac_for_address(ip("10.77.0.2"));
    EXPECT_THAT(forwarding.fdb, UnorderedElementsAre(FdbEntry{MacAddress{}, ip("172.30.0.2")},
                                                     FdbEntry{peer_mac, ip("172.30.0.2")}));
    EXPECT_THAT(forwarding.neighbours, ElementsAre(NeighbourEntry{ip("10.77.0.2"), peer_mac}));
}

TEST_F(OverlayOnTwoNodes, SettingPeersIsIdempotentAndRemovesDroppedPeers) {
    build_both();
    const OverlayForwarding before = overlay_forwarding(job1_->fd()).value();
    ASSERT_TRUE(set_overlay_peers(job1_->fd(), both_peers_).ok());
    const OverlayForwarding again = overlay_forwarding(job1_->fd()).value();
    EXPECT_THAT(again.fdb, ::testing::UnorderedElementsAreArray(before.fdb));
    EXPECT_THAT(again.neighbours, ::testing::UnorderedElementsAreArray(before.neighbours));

    std::vector<OverlayPeer> three = both_peers_;
    three.push_back(peer("172.30.0.3", "10.77.0.3"));
    ASSERT_TRUE(set_overlay_peers(job1_->fd(), three).ok());
    EXPECT_EQ(overlay_forwarding(job1_->fd())->fdb.size(), 4U);
    three[2].underlay = ip("172.30.0.4");  // the third node moved
    ASSERT_TRUE(set_overlay_peers(job1_->fd(), three).ok());
    EXPECT_THAT(overlay_forwarding(job1_->fd())->fdb,
                UnorderedElementsAre(FdbEntry{MacAddress{}, ip("172.30.0.2")},
                                     FdbEntry{MacAddress{}, ip("172.30.0.4")},
                                     FdbEntry{three[1].mac, ip("172.30.0.2")},
                                     FdbEntry{three[2].mac, ip("172.30.0.4")}));

    ASSERT_TRUE(set_overlay_peers(job1_->fd(), both_peers_).ok());
    const OverlayForwarding after = overlay_forwarding(job1_->fd()).value();
    EXPECT_THAT(after.fdb, ::testing::UnorderedElementsAreArray(before.fdb));
    EXPECT_THAT(after.neighbours, ::testing::UnorderedElementsAreArray(before.neighbours));

    ASSERT_TRUE(set_overlay_peers(job1_->fd(), {}).ok());
    EXPECT_THAT(overlay_forwarding(job1_->fd())->fdb, IsEmpty());
    EXPECT_THAT(overlay_forwarding(job1_->fd())->neighbours, IsEmpty());
}

TEST_F(OverlayOnTwoNodes, RefusesPeersThatContradictThisNode) {
    build_both();
    std::vector<OverlayPeer> peers = both_peers_;
    peers[0].mac = mac_for_address(ip("10.77.0.9"));  // self, with the wrong MAC
    EXPECT_THAT(error_of(set_overlay_peers(job1_->fd(), peers)),
                HasSubstr("is this node's address"));
    peers = {both_peers_[1]};
    peers[0].mac = mac_for_address(ip("10.77.0.1"));  // another node with our MAC
    EXPECT_THAT(error_of(set_overlay_peers(job1_->fd(), peers)),
                HasSubstr("is this node's own MAC"));
    auto empty_job = Netns::create();
    ASSERT_TRUE(empty_job);
    EXPECT_THAT(error_of(set_overlay_peers(empty_job->fd(), both_peers_)),
                HasSubstr("has no eth0"));
}

TEST_F(OverlayOnTwoNodes, DeleteLinkRemovesEth0AndToleratesItsAbsence) {
    ASSERT_TRUE(create_on(*node1_, *job1_, spec_for(100, "172.30.0.1", "10.77.0.1/24")).ok());
    ASSERT_TRUE(delete_link(job1_->fd(), "eth0").ok());
    EXPECT_THAT(links_of(*job1_), ElementsAre("lo"));
    EXPECT_TRUE(delete_link(job1_->fd(), "eth0").ok());
    EXPECT_THAT(error_of(delete_link(job1_->fd(), "")), HasSubstr("1 to 15 characters"));
}

}  // namespace
}  // namespace vcpilot::pilot
