#include "pilot/privileged/spawn.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/process/args.hpp>
#include <boost/process/child.hpp>
#include <boost/process/env.hpp>
#include <boost/process/extend.hpp>
#include <boost/process/io.hpp>
#include <boost/process/pipe.hpp>
#include <boost/process/search_path.hpp>
#include <cerrno>
#include <cstring>

#include "common/text.hpp"

namespace vcpilot::pilot {

namespace bp = boost::process;

namespace {

// Everything the child does between fork and exec; only async-signal-safe calls, all inputs
// prepared by the parent.
struct EnterJob {
    const JobNamespaceFds& namespaces;
    const EscapeFilter& filter;
    const std::vector<gid_t>& groups;
    uid_t uid;
    gid_t gid;
    const char* cwd;

    template <class Executor>
    void operator()(Executor& exec) const {
        // exec keeps the signal mask, and the pilot blocks its stop signals in every thread.
        sigset_t none;
        sigemptyset(&none);
        // NOLINTNEXTLINE(concurrency-mt-unsafe): the forked child has this one thread only
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        int error = namespaces.enter();
        if (error == 0) {
            error = filter.apply();
        }
        if (error == 0 && ::setgroups(groups.size(), groups.data()) != 0) {
            error = errno;
        }
        if (error == 0 && (::setresgid(gid, gid, gid) != 0 || ::setresuid(uid, uid, uid) != 0)) {
            error = errno;
        }
        if (error == 0 && ::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
            error = errno;
        }
        if (error == 0 && ::chdir(cwd) != 0 && ::chdir("/") != 0) {
            error = errno;
        }
        if (error != 0) {
            exec.set_error(std::error_code(error, std::system_category()),
                           "entering the job's namespaces");
        }
    }
};

}  // namespace

Result<int> run_job_command(const JobCommand& command, const UserIdentity& user,
                            const JobNamespaceFds& namespaces, const EscapeFilter& filter,
                            const OutputSink& sink) {
    // The program is looked up in the job's PATH as the node sees it: the job's view differs
    // only in /etc, /tmp, ~/.ssh and an optional image mount.
    std::filesystem::path program = command.argv[0];
    if (program.filename() == program) {
        const auto path_it = command.env.find("PATH");
        const std::string path = path_it == command.env.end() ? "/usr/bin:/bin" : path_it->second;
        std::vector<std::filesystem::path> dirs;
        for (std::size_t start = 0; start <= path.size();) {
            const auto end = std::min(path.find(':', start), path.size());
            if (end > start) {
                dirs.emplace_back(path.substr(start, end - start));
            }
            start = end + 1;
        }
        program = bp::search_path(command.argv[0], dirs);
        if (program.empty()) {
            return Error{"argv[0]: " + quote(command.argv[0]) + " not found in PATH"};
        }
    }

    int ngroups = 64;
    std::vector<gid_t> groups(static_cast<std::size_t>(ngroups));
    if (::getgrouplist(user.name.c_str(), user.gid, groups.data(), &ngroups) < 0) {
        groups.resize(static_cast<std::size_t>(ngroups));
        ::getgrouplist(user.name.c_str(), user.gid, groups.data(), &ngroups);
    }
    groups.resize(static_cast<std::size_t>(ngroups));

    bp::environment env;
    for (const auto& [name, value] : command.env) {
        env[name] = value;
    }
    const std::string cwd = command.cwd.string();
    bp::pipe out, err, in;
    std::error_code spawn_error;
    bp::child child(
        program, bp::args(std::vector<std::string>(command.argv.begin() + 1, command.argv.end())),
        env, bp::std_out > out, bp::std_err > err, bp::std_in < in,
        bp::extend::on_exec_setup =
            EnterJob{namespaces, filter, groups, user.uid, user.gid, cwd.c_str()},
        spawn_error);
    if (spawn_error) {
        return Error{"cannot start " + quote(command.argv[0]) + ": " + spawn_error.message()};
    }
    // Boost.Process has closed our copies of the child's ends, so end-of-file will come.
    // Small inputs only (the request carries them whole): write, then close for EOF.
    const char* data = command.stdin_data.data();
    std::size_t left = command.stdin_data.size();
    (void)::signal(SIGPIPE, SIG_IGN);
    while (left > 0) {
        const ssize_t n = ::write(in.native_sink(), data, left);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;  // the command does not read its input
        }
        data += n;
        left -= static_cast<std::size_t>(n);
    }
    in.close();

    pollfd fds[2] = {{out.native_source(), POLLIN, 0}, {err.native_source(), POLLIN, 0}};
    int open_streams = 2;
    bool cancelled = false;
    char buffer[16384];
    while (open_streams > 0) {
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || fds[i].revents == 0) {
                continue;
            }
            const ssize_t n = ::read(fds[i].fd, buffer, sizeof buffer);
            if (n > 0) {
                if (!cancelled && !sink(i == 0 ? OutputStream::out : OutputStream::err,
                                        std::string_view(buffer, static_cast<std::size_t>(n)))) {
                    cancelled = true;
                    child.terminate();
                }
            } else if (n == 0 || errno != EINTR) {
                fds[i].fd = -1;
                --open_streams;
            }
        }
    }
    std::error_code wait_error;
    child.wait(wait_error);
    if (wait_error) {
        return Error{"waiting for " + quote(command.argv[0]) + ": " + wait_error.message()};
    }
    // Boost.Process reports a signal death as the raw status; decode it the shell's way.
    const int native = child.native_exit_code();
    if (WIFSIGNALED(native)) {
        return 128 + WTERMSIG(native);
    }
    return WEXITSTATUS(native);
}

}  // namespace vcpilot::pilot
