// srun's command line as the srun relay reads it: where srun's options end and its command
// begins, which options would run a command outside the job, and the node names in them.
//
// srun's options end at its command (or "--"): what follows is the command's own, such as a
// program's --epochs or --prolog, and is never read. A short option that takes a value takes
// the rest of its word or the next word (-w n1, -wn1, -lw n1); a long one takes "=value" or,
// when srun requires a value, the next word (--nodelist n1); getopt_long's unambiguous
// prefixes count (--nodel is --nodelist). An option srun does not know takes no value: srun
// refuses it anyway.
#pragma once

#include <string>
#include <vector>

#include "common/node_names.hpp"
#include "common/result.hpp"

namespace vcpilot::pilot {

// Whether srun would run a local command for these arguments (--prolog, --epilog); the error
// names the option.
Status check_relayed_srun(const std::vector<std::string>& argv);

// What the real srun gets for a request made inside the job: the node names of -w/--nodelist
// and -x/--exclude, and of the Slurm node variables (kSlurmNodeVariables) in `env`, turned from
// virtual names to Slurm's with `to_slurm`. A name it does not know stays as it is (srun then
// says it knows no such node); so does a value that is no hostlist.
std::vector<std::string> srun_argv_in_slurm_names(const std::vector<std::string>& argv,
                                                  const NameMap& to_slurm);
std::vector<std::string> srun_env_in_slurm_names(const std::vector<std::string>& env,
                                                 const NameMap& to_slurm);

}  // namespace vcpilot::pilot
