#include "common/log.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <fmt/format.h>
#include <memory>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <string>
#include <vector>

#include "common/text.hpp"

namespace vcpilot {

namespace {

// ISO 8601 local time, program[pid], level: message.
constexpr const char* kLogPattern = "%Y-%m-%dT%H:%M:%S.%e %n[%P] %^%l%$: %v";

bool equals_ignoring_case(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) ==
                      std::tolower(static_cast<unsigned char>(y));
           });
}

}  // namespace

Result<spdlog::level::level_enum> parse_log_level(std::string_view name) {
    struct Level {
        std::string_view name;
        spdlog::level::level_enum level;
    };
    static constexpr std::array kLevels{
        Level{"trace", spdlog::level::trace},       Level{"debug", spdlog::level::debug},
        Level{"info", spdlog::level::info},         Level{"warn", spdlog::level::warn},
        Level{"warning", spdlog::level::warn},      Level{"error", spdlog::level::err},
        Level{"critical", spdlog::level::critical}, Level{"off", spdlog::level::off},
    };
    for (const Level& level : kLevels) {
        if (equals_ignoring_case(name, level.name)) {
            return level.level;
        }
    }
    return Error{fmt::format(
        "unknown log level {}; use one of trace, debug, info, warn, error, critical, off",
        quote(name))};
}

Status init_logging(std::string_view program_name, const LogOptions& options) {
    std::vector<spdlog::sink_ptr> sinks;
    if (options.to_stderr) {
        sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    }
    if (options.file) {
        try {
            sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(
                options.file->string(), /*truncate=*/false));
        } catch (const spdlog::spdlog_ex& error) {
            // spdlog's message already names the file and the errno text.
            return Error{"cannot set up logging: " + single_line(error.what())};
        }
    }
    auto logger =
        std::make_shared<spdlog::logger>(std::string(program_name), sinks.begin(), sinks.end());
    logger->set_pattern(kLogPattern);
    logger->set_level(options.level);
    // Daemons log little, and the last lines before a crash are the ones that matter.
    logger->flush_on(spdlog::level::trace);
    spdlog::set_default_logger(std::move(logger));
    return {};
}

}  // namespace vcpilot
