#include "coordinator/ipam.hpp"

#include <algorithm>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "tests/unit/expect_error.hpp"
#include "tests/unit/literals.hpp"

namespace vcpilot {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// The reference the allocator must agree with: try every aligned block of every pool in order
// and compare it with every live block. Far too slow for real use, obviously right.
std::optional<Cidr> brute_force_first_fit(const AddressPool& pools, int prefix_len,
                                          const std::vector<Cidr>& live) {
    for (const Cidr& pool : pools.pools()) {
        if (pool.prefix() > prefix_len) {
            continue;
        }
        auto candidates = pool.split(prefix_len, 1 << 16);
        for (const Cidr& candidate : candidates.value()) {
            bool free = true;
            for (const Cidr& block : live) {
                free = free && !block.overlaps(candidate);
            }
            if (free) {
                return candidate;
            }
        }
    }
    return std::nullopt;
}

// ---- AddressPool::create ----

TEST(AddressPool, RefusesNoPools) {
    EXPECT_THAT(error_of(AddressPool::create({})), HasSubstr("no address pool"));
}

TEST(AddressPool, RefusesPoolsOfMixedFamilies) {
    EXPECT_THAT(error_of(AddressPool::create({cidr("10.0.0.0/16"), cidr("2001:db8::/48")})),
                AllOf(HasSubstr("10.0.0.0/16"), HasSubstr("2001:db8::/48"),
                      HasSubstr("different families")));
}

TEST(AddressPool, RefusesOverlappingPools) {
    EXPECT_THAT(error_of(AddressPool::create(
                    {cidr("10.0.0.0/16"), cidr("192.168.0.0/24"), cidr("10.0.128.0/17")})),
                AllOf(HasSubstr("10.0.0.0/16"), HasSubstr("10.0.128.0/17"), HasSubstr("overlap")));
}

// ---- allocate ----

TEST(Ipam, AllocatesTheLowestFreeAlignedBlock) {
    const AddressPool pools = pool_of({cidr("10.0.0.0/16")});
    EXPECT_EQ(pools.allocate(24, std::vector<Cidr>{}).value(), cidr("10.0.0.0/24"));
    EXPECT_EQ(pools.allocate(24, {cidr("10.0.0.0/24")}).value(), cidr("10.0.1.0/24"));
    // A small live block still makes its whole /24 unusable for a /24, but not for a /26.
    EXPECT_EQ(pools.allocate(24, {cidr("10.0.0.64/26")}).value(), cidr("10.0.1.0/24"));
    EXPECT_EQ(pools.allocate(26, {cidr("10.0.0.64/26")}).value(), cidr("10.0.0.0/26"));
    EXPECT_EQ(pools.allocate(26, {cidr("10.0.0.0/26")}).value(), cidr("10.0.0.64/26"));
    // Order of the live list does not matter; holes between live blocks are used.
    EXPECT_EQ(pools.allocate(25, {cidr("10.0.2.0/24"), cidr("10.0.0.0/24"), cidr("10.0.1.128/25")})
                  .value(),
              cidr("10.0.1.0/25"));
}

TEST(Ipam, ReusesFreedSpace) {
    const AddressPool pools = pool_of({cidr("10.0.0.0/22")});
    std::vector<Cidr> live;
    live.reserve(4);
    for (int i = 0; i < 4; ++i) {
        live.push_back(pools.allocate(24, live).value());
    }
    EXPECT_THAT(error_of(pools.allocate(24, live)), HasSubstr("exhausted"));
    live.erase(live.begin() + 2);  // 10.0.2.0/24 is released
    EXPECT_EQ(pools.allocate(24, live).value(), cidr("10.0.2.0/24"));
}

TEST(Ipam, TriesPoolsInConfiguredOrder) {
    const AddressPool pools = pool_of({cidr("192.168.0.0/24"), cidr("10.0.0.0/16")});
    EXPECT_EQ(pools.allocate(25, std::vector<Cidr>{}).value(), cidr("192.168.0.0/25"));
    EXPECT_EQ(pools.allocate(25, {cidr("192.168.0.0/25"), cidr("192.168.0.128/25")}).value(),
              cidr("10.0.0.0/25"));
    // A block larger than the first pool comes from the next one that can hold it.
    EXPECT_EQ(pools.allocate(20, std::vector<Cidr>{}).value(), cidr("10.0.0.0/20"));
}

TEST(Ipam, NeverOverlapsLiveBlocksOutsideThePools) {
    // A live block that contains the whole pool (say, leased before the pool was reconfigured)
    // leaves nothing to allocate.
    const AddressPool pools = pool_of({cidr("10.1.0.0/16")});
    EXPECT_THAT(error_of(pools.allocate(24, {cidr("10.0.0.0/8")})), HasSubstr("exhausted"));
    // Blocks of the other family are irrelevant.
    EXPECT_EQ(pools.allocate(24, {cidr("2001:db8::/32")}).value(), cidr("10.1.0.0/24"));
}

TEST(Ipam, PoolExhaustionIsAClearError) {
    const AddressPool pools = pool_of({cidr("10.0.0.0/24")});
    const std::string message =
        error_of(pools.allocate(26, {cidr("10.0.0.0/26"), cidr("10.0.0.64/26"),
                                     cidr("10.0.0.128/26"), cidr("10.0.0.192/26")}));
    EXPECT_THAT(message, AllOf(HasSubstr("exhausted"), HasSubstr("/26"), HasSubstr("10.0.0.0/24"),
                               HasSubstr("4 live blocks")));
    // Fragmented free space is not enough for a larger block.
    EXPECT_THAT(error_of(pools.allocate(25, {cidr("10.0.0.0/26"), cidr("10.0.0.128/26")})),
                HasSubstr("exhausted"));
}

TEST(Ipam, RefusesPrefixesNoPoolCanHold) {
    const AddressPool pools = pool_of({cidr("10.0.0.0/16"), cidr("192.168.0.0/24")});
    EXPECT_THAT(error_of(pools.allocate(12, std::vector<Cidr>{})),
                AllOf(HasSubstr("/12"), HasSubstr("10.0.0.0/16"), HasSubstr("smaller")));
    EXPECT_THAT(error_of(pools.allocate(33, std::vector<Cidr>{})), HasSubstr("0 to 32"));
    EXPECT_THAT(error_of(pools.allocate(-1, std::vector<Cidr>{})), HasSubstr("0 to 32"));
}

TEST(Ipam, HandlesTheEdgesOfTheAddressSpace) {
    const AddressPool all_v4 = pool_of({cidr("0.0.0.0/0")});
    EXPECT_EQ(all_v4.allocate(1, {cidr("0.0.0.0/1")}).value(), cidr("128.0.0.0/1"));
    EXPECT_THAT(error_of(all_v4.allocate(1, {cidr("0.0.0.0/1"), cidr("128.0.0.0/1")})),
                HasSubstr("exhausted"));
    EXPECT_THAT(error_of(all_v4.allocate(30, {cidr("0.0.0.0/0")})), HasSubstr("exhausted"));
    EXPECT_EQ(
        all_v4.allocate(32, {cidr("0.0.0.0/1"), cidr("128.0.0.0/2"), cidr("192.0.0.0/3")}).value(),
        cidr("224.0.0.0/32"));
    // The very last address of the family.
    const AddressPool top = pool_of({cidr("255.255.255.0/24")});
    std::vector<Cidr> live = {cidr("255.255.255.0/25"),   cidr("255.255.255.128/26"),
                              cidr("255.255.255.192/27"), cidr("255.255.255.224/28"),
                              cidr("255.255.255.240/29"), cidr("255.255.255.248/30"),
                              cidr("255.255.255.252/31"), cidr("255.255.255.254/32")};
    EXPECT_EQ(top.allocate(32, live).value(), cidr("255.255.255.255/32"));
    live.push_back(cidr("255.255.255.255/32"));
    EXPECT_THAT(error_of(top.allocate(32, live)), HasSubstr("exhausted"));
}

TEST(Ipam, AllocatesIpv6) {
    const AddressPool pools = pool_of({cidr("2001:db8::/48")});
    EXPECT_EQ(pools.allocate(64, {cidr("2001:db8::/64")}).value(), cidr("2001:db8:0:1::/64"));
    const AddressPool all_v6 = pool_of({cidr("::/0")});
    EXPECT_EQ(all_v6.allocate(1, {cidr("::/1")}).value(), cidr("8000::/1"));
    EXPECT_THAT(error_of(all_v6.allocate(1, {cidr("::/1"), cidr("8000::/1")})),
                HasSubstr("exhausted"));
    EXPECT_EQ(all_v6.allocate(128, {cidr("::/1"), cidr("8000::/2"), cidr("c000::/3")}).value(),
              cidr("e000::/128"));
}

TEST(Ipam, AllocatesAmongThousandsOfLiveBlocks) {
    const AddressPool pools = pool_of({cidr("10.0.0.0/8")});
    // The first 5000 /24s, in shuffled order, with one hole.
    std::vector<Cidr> live = cidr("10.0.0.0/8").split(24).value();
    live.erase(live.begin() + 5000, live.end());
    live.erase(live.begin() + 1234);  // 10.4.210.0/24
    std::shuffle(live.begin(), live.end(), std::mt19937(1));
    EXPECT_EQ(pools.allocate(24, live).value(), cidr("10.4.210.0/24"));
    // 5000 = 19 * 256 + 136: the first free /23 starts right after the last live /24.
    EXPECT_EQ(pools.allocate(23, live).value(), cidr("10.19.136.0/23"));
    // Duplicate live entries, which a caller should never have, do no harm either.
    const std::vector<Lease> leases(live.size(), Lease{cidr("10.0.0.0/24"), "x", 1});
    EXPECT_EQ(pools.allocate(24, leases).value(), cidr("10.0.1.0/24"));
}

TEST(Ipam, NeverHandsOutOverlappingBlocks) {
    // Random allocate/release sequences over two pools that fill up, fragment and drain, with
    // each result checked against every live block and, regularly, against the brute force.
    const AddressPool pools = pool_of({cidr("10.0.0.0/20"), cidr("172.16.0.0/22")});
    std::mt19937 random(20240605);
    std::vector<Cidr> live;
    int allocated = 0;
    int exhausted = 0;
    for (int op = 0; op < 20000; ++op) {
        if (!live.empty() && random() % 100 < 40) {
            live.erase(live.begin() + static_cast<std::ptrdiff_t>(random() % live.size()));
            continue;
        }
        const int prefix_len = 22 + static_cast<int>(random() % 9);  // /22 ... /30
        auto block = pools.allocate(prefix_len, live);
        if (!block) {
            ++exhausted;
            EXPECT_THAT(error_of(block), HasSubstr("exhausted"));
            ASSERT_EQ(brute_force_first_fit(pools, prefix_len, live), std::nullopt)
                << "refused a /" << prefix_len << " although there was room, at op " << op;
            continue;
        }
        ++allocated;
        ASSERT_EQ(block->prefix(), prefix_len);
        ASSERT_NE(pools.pool_of(*block), nullptr) << block->to_string() << " is outside the pools";
        for (const Cidr& other : live) {
            ASSERT_FALSE(other.overlaps(*block))
                << block->to_string() << " overlaps live " << other.to_string() << " at op " << op;
        }
        if (op % 50 == 0) {
            ASSERT_EQ(brute_force_first_fit(pools, prefix_len, live), *block) << "at op " << op;
        }
        live.push_back(*block);
    }
    // The sequence really exercised both outcomes.
    EXPECT_GT(allocated, 5000);
    EXPECT_GT(exhausted, 100);
}

// ---- check_explicit ----

TEST(Ipam, AcceptsAFreeExplicitBlockInsideAPool) {
    const AddressPool pools = pool_of({cidr("10.0.0.0/16")});
    EXPECT_TRUE(pools.check_explicit(cidr("10.0.5.0/24"), std::vector<Cidr>{cidr("10.0.4.0/24")}));
    EXPECT_TRUE(pools.check_explicit(cidr("10.0.0.0/16"), std::vector<Cidr>{}));
}

TEST(Ipam, RefusesAnExplicitBlockThatOverlapsALiveOneNamingItsOwner) {
    const AddressPool pools = pool_of({cidr("10.0.0.0/16")});
    const std::vector<Lease> live = {Lease{cidr("10.0.4.0/23"), "alice", 7},
                                     Lease{cidr("10.0.9.0/24"), "bob", 9}};
    EXPECT_THAT(error_of(pools.check_explicit(cidr("10.0.5.0/24"), live)),
                AllOf(HasSubstr("10.0.5.0/24"), HasSubstr("overlaps"), HasSubstr("10.0.4.0/23"),
                      HasSubstr("'alice'"), HasSubstr("generation 7")));
    // Larger than the live block, containing it.
    EXPECT_THAT(error_of(pools.check_explicit(cidr("10.0.8.0/22"), live)),
                AllOf(HasSubstr("10.0.9.0/24"), HasSubstr("'bob'")));
    EXPECT_THAT(error_of(pools.check_explicit(cidr("10.0.9.0/24"),
                                              std::vector<Cidr>{cidr("10.0.9.128/25")})),
                HasSubstr("overlaps the live block 10.0.9.128/25"));
}

TEST(Ipam, RefusesAnExplicitBlockOutsideEveryPool) {
    const AddressPool pools = pool_of({cidr("10.0.0.0/16"), cidr("192.168.0.0/24")});
    EXPECT_THAT(error_of(pools.check_explicit(cidr("10.1.0.0/24"), std::vector<Cidr>{})),
                AllOf(HasSubstr("10.1.0.0/24"), HasSubstr("not inside any address pool"),
                      HasSubstr("10.0.0.0/16, 192.168.0.0/24")));
    // Straddling a pool's edge is outside too.
    EXPECT_THAT(error_of(pools.check_explicit(cidr("10.0.0.0/15"), std::vector<Cidr>{})),
                HasSubstr("not inside any address pool"));
    EXPECT_THAT(error_of(pools.check_explicit(cidr("2001:db8::/64"), std::vector<Cidr>{})),
                AllOf(HasSubstr("IPv6"), HasSubstr("IPv4")));
}

// ---- prefix_for_nodes ----

TEST(Ipam, PrefixForNodesKeepsNetworkAndBroadcastFree) {
    struct Row {
        std::size_t nodes;
        int prefix;
    };
    for (const Row row :
         {Row{1, 30}, Row{2, 30}, Row{3, 29}, Row{6, 29}, Row{7, 28}, Row{14, 28}, Row{62, 26},
          Row{63, 25}, Row{254, 24}, Row{255, 23}, Row{10000, 18}, Row{kMaxNodesPerBlock, 12}}) {
        EXPECT_EQ(prefix_for_nodes(row.nodes).value(), row.prefix) << row.nodes << " nodes";
        EXPECT_EQ(prefix_for_nodes(row.nodes, IpFamily::v6).value(), row.prefix + 96)
            << row.nodes << " nodes";
    }
}

TEST(Ipam, PrefixForNodesRefusesZeroAndAbsurdCounts) {
    EXPECT_THAT(error_of(prefix_for_nodes(0)), HasSubstr("0 nodes"));
    EXPECT_THAT(error_of(prefix_for_nodes(kMaxNodesPerBlock + 1)),
                AllOf(HasSubstr("1048575 nodes"), HasSubstr("more than")));
    EXPECT_THAT(error_of(prefix_for_nodes(static_cast<std::size_t>(-1))), HasSubstr("more than"));
}

}  // namespace
}  // namespace vcpilot
