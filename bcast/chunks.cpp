#include "bcast/chunks.hpp"

#include <unistd.h>

#include <cerrno>
#include <fmt/format.h>

namespace vcpilot::bcast {

Status read_exactly(int fd, std::span<std::byte> out, std::uint64_t offset) {
    std::size_t done = 0;
    while (done < out.size()) {
        const ssize_t n =
            ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return Error{fmt::format("at byte {}: {}", offset + done,
                                     n < 0 ? errno_text(errno) : "the file ends there")};
        }
        done += static_cast<std::size_t>(n);
    }
    return {};
}

}  // namespace vcpilot::bcast
