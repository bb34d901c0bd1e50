// The compact cluster view a coordinator sends, expanded into SET_KEYS (pilot/view.hpp), and the
// on-link blocks it yields as SET_KEYS validation checks them (pilot/validate.hpp).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <string>
#include <vector>

#include "pilot/privileged/net.hpp"
#include "pilot/validate.hpp"
#include "pilot/view.hpp"
#include "tests/unit/expect_error.hpp"
#include "tests/unit/literals.hpp"

namespace vcpilot::pilot {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Real ed25519 public keys (public halves only), as in validate_test.cpp.
constexpr const char* kKeyA =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKnHZEuV0yRzoDGeZXRoDk5DXc12Ymvsyh6NgV2PODg+";
constexpr const char* kKeyB =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGp58zFp5xVrF2TXHEIj9pTiDwm0oYF7fYKRpr4ey8rL";

std::string packed_v4(const std::vector<std::string>& addresses) {
    std::string packed;
    for (const auto& text : addresses) {
        const auto bytes = ip(text).bytes();
        packed.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    }
    return packed;
}

void add_site(v1::ClusterView& view, const std::string& name, const std::string& block,
              const std::vector<std::string>& underlays) {
    v1::SiteView* site = view.add_sites();
    site->set_site(name);
    site->set_block(block);
    site->set_nodes(static_cast<std::uint32_t>(underlays.size()));
    site->set_underlay(packed_v4(underlays));
    for (std::size_t i = 0; i < underlays.size(); ++i) {
        site->add_host_keys(i % 2 == 0 ? kKeyA : kKeyB);
        site->add_user_keys(i % 2 == 0 ? kKeyB : kKeyA);
    }
}

// Two sites of an exchange-mode cluster: osaka with 2 nodes, tsukuba with 3.
v1::ClusterView two_sites() {
    v1::ClusterView view;
    view.set_cluster_id("c1");
    view.set_slots(4);
    add_site(view, "osaka", "10.20.0.0/24", {"172.16.1.11", "172.16.1.12"});
    add_site(view, "tsukuba", "10.20.1.0/24", {"172.16.2.11", "172.16.2.12", "172.16.2.13"});
    return view;
}

std::vector<std::string> names_of(const v1::SetKeysRequest& request) {
    std::vector<std::string> names;
    for (const auto& node : request.nodes()) {
        names.push_back(node.name());
    }
    return names;
}

TEST(ExpandClusterView, NamesNodesAfterPrefixSiteAndOrdinal) {
    auto request = expand_cluster_view(two_sites(), "c1", if_address("10.20.0.1/24"));
    ASSERT_TRUE(request) << request.error().message;
    EXPECT_THAT(names_of(*request), ElementsAre("vc-osaka-1", "vc-osaka-2", "vc-tsukuba-1",
                                                "vc-tsukuba-2", "vc-tsukuba-3"));

    auto view = two_sites();
    view.set_name_prefix("job42");
    request = expand_cluster_view(view, "c1", if_address("10.20.0.1/24"));
    ASSERT_TRUE(request) << request.error().message;
    EXPECT_EQ(request->nodes(4).name(), "job42-tsukuba-3");
}

TEST(ExpandClusterView, GivesEachNodeBlockBasePlusOrdinalAndTheDerivedMac) {
    auto request = expand_cluster_view(two_sites(), "c1", if_address("10.20.0.1/24"));
    ASSERT_TRUE(request) << request.error().message;
    ASSERT_EQ(request->nodes_size(), 5);
    EXPECT_EQ(request->nodes(0).address(), "10.20.0.1");
    EXPECT_EQ(request->nodes(1).address(), "10.20.0.2");
    EXPECT_EQ(request->nodes(2).address(), "10.20.1.1");
    EXPECT_EQ(request->nodes(4).address(), "10.20.1.3");
    for (const auto& node : request->nodes()) {
        EXPECT_EQ(node.mac(), to_string(mac_for_address(ip(node.address())))) << node.name();
        EXPECT_EQ(node.slots(), 4u) << node.name();
    }
}

TEST(ExpandClusterView, UnpacksIpv4UnderlayAddressesInNodeOrder) {
    auto request = expand_cluster_view(two_sites(), "c1", if_address("10.20.0.1/24"));
    ASSERT_TRUE(request) << request.error().message;
    EXPECT_EQ(request->nodes(0).underlay_address(), "172.16.1.11");
    EXPECT_EQ(request->nodes(1).underlay_address(), "172.16.1.12");
    EXPECT_EQ(request->nodes(4).underlay_address(), "172.16.2.13");
}

TEST(ExpandClusterView, UnpacksIpv6UnderlayAddresses) {
    v1::ClusterView view;
    view.set_cluster_id("c1");
    v1::SiteView* site = view.add_sites();
    site->set_site("s1");
    site->set_block("10.20.0.0/24");
    site->set_nodes(2);
    std::string packed;
    for (const char* text : {"fd00::11", "2001:db8::1:2"}) {
        const auto bytes = ip(text).bytes();
        packed.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    }
    site->set_underlay(packed);
    site->add_host_keys(kKeyA);
    site->add_host_keys(kKeyB);
    site->add_user_keys(kKeyB);
    site->add_user_keys(kKeyA);
    auto request = expand_cluster_view(view, "c1", if_address("10.20.0.1/24"));
    ASSERT_TRUE(request) << request.error().message;
    EXPECT_EQ(request->nodes(0).underlay_address(), "fd00::11");
    EXPECT_EQ(request->nodes(1).underlay_address(), "2001:db8::1:2");
}

TEST(ExpandClusterView, RefusesAnUnderlayWhoseLengthDoesNotMatchTheNodes) {
    for (const std::size_t length : {0, 7, 9, 16, 31}) {
        auto view = two_sites();
        view.mutable_sites(0)->set_underlay(std::string(length, '\x01'));
        const std::string message =
            error_of(expand_cluster_view(view, "c1", if_address("10.20.0.1/24")));
        EXPECT_THAT(message, HasSubstr("sites[0].underlay: ")) << length;
        EXPECT_THAT(message, HasSubstr("expected 8 (IPv4) or 32 (IPv6)")) << length;
    }
}

TEST(ExpandClusterView, CopiesExchangeKeysInNodeOrder) {
    auto request = expand_cluster_view(two_sites(), "c1", if_address("10.20.0.1/24"));
    ASSERT_TRUE(request) << request.error().message;
    EXPECT_EQ(request->nodes(0).host_key(), kKeyA);
    EXPECT_EQ(request->nodes(0).user_key(), kKeyB);
    EXPECT_EQ(request->nodes(3).host_key(), kKeyB);
    EXPECT_TRUE(request->ca_key().empty());
}

TEST(ExpandClusterView, RefusesExchangeKeyCountsThatDoNotMatchTheNodes) {
    auto view = two_sites();
    view.mutable_sites(1)->mutable_host_keys()->RemoveLast();
    EXPECT_THAT(error_of(expand_cluster_view(view, "c1", if_address("10.20.0.1/24"))),
                HasSubstr("sites[1].host_keys: 2 keys for 3 nodes"));
    view = two_sites();
    view.mutable_sites(0)->add_user_keys(kKeyA);
    EXPECT_THAT(error_of(expand_cluster_view(view, "c1", if_address("10.20.0.1/24"))),
                HasSubstr("sites[0].user_keys: 3 keys for 2 nodes"));
}

TEST(ExpandClusterView, InCertificateModeCarriesTheCaAndNoPerNodeKeys) {
    auto view = two_sites();
    for (auto& site : *view.mutable_sites()) {
        site.clear_host_keys();
        site.clear_user_keys();
    }
    view.set_ca_key(kKeyA);
    view.set_host_certificate("host-cert");
    view.set_user_certificate("user-cert");
    auto request = expand_cluster_view(view, "c1", if_address("10.20.0.1/24"));
    ASSERT_TRUE(request) << request.error().message;
    EXPECT_EQ(request->ca_key(), kKeyA);
    EXPECT_EQ(request->host_certificate(), "host-cert");
    EXPECT_EQ(request->user_certificate(), "user-cert");
    for (const auto& node : request->nodes()) {
        EXPECT_TRUE(node.host_key().empty() && node.user_key().empty()) << node.name();
    }
}

TEST(ExpandClusterView, RefusesPerNodeKeysTogetherWithACa) {
    auto view = two_sites();
    view.set_ca_key(kKeyA);
    EXPECT_THAT(error_of(expand_cluster_view(view, "c1", if_address("10.20.0.1/24"))),
                HasSubstr("sites[0].host_keys: given together with ca_key"));
}

TEST(ExpandClusterView, RoutesOnLinkEveryOtherSitesBlockOutsideTheOwnPrefix) {
    auto request = expand_cluster_view(two_sites(), "c1", if_address("10.20.0.1/24"));
    ASSERT_TRUE(request) << request.error().message;
    EXPECT_THAT(request->onlink_blocks(), ElementsAre("10.20.1.0/24"));

    request = expand_cluster_view(two_sites(), "c1", if_address("10.20.1.3/24"));
    ASSERT_TRUE(request) << request.error().message;
    EXPECT_THAT(request->onlink_blocks(), ElementsAre("10.20.0.0/24"));

    // One prefix spanning both sites: everything is on eth0's own prefix route already.
    request = expand_cluster_view(two_sites(), "c1", if_address("10.20.0.1/16"));
    ASSERT_TRUE(request) << request.error().message;
    EXPECT_TRUE(request->onlink_blocks().empty());
}

TEST(ExpandClusterView, RefusesAViewOfAnotherCluster) {
    EXPECT_THAT(error_of(expand_cluster_view(two_sites(), "c2", if_address("10.20.0.1/24"))),
                HasSubstr("cluster_id: 'c1' is not this node's cluster 'c2'"));
}

TEST(ExpandClusterView, RefusesSitesThatCannotHoldTheirNodes) {
    auto view = two_sites();
    view.mutable_sites(0)->set_block("10.20.0.0/30");  // room for 2 hosts
    EXPECT_TRUE(expand_cluster_view(view, "c1", if_address("10.20.0.1/24")));
    view.mutable_sites(1)->set_block("10.20.1.0/30");  // 3 nodes
    EXPECT_THAT(error_of(expand_cluster_view(view, "c1", if_address("10.20.0.1/24"))),
                HasSubstr("sites[1].nodes: 3 nodes do not fit in 10.20.1.0/30"));
}

TEST(ExpandClusterView, RefusesBadSites) {
    auto view = two_sites();
    view.mutable_sites(0)->set_block("10.20.0.1/24");
    EXPECT_THAT(error_of(expand_cluster_view(view, "c1", if_address("10.20.0.1/24"))),
                HasSubstr("sites[0].block: "));
    view = two_sites();
    view.mutable_sites(1)->set_block("fd00::/64");
    EXPECT_THAT(error_of(expand_cluster_view(view, "c1", if_address("10.20.0.1/24"))),
                HasSubstr("sites[1].block: "));
    view = two_sites();
    view.mutable_sites(1)->set_site("Tsukuba");
    EXPECT_THAT(error_of(expand_cluster_view(view, "c1", if_address("10.20.0.1/24"))),
                HasSubstr("sites[1].site: "));
    view = two_sites();
    view.mutable_sites(1)->set_nodes(0);
    view.mutable_sites(1)->clear_underlay();
    view.mutable_sites(1)->clear_host_keys();
    view.mutable_sites(1)->clear_user_keys();
    EXPECT_THAT(error_of(expand_cluster_view(view, "c1", if_address("10.20.0.1/24"))),
                HasSubstr("sites[1].nodes: "));
    view.clear_sites();
    EXPECT_THAT(error_of(expand_cluster_view(view, "c1", if_address("10.20.0.1/24"))),
                HasSubstr("sites: "));
}

TEST(ExpandClusterView, RefusesMoreNodesThanAClusterMayHaveBeforeBuildingThem) {
    v1::ClusterView view;
    view.set_cluster_id("c1");
    for (int s = 0; s < 3; ++s) {
        v1::SiteView* site = view.add_sites();
        site->set_site("s" + std::to_string(s));
        site->set_block("10." + std::to_string(s) + ".0.0/16");
        site->set_nodes(2000);  // no underlay, no keys: the count is refused first
    }
    EXPECT_THAT(error_of(expand_cluster_view(view, "c1", if_address("10.0.0.1/16"))),
                HasSubstr("over the limit"));
}

TEST(ExpandClusterView, GivesTheSlurmNodesOfItsOwnSiteOnly) {
    // Both sites name their Slurm nodes node1, node2...: another site's names are another
    // Slurm's, and a pilot must not take them for its own job's.
    auto view = two_sites();
    view.mutable_sites(0)->set_hosts("node[1-2]");
    view.mutable_sites(1)->set_hosts("node[1-3]");
    auto request = expand_cluster_view(view, "c1", if_address("10.20.0.2/24"));
    ASSERT_TRUE(request) << request.error().message;
    std::vector<std::string> hosts;
    for (const auto& node : request->nodes()) {
        hosts.push_back(node.host());
    }
    EXPECT_THAT(hosts, ElementsAre("node1", "node2", "", "", ""));
    request = expand_cluster_view(view, "c1", if_address("10.20.1.3/24"));
    ASSERT_TRUE(request) << request.error().message;
    EXPECT_EQ(request->nodes(0).host(), "");
    EXPECT_EQ(request->nodes(4).host(), "node3");
}

TEST(ExpandClusterView, RefusesHostsThatDoNotNameEveryNodeOfTheSite) {
    for (const char* hosts : {"node[1-3]", "node1", "node[1-", "a,,b"}) {
        auto view = two_sites();
        view.mutable_sites(0)->set_hosts(hosts);
        EXPECT_THAT(error_of(expand_cluster_view(view, "c1", if_address("10.20.0.1/24"))),
                    HasSubstr("sites[0].hosts: "))
            << hosts;
    }
}

// ---- the expanded request through SET_KEYS validation ----

SetupPlan osaka_1() {
    SetupLimits limits;
    limits.find_user = [](std::string_view) -> Result<UserIdentity> {
        return UserIdentity{"alice", 1000, 1000, "/home/alice"};
    };
    v1::SetupRequest setup;
    setup.set_cluster_id("c1");
    setup.set_node_name("vc-osaka-1");
    setup.set_address("10.20.0.1/24");
    setup.mutable_vxlan()->set_vni(100);
    setup.set_user("alice");
    return validate_setup(setup, limits).value();
}

TEST(ValidateSetKeysOnLink, AcceptsOtherSitesNodesInsideTheOnLinkBlocks) {
    const SetupPlan self = osaka_1();
    auto request = expand_cluster_view(two_sites(), "c1", self.address);
    ASSERT_TRUE(request) << request.error().message;
    auto cluster = validate_set_keys(*request, self, OwnKeys{});
    ASSERT_TRUE(cluster) << cluster.error().message;
    EXPECT_EQ(cluster->nodes.size(), 5u);
    EXPECT_THAT(cluster->onlink_blocks, ElementsAre(cidr("10.20.1.0/24")));
    EXPECT_FALSE(cluster->certificates);
}

TEST(ValidateSetKeysOnLink, KeepsEachNodesSlurmNodeAndRefusesABadOne) {
    const SetupPlan self = osaka_1();
    auto view = two_sites();
    view.mutable_sites(0)->set_hosts("osaka-n[07-08]");
    auto request = expand_cluster_view(view, "c1", self.address).value();
    auto cluster = validate_set_keys(request, self, OwnKeys{});
    ASSERT_TRUE(cluster) << cluster.error().message;
    EXPECT_EQ(cluster->nodes[1].host, "osaka-n08");
    EXPECT_EQ(cluster->nodes[2].host, "");
    request.mutable_nodes(1)->set_host("../etc");
    EXPECT_THAT(error_of(validate_set_keys(request, self, OwnKeys{})),
                HasSubstr("nodes[1].host: '../etc' may hold only"));
}

TEST(ValidateSetKeysOnLink, RefusesNodesOutsideOwnPrefixWithoutTheirBlock) {
    const SetupPlan self = osaka_1();
    auto request = expand_cluster_view(two_sites(), "c1", self.address).value();
    request.clear_onlink_blocks();
    EXPECT_THAT(error_of(validate_set_keys(request, self, OwnKeys{})),
                HasSubstr("nodes[2].address: '10.20.1.1' is not a host address in 10.20.0.0/24"));
}

TEST(ValidateSetKeysOnLink, RefusesBadBlocks) {
    const SetupPlan self = osaka_1();
    const auto refused = [&](const std::vector<std::string>& blocks) {
        auto request = expand_cluster_view(two_sites(), "c1", self.address).value();
        request.clear_onlink_blocks();
        for (auto& block : blocks) {
            request.add_onlink_blocks(block);
        }
        return error_of(validate_set_keys(request, self, OwnKeys{}));
    };
    EXPECT_THAT(refused({"10.20.1.0/24", "10.20.1.1/24"}), HasSubstr("onlink_blocks[1]: "));
    EXPECT_THAT(refused({"fd00::/64"}), HasSubstr("onlink_blocks[0]: 'fd00::/64' is not of"));
    EXPECT_THAT(refused({"10.20.0.0/16"}),
                HasSubstr("onlink_blocks[0]: '10.20.0.0/16' overlaps this node's own prefix"));
    EXPECT_THAT(refused({"10.20.0.128/25"}), HasSubstr("overlaps this node's own prefix"));
    EXPECT_THAT(refused({"10.20.1.0/24", "10.20.1.0/24"}),
                HasSubstr("onlink_blocks[1]: '10.20.1.0/24' overlaps onlink_blocks[0]"));
    EXPECT_THAT(refused({"10.30.2.0/24", "10.30.0.0/16", "10.30.1.0/24"}),
                HasSubstr("onlink_blocks[2]: '10.30.1.0/24' overlaps onlink_blocks[1]"));
    EXPECT_THAT(refused({"10.20.8.0/21", "10.20.1.0/24", "10.20.12.0/24"}),
                HasSubstr("onlink_blocks[2]: '10.20.12.0/24' overlaps onlink_blocks[0]"));
    EXPECT_THAT(refused(std::vector<std::string>(kMaxOnlinkBlocks + 1, "10.30.0.0/24")),
                HasSubstr("onlink_blocks: 4097 blocks, over the limit of 4096"));
}

TEST(ValidateSetKeysOnLink, KeepsTheBlocksInAddressOrder) {
    const SetupPlan self = osaka_1();
    auto request = expand_cluster_view(two_sites(), "c1", self.address).value();
    request.clear_onlink_blocks();
    for (const char* block : {"10.40.0.0/16", "10.20.1.0/24", "10.30.0.0/24"}) {
        request.add_onlink_blocks(block);
    }
    auto cluster = validate_set_keys(request, self, OwnKeys{});
    ASSERT_TRUE(cluster) << cluster.error().message;
    EXPECT_THAT(cluster->onlink_blocks,
                ElementsAre(cidr("10.20.1.0/24"), cidr("10.30.0.0/24"), cidr("10.40.0.0/16")));
}

}  // namespace
}  // namespace vcpilot::pilot
