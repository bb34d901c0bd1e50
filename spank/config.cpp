#include "spank/config.hpp"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/image_mount.hpp"
#include "common/text.hpp"

namespace vcpilot::spank {

namespace {

Status absolute_path(std::string_view key, std::string_view value) {
    if (value.empty() || value.front() != '/') {
        return Error{
            fmt::format("plugstack.conf: {}={}: want an absolute path", key, quote(value, 80))};
    }
    return {};
}

}  // namespace

Result<SiteConfig> parse_config(const std::vector<std::string>& arguments) {
    SiteConfig config;
    for (const auto& argument : arguments) {
        const auto equals = argument.find('=');
        if (equals == std::string::npos || equals == 0) {
            return Error{fmt::format("plugstack.conf: argument {} is not key=value (keys: {})",
                                     quote(argument, 80), fmt::join(kConfigKeys, ", "))};
        }
        const std::string key = argument.substr(0, equals);
        const std::string value = argument.substr(equals + 1);
        if (key == "crm") {
            if (value.empty()) {
                return Error{"plugstack.conf: crm= is empty (want HOST:PORT or unix:/PATH)"};
            }
            config.crm = value;
        } else if (key == "munge_socket") {
            if (auto ok = absolute_path(key, value); !ok) {
                return ok.error();
            }
            config.munge_socket = value;
        } else if (key == "pilot") {
            if (auto ok = absolute_path(key, value); !ok) {
                return ok.error();
            }
            config.pilot = value;
        } else if (key == "run_dir") {
            if (auto ok = absolute_path(key, value); !ok) {
                return ok.error();
            }
            config.run_dir = value;
        } else if (key == "image_mount") {
            if (auto ok = absolute_path(key, value); !ok) {
                return ok.error();
            }
            if (auto ok = check_image_mount_point(std::filesystem::path(value).lexically_normal());
                !ok) {
                return Error{fmt::format("plugstack.conf: image_mount={}: {}", quote(value, 80),
                                         ok.error().message)};
            }
            config.image_mount = value;
        } else if (key == "image_roots") {
            config.image_roots.clear();
            for (std::size_t start = 0; start <= value.size();) {
                const std::size_t end = std::min(value.find(':', start), value.size());
                const std::string root = value.substr(start, end - start);
                if (auto ok = absolute_path(key, root); !ok) {
                    return ok.error();
                }
                config.image_roots.push_back(root);
                start = end + 1;
            }
        } else if (key == "ready_timeout") {
            int seconds = 0;
            const auto [end, error] =
                std::from_chars(value.data(), value.data() + value.size(), seconds);
            if (error != std::errc{} || end != value.data() + value.size() || seconds < 1 ||
                seconds > 3600) {
                return Error{
                    fmt::format("plugstack.conf: ready_timeout={}: want seconds between 1 and 3600",
                                quote(value, 80))};
            }
            config.ready_timeout = std::chrono::seconds(seconds);
        } else if (key == "default_overlay" || key == "default_keys") {
            JobOptions probe;
            const char* option = key == "default_overlay" ? "vc-overlay" : "vc-keys";
            if (auto ok = apply_option(probe, option, value); !ok) {
                return Error{
                    fmt::format("plugstack.conf: {}={}: want {}", key, quote(value, 80),
                                key == "default_overlay" ? "vxlan or n2n" : "ca or exchange")};
            }
            if (probe.overlay) {
                config.overlay = *probe.overlay;
            }
            if (probe.keys) {
                config.keys = *probe.keys;
            }
        } else {
            return Error{fmt::format("plugstack.conf: unknown key {} (keys: {})", quote(key, 80),
                                     fmt::join(kConfigKeys, ", "))};
        }
    }
    return config;
}

}  // namespace vcpilot::spank
