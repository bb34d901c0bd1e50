#include "common/text.hpp"

#include <gtest/gtest.h>
#include <string>

namespace vcpilot {
namespace {

using namespace std::string_literals;

TEST(Quote, WrapsTextInSingleQuotes) {
    EXPECT_EQ(quote("10.0.0.1"), "'10.0.0.1'");
    EXPECT_EQ(quote(""), "''");
}

TEST(Quote, EscapesControlCharactersSoTheMessageStaysOnOneLine) {
    EXPECT_EQ(quote("a\nb"), "'a\\nb'");
    EXPECT_EQ(quote("a\r\tb"), "'a\\r\\tb'");
    EXPECT_EQ(quote("a\0b"s), "'a\\x00b'");
    EXPECT_EQ(quote("\x1b[31m\x7f"), "'\\x1b[31m\\x7f'");
}

TEST(Quote, LeavesUtf8Readable) {
    EXPECT_EQ(quote("大阪"), "'大阪'");
}

TEST(Quote, CutsLongTextAndSaysHowLongItWas) {
    EXPECT_EQ(quote(std::string(100, 'x'), 4), "'xxxx'... (100 bytes)");
    EXPECT_EQ(quote("abcd", 4), "'abcd'");
    // "大" is three bytes; the cut backs off to a character boundary.
    EXPECT_EQ(quote("a大b", 2), "'a'... (5 bytes)");
}

TEST(SingleLine, EscapesControlCharactersOnly) {
    EXPECT_EQ(single_line("line 1\nline 2"), "line 1\\nline 2");
    EXPECT_EQ(single_line("it's fine"), "it's fine");
}

}  // namespace
}  // namespace vcpilot
