#include "coordinator/daemon_config.hpp"

#include <algorithm>
#include <cstdio>
#include <fmt/format.h>
#include <optional>
#include <string_view>

#include "common/log.hpp"
#include "coordinator/config.hpp"

namespace vcpilot::coordinator {

namespace {

// Where argv gives the option `option` ("--name VALUE", "--name=VALUE" or the flag alone), up to
// a "--"; none when it does not.
std::optional<int> option_index(std::string_view option, int argc, const char* const* argv) {
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--") {
            break;
        }
        if (arg == option ||
            (arg.size() > option.size() && arg.substr(0, option.size()) == option &&
             arg[option.size()] == '=')) {
            return i;
        }
    }
    return std::nullopt;
}

// The value of --config FILE or --config=FILE in argv; none when it is not there.
Result<std::optional<std::string>> config_path(int argc, const char* const* argv) {
    const std::string_view flag = kConfigOption;
    const auto index = option_index(flag, argc, argv);
    if (!index) {
        return std::optional<std::string>();
    }
    const std::string_view arg = argv[*index];
    if (arg.size() > flag.size()) {
        return std::optional<std::string>(arg.substr(flag.size() + 1));
    }
    if (*index + 1 >= argc) {
        return Error{fmt::format("{} needs a file", flag)};
    }
    return std::optional<std::string>(argv[*index + 1]);
}

// Whether argv gives the option named `name`.
bool given(std::string_view name, int argc, const char* const* argv) {
    return option_index(fmt::format("--{}", name), argc, argv).has_value();
}

// The file's value of `key` as the arguments of option --key: one per item of a list, a flag's
// name alone or nothing.
Result<std::vector<std::string>> option_arguments(const ConfigSection& root, const std::string& key,
                                                  const CLI::Option& option) {
    const std::string name = "--" + key;
    if (option.get_expected_max() == 0) {  // a flag
        auto on = root.get<bool>(key);
        if (!on) {
            return on.error();
        }
        return *on ? std::vector<std::string>{name} : std::vector<std::string>{};
    }
    if (option.get_items_expected_max() > 1) {  // repeatable
        auto items = root.get<std::vector<std::string>>(key);
        if (!items) {
            return items.error();
        }
        std::vector<std::string> arguments;
        arguments.reserve(items->size());
        for (const auto& item : *items) {
            arguments.push_back(fmt::format("{}={}", name, item));
        }
        return arguments;
    }
    // CLI11 appends a validator's description: "INT:INT in [1 - 3600]".
    const std::string type = option.get_type_name();
    auto is = [&type](std::string_view prefix) { return type.rfind(prefix, 0) == 0; };
    if (is("INT") || is("UINT")) {
        auto number = root.get<std::int64_t>(key);
        if (!number) {
            return number.error();
        }
        return std::vector<std::string>{fmt::format("{}={}", name, *number)};
    }
    if (is("FLOAT")) {
        auto number = root.get<double>(key);
        if (!number) {
            return number.error();
        }
        return std::vector<std::string>{fmt::format("{}={}", name, *number)};
    }
    auto text = root.get<std::string>(key);
    if (!text) {
        return text.error();
    }
    return std::vector<std::string>{name + "=" + *text};
}

}  // namespace

Result<std::vector<std::string>> arguments_with_config(const CLI::App& app, int argc,
                                                       const char* const* argv) {
    std::vector<std::string> arguments;
    auto path = config_path(argc, argv);
    if (!path) {
        return path.error();
    }
    if (path->has_value()) {
        auto file = ConfigFile::load(**path);
        if (!file) {
            return file.error();
        }
        const ConfigSection root = file->root();
        for (const CLI::Option* option : app.get_options()) {
            if (option == app.get_help_ptr()) {
                continue;  // "help" in a file is an unknown key, like "config"
            }
            for (const std::string& key : option->get_lnames()) {
                if (key == std::string_view(kConfigOption).substr(2) || !root.has(key)) {
                    continue;
                }
                auto settings = option_arguments(root, key, *option);
                if (!settings) {
                    return settings.error();
                }
                if (!given(key, argc, argv)) {
                    arguments.insert(arguments.end(), settings->begin(), settings->end());
                }
            }
        }
        if (auto ok = file->finish(); !ok) {
            return ok.error();
        }
    }
    arguments.insert(arguments.end(), argv + 1, argv + argc);
    std::reverse(arguments.begin(), arguments.end());
    return arguments;
}

std::optional<int> parse_command_line(CLI::App& app, const char* program, int argc,
                                      const char* const* argv) {
    // Read before parsing (arguments_with_config); the parse only has to accept it.
    app.add_option(
           kConfigOption, [](const CLI::results_t&) { return true; }, kConfigHelp)
        ->type_name("FILE");
    auto arguments = arguments_with_config(app, argc, argv);
    if (!arguments) {
        (void)std::fprintf(stderr, "%s: %s\n", program, arguments.error().message.c_str());
        return 2;
    }
    if (app.get_name().empty() && argc > 0) {
        app.name(argv[0]);  // as app.parse(argc, argv) would, for "Usage: PROGRAM"
    }
    try {
        app.parse(*arguments);
    } catch (const CLI::ParseError& error) {
        return app.exit(error);
    }
    return std::nullopt;
}

std::optional<int> start_logging(const char* program, const std::string& level) {
    auto parsed = parse_log_level(level);
    if (!parsed) {
        (void)std::fprintf(stderr, "%s: --log-level: %s\n", program,
                           parsed.error().message.c_str());
        return 2;
    }
    if (auto ok = init_logging(program, {*parsed, std::nullopt, true}); !ok) {
        (void)std::fprintf(stderr, "%s: %s\n", program, ok.error().message.c_str());
        return 1;
    }
    return std::nullopt;
}

int guarded_main(const char* program, const std::function<int()>& body) {
    try {
        return body();
    } catch (const std::exception& error) {
        (void)std::fprintf(stderr, "%s: %s\n", program, error.what());
        return 1;
    }
}

}  // namespace vcpilot::coordinator
