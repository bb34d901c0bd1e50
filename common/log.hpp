// Process-wide logging on spdlog: one default logger, to stderr and/or a file.
#pragma once

#include <filesystem>
#include <optional>
#include <spdlog/common.h>
#include <string_view>

#include "common/result.hpp"

namespace vcpilot {

struct LogOptions {
    spdlog::level::level_enum level = spdlog::level::info;
    std::optional<std::filesystem::path> file;  // appended to; missing directories are created
    bool to_stderr = true;
};

// "trace", "debug", "info", "warn" (or "warning"), "error", "critical", "off"; any case.
Result<spdlog::level::level_enum> parse_log_level(std::string_view name);

// Replaces spdlog's default logger with one named `program_name`, so spdlog::info() and friends
// write lines like "2024-05-01T12:00:00.123 vc-crmd[4242] info: listening on [::]:7400".
// May be called again (for example after parsing the command line) to change the set-up.
Status init_logging(std::string_view program_name, const LogOptions& options);

}  // namespace vcpilot
