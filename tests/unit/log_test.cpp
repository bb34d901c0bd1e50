#include "common/log.hpp"

#include <unistd.h>

#include <fstream>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <regex>
#include <spdlog/spdlog.h>
#include <sstream>
#include <string>

#include "tests/support/temp_dir.hpp"
#include "tests/unit/expect_error.hpp"

namespace vcpilot {
namespace {

using ::testing::HasSubstr;
using vcpilot::testing::TempDir;

std::string read_all(const std::filesystem::path& path) {
    std::ifstream file(path);
    std::stringstream text;
    text << file.rdbuf();
    return text.str();
}

TEST(LogLevel, ParsesEveryName) {
    EXPECT_EQ(parse_log_level("trace").value(), spdlog::level::trace);
    EXPECT_EQ(parse_log_level("debug").value(), spdlog::level::debug);
    EXPECT_EQ(parse_log_level("info").value(), spdlog::level::info);
    EXPECT_EQ(parse_log_level("warn").value(), spdlog::level::warn);
    EXPECT_EQ(parse_log_level("warning").value(), spdlog::level::warn);
    EXPECT_EQ(parse_log_level("error").value(), spdlog::level::err);
    EXPECT_EQ(parse_log_level("critical").value(), spdlog::level::critical);
    EXPECT_EQ(parse_log_level("off").value(), spdlog::level::off);
}

TEST(LogLevel, IgnoresCase) {
    EXPECT_EQ(parse_log_level("INFO").value(), spdlog::level::info);
    EXPECT_EQ(parse_log_level("Warning").value(), spdlog::level::warn);
}

TEST(LogLevel, RejectsUnknownNamesAndListsTheValidOnes) {
    EXPECT_EQ(error_of(parse_log_level("verbose")),
              "unknown log level 'verbose'; use one of trace, debug, info, warn, error, "
              "critical, off");
    EXPECT_THAT(error_of(parse_log_level("")), HasSubstr("unknown log level ''"));
    EXPECT_THAT(error_of(parse_log_level("info ")), HasSubstr("'info '"));
    EXPECT_THAT(error_of(parse_log_level("err")), HasSubstr("'err'"));
    EXPECT_THAT(error_of(parse_log_level("info\n")), HasSubstr("'info\\n'"));
}

class Logging : public ::testing::Test {
  protected:
    // Later tests must not write into a deleted temporary file.
    void TearDown() override { ASSERT_TRUE(init_logging("vcpilot_unit_tests", {}).ok()); }

    TempDir dir_;
};

TEST_F(Logging, WritesTimestampedLinesWithProgramAndPid) {
    const auto path = dir_.path() / "crmd.log";
    ASSERT_TRUE(
        init_logging("vc-crmd", {.level = spdlog::level::info, .file = path, .to_stderr = false})
            .ok());
    spdlog::info("listening on port {}", 7400);
    const std::regex line(
        R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} vc-crmd\[(\d+)\] info: listening on port 7400
)");
    std::smatch match;
    const std::string text = read_all(path);
    ASSERT_TRUE(std::regex_match(text, match, line)) << text;
    EXPECT_EQ(match[1], std::to_string(getpid()));
}

TEST_F(Logging, DropsMessagesBelowTheLevel) {
    const auto path = dir_.path() / "crmd.log";
    ASSERT_TRUE(
        init_logging("vc-crmd", {.level = spdlog::level::warn, .file = path, .to_stderr = false})
            .ok());
    spdlog::info("hidden");
    spdlog::warn("shown");
    const std::string text = read_all(path);
    EXPECT_THAT(text, ::testing::Not(HasSubstr("hidden")));
    EXPECT_THAT(text, HasSubstr("warning: shown"));
}

TEST_F(Logging, AppendsToAnExistingFile) {
    const auto path = dir_.write("crmd.log", "earlier line\n");
    ASSERT_TRUE(init_logging("vc-crmd", {.file = path, .to_stderr = false}).ok());
    spdlog::error("later line");
    const std::string text = read_all(path);
    EXPECT_THAT(text, ::testing::StartsWith("earlier line\n"));
    EXPECT_THAT(text, HasSubstr("error: later line"));
}

TEST_F(Logging, CanBeSetUpAgain) {
    const auto first = dir_.path() / "first.log";
    const auto second = dir_.path() / "second.log";
    ASSERT_TRUE(init_logging("vc-pilot", {.file = first, .to_stderr = false}).ok());
    ASSERT_TRUE(init_logging("vc-pilot", {.file = second, .to_stderr = false}).ok());
    spdlog::info("only in the second");
    EXPECT_EQ(read_all(first), "");
    EXPECT_THAT(read_all(second), HasSubstr("only in the second"));
}

TEST_F(Logging, UnwritableLogFileIsAClearError) {
    // A regular file where a directory should be: fails even for root.
    const auto not_a_directory = dir_.write("plain-file", "");
    const auto path = not_a_directory / "crmd.log";
    const std::string message =
        error_of(init_logging("vc-crmd", {.file = path, .to_stderr = false}));
    EXPECT_THAT(message, HasSubstr("cannot set up logging"));
    EXPECT_THAT(message, HasSubstr(path.string()));
    EXPECT_THAT(message, HasSubstr("Not a directory"));
}

}  // namespace
}  // namespace vcpilot
