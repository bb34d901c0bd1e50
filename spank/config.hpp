// The plugin's site configuration: the arguments after the plugin's path in plugstack.conf,
// key=value each. An unknown key or a bad value is a hard error that names it, so that a typo
// in a site's configuration is found at once and not guessed around.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "spank/options.hpp"

namespace vcpilot::spank {

struct SiteConfig {
    std::string crm = "unix:/run/vcpilot/crmd.sock";  // crm=
    std::string munge_socket;                         // munge_socket= (empty: libmunge's)
    std::string pilot = "/usr/local/sbin/vc-pilot";   // pilot=
    std::string run_dir = "/run/vcpilot";             // run_dir=
    std::chrono::seconds ready_timeout{60};           // ready_timeout=
    Overlay overlay = Overlay::Vxlan;                 // default_overlay=
    KeyMode keys = KeyMode::Ca;                       // default_keys=
    // --vc-image: the directory of every node the image is layered over (it must exist), and the
    // directories below which an image may be (the pilot also checks the job's user may read
    // it, so the default allows any directory the user can read).
    std::string image_mount = "/mnt";              // image_mount=
    std::vector<std::string> image_roots = {"/"};  // image_roots=DIR[:DIR...]
};

// The keys, for the error message and the README.
inline constexpr const char* kConfigKeys[] = {"crm",          "munge_socket",  "pilot",
                                              "run_dir",      "ready_timeout", "default_overlay",
                                              "default_keys", "image_mount",   "image_roots"};

Result<SiteConfig> parse_config(const std::vector<std::string>& arguments);

}  // namespace vcpilot::spank
