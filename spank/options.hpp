// What a user may ask of vcpilot on sbatch/srun/salloc (--vc and its companions), checked
// before anything is submitted. Pure C++: the plugin calls it, the unit tests call it.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/ip.hpp"
#include "common/result.hpp"

namespace vcpilot::spank {

enum class Overlay { Vxlan, N2n };
enum class KeyMode { Ca, Exchange };

struct JobOptions {
    bool enabled = false;  // --vc, or any --vc-* option
    std::optional<Cidr> net;
    std::optional<Overlay> overlay;  // none: the site's default
    std::string image;
    std::string cluster;
    std::optional<KeyMode> keys;  // none: the site's default
    std::string hostname_prefix;
};

// One option of the table: its name without "--", the word shown for its argument (empty: a
// flag) and its help line.
struct OptionInfo {
    const char* name;
    const char* arginfo;
    const char* usage;
};

inline constexpr OptionInfo kOptions[] = {
    {"vc", "", "run the job in a private virtual cluster (vcpilot)"},
    {"vc-net", "CIDR", "the virtual cluster's address range (default: one is chosen)"},
    {"vc-overlay", "vxlan|n2n", "how the virtual nodes are linked (default: the site's)"},
    {"vc-image", "PATH", "a directory layered read-only over the nodes' /mnt"},
    {"vc-cluster", "ID", "join the virtual cluster ID reserved with vcctl"},
    {"vc-keys", "ca|exchange", "how virtual nodes trust each other's SSH keys (default: ca)"},
    {"vc-hostname-prefix", "P", "virtual host names are P-<site>-<i> (default: vc)"},
};

// Applies option `name` (without "--") with `value` (empty for --vc) to `options`. The error
// is one line that names the option and says what is wrong.
Status apply_option(JobOptions& options, std::string_view name, std::string_view value);

// Checks what the options mean together, once all are given: a cluster joined with
// --vc-cluster already has its range, overlay, SSH trust and host names, so --vc-net,
// --vc-overlay, --vc-keys and --vc-hostname-prefix cannot go with it. One line.
Status check_options(const JobOptions& options);

}  // namespace vcpilot::spank
