#include "pilot/privileged/files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>

namespace vcpilot::pilot {

int write_fully(int fd, std::string_view content) noexcept {
    while (!content.empty()) {
        const ssize_t n = ::write(fd, content.data(), content.size());
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno;
        }
        content.remove_prefix(static_cast<std::size_t>(n));
    }
    return 0;
}

void notify_eventfd(int fd) noexcept {
    const std::uint64_t one = 1;
    (void)(::write(fd, &one, sizeof one) < 0);
}

void drain_eventfd(int fd) noexcept {
    std::uint64_t count = 0;
    (void)(::read(fd, &count, sizeof count) < 0);
}

Status replace_file(const std::filesystem::path& path, std::string_view content, mode_t mode,
                    uid_t uid, gid_t gid) {
    const std::filesystem::path temp =
        path.parent_path() / ("." + path.filename().string() + ".tmp");
    ::unlink(temp.c_str());
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        return sys_error("create " + temp.string());
    }
    std::string failed;
    int error = write_fully(fd, content);
    if (error != 0) {
        failed = "write";
    } else if (::fchown(fd, uid, gid) != 0) {
        failed = "chown", error = errno;
    } else if (::fchmod(fd, mode) != 0) {
        failed = "chmod", error = errno;
    }
    if (::close(fd) != 0 && failed.empty()) {
        failed = "close", error = errno;
    }
    if (failed.empty() && ::rename(temp.c_str(), path.c_str()) != 0) {
        failed = "rename", error = errno;
    }
    if (!failed.empty()) {
        ::unlink(temp.c_str());
        return sys_error("write " + path.string() + ": " + failed, error);
    }
    return {};
}

}  // namespace vcpilot::pilot
