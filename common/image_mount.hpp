// Where a job's image may be layered (--vc-image, `vcctl create --image`): the directory of the
// node, image_mount, over which the image is unioned inside the job. Checked by the SPANK plugin
// (plugstack.conf's image_mount=) and by the pilot (every SETUP), with the same rule.
#pragma once

#include <filesystem>

#include "common/result.hpp"

namespace vcpilot {

// The job's sshd and the pilot's helpers run as root in the job's view of the filesystem, and
// an image is usually the user's own files. So the image may not cover a directory that they
// take code, configuration or sockets from (/usr, /etc, /run, /var, ...), nor the root, /proc,
// /sys, /dev or /tmp (the job's own tmpfs covers it). `mount_point` is absolute and normal.
// The error names the path but not the setting; callers say which setting it came from.
Status check_image_mount_point(const std::filesystem::path& mount_point);

// Component by component: /srv/images-evil is not within /srv/images; a path is within itself.
bool is_within(const std::filesystem::path& path, const std::filesystem::path& root);

}  // namespace vcpilot
