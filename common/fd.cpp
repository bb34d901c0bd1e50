#include "common/fd.hpp"

#include <unistd.h>

#include <cerrno>

namespace vcpilot {

namespace {

void close_keeping_errno(int fd) noexcept {
    if (fd < 0) {
        return;
    }
    const int saved = errno;
    // Not retried on EINTR: on Linux the descriptor is released whatever close returns, and a
    // second close could hit a descriptor another thread has just been given.
    ::close(fd);
    errno = saved;
}

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
        reset(other.release());
    }
    return *this;
}

UniqueFd::~UniqueFd() {
    close_keeping_errno(fd_);
}

void UniqueFd::reset(int fd) noexcept {
    close_keeping_errno(std::exchange(fd_, fd));
}

}  // namespace vcpilot
