#include "coordinator/cluster_store.hpp"

#include <SQLiteCpp/Database.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <random>

#include "expect_error.hpp"
#include "literals.hpp"
#include "tests/support/temp_dir.hpp"

namespace vcpilot::coordinator {
namespace {

using ::testing::HasSubstr;
using vcpilot::testing::TempDir;

v1::CreateClusterRequest request(const std::vector<std::pair<std::string, std::uint32_t>>& sites,
                                 v1::KeyMode mode = v1::KEY_MODE_CA) {
    v1::CreateClusterRequest out;
    for (const auto& [name, nodes] : sites) {
        auto* site = out.add_sites();
        site->set_site(name);
        site->set_nodes(nodes);
    }
    out.set_key_mode(mode);
    return out;
}

class ClusterStoreTest : public ::testing::Test {
  protected:
    ClusterStoreTest()
        : store_(LeaseStore::open(dir_.path() / "state.db").value()),
          pool_(pool_of({cidr("10.20.0.0/24")})) {
        policy_.pool = &pool_;
        policy_.vni_first = 10;
        policy_.vni_last = 12;
        policy_.hold_ca = true;
    }

    // As the coordinator's writer does it: one transaction, rolled back on failure.
    Result<ClusterRecord> create(const v1::CreateClusterRequest& create_request,
                                 const std::string& owner = "alice") {
        auto spec = validate_create(create_request, owner);
        if (!spec) {
            return spec.error();
        }
        return in_transaction([&] { return store_.create(*spec, policy_); });
    }
    Status release(const std::string& id) {
        return in_transaction([&] { return store_.finish_release(id); });
    }
    template <typename F>
    auto in_transaction(F body) -> decltype(body()) {
        auto& db = store_.leases().database();
        db.exec("BEGIN IMMEDIATE");
        auto result = body();
        db.exec(result ? "COMMIT" : "ROLLBACK");
        return result;
    }
    std::vector<Cidr> live_blocks() {
        std::vector<Cidr> blocks;
        const auto leases = store_.leases().live().value();
        blocks.reserve(leases.size());
        for (const auto& lease : leases) {
            blocks.push_back(lease.lease.block);
        }
        return blocks;
    }

