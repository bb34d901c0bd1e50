// vc-srun: `srun` as a task of a --vc job finds it (the pilot binds it over the real srun in the
// job's mount namespace). The job's network has no way to Slurm, so this hands the command to
// the pilot's srun relay (pilot/srun_relay.hpp) over the unix socket next to $VC_HOSTFILE:
// arguments, environment, working directory and the three standard streams; it passes on the
// signals it gets and exits as srun did.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "common/error.hpp"
#include "pilot/privileged/files.hpp"
#include "pilot/srun_wire.hpp"

namespace {

int g_signal_pipe[2] = {-1, -1};

void on_signal(int number) {
    const int saved = errno;
    const std::int32_t value = number;
    (void)(::write(g_signal_pipe[1], &value, sizeof value) < 0);
    errno = saved;
}

int fail(const std::string& message) {
    (void)std::fprintf(stderr, "vc-srun: %s\n", message.c_str());
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    const char* hostfile = std::getenv("VC_HOSTFILE");
    if (hostfile == nullptr || *hostfile == '\0') {
        return fail(
            "VC_HOSTFILE is not set: srun inside a --vc job goes through its pilot, "
            "found next to that file");
    }
    const std::string socket_path =
        (std::filesystem::path(hostfile).parent_path() / "srun.sock").native();

    vcpilot::pilot::SrunRequest request;
    char cwd[4096];
    request.cwd = ::getcwd(cwd, sizeof cwd) != nullptr ? cwd : "";
    request.argv.assign(argv, argv + argc);
    for (char** variable = environ; *variable != nullptr; ++variable) {
        request.env.emplace_back(*variable);
    }
    const std::string bytes = vcpilot::pilot::encode_srun_request(request);
    if (bytes.size() > vcpilot::pilot::kMaxSrunRequestBytes) {
        return fail("the command and its environment are too long");
    }

    const int connection = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, socket_path.c_str(), sizeof address.sun_path - 1);
    if (connection < 0 ||
        ::connect(connection, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
        return fail("cannot reach this node's pilot at " + socket_path + ": " +
                    vcpilot::errno_text(errno));
    }

    // The length, with our stdin, stdout and stderr.
    const std::uint32_t length = static_cast<std::uint32_t>(bytes.size());
    iovec data{const_cast<std::uint32_t*>(&length), sizeof length};
    alignas(cmsghdr) char control[CMSG_SPACE(3 * sizeof(int))] = {};
    msghdr message{};
    message.msg_iov = &data;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    cmsghdr* header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(3 * sizeof(int));
    const int streams[3] = {0, 1, 2};
    std::memcpy(CMSG_DATA(header), streams, sizeof streams);
    ssize_t sent = 0;
    do {
        sent = ::sendmsg(connection, &message, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    int error = sent < 0 ? errno : (sent == static_cast<ssize_t>(sizeof length) ? 0 : EIO);
    if (error == 0) {
        error = vcpilot::pilot::write_fully(connection, bytes);
    }
    if (error != 0) {
        return fail("cannot send the command to the pilot: " + vcpilot::errno_text(error));
    }

    if (::pipe2(g_signal_pipe, O_CLOEXEC) != 0) {
        return fail("pipe: " + vcpilot::errno_text(errno));
    }
    struct sigaction action {};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    for (const int number : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCONT}) {
        ::sigaction(number, &action, nullptr);
    }
    (void)::signal(SIGPIPE, SIG_IGN);

    for (;;) {
        pollfd fds[2] = {{connection, POLLIN, 0}, {g_signal_pipe[0], POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            return fail("poll: " + vcpilot::errno_text(errno));
        }
        if (fds[1].revents != 0) {
            std::int32_t number = 0;
            if (::read(g_signal_pipe[0], &number, sizeof number) == sizeof number) {
                vcpilot::pilot::write_fully(
                    connection,
                    std::string_view(reinterpret_cast<const char*>(&number), sizeof number));
            }
            continue;
        }
        std::int32_t status = 0;
        std::size_t got = 0;
        while (got < sizeof status) {
            const ssize_t n =
                ::read(connection, reinterpret_cast<char*>(&status) + got, sizeof status - got);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                return fail("the pilot went away before srun ended");
            }
            got += static_cast<std::size_t>(n);
        }
        if (WIFEXITED(status)) {
            return WEXITSTATUS(status);
        }
        if (WIFSIGNALED(status)) {
            return 128 + WTERMSIG(status);
        }
        return 1;
    }
}
