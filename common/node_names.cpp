#include "common/node_names.hpp"

#include <fmt/format.h>

#include "common/hostlist.hpp"

namespace vcpilot {

Result<std::string> rename_hosts(std::string_view expression, const NameMap& names) {
    auto hosts = expand_hostlist(expression, kMaxRenamedHosts);
    if (!hosts) {
        return hosts.error();
    }
    for (std::string& host : *hosts) {
        if (const auto found = names.find(host); found != names.end()) {
            host = found->second;
        }
    }
    return compress_hostlist(*hosts);
}

std::string format_node_names(const std::vector<std::pair<std::string, std::string>>& pairs) {
    std::string text;
    for (const auto& [host, name] : pairs) {
        text += fmt::format("{} {}\n", host, name);
    }
    return text;
}

Result<NameMap> parse_node_names(std::string_view text, NameDirection direction) {
    NameMap names;
    std::size_t number = 0;
    while (!text.empty()) {
        ++number;
        const std::size_t end = std::min(text.find('\n'), text.size());
        const std::string_view line = text.substr(0, end);
        text.remove_prefix(std::min(end + 1, text.size()));
        const std::size_t space = line.find(' ');
        if (space == 0 || space == std::string_view::npos || space + 1 == line.size() ||
            line.find(' ', space + 1) != std::string_view::npos) {
            return Error{fmt::format("line {} is not '<Slurm node> <virtual name>'", number)};
        }
        std::string host(line.substr(0, space));
        std::string name(line.substr(space + 1));
        if (direction == NameDirection::to_virtual) {
            names.emplace(std::move(host), std::move(name));
        } else {
            names.emplace(std::move(name), std::move(host));
        }
    }
    return names;
}

}  // namespace vcpilot
