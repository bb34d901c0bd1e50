// common/error.hpp: the one Error, which keeps the errno of a failed system call next to its
// message, and errno_text, the one way errno becomes text.
#include "common/error.hpp"

#include <string.h>

#include <cerrno>
#include <gtest/gtest.h>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/result.hpp"

namespace vcpilot {
namespace {

TEST(SysError, CarriesErrnoAndItsText) {
    const Error error = sys_error("open /etc/vcpilot/site.toml", ENOENT);
    EXPECT_EQ(error.message, "open /etc/vcpilot/site.toml: No such file or directory");
    EXPECT_EQ(error.code, ENOENT);
}

TEST(SysError, TakesErrnoWhenGivenNone) {
    errno = EACCES;
    const Error error = sys_error("chmod /run/vcpilot");
    EXPECT_EQ(error.message, "chmod /run/vcpilot: Permission denied");
    EXPECT_EQ(error.code, EACCES);
}

TEST(SysError, KeepsItsCodeThroughAResultAndAStatus) {
    const Result<int> result = sys_error("stat", ENODEV);
    ASSERT_FALSE(result);
    EXPECT_EQ(result.error().code, ENODEV);
    const Status status = result.error();
    ASSERT_FALSE(status);
    EXPECT_EQ(status.error().code, ENODEV);
}

TEST(Error, OneMadeFromAMessageAloneIsNotASystemError) {
    const Error error{"the secret must be 64 hex digits"};
    EXPECT_EQ(error.code, 0);
    const Status status = Error{"odd"};
    EXPECT_EQ(status.error().code, 0);
}

// The text users saw before errno_text: strerror, and std::error_code's message, which other
// code and tests still use. They must stay the same, byte for byte.
TEST(ErrnoText, IsTheCLibrarysTextForEveryKnownErrno) {
    int known = 0;
    for (int errnum = 1; errnum < 256; ++errnum) {
        if (::strerrordesc_np(errnum) == nullptr) {
            continue;
        }
        ++known;
        // NOLINTNEXTLINE(concurrency-mt-unsafe): the reference text, read by this thread alone
        EXPECT_EQ(errno_text(errnum), std::string(::strerror(errnum))) << errnum;
        EXPECT_EQ(errno_text(errnum), std::generic_category().message(errnum)) << errnum;
    }
    EXPECT_GT(known, 100);
}

TEST(ErrnoText, NamesAnUnknownErrnoByItsNumber) {
    EXPECT_EQ(errno_text(99999), "errno 99999");
    EXPECT_EQ(errno_text(-1), "errno -1");
}

TEST(ErrnoText, GivesEachThreadItsOwnText) {
    const std::vector<int> errnums = {ENOENT, EACCES, EEXIST, ENODEV, EINVAL, ENOSPC, EPERM, EIO};
    std::vector<std::string> expected;
    expected.reserve(errnums.size());
    for (const int errnum : errnums) {
        expected.push_back(::strerrordesc_np(errnum));
    }
    std::vector<int> wrong(errnums.size(), 0);
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < errnums.size(); ++i) {
        threads.emplace_back([&, i] {
            for (int round = 0; round < 2000; ++round) {
                wrong[i] += errno_text(errnums[i]) != expected[i] ? 1 : 0;
                wrong[i] += errno_text(100000 + static_cast<int>(i)) !=
                                    "errno " + std::to_string(100000 + i)
                                ? 1
                                : 0;
            }
        });
    }
    for (auto& thread : threads) {
        thread.join();
    }
    for (std::size_t i = 0; i < errnums.size(); ++i) {
        EXPECT_EQ(wrong[i], 0) << expected[i];
    }
}

}  // namespace
}  // namespace vcpilot
