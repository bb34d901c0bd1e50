// spank_vcpilot.so: the SPANK entry points. Each one finds out which Slurm context it runs in
// and hands over to that context's code (contexts.hpp, one file each); the option table and the
// site configuration are shared by all of them.
//
//   srun/sbatch/salloc (local, allocator)  options are registered and checked as they are
//                                          parsed: a bad value stops the submission.
//   slurmd (job_script): job_prolog        starts the job's pilot on the node (PrologFlags=Alloc)
//   slurmstepd (remote)                    task_init_privileged: the task joins the job's
//                                          virtual node, or is not run at all (fail closed).
//   slurmstepd (remote, as the user)       task_init: srun --mpi=pmix's bridge to the server.
//   slurmd (job_script): job_epilog        stops the pilot and checks that nothing is left.
//
// Slurm calls the plugin from C; no exception may cross that boundary, so every entry point
// catches everything and reports it as an error.
#include <algorithm>
#include <cstdarg>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

// The plugin is built with hidden visibility; what Slurm looks up by name is exported here.
#pragma GCC visibility push(default)
extern "C" {
#include <slurm/spank.h>

// slurmd looks these up by name; SPANK_PLUGIN alone gives them internal linkage in C++.
extern const char plugin_name[];
extern const char plugin_type[];
extern const unsigned int plugin_version;
extern const unsigned int spank_plugin_version;
SPANK_PLUGIN(vcpilot, 1)
}
#pragma GCC visibility pop

#include "spank/config.hpp"
#include "spank/contexts.hpp"
#include "spank/options.hpp"

namespace {

using namespace vcpilot::spank;

// One plugin instance per process (srun, sbatch, slurmstepd, slurmd): plain globals suffice.
SiteConfig g_config;
JobOptions g_options;

int on_option(int val, const char* optarg, int /*remote*/) {
    try {
        if (val < 0 || static_cast<std::size_t>(val) >= std::size(kOptions)) {
            return -1;
        }
        if (auto ok = apply_option(g_options, kOptions[val].name, optarg ? optarg : ""); !ok) {
            slurm_error("vcpilot: %s", ok.error().message.c_str());
            return -1;
        }
        return 0;
    } catch (const std::exception& e) {
        slurm_error("vcpilot: %s", e.what());
        return -1;
    }
}

int register_options(spank_t sp) {
    for (std::size_t i = 0; i < std::size(kOptions); ++i) {
        spank_option option{};
        option.name = const_cast<char*>(kOptions[i].name);
        option.arginfo =
            *kOptions[i].arginfo != 0 ? const_cast<char*>(kOptions[i].arginfo) : nullptr;
        option.usage = const_cast<char*>(kOptions[i].usage);
        option.has_arg = *kOptions[i].arginfo != 0 ? 1 : 0;
        option.val = static_cast<int>(i);
        option.cb = on_option;
        if (spank_option_register(sp, &option) != ESPANK_SUCCESS) {
            slurm_error("vcpilot: cannot register --%s", kOptions[i].name);
            return -1;
        }
    }
    return 0;
}

// The prolog and epilog run in a process of their own where slurm_spank_init is not called:
// the configuration comes from their own arguments, the job's options from the environment
// Slurm gives them (SPANK__SLURM_SPANK_OPTION_<plugin>_<option>, "(null)" for a flag).
int job_script_setup(int ac, char** av) {
    auto config = parse_config(std::vector<std::string>(av, av + ac));
    if (!config) {
        slurm_error("vcpilot: %s", config.error().message.c_str());
        return -1;
    }
    g_config = std::move(*config);
    g_options = JobOptions{};
    for (const auto& option : kOptions) {
        // Slurm turns what is not a letter or digit in the option's name into '_'.
        std::string name = std::string("SPANK__SLURM_SPANK_OPTION_vcpilot_") + option.name;
        std::replace(name.begin(), name.end(), '-', '_');
        const char* value = std::getenv(name.c_str());
        if (value == nullptr) {
            continue;
        }
        const std::string_view text = std::string_view(value) == "(null)" ? "" : value;
        if (auto ok = apply_option(g_options, option.name, text); !ok) {
            slurm_error("vcpilot: %s", ok.error().message.c_str());
            return -1;
        }
    }
    return 0;
}

template <typename F>
int guarded(const char* where, F&& body) noexcept {
    try {
        return body();
    } catch (const std::exception& e) {
        slurm_error("vcpilot: %s: %s", where, e.what());
    } catch (...) {
        slurm_error("vcpilot: %s: unexpected failure", where);
    }
    return -1;
}

}  // namespace

#pragma GCC visibility push(default)
extern "C" {

int slurm_spank_init(spank_t sp, int ac, char** av) {
    return guarded("init", [&] {
        auto config = parse_config(std::vector<std::string>(av, av + ac));
        if (!config) {
            slurm_error("vcpilot: %s", config.error().message.c_str());
            return -1;
        }
        g_config = std::move(*config);
        return register_options(sp);
    });
}

int slurm_spank_init_post_opt(spank_t /*sp*/, int /*ac*/, char** /*av*/) {
    return guarded("init_post_opt", [&] {
        const spank_context_t context = spank_context();
        if (context == S_CTX_LOCAL || context == S_CTX_ALLOCATOR) {
            return local_post_options(g_options);
        }
        return 0;
    });
}

int slurm_spank_job_prolog(spank_t sp, int ac, char** av) {
    return guarded("job_prolog", [&] {
        if (job_script_setup(ac, av) != 0) {
            return -1;
        }
        return job_prolog(sp, g_config, g_options);
    });
}

int slurm_spank_task_init_privileged(spank_t sp, int /*ac*/, char** /*av*/) {
    return guarded("task_init_privileged",
                   [&] { return task_init_privileged(sp, g_config, g_options); });
}

int slurm_spank_task_init(spank_t sp, int /*ac*/, char** /*av*/) {
    return guarded("task_init", [&] { return task_init(sp); });
}

int slurm_spank_job_epilog(spank_t sp, int ac, char** av) {
    return guarded("job_epilog", [&] {
        if (job_script_setup(ac, av) != 0) {
            return -1;
        }
        return job_epilog(sp, g_config, g_options);
    });
}

}  // extern "C"
#pragma GCC visibility pop
