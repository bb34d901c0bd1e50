// Runs a command as the job user inside the job's namespaces, under the escape filter, and
// streams its output: the RUN and EXEC commands.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "pilot/namespaces.hpp"
#include "pilot/seccomp.hpp"
#include "pilot/validate.hpp"

namespace vcpilot::pilot {

struct JobCommand {
    std::vector<std::string> argv;
    std::map<std::string, std::string> env;  // the complete environment
    std::filesystem::path cwd;               // as seen inside the job
    std::string stdin_data;
};

enum class OutputStream { out, err };

// Called for each chunk of output; returning false stops the command (the client went away).
using OutputSink = std::function<bool(OutputStream, std::string_view)>;

// Checks a RUN request's command and environment; errors name the field.
Status check_job_command(const std::vector<std::string>& argv,
                         const std::map<std::string, std::string>& env);

// Runs the command to its end. Returns its exit code, or 128 + the signal that ended it.
Result<int> run_job_command(const JobCommand& command, const UserIdentity& user,
                            const JobNamespaceFds& namespaces, const EscapeFilter& filter,
                            const OutputSink& sink);

}  // namespace vcpilot::pilot
