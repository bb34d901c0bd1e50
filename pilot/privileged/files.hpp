// Writing files the pilot owns or hands to the job user, safely in directories the user may
// also write to.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string_view>

#include "common/result.hpp"

namespace vcpilot::pilot {

// Writes all of `content`, retrying interrupted and short writes. Returns 0 or an errno value.
// Async-signal-safe: usable in a child between fork and exec.
int write_fully(int fd, std::string_view content) noexcept;

// An eventfd as a wake-up for a poll loop: notify_eventfd makes it readable (from any thread;
// async-signal-safe), drain_eventfd, on a non-blocking one, makes it unreadable again.
void notify_eventfd(int fd) noexcept;
void drain_eventfd(int fd) noexcept;

// Replaces `path` with a file holding `content`, owned by uid:gid with `mode`: written to a
// fresh temporary file next to it (O_EXCL|O_NOFOLLOW, so nothing planted there is followed or
// reused), then renamed over it, so a reader never sees half a file and a symlink at `path` is
// replaced, not followed. On error nothing is left but the old file.
Status replace_file(const std::filesystem::path& path, std::string_view content, mode_t mode,
                    uid_t uid, gid_t gid);

}  // namespace vcpilot::pilot
