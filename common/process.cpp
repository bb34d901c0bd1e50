#include "common/process.hpp"

#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

namespace vcpilot {

bool wait_for_exit(std::span<const pid_t> pids, std::chrono::steady_clock::time_point deadline) {
    bool all_watched = true;
    std::vector<pollfd> watched;
    for (pid_t pid : pids) {
        // glibc 2.36 declares pidfd_open without C linkage for C++; the raw call is the same.
        const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
        if (fd >= 0) {
            watched.push_back({fd, POLLIN, 0});
        } else if (errno != ESRCH) {
            all_watched = false;
        }
    }
    while (!watched.empty()) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            break;
        }
        if (::poll(watched.data(), watched.size(), static_cast<int>(left.count())) < 0 &&
            errno != EINTR) {
            break;
        }
        std::erase_if(watched, [](const pollfd& entry) {
            if (entry.revents == 0) {
                return false;
            }
            ::close(entry.fd);
            return true;
        });
    }
    const bool all_exited = watched.empty();
    for (const pollfd& entry : watched) {
        ::close(entry.fd);
    }
    return all_watched && all_exited;
}

}  // namespace vcpilot
