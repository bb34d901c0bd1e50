// spank_vcpilot.so: the SPANK entry points. Each one finds out which Slurm context it runs in
// and hands over to that context's code; the option table and the site configuration are
// shared by all of them.
//
//   srun/sbatch/salloc (local, allocator)  options are registered, and checked as they are
//                                          parsed: a bad value stops the submission.
//   slurmstepd (remote)                    task_init_privileged: the task joins the job's
//                                          virtual cluster, or is not run at all (fail closed).
//
// Slurm calls the plugin from C; no exception may cross that boundary, so every entry point
// catches everything and reports it as an error.
#include <cstdarg>
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
#include "spank/options.hpp"

namespace {

using namespace vcpilot::spank;

// One plugin instance per process (srun, sbatch, slurmstepd, slurmd): plain globals suffice.
SiteConfig g_config;
JobOptions g_options;
// An error found where Slurm does not show it to the user (Slurm bug 7573: user_init), kept
// for the first context that can refuse the task with it.
std::string g_pending_error;

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
        option.arginfo = *kOptions[i].arginfo ? const_cast<char*>(kOptions[i].arginfo) : nullptr;
        option.usage = const_cast<char*>(kOptions[i].usage);
        option.has_arg = *kOptions[i].arginfo ? 1 : 0;
        option.val = static_cast<int>(i);
        option.cb = on_option;
        if (spank_option_register(sp, &option) != ESPANK_SUCCESS) {
            slurm_error("vcpilot: cannot register --%s", kOptions[i].name);
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

int slurm_spank_task_init_privileged(spank_t /*sp*/, int /*ac*/, char** /*av*/) {
    return guarded("task_init_privileged", [&] {
        if (!g_options.enabled) {
            return 0;  // a job without --vc is none of our business
        }
        // Fail closed: a task that asked for a virtual cluster never runs on the host network.
        // Starting the pilots from the job prolog and joining their namespaces here is the next
        // step of this plugin; until then, --vc jobs are refused rather than run unprotected.
        g_pending_error = "the virtual cluster could not be set up on this node: starting pilots "
                          "from Slurm is not available yet in this vcpilot build";
        slurm_error("vcpilot: %s", g_pending_error.c_str());
        return -1;
    });
}

}  // extern "C"
#pragma GCC visibility pop
