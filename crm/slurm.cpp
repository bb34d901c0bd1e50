#include "crm/slurm.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <boost/process/args.hpp>
#include <boost/process/child.hpp>
#include <boost/process/env.hpp>
#include <boost/process/exe.hpp>
#include <boost/process/extend.hpp>
#include <boost/process/io.hpp>
#include <boost/process/pipe.hpp>
#include <cerrno>
#include <fmt/format.h>
#include <iterator>

#include "common/process.hpp"
#include "common/text.hpp"

namespace vcpilot::coordinator {

namespace bp = boost::process;

namespace {

// A tool's complaint, for a one-line error: its first non-empty line of stderr.
std::string first_line(const std::string& text) {
    std::size_t start = 0;
    while (start < text.size()) {
        const std::size_t end = std::min(text.find('\n', start), text.size());
        if (end > start) {
            return quote(text.substr(start, end - start), 300);
        }
        start = end + 1;
    }
    return "no message";
}

}  // namespace

std::vector<std::string> pilot_job_arguments(const PilotJobRequest& request) {
    std::vector<std::string> args = {
        "--parsable",
        "--job-name=" + request.cluster_id,
        "--nodes=" + std::to_string(request.nodes),
        "--ntasks-per-node=1",
        "--vc-cluster=" + request.cluster_id,
        "--chdir=/",
        "--output=/dev/null",
        "--error=/dev/null",
    };
    if (request.time_limit_minutes > 0) {
        args.push_back("--time=" + std::to_string(request.time_limit_minutes));
    }
    // The batch step runs in the cluster's first node of this site; it only holds the
    // allocation, which ends when the CRM cancels the job.
    args.push_back("--wrap=exec /bin/sleep infinity");
    return args;
}

Result<std::string> parse_job_id(std::string_view sbatch_output) {
    std::string_view line = sbatch_output.substr(0, sbatch_output.find('\n'));
    line = line.substr(0, line.find(';'));
    if (line.empty() || line.size() > 20 ||
        line.find_first_not_of("0123456789") != std::string_view::npos) {
        return Error{fmt::format("sbatch printed {}, not a job id", quote(sbatch_output, 80))};
    }
    return std::string(line);
}

Slurm::Slurm(SlurmOptions options) : options_(std::move(options)) {}

Result<Slurm::Identity> Slurm::identity_of(const std::string& user) {
    passwd entry{};
    passwd* found = nullptr;
    std::vector<char> buffer(16384);
    const int error = ::getpwnam_r(user.c_str(), &entry, buffer.data(), buffer.size(), &found);
    if (error != 0 || found == nullptr) {
        return Error{
            fmt::format("user {} is not known on this site's controller", quote(user, 80))};
    }
    Identity identity{entry.pw_uid, entry.pw_gid, {}, entry.pw_name, entry.pw_dir};
    int count = 64;
    identity.groups.resize(static_cast<std::size_t>(count));
    if (::getgrouplist(entry.pw_name, entry.pw_gid, identity.groups.data(), &count) < 0) {
        identity.groups.resize(static_cast<std::size_t>(count));
        ::getgrouplist(entry.pw_name, entry.pw_gid, identity.groups.data(), &count);
    }
    identity.groups.resize(static_cast<std::size_t>(std::max(count, 0)));
    return identity;
}

Result<Slurm::Output> Slurm::run(const std::string& tool, const std::vector<std::string>& args,
                                 const std::optional<Identity>& as) const {
    bp::environment env;
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin";
    if (!options_.slurm_conf.empty()) {
        env["SLURM_CONF"] = options_.slurm_conf;
    }
    if (as) {
        env["HOME"] = as->home;
        env["USER"] = as->name;
        env["LOGNAME"] = as->name;
    }
    // Between fork and exec: only async-signal-safe calls, on what the parent prepared.
    const bool switch_user = as && as->uid != ::geteuid();
    auto become = [&as, switch_user](auto& exec) {
        if (!switch_user) {
            return;
        }
        if (::setgroups(as->groups.size(), as->groups.data()) != 0 ||
            ::setresgid(as->gid, as->gid, as->gid) != 0 ||
            ::setresuid(as->uid, as->uid, as->uid) != 0) {
            exec.set_error(std::error_code(errno, std::system_category()), "becoming the owner");
        }
    };
    const std::string exe = (options_.bin_dir / tool).native();
    bp::ipstream out, err;
    std::error_code ec;
    // clang-format off
    bp::child child(bp::exe = exe, bp::args = args, env, bp::std_in < bp::null,
                    bp::std_out > out, bp::std_err > err, bp::extend::on_exec_setup = become, ec);
    // clang-format on
    if (ec) {
        return Error{fmt::format("cannot run {}: {}", exe, ec.message())};
    }
    const pid_t pid = child.id();
    if (!wait_for_exit(std::span(&pid, 1), std::chrono::steady_clock::now() + options_.timeout)) {
        child.terminate(ec);
        return Error{fmt::format("{} did not answer within {} s (is slurmctld up?)", tool,
                                 options_.timeout.count())};
    }
    child.wait(ec);
    Output output;
    output.status = child.exit_code();
    output.out.assign(std::istreambuf_iterator<char>(out), {});
    output.err.assign(std::istreambuf_iterator<char>(err), {});
    return output;
}

Result<std::optional<std::string>> Slurm::find_pilot_job(const PilotJobRequest& request) const {
    auto ran = run("squeue",
                   {"--noheader", "--name=" + request.cluster_id, "--user=" + request.owner,
                    "--states=PENDING,CONFIGURING,RUNNING,SUSPENDED,REQUEUED", "--format=%i"},
                   std::nullopt);
    if (!ran) {
        return ran.error();
    }
    if (ran->status != 0) {
        return Error{fmt::format("squeue: {}", first_line(ran->err))};
    }
    if (ran->out.find_first_not_of(" \n") == std::string::npos) {
        return std::optional<std::string>{};
    }
    auto job = parse_job_id(ran->out.substr(ran->out.find_first_not_of(' ')));
    if (!job) {
        return Error{fmt::format("squeue printed {}, not a job id", quote(ran->out, 80))};
    }
    return std::optional<std::string>{*job};
}

Result<std::string> Slurm::submit_pilot_job(const PilotJobRequest& request) const {
    auto existing = find_pilot_job(request);
    if (!existing) {
        return existing.error();
    }
    if (*existing) {
        return **existing;
    }
    auto owner = identity_of(request.owner);
    if (!owner) {
        return owner.error();
    }
    auto ran = run("sbatch", pilot_job_arguments(request), *owner);
    if (!ran) {
        return ran.error();
    }
    if (ran->status != 0) {
        return Error{fmt::format("sbatch: {}", first_line(ran->err))};
    }
    return parse_job_id(ran->out);
}

Status Slurm::cancel(const std::string& job) const {
    auto ran = run("scancel", {job}, std::nullopt);
    if (!ran) {
        return ran.error();
    }
    // scancel of a job that ended is "Invalid job id specified" with status 0 or 1, by version.
    if (ran->status != 0 && ran->err.find("Invalid job id") == std::string::npos) {
        return Error{fmt::format("scancel {}: {}", job, first_line(ran->err))};
    }
    return {};
}

}  // namespace vcpilot::coordinator
