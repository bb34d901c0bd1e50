// Test helper: the message of a Result that must be an error.
#pragma once

#include <algorithm>
#include <gtest/gtest.h>
#include <string>

#include "common/result.hpp"

namespace vcpilot {

// Fails the test unless `result` is an error whose message is a single line with no control
// characters: users see these messages in terminals and logs, one per line.
template <typename T>
std::string error_of(const Result<T>& result) {
    if (result.ok()) {
        ADD_FAILURE() << "expected an error, got a success";
        return "<success>";
    }
    const std::string& message = result.error().message;
    EXPECT_FALSE(message.empty());
    EXPECT_TRUE(std::none_of(message.begin(), message.end(),
                             [](char c) { return static_cast<unsigned char>(c) < 0x20; }))
        << "error message is not a single clean line: " << message;
    return message;
}

}  // namespace vcpilot
