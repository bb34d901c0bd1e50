#include "coordinator/config.hpp"

#include <cstdint>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <string>
#include <string_view>
#include <vector>

#include "tests/support/temp_dir.hpp"
#include "tests/unit/expect_error.hpp"

namespace vcpilot {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using vcpilot::testing::TempDir;

// A small schema in the style the daemons will use: required keys, optional keys with
// defaults, an address block, and an array of tables.
struct NodeConfig {
    std::string name;
    InterfaceAddress address;
};

struct SiteConfig {
    std::string name;
    Cidr cidr;
    IpAddress gateway;
    std::int64_t port;
    bool encrypt;
    double register_timeout;
    std::vector<std::string> peers;
    std::vector<NodeConfig> nodes;
};

Result<NodeConfig> read_node(const ConfigSection& section) {
    auto name = section.get<std::string>("name");
    if (!name) {
        return name.error();
    }
    auto address = section.get<InterfaceAddress>("address");
    if (!address) {
        return address.error();
    }
    return NodeConfig{*name, *address};
}

Result<SiteConfig> read_site(const ConfigFile& file) {
    auto site = file.root().section("site");
    if (!site) {
        return site.error();
    }
    auto name = site->get<std::string>("name");
    if (!name) {
        return name.error();
    }
    auto cidr = site->get<Cidr>("cidr");
    if (!cidr) {
        return cidr.error();
    }
    auto gateway = site->get<IpAddress>("gateway");
    if (!gateway) {
        return gateway.error();
    }
    auto port = site->get_or<std::int64_t>("port", 7400);
    if (!port) {
        return port.error();
    }
    auto encrypt = site->get_or("encrypt", false);
    if (!encrypt) {
        return encrypt.error();
    }
    auto register_timeout = site->get_or("register_timeout", 10.0);
    if (!register_timeout) {
        return register_timeout.error();
    }
    auto peers = site->get_or<std::vector<std::string>>("peers", {});
    if (!peers) {
        return peers.error();
    }
    std::vector<NodeConfig> nodes;
    if (site->has("nodes")) {
        auto sections = site->sections("nodes");
        if (!sections) {
            return sections.error();
        }
        for (const ConfigSection& section : *sections) {
            auto node = read_node(section);
            if (!node) {
                return node.error();
            }
            nodes.push_back(*node);
        }
    }
    if (auto unknown = file.finish(); !unknown) {
        return unknown.error();
    }
    return SiteConfig{*name, *cidr, *gateway, *port, *encrypt, *register_timeout, *peers, nodes};
}

Result<SiteConfig> read_site(std::string_view text) {
    auto file = ConfigFile::parse_string(text, "crmd.toml");
    if (!file) {
        return file.error();
    }
    return read_site(*file);
}

constexpr std::string_view kFullExample = R"(# vc-crmd configuration
[site]
name = "osaka"
cidr = "10.20.0.0/16"
gateway = "10.20.0.1"
port = 7401
encrypt = true
register_timeout = 2.5
peers = ["tsukuba", "kyoto"]

[[site.nodes]]
name = "node1"
address = "10.20.0.11/16"

[[site.nodes]]
name = "node2"
address = "10.20.0.12/16"
)";

TEST(Config, ReadsEveryKindOfValue) {
    const SiteConfig site = read_site(kFullExample).value();
    EXPECT_EQ(site.name, "osaka");
    EXPECT_EQ(site.cidr.to_string(), "10.20.0.0/16");
    EXPECT_EQ(site.gateway.to_string(), "10.20.0.1");
    EXPECT_EQ(site.port, 7401);
    EXPECT_TRUE(site.encrypt);
    EXPECT_DOUBLE_EQ(site.register_timeout, 2.5);
    EXPECT_THAT(site.peers, ElementsAre("tsukuba", "kyoto"));
    ASSERT_EQ(site.nodes.size(), 2U);
    EXPECT_EQ(site.nodes[1].name, "node2");
    EXPECT_EQ(site.nodes[1].address.to_string(), "10.20.0.12/16");
}

