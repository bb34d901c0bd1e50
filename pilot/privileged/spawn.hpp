// Runs a command as the job user inside the job's namespaces, under the escape filter, and
// streams its output: the RUN and EXEC commands.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "pilot/privileged/namespaces.hpp"
#include "pilot/privileged/seccomp.hpp"

namespace vcpilot::pilot {

// The job user, as looked up on this node (validate.hpp lookup_user).
struct UserIdentity {
    std::string name;
    uid_t uid = 0;
    gid_t gid = 0;
    std::filesystem::path home;
};

struct JobCommand {
    std::vector<std::string> argv;
    std::map<std::string, std::string> env;  // the complete environment
    std::filesystem::path cwd;               // as seen inside the job
    std::string stdin_data;
};

enum class OutputStream { out, err };

// Called for each chunk of output; returning false stops the command (the client went away).
using OutputSink = std::function<bool(OutputStream, std::string_view)>;

// Runs the command to its end. Returns its exit code, or 128 + the signal that ended it.
Result<int> run_job_command(const JobCommand& command, const UserIdentity& user,
                            const JobNamespaceFds& namespaces, const EscapeFilter& filter,
                            const OutputSink& sink);

}  // namespace vcpilot::pilot
