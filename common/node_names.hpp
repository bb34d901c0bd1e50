// A job's Slurm nodes under their virtual names. Inside a --vc job the allocation is the virtual
// cluster: the variables in which Slurm names the job's nodes (SLURM_JOB_NODELIST and the
// others below) name virtual nodes, so that launchers reading them (Open MPI's and MPICH's
// Slurm support, `scontrol show hostnames`) agree with the hostnames, /etc/hosts and hostfiles
// the job sees. The plugin renames them for every task; the pilot's srun relay renames them
// back, and the nodes named in srun's own options, for the real srun.
//
// The names come from the pilot's job/slurm_nodes file, one "<Slurm node> <virtual name>" a
// line, for the nodes of the job's cluster at this site.
#pragma once

#include <array>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.hpp"

namespace vcpilot {

using NameMap = std::map<std::string, std::string, std::less<>>;

// Variables that name the job's nodes: lists (hostlist expressions) and, with Slurm's default
// topology, the node's own place. SLURMD_NODENAME is left alone: it names the slurmd that runs
// the task, which is the Slurm node's, not the job's.
inline constexpr std::array<std::string_view, 4> kSlurmNodeVariables = {
    "SLURM_JOB_NODELIST", "SLURM_NODELIST", "SLURM_STEP_NODELIST", "SLURM_TOPOLOGY_ADDR"};

// Lists longer than this are not renamed: no job has that many nodes, and the srun relay,
// which renames what a job's user gives it, must not be made to build a million names.
inline constexpr std::size_t kMaxRenamedHosts = 65536;

// `expression` (a hostlist or one name) with every host found in `names` replaced by what it
// maps to, in the same order; hosts not found stay as they are. Refused when it is no hostlist
// or names more than kMaxRenamedHosts hosts.
Result<std::string> rename_hosts(std::string_view expression, const NameMap& names);

// The job/slurm_nodes file for these (Slurm node, virtual name) pairs.
std::string format_node_names(const std::vector<std::pair<std::string, std::string>>& pairs);

enum class NameDirection { to_virtual, to_slurm };

// The file's pairs as a map from Slurm node to virtual name (to_virtual) or back (to_slurm).
// A line that is not two words is an error naming it; a name given twice keeps its first pair.
Result<NameMap> parse_node_names(std::string_view text, NameDirection direction);

}  // namespace vcpilot
