#include "spank/options.hpp"

#include <algorithm>
#include <filesystem>
#include <fmt/format.h>

#include "common/text.hpp"

namespace vcpilot::spank {

namespace {

constexpr std::size_t kMaxLabel = 32;
constexpr std::size_t kMaxPath = 4096;

bool is_label(std::string_view text) {
    return !text.empty() && text.size() <= kMaxLabel && text.front() != '-' && text.back() != '-' &&
           std::all_of(text.begin(), text.end(), [](char c) {
               return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
           });
}

bool is_cluster_id(std::string_view text) {
    return text.size() == 11 && text.starts_with("vc-") &&
           std::all_of(text.begin() + 3, text.end(),
                       [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

}  // namespace

Status apply_option(JobOptions& options, std::string_view name, std::string_view value) {
    const auto bad = [&](std::string_view why) {
        return Error{fmt::format("--{}={}: {}", name, quote(value, 80), why)};
    };
    options.enabled = true;  // every --vc-* option asks for the virtual cluster too
    if (name == "vc") {
        return {};
    }
    if (name == "vc-net") {
        auto net = Cidr::parse(value);
        if (!net) {
            return bad(net.error().message);
        }
        if (net->to_string() != value) {
            return bad(fmt::format("not a network address (did you mean {}?)", net->to_string()));
        }
        const int longest = net->family() == IpFamily::v4 ? 30 : 126;
        if (net->prefix() > longest) {
            return bad(fmt::format("too small: a virtual cluster needs at least a /{}", longest));
        }
        options.net = *net;
        return {};
    }
    if (name == "vc-overlay") {
        if (value == "vxlan") {
            options.overlay = Overlay::Vxlan;
        } else if (value == "n2n") {
            options.overlay = Overlay::N2n;
        } else {
            return bad("want vxlan or n2n");
        }
        return {};
    }
    if (name == "vc-image") {
        if (value.empty() || value.front() != '/' || value.size() > kMaxPath ||
            std::any_of(value.begin(), value.end(),
                        [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
            return bad("want an absolute path");
        }
        const std::filesystem::path path(value);
        if (path.lexically_normal().native() != value ||
            (value.size() > 1 && value.back() == '/')) {
            return bad("want a normalized path (no '.', '..', '//' or trailing '/')");
        }
        options.image = value;
        return {};
    }
    if (name == "vc-cluster") {
        if (!is_cluster_id(value)) {
            return bad("not a cluster id (vc- and 8 hexadecimal digits, as vcctl prints)");
        }
        options.cluster = value;
        return {};
    }
    if (name == "vc-keys") {
        if (value == "ca") {
            options.keys = KeyMode::Ca;
        } else if (value == "exchange") {
            options.keys = KeyMode::Exchange;
        } else {
            return bad("want ca or exchange");
        }
        return {};
    }
    if (name == "vc-hostname-prefix") {
        if (!is_label(value)) {
            return bad(
                fmt::format("want a lowercase host name label of at most {} characters "
                            "(a-z, 0-9, -)",
                            kMaxLabel));
        }
        options.hostname_prefix = value;
        return {};
    }
    return Error{fmt::format("--{}: not a vcpilot option", name)};
}

Status check_options(const JobOptions& options) {
    if (options.cluster.empty()) {
        return {};
    }
    const std::pair<bool, const char*> set_by_cluster[] = {
        {options.net.has_value(), "vc-net"},
        {options.overlay.has_value(), "vc-overlay"},
        {options.keys.has_value(), "vc-keys"},
        {!options.hostname_prefix.empty(), "vc-hostname-prefix"},
    };
    for (const auto& [given, name] : set_by_cluster) {
        if (given) {
            return Error{
                fmt::format("--{} cannot go with --vc-cluster: cluster {} already has its "
                            "own (set at vcctl create); drop --{}",
                            name, options.cluster, name)};
        }
    }
    return {};
}

}  // namespace vcpilot::spank
