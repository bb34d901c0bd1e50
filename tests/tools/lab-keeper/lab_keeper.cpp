// lab-keeper: the ancestor and reaper of every process the testbed starts.
//
// The testbed's daemons (slurmctld, slurmd, munged, wan-delay, and whatever they fork, such as
// slurmstepd) outlive the command that started them. Orphans are normally reaped by init, but
// not every machine has an init that reaps (these sandboxes do not), and leaked zombies soon
// exhaust pid_max. lab-keeper marks itself a child subreaper, runs the bring-up command, writes
// that command's exit status to a file so the caller can return, and then reaps every orphan
// that is reparented to it until none is left, when it exits too.
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>
#include <vector>

#include "common/error.hpp"

namespace {

void die(const char* what) {
    (void)std::fprintf(stderr, "lab-keeper: %s: %s\n", what, vcpilot::errno_text(errno).c_str());
    std::_Exit(111);
}

void usage() {
    (void)std::fprintf(
        stderr,
        "usage: lab-keeper --status-file FILE -- COMMAND [ARGS...]\n"
        "Runs COMMAND, writes its exit status to FILE when it ends, then stays to reap\n"
        "every descendant reparented to it; exits when none is left.\n");
}

// Encodes a wait status the way a shell reports it: the exit code, or 128 + the signal.
int shell_status(int status) {
    if (WIFEXITED(status)) {
        return WEXITSTATUS(status);
    }
    if (WIFSIGNALED(status)) {
        return 128 + WTERMSIG(status);
    }
    return 255;
}

void write_status_file(const std::string& path, int code) {
    // Written under a temporary name and renamed, so a reader never sees a partial file.
    const std::string tmp = path + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        die(("open " + tmp).c_str());
    }
    const std::string text = std::to_string(code) + "\n";
    if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
        die(("write " + tmp).c_str());
    }
    if (::close(fd) != 0) {
        die(("close " + tmp).c_str());
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        die(("rename " + tmp).c_str());
    }
}

// Once the bring-up command has ended, nobody reads our output any more; keeping the caller's
// terminal or pipe open would hang a caller that waits for end-of-file.
void detach_stdio() {
    const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0) {
        die("open /dev/null");
    }
    for (int fd = 0; fd <= 2; ++fd) {
        if (::dup2(null, fd) < 0) {
            die("dup2");
        }
    }
    ::close(null);
}

}  // namespace

int main(int argc, char** argv) {
    std::string status_file;
    int i = 1;
    for (; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--status-file" && i + 1 < argc) {
            status_file = argv[++i];
        } else if (arg == "--") {
            ++i;
            break;
        } else if (arg == "-h" || arg == "--help") {
            usage();
            return 0;
        } else {
            (void)std::fprintf(stderr, "lab-keeper: unexpected argument '%s'\n", arg.c_str());
            usage();
            return 2;
        }
    }
    if (status_file.empty() || i >= argc) {
        usage();
        return 2;
    }

    // Whatever the caller had open (pipes, lock files) must not be held by long-lived daemons:
    // a caller reading our output through a pipe would otherwise wait forever.
    if (::close_range(3, ~0U, 0) != 0) {
        die("close_range");
    }
    if (::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
        die("prctl(PR_SET_CHILD_SUBREAPER)");
    }
    const pid_t command = ::fork();
    if (command < 0) {
        die("fork");
    }
    if (command == 0) {
        ::execvp(argv[i], &argv[i]);
        (void)std::fprintf(stderr, "lab-keeper: exec %s: %s\n", argv[i],
                           vcpilot::errno_text(errno).c_str());
        std::_Exit(127);
    }

    for (;;) {
        int status = 0;
        const pid_t pid = ::waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == ECHILD) {
                return 0;  // every descendant has ended
            }
            die("waitpid");
        }
        if (pid == command) {
            write_status_file(status_file, shell_status(status));
            detach_stdio();
        }
    }
}
