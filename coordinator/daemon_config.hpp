// A daemon's settings from a TOML file (--config FILE), read with the strict reader of
// config.hpp and handed to the daemon's command line (CLI11).
//
// Each top-level key is a long option's name without its dashes: `site = "osaka"` is
// `--site osaka`, a list (`listen = ["unix:/run/vcpilot/crmd.sock", "0.0.0.0:7400"]`) is a
// repeatable option given once per item, `behind-nat = true` a flag, a number an integer or
// float option. An option given on the command line wins over the file (the whole list, for a
// repeatable one). A key that names no option is an error naming the key and its line; so is a
// key whose value has the wrong type. The daemons read no file unless --config names one.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace vcpilot::coordinator {

// The name --config takes, and its help text, for add_option.
inline constexpr const char* kConfigOption = "--config";
inline constexpr const char* kConfigHelp =
    "read settings from this TOML file, each key an option's long name (site = \"osaka\", "
    "listen = [...]); the command line wins over it";

// The arguments to parse: argv's own, after the settings of the file that argv names with
// --config (none: argv's alone). `app` must already have its options, --config among them. The
// result is in CLI11's parse order (reversed, without the program's name): app.parse(result).
Result<std::vector<std::string>> arguments_with_config(const CLI::App& app, int argc,
                                                       const char* const* argv);

// Adds --config to `app` and parses argv with the file's settings: CLI11_PARSE for daemons.
// Returns the exit code when the program should end here (--help, a bad option or file; the
// message is printed as "PROGRAM: ..."), none when it should go on.
std::optional<int> parse_command_line(CLI::App& app, const char* program, int argc,
                                      const char* const* argv);

// Logs to stderr at `level` (--log-level's text: trace, debug, info, warn or error) under the
// program's name. Returns the exit code when it cannot (2 for a bad level), none when it did.
std::optional<int> start_logging(const char* program, const std::string& level);

// A daemon's main: runs `body` and returns its exit code; an exception that escapes it (CLI11's,
// an allocation's) is one line on stderr and exit code 1.
int guarded_main(const char* program, const std::function<int()>& body);

}  // namespace vcpilot::coordinator
