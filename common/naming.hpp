// Names that several programs must derive the same way.
#pragma once

#include <string>
#include <string_view>

namespace vcpilot {

// The id of the cluster a Slurm job asked for with --vc: its pilots (started by the SPANK
// plugin) attach to it, and the first of them makes it at the site's CRM.
inline std::string job_cluster_id(std::string_view job) {
    return "vcj-" + std::string(job);
}

}  // namespace vcpilot
