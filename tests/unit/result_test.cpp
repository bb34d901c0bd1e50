#include "common/result.hpp"

#include <gtest/gtest.h>
#include <stdexcept>
#include <string>

namespace vcpilot {
namespace {

Result<int> half(int n) {
    if (n % 2 != 0) {
        return Error{"odd"};
    }
    return n / 2;
}

TEST(Result, HoldsAValue) {
    const auto result = half(8);
    EXPECT_TRUE(result.ok());
    EXPECT_TRUE(static_cast<bool>(result));
    EXPECT_EQ(result.value(), 4);
    EXPECT_EQ(*result, 4);
}

TEST(Result, HoldsAnError) {
    const auto result = half(3);
    EXPECT_FALSE(result.ok());
    EXPECT_FALSE(static_cast<bool>(result));
    EXPECT_EQ(result.error().message, "odd");
}

TEST(Result, ReadingTheWrongSideThrowsInsteadOfUndefinedBehaviour) {
    EXPECT_THROW((void)half(3).value(), std::logic_error);
    EXPECT_THROW((void)*half(3), std::logic_error);
    EXPECT_THROW((void)half(2).error(), std::logic_error);
    try {
        (void)half(3).value();
    } catch (const std::logic_error& error) {
        EXPECT_STREQ(error.what(), "Result::value() called on an error: odd");
    }
}

TEST(Result, ArrowReachesMembers) {
    Result<std::string> text = std::string("abc");
    EXPECT_EQ(text->size(), 3U);
    Result<std::string> failed = Error{"no"};
    EXPECT_THROW((void)failed->size(), std::logic_error);
}

TEST(Result, MovesTheValueOut) {
    Result<std::string> text = std::string(100, 'x');
    const std::string taken = std::move(text).value();
    EXPECT_EQ(taken.size(), 100U);
}

TEST(Status, IsSuccessByDefault) {
    const Status status;
    EXPECT_TRUE(status.ok());
    EXPECT_NO_THROW(status.value());
    EXPECT_THROW((void)status.error(), std::logic_error);
}

TEST(Status, CarriesAnError) {
    const Status status = Error{"disk full"};
    EXPECT_FALSE(status.ok());
    EXPECT_EQ(status.error().message, "disk full");
    EXPECT_THROW(status.value(), std::logic_error);
}

}  // namespace
}  // namespace vcpilot
