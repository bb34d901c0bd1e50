// A site's underlay addresses in a cluster view (common/underlays.hpp): packed as runs when
// they follow on from each other, one per node otherwise, and read back exactly.
#include "common/underlays.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <random>
#include <string>
#include <vector>

#include "tests/unit/literals.hpp"

namespace vcpilot {
namespace {

using ::testing::HasSubstr;

std::vector<IpAddress> addresses(const std::vector<std::string>& texts) {
    std::vector<IpAddress> out;
    out.reserve(texts.size());
    for (const auto& text : texts) {
        out.push_back(ip(text));
    }
    return out;
}

v1::SiteView packed(const std::vector<IpAddress>& underlays) {
    v1::SiteView site;
    site.set_site("a");
    site.set_nodes(static_cast<std::uint32_t>(underlays.size()));
    auto ok = pack_underlays(underlays, site);
    EXPECT_TRUE(ok) << ok.error().message;
    return site;
}

std::vector<IpAddress> round_trip(const std::vector<IpAddress>& underlays) {
    auto back = unpack_underlays(packed(underlays));
    EXPECT_TRUE(back) << back.error().message;
    return back ? *back : std::vector<IpAddress>{};
}

TEST(Underlays, ASiteNumberedInOrderTakesOneAddressAndOneCount) {
    std::vector<IpAddress> underlays;
    for (int i = 1; i <= 1000; ++i) {
        underlays.push_back(ip("10.1.0.0").offset(static_cast<unsigned>(i)).value());
    }
    const auto site = packed(underlays);
    EXPECT_EQ(site.underlay().size(), 4U);
    ASSERT_EQ(site.underlay_runs_size(), 1);
    EXPECT_EQ(site.underlay_runs(0), 1000U);
    EXPECT_EQ(round_trip(underlays), underlays);
}

TEST(Underlays, RunsCrossOctetsAndMayRestartAnywhere) {
    // .254, .255, 1.0, 1.1 follow on; then a jump; then IPv4's last address, alone.
    const auto underlays = addresses({"10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1",
                                      "10.0.1.2", "10.0.1.3", "10.0.1.4", "10.0.1.5", "10.9.9.9",
                                      "10.9.9.10", "10.9.9.11", "10.9.9.12", "255.255.255.255"});
    const auto site = packed(underlays);
    EXPECT_EQ(site.underlay_runs_size(), 3);
    EXPECT_EQ(round_trip(underlays), underlays);
}

TEST(Underlays, ScatteredAddressesStayOnePerNode) {
    const auto underlays = addresses({"172.16.1.20", "172.16.1.11", "172.16.1.13", "172.16.1.12"});
    const auto site = packed(underlays);
    EXPECT_EQ(site.underlay().size(), 16U);  // runs would cost more
    EXPECT_EQ(site.underlay_runs_size(), 0);
    EXPECT_EQ(round_trip(underlays), underlays);
}

TEST(Underlays, Ipv6RunsWork) {
    const auto underlays = addresses({"fd00::ffff", "fd00::1:0", "fd00::1:1", "fd00::1:2"});
    const auto site = packed(underlays);
    EXPECT_EQ(site.underlay().size(), 16U);
    EXPECT_EQ(round_trip(underlays), underlays);
}

TEST(Underlays, RandomSitesComeBackExactly) {
    std::mt19937 random(20261202);
    for (int round = 0; round < 200; ++round) {
        std::vector<IpAddress> underlays;
        IpAddress next = ip(round % 2 != 0 ? "fd00::1" : "10.0.0.1");
        const int nodes = 1 + static_cast<int>(random() % 300);
        for (int i = 0; i < nodes; ++i) {
            underlays.push_back(next);
            next = next.offset(random() % 4 == 0 ? 2 + random() % 1000 : 1).value();
        }
        const auto site = packed(underlays);
        const std::size_t width = round % 2 != 0 ? 16 : 4;
        EXPECT_LE(site.underlay().size() + static_cast<std::size_t>(site.underlay_runs_size()),
                  underlays.size() * width + underlays.size());
        EXPECT_EQ(round_trip(underlays), underlays) << "round " << round;
    }
}

TEST(Underlays, AMixOfFamiliesIsRefused) {
    v1::SiteView site;
    site.set_site("b");
    const auto ok = pack_underlays(addresses({"10.0.0.1", "fd00::1"}), site);
    ASSERT_FALSE(ok);
    EXPECT_THAT(ok.error().message, HasSubstr("site b mixes IPv4 and IPv6"));
}

TEST(Underlays, RunsThatDoNotAddUpAreRefused) {
    v1::SiteView site = packed(addresses({"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}));
    ASSERT_EQ(site.underlay_runs_size(), 1);
    for (std::uint32_t count : {0U, 3U, 5U, 4000000000U}) {
        site.set_underlay_runs(0, count);
        const auto back = unpack_underlays(site);
        ASSERT_FALSE(back) << count;
        EXPECT_THAT(back.error().message, HasSubstr("underlay_runs: ")) << count;
    }
    site.set_underlay_runs(0, 4);
    site.add_underlay_runs(1);  // two runs, one address
    const auto back = unpack_underlays(site);
    ASSERT_FALSE(back);
    EXPECT_THAT(back.error().message, HasSubstr("underlay: 4 bytes for 2 runs"));
}

TEST(Underlays, ARunPastTheEndOfTheAddressSpaceIsRefused) {
    v1::SiteView site = packed(addresses({"255.255.255.254", "255.255.255.255"}));
    ASSERT_EQ(site.underlay_runs_size(), 1);
    site.set_nodes(3);
    site.set_underlay_runs(0, 3);
    const auto back = unpack_underlays(site);
    ASSERT_FALSE(back);
    EXPECT_THAT(back.error().message, HasSubstr("past the end of the address space"));
}

}  // namespace
}  // namespace vcpilot
