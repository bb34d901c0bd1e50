// common/fd.hpp: UniqueFd, the one owner of a file descriptor.
#include "common/fd.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <gtest/gtest.h>
#include <utility>

namespace vcpilot {
namespace {

bool is_open(int fd) {
    return ::fcntl(fd, F_GETFD) != -1;
}

// Two fresh descriptors, the ends of a pipe, for the tests to own.
std::pair<int, int> two_fds() {
    int ends[2] = {-1, -1};
    EXPECT_EQ(::pipe2(ends, O_CLOEXEC), 0);
    return {ends[0], ends[1]};
}

TEST(UniqueFd, AnEmptyOneHoldsNothing) {
    const UniqueFd none;
    EXPECT_FALSE(none);
    EXPECT_EQ(none.get(), -1);
    const UniqueFd failed(-1);  // what a failed open() gives it
    EXPECT_FALSE(failed);
}

TEST(UniqueFd, ClosesOnDestructionAndOnReassignment) {
    const auto [first, second] = two_fds();
    {
        UniqueFd fd(first);
        EXPECT_TRUE(fd);
        EXPECT_EQ(fd.get(), first);
        fd = UniqueFd(second);
        EXPECT_FALSE(is_open(first)) << "the fd it held before the assignment";
        EXPECT_TRUE(is_open(second));
    }
    EXPECT_FALSE(is_open(second)) << "the fd it held when it went out of scope";
}

TEST(UniqueFd, ResetClosesTheOldFdAndHoldsTheNewOne) {
    const auto [first, second] = two_fds();
    UniqueFd fd(first);
    fd.reset(second);
    EXPECT_FALSE(is_open(first));
    EXPECT_EQ(fd.get(), second);
    fd.reset();
    EXPECT_FALSE(is_open(second));
    EXPECT_FALSE(fd);
}

TEST(UniqueFd, MovingHandsTheFdOverAndClosesItOnce) {
    const auto [first, second] = two_fds();
    UniqueFd other(second);
    {
        UniqueFd from(first);
        UniqueFd to(std::move(from));
        EXPECT_FALSE(from);  // NOLINT(bugprone-use-after-move): the point of the test
        EXPECT_EQ(to.get(), first);
        other = std::move(to);
        EXPECT_FALSE(is_open(second));
    }
    EXPECT_TRUE(is_open(first)) << "moved out of the scope, so still open";
    EXPECT_EQ(other.get(), first);
}

TEST(UniqueFd, ReleaseGivesTheFdUpWithoutClosingIt) {
    const auto [first, second] = two_fds();
    UniqueFd keep_second(second);
    int released = -1;
    {
        UniqueFd fd(first);
        released = fd.release();
        EXPECT_FALSE(fd);
    }
    EXPECT_EQ(released, first);
    EXPECT_TRUE(is_open(first));
    ::close(first);
}

// An fd that goes out of scope on an error path must not change the errno being reported.
TEST(UniqueFd, ClosingLeavesErrnoAsItWas) {
    const auto [first, second] = two_fds();
    UniqueFd keep_second(second);
    errno = ENOENT;
    { UniqueFd fd(first); }
    EXPECT_EQ(errno, ENOENT);
    EXPECT_FALSE(is_open(first));
    // Even when close itself fails (EBADF: `first` is closed already).
    errno = EACCES;
    { UniqueFd stale(first); }
    EXPECT_EQ(errno, EACCES);
}

}  // namespace
}  // namespace vcpilot
