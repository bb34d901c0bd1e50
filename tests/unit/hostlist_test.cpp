// Slurm hostlist expressions (SLURM_JOB_NODELIST), as the plugin's prolog reads them to tell
// this node's place in the job, and as the plugin and the srun relay write them.
#include "common/hostlist.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/node_names.hpp"

namespace vcpilot {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> hosts(std::string_view expression) {
    auto expanded = expand_hostlist(expression);
    EXPECT_TRUE(expanded) << expression << ": " << expanded.error().message;
    return expanded ? *expanded : std::vector<std::string>{};
}

std::string refusal(std::string_view expression) {
    auto expanded = expand_hostlist(expression);
    EXPECT_FALSE(expanded) << expression << " was accepted";
    return expanded ? std::string() : expanded.error().message;
}

TEST(Hostlist, ExpandsRangesInOrder) {
    EXPECT_THAT(hosts("site1-node[1-4]"),
                ElementsAre("site1-node1", "site1-node2", "site1-node3", "site1-node4"));
    EXPECT_THAT(hosts("node7"), ElementsAre("node7"));
    EXPECT_THAT(hosts("n[3,1-2]"), ElementsAre("n3", "n1", "n2"));
    EXPECT_THAT(hosts("n[9-11]"), ElementsAre("n9", "n10", "n11"));
}

TEST(Hostlist, KeepsZeroPaddingToTheWidthOfTheLowEnd) {
    EXPECT_THAT(hosts("a[01-03,07],b5"), ElementsAre("a01", "a02", "a03", "a07", "b5"));
    EXPECT_THAT(hosts("a[08-10]"), ElementsAre("a08", "a09", "a10"));
    EXPECT_THAT(hosts("a[098-100]"), ElementsAre("a098", "a099", "a100"));
}

TEST(Hostlist, TakesASuffixAfterTheBrackets) {
    EXPECT_THAT(hosts("rack[1-2]-ib,login"), ElementsAre("rack1-ib", "rack2-ib", "login"));
}

TEST(Hostlist, RefusesWhatItCannotParse) {
    EXPECT_THAT(refusal("n[1-2]x[3-4]"), HasSubstr("more than one bracket group"));
    EXPECT_THAT(refusal("n[1-2"), HasSubstr("not closed"));
    EXPECT_THAT(refusal("n1-2]"), HasSubstr("unbalanced"));
    EXPECT_THAT(refusal("n[[1-2]]"), HasSubstr("unbalanced"));
    EXPECT_THAT(refusal("n[2-1]"), HasSubstr("backwards"));
    EXPECT_THAT(refusal("n[a-b]"), HasSubstr("not a number"));
    EXPECT_THAT(refusal("n[]"), HasSubstr("not a number"));
    EXPECT_THAT(refusal("n[1-]"), HasSubstr("not a number"));
    EXPECT_THAT(refusal("n[1-2-3]"), HasSubstr("not a number"));
    EXPECT_THAT(refusal("n[-1]"), HasSubstr("not a number"));
    EXPECT_THAT(refusal("n[1,,2]"), HasSubstr("not a number"));
    EXPECT_THAT(refusal("a,,b"), HasSubstr("empty host name"));
    EXPECT_THAT(refusal(""), HasSubstr("empty host name"));
    EXPECT_THAT(refusal("a,"), HasSubstr("empty host name"));
    EXPECT_THAT(refusal("n[1-9999999999999999999]"), HasSubstr("not a number"));
}

TEST(Hostlist, RefusesMoreThanAMillionHostsWithoutExpandingThem) {
    EXPECT_EQ(parse_hostlist("n[1-1000000]").value().size(), 1U);
    EXPECT_THAT(refusal("n[1-1000001]"), HasSubstr("more than 1000000 hosts"));
    EXPECT_THAT(refusal("n[1-999999],a,b"), HasSubstr("more than 1000000 hosts"));
    EXPECT_THAT(refusal("n[0-999999999999999999]"), HasSubstr("more than 1000000 hosts"));
    EXPECT_THAT(refusal("n[1-600000],m[1-600000]"), HasSubstr("more than 1000000 hosts"));
    EXPECT_FALSE(expand_hostlist("n[1-5]", 4));
}

TEST(Hostlist, RankIsTheHostsOneBasedPlaceInTheList) {
    EXPECT_EQ(rank_in_hostlist("site1-node[1-4]", "site1-node1").value(), 1U);
    EXPECT_EQ(rank_in_hostlist("site1-node[1-4]", "site1-node4").value(), 4U);
    EXPECT_EQ(rank_in_hostlist("a[01-03,07],b5", "a07").value(), 4U);
    EXPECT_EQ(rank_in_hostlist("a[01-03,07],b5", "b5").value(), 5U);
    EXPECT_EQ(rank_in_hostlist("n1[0-5]", "n10").value(), 1U);
    EXPECT_EQ(rank_in_hostlist("x,n[1-999999]", "n999999").value(), 1000000U);
    EXPECT_EQ(rank_in_hostlist("rack[1-2]-ib", "rack2-ib").value(), 2U);
}

TEST(Hostlist, RankAgreesWithTheExpansion) {
    const std::string expression = "a[01-03,07],b5,c[8-12]x,d";
    const auto all = hosts(expression);
    for (std::size_t i = 0; i < all.size(); ++i) {
        EXPECT_EQ(rank_in_hostlist(expression, all[i]).value(), i + 1) << all[i];
    }
}

TEST(Hostlist, ANodeNotInTheListOrWronglyPaddedHasNoRank) {
    EXPECT_FALSE(rank_in_hostlist("a[01-03]", "a1"));
    EXPECT_FALSE(rank_in_hostlist("a[1-3]", "a01"));
    EXPECT_FALSE(rank_in_hostlist("a[1-3]", "a4"));
    EXPECT_FALSE(rank_in_hostlist("a[1-3]", "a"));
    EXPECT_FALSE(rank_in_hostlist("a[1-3]", ""));
    EXPECT_FALSE(rank_in_hostlist("a[1-3]x", "a2"));
    EXPECT_FALSE(rank_in_hostlist("n[1-2]x[3-4]", "n1x3"));
    EXPECT_THAT(rank_in_hostlist("a[1-3]", "b1").error().message, HasSubstr("b1 is not in it"));
}

std::string compressed(const std::vector<std::string>& names) {
    auto expression = compress_hostlist(names);
    EXPECT_TRUE(expression) << expression.error().message;
    if (!expression) {
        return {};
    }
    EXPECT_EQ(hosts(*expression), names) << *expression << " does not expand to the names";
    return *expression;
}

TEST(Hostlist, CompressesConsecutiveNumbersIntoRangesAsSlurmWritesThem) {
    EXPECT_EQ(compressed({"vc-site1-1", "vc-site1-2", "vc-site1-3", "vc-site1-4"}),
              "vc-site1-[1-4]");
    EXPECT_EQ(compressed({"n1", "n2", "n3", "n7", "m"}), "n[1-3,7],m");
    EXPECT_EQ(compressed({"n08", "n09", "n10"}), "n[08-10]");
    EXPECT_EQ(compressed({"n9", "n10", "n11"}), "n[9-11]");
    EXPECT_EQ(compressed({"node7"}), "node7");
    EXPECT_EQ(compressed({"rack1-ib", "rack2-ib", "login"}), "rack[1-2]-ib,login");
    EXPECT_EQ(compress_hostlist({}).value(), "");
}

TEST(Hostlist, CompressionKeepsTheOrderOfTheNames) {
    // SLURM_TASKS_PER_NODE follows the node list's order: it must not be sorted.
    EXPECT_EQ(compressed({"vc-s-3", "vc-s-1", "vc-s-2"}), "vc-s-[3,1-2]");
    EXPECT_EQ(compressed({"a2", "b1", "a3"}), "a2,b1,a3");
    EXPECT_EQ(compressed({"n1", "n1"}), "n[1,1]");
    EXPECT_EQ(compressed({"a01", "a1", "a2"}), "a[01,1-2]");
    EXPECT_EQ(compressed({"123", "124"}), "[123-124]");
}

TEST(Hostlist, CompressionRefusesNamesAnExpressionCannotCarry) {
    for (const std::string bad : {"", "a,b", "a[1]", "b]"}) {
        auto expression = compress_hostlist({"n1", bad});
        ASSERT_FALSE(expression) << "'" << bad << "' gave " << *expression;
        EXPECT_THAT(expression.error().message, HasSubstr("cannot be named in a host list"));
    }
}

TEST(NodeNames, RenamesTheHostsOfAListInItsOrder) {
    const NameMap to_virtual = {{"site1-node1", "vc-site1-1"}, {"site1-node2", "vc-site1-2"}};
    EXPECT_EQ(rename_hosts("site1-node[1-2]", to_virtual).value(), "vc-site1-[1-2]");
    EXPECT_EQ(rename_hosts("site1-node[2,1]", to_virtual).value(), "vc-site1-[2,1]");
    EXPECT_EQ(rename_hosts("site1-node2", to_virtual).value(), "vc-site1-2");
    EXPECT_EQ(rename_hosts("site1-node[1-3]", to_virtual).value(),
              "vc-site1-[1-2],site1-node3");  // a host it does not know stays
    EXPECT_FALSE(rename_hosts("site1-node[1-", to_virtual));
}

TEST(NodeNames, ReadsThePilotsFileEitherWay) {
    const std::string text = format_node_names({{"n1", "vc-a-2"}, {"n2", "vc-a-1"}});
    EXPECT_EQ(text, "n1 vc-a-2\nn2 vc-a-1\n");
    EXPECT_EQ(parse_node_names(text, NameDirection::to_virtual).value(),
              (NameMap{{"n1", "vc-a-2"}, {"n2", "vc-a-1"}}));
    EXPECT_EQ(parse_node_names(text, NameDirection::to_slurm).value(),
              (NameMap{{"vc-a-2", "n1"}, {"vc-a-1", "n2"}}));
    EXPECT_EQ(parse_node_names("", NameDirection::to_slurm).value(), NameMap{});
    for (const char* bad : {"n1\n", "n1 a b\n", " a\n", "a \n", "n1 a\n\n"}) {
        EXPECT_THAT(parse_node_names(bad, NameDirection::to_virtual).error().message,
                    HasSubstr("is not '<Slurm node> <virtual name>'"))
            << bad;
    }
}

}  // namespace
}  // namespace vcpilot
