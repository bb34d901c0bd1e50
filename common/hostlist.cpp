#include "common/hostlist.hpp"

#include <algorithm>
#include <charconv>
#include <fmt/format.h>

namespace vcpilot {

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

namespace {

// A name split at its last run of digits: "rack2-ib" is "rack", "2", "-ib".
struct NumberedName {
    std::string_view prefix;
    std::string_view digits;  // empty: no digits
    std::string_view suffix;
};

NumberedName split_number(std::string_view name) {
    std::size_t end = name.size();
    while (end > 0 && (name[end - 1] < '0' || name[end - 1] > '9')) {
        --end;
    }
    std::size_t start = end;
    while (start > 0 && name[start - 1] >= '0' && name[start - 1] <= '9' &&
           end - start < kMaxDigits) {
        --start;
    }
    return {name.substr(0, start), name.substr(start, end - start), name.substr(end)};
}

std::string range_text(const HostRun& run) {
    std::string text = padded(run.first, run.width);
    if (run.last != run.first) {
        text += "-" + padded(run.last, run.width);
    }
    return text;
}

}  // namespace

Result<std::string> compress_hostlist(const std::vector<std::string>& hosts) {
    std::vector<HostRun> runs;
    for (const std::string& host : hosts) {
        if (host.empty() || host.find_first_of(",[]") != std::string::npos) {
            return Error{fmt::format("'{}' cannot be named in a host list", host)};
        }
        const NumberedName name = split_number(host);
        if (name.digits.empty()) {
            HostRun plain;
            plain.prefix = host;
            runs.push_back(std::move(plain));
            continue;
        }
        const std::uint64_t number = to_number(name.digits);
        if (!runs.empty()) {
            HostRun& run = runs.back();
            if (run.width != 0 && run.prefix == name.prefix && run.suffix == name.suffix &&
                run.last + 1 == number && padded(number, run.width) == name.digits) {
                run.last = number;
                continue;
            }
        }
        runs.push_back(HostRun{.prefix = std::string(name.prefix),
                               .first = number,
                               .last = number,
                               .width = name.digits.size(),
                               .suffix = std::string(name.suffix)});
    }
    // Runs that follow each other with the same prefix and suffix share one bracket group.
    std::string out;
    for (std::size_t i = 0; i < runs.size();) {
        const HostRun& run = runs[i];
        std::size_t end = i + 1;
        while (run.width != 0 && end < runs.size() && runs[end].width != 0 &&
               runs[end].prefix == run.prefix && runs[end].suffix == run.suffix) {
            ++end;
        }
        if (!out.empty()) {
            out += ',';
        }
        if (run.width == 0) {
            out += run.prefix;
        } else if (end == i + 1 && run.first == run.last) {
            out += run.prefix + padded(run.first, run.width) + run.suffix;
        } else {
            out += run.prefix + '[';
            for (std::size_t k = i; k < end; ++k) {
                out += (k == i ? "" : ",") + range_text(runs[k]);
            }
            out += ']' + run.suffix;
        }
        i = end;
    }
    return out;
}

}  // namespace vcpilot
