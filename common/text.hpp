// Helpers for putting untrusted text into one-line, user-facing error messages.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace vcpilot {

// `text` between single quotes, with control characters escaped (\n, \t, \x00, ...) so the
// message stays on one line and shows exactly what was given, and cut after `max_length` bytes
// (marked with "... (N bytes)") so a huge input cannot flood a log.
std::string quote(std::string_view text, std::size_t max_length = 64);

// `text` with control characters escaped, nothing else changed; for messages from libraries.
std::string single_line(std::string_view text);

}  // namespace vcpilot