    TempDir dir_;
    ClusterStore store_;
    AddressPool pool_;
    CreatePolicy policy_;
};

TEST_F(ClusterStoreTest, CreateLeasesOneBlockPerSiteSizedToItsNodes) {
    auto cluster = create(request({{"a", 2}, {"b", 6}})).value();
    ASSERT_EQ(cluster.sites.size(), 2U);
    EXPECT_EQ(cluster.sites[0].site, "a");
    EXPECT_EQ(cluster.sites[0].block, cidr("10.20.0.0/30"));
    EXPECT_EQ(cluster.sites[1].block, cidr("10.20.0.8/29"));
    EXPECT_EQ(cluster.vni, 10U);
    EXPECT_EQ(cluster.state, v1::CLUSTER_STATE_PENDING);
    EXPECT_EQ(cluster.node_count(), 8U);
    EXPECT_THAT(live_blocks(), ::testing::ElementsAre(cidr("10.20.0.0/30"), cidr("10.20.0.8/29")));

    const auto nodes = store_.nodes(cluster.id).value();
    ASSERT_EQ(nodes.size(), 8U);
    EXPECT_EQ(nodes[0].site, "a");
    EXPECT_EQ(nodes[0].ordinal, 1U);
    EXPECT_EQ(nodes[7].site, "b");
    EXPECT_EQ(nodes[7].ordinal, 6U);
    EXPECT_EQ(node_name(cluster.name_prefix, "b", 6), "vc-b-6");
    EXPECT_EQ(node_address(cluster.sites[1].block, 6).value(), ip("10.20.0.14"));
    EXPECT_TRUE(store_.ca_seed(cluster.id).value().has_value());
}

TEST_F(ClusterStoreTest, ExchangeModeKeepsNoCa) {
    auto cluster = create(request({{"a", 1}}, v1::KEY_MODE_EXCHANGE)).value();
    EXPECT_FALSE(store_.ca_seed(cluster.id).value().has_value());
}

TEST_F(ClusterStoreTest, OverlappingExplicitBlockIsRefusedAndChangesNothing) {
    auto first = create(request({{"a", 2}})).value();
    auto wanted = request({{"a", 2}, {"b", 2}});
    wanted.mutable_sites(1)->set_block("10.20.0.0/29");
    EXPECT_THAT(error_of(create(wanted)),
                AllOf(HasSubstr("site b"), HasSubstr("10.20.0.0/30"), HasSubstr("alice")));
    EXPECT_EQ(store_.list("", true).value().size(), 1U);
    EXPECT_THAT(live_blocks(), ::testing::ElementsAre(first.sites[0].block));
}

TEST_F(ClusterStoreTest, ExplicitBlockTooSmallIsRefused) {
    auto wanted = request({{"a", 7}});
    wanted.mutable_sites(0)->set_block("10.20.0.0/29");
    EXPECT_THAT(error_of(create(wanted)), HasSubstr("holds 6 nodes, fewer than the 7"));
}

TEST_F(ClusterStoreTest, BadRequestsNameTheField) {
    EXPECT_THAT(error_of(create(request({}))), HasSubstr("at least one site"));
    EXPECT_THAT(error_of(create(request({{"a", 0}}))), HasSubstr("0 nodes"));
    EXPECT_THAT(error_of(create(request({{"A_b", 1}}))), HasSubstr("not a site name"));
    EXPECT_THAT(error_of(create(request({{"a", 1}, {"a", 2}}))), HasSubstr("named twice"));
    EXPECT_THAT(error_of(create(request({{"a", 300}}))), HasSubstr("10.20.0.0/24"));
    auto bad_prefix = request({{"a", 1}});
    bad_prefix.set_name_prefix("-x");
    EXPECT_THAT(error_of(create(bad_prefix)), HasSubstr("name_prefix"));
    auto image = request({{"a", 1}});
    image.set_image("/srv/img");
    EXPECT_THAT(error_of(create(image)), HasSubstr("image_mount"));
    image.set_image_mount("/usr/local");  // the job's sshd would load the user's files as root
    EXPECT_THAT(error_of(create(image)), HasSubstr("image_mount: '/usr/local' is inside /usr"));
    EXPECT_THAT(error_of(create(request({{"a", 1}}), "")), HasSubstr("owner"));
    EXPECT_TRUE(store_.list("", true).value().empty());
    EXPECT_TRUE(live_blocks().empty());
}

TEST_F(ClusterStoreTest, NodeNamesMustFitAHostname) {
    // Node i of site s is named "<prefix>-<s>-<i>", and that is its hostname: one DNS label of
    // at most 63 characters, or every pilot refuses its SETUP (found by coordinator_fuzzer).
    auto too_long = request({{std::string(30, 's'), 100}});
    too_long.set_name_prefix(std::string(29, 'p'));  // the last node's name has 64
    EXPECT_THAT(error_of(create(too_long)), HasSubstr("sites: node names of site"));
    EXPECT_TRUE(store_.list("", true).value().empty());
    auto longest = request({{std::string(30, 's'), 100}});
    longest.set_name_prefix(std::string(28, 'p'));
    EXPECT_TRUE(create(longest).ok());
}

TEST_F(ClusterStoreTest, VnisRunOutAndComeBackOnRelease) {
    auto a = create(request({{"a", 1}})).value();
    auto b = create(request({{"a", 1}})).value();
    auto c = create(request({{"a", 1}})).value();
    EXPECT_EQ(*c.vni, 12U);
    EXPECT_THAT(error_of(create(request({{"a", 1}}))), HasSubstr("every VNI of 10-12"));
    ASSERT_TRUE(release(b.id));
    EXPECT_EQ(create(request({{"a", 1}})).value().vni, 11U);
    (void)a;
}

TEST_F(ClusterStoreTest, ReleaseFreesBlocksAndKeepsTheRecord) {
    auto cluster = create(request({{"a", 2}})).value();
    ASSERT_TRUE(release(cluster.id));
    EXPECT_TRUE(live_blocks().empty());
    auto found = store_.find(cluster.id).value();
    ASSERT_TRUE(found.has_value());
    EXPECT_EQ(found->state, v1::CLUSTER_STATE_RELEASED);
    EXPECT_FALSE(found->vni.has_value());
    EXPECT_TRUE(found->sites.empty());
    EXPECT_TRUE(store_.nodes(cluster.id).value().empty());
    EXPECT_TRUE(store_.list("", false).value().empty());
    EXPECT_EQ(store_.list("", true).value().size(), 1U);
    EXPECT_FALSE(store_.ca_seed(cluster.id).value().has_value());
    // The space is reused.
    EXPECT_EQ(create(request({{"a", 2}})).value().sites[0].block, cidr("10.20.0.0/30"));
}

TEST_F(ClusterStoreTest, AdoptRecordsTheGrcsShareOnceAndNeverTakesALocalId) {
    v1::SiteAssignment assignment;
    assignment.set_cluster_id("vc-0000abcd");
    assignment.set_owner("alice");
    assignment.set_key_mode(v1::KEY_MODE_CA);
    assignment.set_vni(7000);
    assignment.set_name_prefix("vc");
    assignment.set_slots(1);
    assignment.set_site("a");
    assignment.set_block("10.96.0.0/29");
    assignment.set_nodes(3);
    ASSERT_TRUE(in_transaction([&] { return store_.adopt(assignment); }));
    const auto adopted = store_.find("vc-0000abcd").value();
    ASSERT_TRUE(adopted.has_value());
    EXPECT_EQ(adopted->origin, kOriginGrc);
    EXPECT_EQ(adopted->vni, 7000U);
    EXPECT_EQ(store_.nodes("vc-0000abcd").value().size(), 3U);
    // Sent again (the CRM reconnected): nothing changes.
    ASSERT_TRUE(in_transaction([&] { return store_.adopt(assignment); }));
    EXPECT_EQ(store_.nodes("vc-0000abcd").value().size(), 3U);
    // The same id as a live cluster of the site's own is refused.
    const auto local = create(request({{"a", 1}})).value();
    assignment.set_cluster_id(local.id);
    assignment.set_vni(7001);
    assignment.set_block("10.96.0.8/29");
    const auto refused = in_transaction([&] { return store_.adopt(assignment); });
    ASSERT_FALSE(refused);
    EXPECT_THAT(refused.error().message, HasSubstr("taken here"));
    EXPECT_EQ(store_.find(local.id).value()->origin, "");
}

TEST_F(ClusterStoreTest, ListShowsOnlyTheOwnersClusters) {
    create(request({{"a", 1}}), "alice").value();
    create(request({{"a", 1}}), "bob").value();
    EXPECT_EQ(store_.list("alice", false).value().size(), 1U);
    EXPECT_EQ(store_.list("", false).value().size(), 2U);
}

TEST_F(ClusterStoreTest, PilotsGetNodesInOrderAndKeepThem) {
    auto cluster = create(request({{"a", 2}})).value();
    auto attach = [&](const std::string& host, const std::string& job) {
        return in_transaction([&] { return store_.attach(cluster.id, host, job, "172.16.1.11"); });
    };
    EXPECT_EQ(attach("n1", "7").value().ordinal, 1U);
    EXPECT_EQ(attach("n2", "7").value().ordinal, 2U);
    EXPECT_EQ(attach("n1", "7").value().ordinal, 1U);  // the same pilot again
    EXPECT_THAT(error_of(attach("n3", "7")), HasSubstr("one too many"));
    const auto nodes = store_.nodes(cluster.id).value();
    EXPECT_EQ(nodes[1].host, "n2");
    EXPECT_EQ(nodes[1].underlay, "172.16.1.11");
}

TEST_F(ClusterStoreTest, APilotWithARankGetsThatNodeWhenItIsFreeElseTheLowestFree) {
    auto cluster = create(request({{"a", 4}})).value();
    auto attach = [&](const std::string& host, std::uint32_t rank) {
        return in_transaction(
            [&] { return store_.attach(cluster.id, host, "7", "172.16.1.11", rank); });
    };
    EXPECT_EQ(attach("n4", 4).value().ordinal, 4U);
    EXPECT_EQ(attach("n3", 3).value().ordinal, 3U);
    EXPECT_EQ(attach("x", 3).value().ordinal, 1U);   // node 3 is held
    EXPECT_EQ(attach("n4", 2).value().ordinal, 4U);  // a pilot keeps the node it holds
    EXPECT_EQ(attach("y", 5).value().ordinal, 2U);   // there is no node 5
    EXPECT_THAT(error_of(attach("z", 1)), HasSubstr("one too many"));
}

// The property the coordinator rests on: whatever the order of creates and releases, live
// blocks never overlap, and released space is used again.
TEST_F(ClusterStoreTest, RandomCreateReleaseNeverOverlapsAndReusesSpace) {
    policy_.vni_last = 100000;
    std::mt19937 random(20261202);
    std::vector<std::string> live;
    std::size_t creates = 0, refusals = 0;
    for (int step = 0; step < 3000; ++step) {
        if (!live.empty() && random() % 100 < 45) {
            const std::size_t pick = random() % live.size();
            ASSERT_TRUE(release(live[pick]));
            live.erase(live.begin() + static_cast<std::ptrdiff_t>(pick));
        } else {
            std::vector<std::pair<std::string, std::uint32_t>> sites;
            const int site_count = 1 + static_cast<int>(random() % 3);
            sites.reserve(static_cast<std::size_t>(site_count));
            for (int s = 0; s < site_count; ++s) {
                sites.emplace_back(std::string(1, static_cast<char>('a' + s)), 1 + random() % 13);
            }
            auto created = create(request(sites));
            if (created) {
                live.push_back(created->id);
                ++creates;
            } else {
                ++refusals;  // the pool is full: fine, as long as nothing was half made
            }
        }
        const auto blocks = live_blocks();
        for (std::size_t i = 0; i < blocks.size(); ++i) {
            ASSERT_TRUE(pool_.pools()[0].contains(blocks[i]));
            for (std::size_t j = i + 1; j < blocks.size(); ++j) {
                ASSERT_FALSE(blocks[i].overlaps(blocks[j]))
                    << blocks[i].to_string() << " and " << blocks[j].to_string();
            }
        }
        ASSERT_EQ(store_.list("", false).value().size(), live.size());
    }
    // A /24 holds far fewer than the clusters made: space was reused many times over.
    EXPECT_GT(creates, 1000U);
    EXPECT_GT(refusals, 0U);
}

}  // namespace
}  // namespace vcpilot::coordinator
