// UniqueFd: the one owner of a file descriptor in vcpilot; whatever holds an open descriptor
// holds it in one of these, so that every return path closes it exactly once.
#pragma once

#include <utility>

namespace vcpilot {

// An open file descriptor (or none: -1), closed when it goes out of scope or is replaced.
// Closing leaves errno as it was: an fd that goes out of scope on an error path must not change
// the errno the caller is about to report. Move-only.
class UniqueFd {
  public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
    UniqueFd& operator=(UniqueFd&& other) noexcept;
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd();

    int get() const { return fd_; }
    // Gives the descriptor up without closing it; this then holds none.
    int release() { return std::exchange(fd_, -1); }
    // Closes the descriptor held (if any) and holds `fd` instead.
    void reset(int fd = -1) noexcept;
    explicit operator bool() const { return fd_ >= 0; }

  private:
    int fd_ = -1;
};

}  // namespace vcpilot
