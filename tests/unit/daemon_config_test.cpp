#include "coordinator/daemon_config.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <string>
#include <vector>

#include "tests/support/temp_dir.hpp"

namespace vcpilot::coordinator {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using vcpilot::testing::TempDir;

// A daemon's command line in miniature: a required option, a checked integer, a repeatable
// option and a flag, as vc-crmd has them.
struct Daemon {
    CLI::App app{"test daemon"};
    std::string site;
    int timeout_s = 30;
    std::vector<std::string> listen;
    bool behind_nat = false;

    Daemon() {
        app.add_option("--site", site, "site")->required();
        app.add_option("--release-timeout", timeout_s, "seconds")->check(CLI::Range(1, 3600));
        app.add_option("--listen", listen, "addresses");
        app.add_flag("--behind-nat", behind_nat, "flag");
    }

    // parse_command_line's exit code, -1 when the daemon would go on.
    int parse(std::vector<std::string> args) {
        args.insert(args.begin(), "test-daemon");
        std::vector<const char*> argv;
        argv.reserve(args.size());
        for (const auto& arg : args) {
            argv.push_back(arg.c_str());
        }
        const auto code =
            parse_command_line(app, "test-daemon", static_cast<int>(argv.size()), argv.data());
        return code.value_or(-1);
    }
};

TEST(DaemonConfig, FileSettingsBecomeTheOptionsOfTheSameName) {
    TempDir dir;
    const auto file = dir.write("d.toml",
                                "site = \"osaka\"\nrelease-timeout = 90\n"
                                "listen = [\"unix:/a\", \"127.0.0.1:7400\"]\n"
                                "behind-nat = true\n");
    Daemon daemon;
    ASSERT_EQ(daemon.parse({"--config", file.string()}), -1);
    EXPECT_EQ(daemon.site, "osaka");
    EXPECT_EQ(daemon.timeout_s, 90);
    EXPECT_THAT(daemon.listen, ElementsAre("unix:/a", "127.0.0.1:7400"));
    EXPECT_TRUE(daemon.behind_nat);
}

TEST(DaemonConfig, TheCommandLineWinsOverTheFileWholeListsIncluded) {
    TempDir dir;
    const auto file = dir.write("d.toml",
                                "site = \"osaka\"\nrelease-timeout = 90\n"
                                "listen = [\"unix:/a\", \"unix:/b\"]\n");
    Daemon daemon;
    ASSERT_EQ(daemon.parse({"--site=kyoto", "--config=" + file.string(), "--listen", "unix:/c"}),
              -1);
    EXPECT_EQ(daemon.site, "kyoto");
    EXPECT_EQ(daemon.timeout_s, 90);
    EXPECT_THAT(daemon.listen, ElementsAre("unix:/c"));
}

TEST(DaemonConfig, AFalseFlagInTheFileLeavesItOff) {
    TempDir dir;
    const auto file = dir.write("d.toml", "site = \"osaka\"\nbehind-nat = false\n");
    Daemon daemon;
    ASSERT_EQ(daemon.parse({"--config", file.string()}), -1);
    EXPECT_FALSE(daemon.behind_nat);
}

TEST(DaemonConfig, WithoutConfigOnlyTheCommandLineCounts) {
    Daemon daemon;
    ASSERT_EQ(daemon.parse({"--site", "osaka"}), -1);
    EXPECT_EQ(daemon.site, "osaka");
    EXPECT_EQ(daemon.timeout_s, 30);
    EXPECT_TRUE(daemon.listen.empty());
}

TEST(DaemonConfig, HelpNamesTheProgramAndListsConfig) {
    Daemon daemon;
    ::testing::internal::CaptureStdout();
    EXPECT_EQ(daemon.parse({"--help"}), 0);
    const std::string help = ::testing::internal::GetCapturedStdout();
    EXPECT_THAT(help, HasSubstr("Usage: test-daemon [OPTIONS]"));
    EXPECT_THAT(help, HasSubstr("--config FILE"));
}

TEST(DaemonConfig, AnUnknownKeyIsAnErrorNamingItAndItsLine) {
    TempDir dir;
    const auto file = dir.write("d.toml", "site = \"osaka\"\nsiet = \"kyoto\"\n");
    Daemon daemon;
    ::testing::internal::CaptureStderr();
    EXPECT_EQ(daemon.parse({"--config", file.string()}), 2);
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_THAT(err, HasSubstr("d.toml:2: unknown key 'siet'"));
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
}

TEST(DaemonConfig, HelpAndConfigAreNotSettingsOfAFile) {
    TempDir dir;
    const auto help = dir.write("h.toml", "site = \"osaka\"\nhelp = true\n");
    const auto config = dir.write("c.toml", "site = \"osaka\"\nconfig = \"/etc/other.toml\"\n");
    Daemon first, second;
    ::testing::internal::CaptureStderr();
    EXPECT_EQ(first.parse({"--config", help.string()}), 2);
    EXPECT_EQ(second.parse({"--config", config.string()}), 2);
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_THAT(err, HasSubstr("h.toml:2: unknown key 'help'"));
    EXPECT_THAT(err, HasSubstr("c.toml:2: unknown key 'config'"));
}

TEST(DaemonConfig, AValueOfTheWrongTypeIsAnErrorEvenWhenTheCommandLineGivesIt) {
    TempDir dir;
    const auto file = dir.write("d.toml", "site = 4\n");
    Daemon daemon;
    ::testing::internal::CaptureStderr();
    EXPECT_EQ(daemon.parse({"--config", file.string(), "--site", "osaka"}), 2);
    EXPECT_THAT(::testing::internal::GetCapturedStderr(),
                HasSubstr("d.toml:1: key 'site' must be a string, not an integer"));
}

TEST(DaemonConfig, AValueTheOptionRefusesIsRefusedAsOnTheCommandLine) {
    TempDir dir;
    const auto file = dir.write("d.toml", "site = \"osaka\"\nrelease-timeout = 0\n");
    Daemon daemon;
    ::testing::internal::CaptureStderr();
    EXPECT_NE(daemon.parse({"--config", file.string()}), -1);
    EXPECT_THAT(::testing::internal::GetCapturedStderr(), HasSubstr("--release-timeout"));
}

TEST(DaemonConfig, AMissingFileOrAConfigWithoutOneIsAnError) {
    TempDir dir;
    Daemon first, second;
    ::testing::internal::CaptureStderr();
    EXPECT_EQ(first.parse({"--config", (dir.path() / "none.toml").string()}), 2);
    EXPECT_EQ(second.parse({"--site", "osaka", "--config"}), 2);
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_THAT(err, HasSubstr("none.toml"));
    EXPECT_THAT(err, HasSubstr("--config needs a file"));
}

}  // namespace
}  // namespace vcpilot::coordinator
