#include "common/image_mount.hpp"

#include <algorithm>
#include <array>
#include <string>
#include <string_view>

#include "common/text.hpp"

namespace vcpilot {

namespace fs = std::filesystem;

bool is_within(const fs::path& path, const fs::path& root) {
    return std::mismatch(root.begin(), root.end(), path.begin(), path.end()).first == root.end();
}

Status check_image_mount_point(const fs::path& mount_point) {
    const std::string shown = quote(mount_point.native(), 200);
    if (!mount_point.is_absolute()) {
        return Error{shown + " must be an absolute path"};
    }
    if (mount_point == mount_point.root_path()) {
        return Error{"the image cannot cover / (use a directory such as /mnt, /opt or /srv)"};
    }
    // Where root processes of the job (sshd and what it loads: PAM and NSS modules, ld.so's
    // libraries and configuration) or the pilot look, or what the kernel and the job provide.
    static constexpr std::array<std::string_view, 16> kReserved = {
        "/bin",  "/boot", "/dev", "/etc",  "/lib", "/lib32", "/lib64", "/libx32",
        "/proc", "/root", "/run", "/sbin", "/sys", "/tmp",   "/usr",   "/var"};
    for (const std::string_view reserved : kReserved) {
        if (is_within(mount_point, fs::path(reserved))) {
            const bool tmp = reserved == "/tmp";
            return Error{shown + " is " + (mount_point == fs::path(reserved) ? "" : "inside ") +
                         std::string(reserved) +
                         (tmp ? ", which the job's own /tmp covers"
                              : ", where the job's root processes (sshd, its PAM and NSS "
                                "modules) take code or configuration from") +
                         "; use a directory such as /mnt, /opt or /srv"};
        }
    }
    return {};
}

}  // namespace vcpilot
