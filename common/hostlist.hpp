// Slurm hostlist expressions, as Slurm gives a job's nodes to its prolog (SLURM_JOB_NODELIST):
// "site1-node[1-4]", "a[01-03,07],b5". Pure C++, so that the plugin need not link libslurm. The
// plugin reads them, and writes the job's node lists in virtual names; the pilot's srun relay
// turns them back; the coordinators send a site's Slurm nodes in one.
//
// Supported: comma-separated host groups, each a plain name or prefix[ranges]suffix with at
// most one bracket group; ranges are comma-separated numbers or lo-hi spans, zero-padded to
// the width of their low end as Slurm writes them ("[08-10]" is 08, 09, 10). Anything else
// (two bracket groups in a host, unbalanced brackets, empty names, hi < lo) is refused.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace vcpilot {

// Expressions naming more hosts than this are refused: no real job has that many nodes.
inline constexpr std::size_t kMaxHostlistHosts = 1'000'000;

// One run of hosts: prefix, then the numbers first..last zero-padded to width, then suffix.
// A plain host name is a run without numbers (width 0).
struct HostRun {
    std::string prefix;
    std::uint64_t first = 0;
    std::uint64_t last = 0;
    std::size_t width = 0;  // 0: no number
    std::string suffix;

    std::size_t size() const { return static_cast<std::size_t>(last - first + 1); }
};

// The expression's runs, in its order; refused when unparsable or naming more than
// `max_hosts` hosts.
Result<std::vector<HostRun>> parse_hostlist(std::string_view expression,
                                            std::size_t max_hosts = kMaxHostlistHosts);

// Every host name of the expression, in its order.
Result<std::vector<std::string>> expand_hostlist(std::string_view expression,
                                                 std::size_t max_hosts = kMaxHostlistHosts);

// `host`'s 1-based place among the expression's hosts (its first, if named twice), found
// without expanding the list; refused when the expression is unparsable or lacks the host.
Result<std::uint32_t> rank_in_hostlist(std::string_view expression, std::string_view host);

// The hosts as one expression, in their order, each name's last run of digits folded into
// ranges as Slurm writes them: {"n1", "n2", "n3", "n7", "m"} is "n[1-3,7],m" and {"n08",
// "n09", "n10"} is "n[08-10]"; expand_hostlist() gives the same names back, in the same order.
// Refused when a name is empty or holds ',', '[' or ']', which the expression could not carry.
Result<std::string> compress_hostlist(const std::vector<std::string>& hosts);

}  // namespace vcpilot
