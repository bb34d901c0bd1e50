#include "pilot/privileged/paths.hpp"

#include <algorithm>

#include "common/text.hpp"

namespace vcpilot::pilot {

namespace {
bool is_lower_alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
bool is_alnum(char c) {
    return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}
}  // namespace

Status check_job_id(std::string_view field, std::string_view id) {
    if (id.empty() || id.size() > 64) {
        return Error{std::string(field) + ": " + quote(id) + " must be 1 to 64 characters"};
    }
    if (id == "." || id == ".." || !std::all_of(id.begin(), id.end(), [](char c) {
            return is_alnum(c) || c == '_' || c == '.' || c == '-';
        })) {
        return Error{std::string(field) + ": " + quote(id) +
                     " may hold only letters, digits, '_', '.' and '-'"};
    }
    return {};
}

Status check_host_label(std::string_view field, std::string_view name) {
    if (name.empty() || name.size() > 63) {
        return Error{std::string(field) + ": " + quote(name) + " must be 1 to 63 characters"};
    }
    if (!std::all_of(name.begin(), name.end(),
                     [](char c) { return is_lower_alnum(c) || c == '-'; })) {
        return Error{std::string(field) + ": " + quote(name) +
                     " may hold only lower-case letters, digits and '-'"};
    }
    if (name.front() == '-' || name.back() == '-') {
        return Error{std::string(field) + ": " + quote(name) + " must not begin or end with '-'"};
    }
    return {};
}

Result<JobPaths> JobPaths::make(const std::filesystem::path& base, std::string_view node,
                                std::string_view job) {
    if (auto ok = check_job_id("node", node); !ok) {
        return ok.error();
    }
    if (auto ok = check_job_id("job", job); !ok) {
        return ok.error();
    }
    if (!base.is_absolute()) {
        return Error{"run directory " + quote(base.string()) + " must be an absolute path"};
    }
    return JobPaths(base / node / job, std::string(node), std::string(job));
}

}  // namespace vcpilot::pilot