TEST(Config, UsesDefaultsForAbsentOptionalKeys) {
    const SiteConfig site = read_site(R"(
[site]
name = "osaka"
cidr = "10.20.0.0/16"
gateway = "10.20.0.1"
)")
                                .value();
    EXPECT_EQ(site.port, 7400);
    EXPECT_FALSE(site.encrypt);
    EXPECT_DOUBLE_EQ(site.register_timeout, 10.0);
    EXPECT_TRUE(site.peers.empty());
    EXPECT_TRUE(site.nodes.empty());
}

TEST(Config, AcceptsInlineTables) {
    const SiteConfig site =
        read_site(R"(site = { name = "osaka", cidr = "10.20.0.0/16", gateway = "10.20.0.1" })")
            .value();
    EXPECT_EQ(site.name, "osaka");
}

TEST(Config, UnknownKeyIsAnErrorNamingKeyAndFile) {
    EXPECT_EQ(error_of(read_site(R"([site]
name = "osaka"
cidr = "10.20.0.0/16"
gateway = "10.20.0.1"
encrpyt = true
)")),
              "crmd.toml:5: unknown key 'site.encrpyt'");
}

TEST(Config, UnknownKeyNextToTheRightOneIsStillAnError) {
    EXPECT_EQ(error_of(read_site(R"([site]
name = "osaka"
nmae = "osaka"
cidr = "10.20.0.0/16"
gateway = "10.20.0.1"
)")),
              "crmd.toml:3: unknown key 'site.nmae'");
}

TEST(Config, ReportsEveryUnknownKeyInFileOrderOnOneLine) {
    EXPECT_EQ(error_of(read_site(R"(zebra = 1
[site]
name = "osaka"
cidr = "10.20.0.0/16"
gateway = "10.20.0.1"
portt = 7400
alpha = 2
[[site.nodes]]
name = "node1"
address = "10.20.0.11/16"
adress = "10.20.0.11/16"
)")),
              "crmd.toml:1: unknown key 'zebra'; also unknown: 'site.portt' (line 6), "
              "'site.alpha' (line 7), 'site.nodes[0].adress' (line 11)");
}

TEST(Config, UnknownSectionIsReportedOnceNotKeyByKey) {
    EXPECT_EQ(error_of(read_site(R"([site]
name = "osaka"
cidr = "10.20.0.0/16"
gateway = "10.20.0.1"

[logging]
level = "debug"
file = "/var/log/vc-crmd.log"
)")),
              "crmd.toml:6: unknown key 'logging'");
}

TEST(Config, KeysNeedingQuotesAreShownQuotedAndOnOneLine) {
    auto file = ConfigFile::parse_string("\"two words\" = 1\n\"line\\nbreak\" = 2\n", "x.toml");
    ASSERT_TRUE(file.ok()) << file.error().message;
    EXPECT_EQ(error_of(file->finish()),
              "x.toml:1: unknown key '\"two words\"'; also unknown: '\"line\\nbreak\"' (line 2)");
}

TEST(Config, NothingLeftOverMeansFinishSucceeds) {
    auto file = ConfigFile::parse_string("a = 1\n[b]\nc = \"x\"\n", "x.toml");
    ASSERT_TRUE(file.ok());
    EXPECT_TRUE(file->root().get<std::int64_t>("a").ok());
    EXPECT_TRUE(file->root().section("b")->get<std::string>("c").ok());
    EXPECT_TRUE(file->finish().ok());
}

TEST(Config, HasDoesNotCountAsReading) {
    auto file = ConfigFile::parse_string("a = 1\n", "x.toml");
    ASSERT_TRUE(file.ok());
    EXPECT_TRUE(file->root().has("a"));
    EXPECT_FALSE(file->root().has("b"));
    EXPECT_EQ(error_of(file->finish()), "x.toml:1: unknown key 'a'");
}

TEST(Config, EmptyFileHasNothingUnknown) {
    auto file = ConfigFile::parse_string("", "empty.toml");
    ASSERT_TRUE(file.ok());
    EXPECT_TRUE(file->finish().ok());
}

TEST(Config, WrongTypeNamesKeyAndBothTypes) {
    EXPECT_EQ(error_of(read_site(R"([site]
name = 42
)")),
              "crmd.toml:2: key 'site.name' must be a string, not an integer");
    EXPECT_EQ(error_of(read_site(R"([site]
name = "osaka"
cidr = "10.20.0.0/16"
gateway = "10.20.0.1"
port = "7400"
)")),
              "crmd.toml:5: key 'site.port' must be an integer, not a string");
    EXPECT_THAT(error_of(read_site(R"(site = "osaka")")),
                HasSubstr("crmd.toml:1: key 'site' must be a table, not a string"));
}

TEST(Config, WrongTypeOfEveryValueKind) {
    auto file = ConfigFile::parse_string(R"(text = 1.5
number = true
flag = "yes"
ratio = "1"
list = "a"
mixed = ["a", 2]
address = 10
table = 1
tables = [1]
when = 2024-05-01
)",
                                         "x.toml");
    ASSERT_TRUE(file.ok()) << file.error().message;
    const ConfigSection root = file->root();
    EXPECT_EQ(error_of(root.get<std::string>("text")),
              "x.toml:1: key 'text' must be a string, not a float");
    EXPECT_EQ(error_of(root.get<std::int64_t>("number")),
              "x.toml:2: key 'number' must be an integer, not a boolean");
    EXPECT_EQ(error_of(root.get<bool>("flag")),
              "x.toml:3: key 'flag' must be a boolean, not a string");
    EXPECT_EQ(error_of(root.get<double>("ratio")),
              "x.toml:4: key 'ratio' must be a number, not a string");
    EXPECT_EQ(error_of(root.get<std::vector<std::string>>("list")),
              "x.toml:5: key 'list' must be an array of strings, not a string");
    EXPECT_EQ(error_of(root.get<std::vector<std::string>>("mixed")),
              "x.toml:6: key 'mixed[1]' must be a string, not an integer");
    EXPECT_EQ(error_of(root.get<IpAddress>("address")),
              "x.toml:7: key 'address' must be a string, not an integer");
    EXPECT_EQ(error_of(root.section("table")),
              "x.toml:8: key 'table' must be a table, not an integer");
    EXPECT_EQ(error_of(root.sections("tables")),
              "x.toml:9: key 'tables[0]' must be a table, not an integer");
    EXPECT_EQ(error_of(root.get<std::string>("when")),
              "x.toml:10: key 'when' must be a string, not a date");
}

TEST(Config, PresentKeyOfWrongTypeIsAnErrorEvenWithADefault) {
    auto file = ConfigFile::parse_string("port = \"7400\"\n", "x.toml");
    ASSERT_TRUE(file.ok());
    EXPECT_EQ(error_of(file->root().get_or<std::int64_t>("port", 1)),
              "x.toml:1: key 'port' must be an integer, not a string");
}

TEST(Config, FloatKeysAcceptIntegers) {
    auto file = ConfigFile::parse_string("timeout = 5\n", "x.toml");
    ASSERT_TRUE(file.ok());
    EXPECT_DOUBLE_EQ(file->root().get<double>("timeout").value(), 5.0);
}

TEST(Config, MissingRequiredKeyNamesTheSection) {
    EXPECT_EQ(error_of(read_site("[site]\ncidr = \"10.20.0.0/16\"\n")),
              "crmd.toml:1: missing required key 'site.name'");
    EXPECT_EQ(error_of(read_site("[other]\n")), "crmd.toml: missing required section 'site'");
}

TEST(Config, BadCidrNamesKeyAndSuggestsTheNetwork) {
    EXPECT_EQ(error_of(read_site(R"([site]
name = "osaka"
cidr = "10.20.0.1/16"
)")),
              "crmd.toml:3: key 'site.cidr': invalid CIDR block '10.20.0.1/16': host bits are "
              "set; the network is 10.20.0.0/16");
}

TEST(Config, BadAddressesNameTheKey) {
    EXPECT_EQ(error_of(read_site(R"([site]
name = "osaka"
cidr = "10.20.0.0/16"
gateway = "10.20.0.1 "
)")),
              "crmd.toml:4: key 'site.gateway': invalid IP address '10.20.0.1 ': unexpected "
              "character ' ' at position 9");
    EXPECT_EQ(error_of(read_site(R"([site]
name = "osaka"
cidr = "10.20.0.0/16"
gateway = "10.20.0.1"
[[site.nodes]]
name = "node1"
address = "10.20.0.11"
)")),
              "crmd.toml:7: key 'site.nodes[0].address': invalid interface address "
              "'10.20.0.11': missing the /prefix length (for example 10.0.0.5/24)");
}

TEST(Config, ParseErrorGivesFileLineAndColumn) {
    const std::string message = error_of(read_site("[site]\nname = \"osaka\nport = 1\n"));
    EXPECT_THAT(message, MatchesRegex("crmd\\.toml:2:[0-9]+: .+")) << message;
    EXPECT_THAT(error_of(read_site("[site]\nport = 1\nport = 2\n")),
                MatchesRegex("crmd\\.toml:3:[0-9]+: .*redefine.*port.*"));
    EXPECT_THAT(error_of(read_site("[site\n")), MatchesRegex("crmd\\.toml:1:[0-9]+: .+"));
}

TEST(Config, ParseErrorsStayOnOneLine) {
    // Raw control characters are invalid TOML; toml++ may quote them in its description.
    error_of(ConfigFile::parse_string("a = \"x\x01y\"\n", "x.toml"));
    error_of(ConfigFile::parse_string(std::string("a = 1\0b = 2\n", 12), "x.toml"));
    error_of(ConfigFile::parse_string("a = \n", "bad\nname.toml"));
}

TEST(Config, LoadReadsAFileAndNamesItInErrors) {
    const TempDir dir;
    const auto path = dir.write("crmd.toml", "[site]\nname = 42\n");
    auto file = ConfigFile::load(path);
    ASSERT_TRUE(file.ok()) << file.error().message;
    EXPECT_EQ(file->name(), path.string());
    EXPECT_EQ(error_of(file->root().section("site")->get<std::string>("name")),
              path.string() + ":2: key 'site.name' must be a string, not an integer");
}

TEST(Config, LoadReportsParseErrorsWithThePath) {
    const TempDir dir;
    const auto path = dir.write("crmd.toml", "a = = 1\n");
    EXPECT_THAT(error_of(ConfigFile::load(path)), HasSubstr(path.string() + ":1:"));
}

TEST(Config, LoadOfAMissingFileSaysWhy) {
    const TempDir dir;
    const auto path = dir.path() / "missing.toml";
    EXPECT_EQ(error_of(ConfigFile::load(path)),
              "cannot open config file '" + path.string() + "': No such file or directory");
}

TEST(Config, LoadOfADirectorySaysWhy) {
    const TempDir dir;
    EXPECT_EQ(error_of(ConfigFile::load(dir.path())),
              "cannot read config file '" + dir.path().string() + "': Is a directory");
}

TEST(Config, LoadRefusesHugeFiles) {
    EXPECT_THAT(error_of(ConfigFile::load("/dev/zero")), HasSubstr("is larger than"));
}

TEST(Config, SectionsOutliveTheirFile) {
    Result<ConfigSection> site = Error{"unset"};
    {
        auto file = ConfigFile::parse_string("[site]\nname = \"osaka\"\n", "x.toml");
        ASSERT_TRUE(file.ok());
        site = file->root().section("site");
    }
    ASSERT_TRUE(site.ok());
    EXPECT_EQ(site->get<std::string>("name").value(), "osaka");
    EXPECT_EQ(site->path(), "site");
}

}  // namespace
}  // namespace vcpilot
