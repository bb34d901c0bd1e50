// The plugin's work in each Slurm context, one file each; plugin.cpp dispatches to them.
#pragma once

extern "C" {
#include <slurm/spank.h>
}

#include <string>
#include <vector>

#include "spank/config.hpp"
#include "spank/options.hpp"

namespace vcpilot::spank {

// srun/sbatch/salloc, after the options are parsed: refuses options that do not go together
// and what this build cannot do yet.
int local_post_options(const JobOptions& options);

// slurmd, once per node at allocation (PrologFlags=Alloc), as root: starts the job's pilot.
int job_prolog(spank_t sp, const SiteConfig& config, const JobOptions& options);

// slurmstepd, in each task before it becomes the user: waits for the pilot to be READY and
// joins the job's network, UTS and mount namespaces; on any failure the task is not run.
int task_init_privileged(spank_t sp, const SiteConfig& config, const JobOptions& options);

// slurmstepd, in each task as the user, in the job's namespaces, just before exec: for
// srun --mpi=pmix, starts the bridge's relay to Slurm's PMIx server (pmix_bridge.hpp).
int task_init(spank_t sp);

// slurmd, once per node at the job's end, as root: stops the pilot and checks nothing is left.
int job_epilog(spank_t sp, const SiteConfig& config, const JobOptions& options);

// This node's name as the pilot derives its run directory from it (the hostname).
std::string node_name();

// The job id, as text; empty with the error logged if Slurm does not give it.
std::string job_id(spank_t sp);

// argv for execv: pointers into `argv` (which must outlive them), then a null.
std::vector<char*> exec_args(std::vector<std::string>& argv);

}  // namespace vcpilot::spank
