#include "spank/hostlist.hpp"

#include <algorithm>
#include <charconv>
#include <fmt/format.h>

namespace vcpilot::spank {

namespace {

// Up to 18 digits: any such number fits in 64 bits, and no node is numbered beyond that.
constexpr std::size_t kMaxDigits = 18;

bool all_digits(std::string_view text) {
    return !text.empty() && text.size() <= kMaxDigits &&
           std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::uint64_t to_number(std::string_view digits) {
    std::uint64_t value = 0;
    std::from_chars(digits.data(), digits.data() + digits.size(), value);
    return value;
}

std::string padded(std::uint64_t value, std::size_t width) {
    return fmt::format("{:0{}}", value, width);
}

// The expression's host groups: it split at the commas outside brackets.
Result<std::vector<std::string_view>> host_groups(std::string_view expression) {
    std::vector<std::string_view> groups;
    bool in_brackets = false;
    std::size_t start = 0;
    for (std::size_t i = 0; i <= expression.size(); ++i) {
        const char c = i < expression.size() ? expression[i] : ',';
        if (c == '[' || c == ']') {
            if (in_brackets == (c == '[')) {
                return Error{fmt::format("unbalanced brackets at character {}", i + 1)};
            }
            in_brackets = c == '[';
        } else if (c == ',' && !in_brackets) {
            if (i == start) {
                return Error{fmt::format("an empty host name at character {}", i + 1)};
            }
            groups.push_back(expression.substr(start, i - start));
            start = i + 1;
        }
    }
    if (in_brackets) {
        return Error{"a bracket is not closed"};
    }
    return groups;
}

}  // namespace

Result<std::vector<HostRun>> parse_hostlist(std::string_view expression, std::size_t max_hosts) {
    auto groups = host_groups(expression);
    if (!groups) {
        return groups.error();
    }
    std::vector<HostRun> runs;
    std::size_t total = 0;
    for (const std::string_view group : *groups) {
        const std::size_t open = group.find('[');
        if (open == std::string_view::npos) {
            if (total == max_hosts) {
                return Error{fmt::format("more than {} hosts", max_hosts)};
            }
            HostRun plain;
            plain.prefix = group;
            runs.push_back(std::move(plain));
            ++total;
            continue;
        }
        const std::size_t close = group.find(']', open);  // there is one: brackets balance
        const std::string_view suffix = group.substr(close + 1);
        if (suffix.find('[') != std::string_view::npos) {
            return Error{fmt::format("{}: more than one bracket group in a host", group)};
        }
        std::string_view ranges = group.substr(open + 1, close - open - 1);
        while (true) {
            const std::size_t comma = std::min(ranges.find(','), ranges.size());
            const std::string_view range = ranges.substr(0, comma);
            const std::size_t dash = range.find('-');
            const std::string_view low = range.substr(0, dash);
            const std::string_view high =
                dash == std::string_view::npos ? low : range.substr(dash + 1);
            if (!all_digits(low) || !all_digits(high)) {
                return Error{
                    fmt::format("{}: '{}' is not a number or a range of numbers", group, range)};
            }
            HostRun run{.prefix = std::string(group.substr(0, open)),
                        .first = to_number(low),
                        .last = to_number(high),
                        .width = low.size(),
                        .suffix = std::string(suffix)};
            if (run.last < run.first) {
                return Error{fmt::format("{}: the range {} runs backwards", group, range)};
            }
            if (run.last - run.first >= max_hosts - total) {
                return Error{fmt::format("more than {} hosts", max_hosts)};
            }
            total += run.size();
            runs.push_back(std::move(run));
            if (comma == ranges.size()) {
                break;
            }
            ranges.remove_prefix(comma + 1);
        }
    }
    return runs;
}

Result<std::vector<std::string>> expand_hostlist(std::string_view expression,
                                                 std::size_t max_hosts) {
    auto runs = parse_hostlist(expression, max_hosts);
    if (!runs) {
        return runs.error();
    }
    std::vector<std::string> hosts;
    for (const HostRun& run : *runs) {
        if (run.width == 0) {
            hosts.push_back(run.prefix + run.suffix);
            continue;
        }
        for (std::uint64_t number = run.first; number <= run.last; ++number) {
            hosts.push_back(run.prefix + padded(number, run.width) + run.suffix);
        }
    }
    return hosts;
}

Result<std::uint32_t> rank_in_hostlist(std::string_view expression, std::string_view host) {
    auto runs = parse_hostlist(expression);
    if (!runs) {
        return runs.error();
    }
    std::size_t before = 0;  // hosts in the runs before this one
    for (const HostRun& run : *runs) {
        if (run.width == 0) {
            if (host == run.prefix + run.suffix) {
                return static_cast<std::uint32_t>(before + 1);
            }
        } else if (host.size() > run.prefix.size() + run.suffix.size() &&
                   host.starts_with(run.prefix) && host.ends_with(run.suffix)) {
            const std::string_view number =
                host.substr(run.prefix.size(), host.size() - run.prefix.size() - run.suffix.size());
            if (all_digits(number)) {
                const std::uint64_t value = to_number(number);
                if (value >= run.first && value <= run.last && padded(value, run.width) == number) {
                    return static_cast<std::uint32_t>(before + (value - run.first) + 1);
                }
            }
        }
        before += run.size();
    }
    return Error{fmt::format("{} is not in it", host)};
}

}  // namespace vcpilot::spank
