// Test helper: a private munged with its own key and socket in a temporary directory, stopped
// (by its pid) when the test ends. Nothing is shared with a munged of the host, if any.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>

#include "common/munge.hpp"
#include "tests/support/temp_dir.hpp"

namespace vcpilot {

// Makes a MUNGE key in `dir` and starts a private munged there, as user munge (its output in
// munged.out); its pid. Root only. The child clears its signal mask: a caller may block the
// stop signals for a thread of its own.
inline pid_t start_private_munged(const std::filesystem::path& dir) {
    const std::string d = dir.string();
    const std::string setup = "mungekey --create --keyfile=" + d + "/munge.key && chown munge " +
                              d + " " + d + "/munge.key && chmod 0400 " + d +
                              "/munge.key && chmod 0755 " + d;  // munged wants it searchable
    if (std::system(setup.c_str()) != 0) {
        throw std::runtime_error("cannot make a MUNGE key in " + d +
                                 " (are munge and its user installed? run as root)");
    }
    const pid_t pid = ::fork();
    if (pid < 0) {
        throw std::runtime_error("fork failed");
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        const std::string socket = "--socket=" + d + "/munge.socket";
        const std::string key = "--key-file=" + d + "/munge.key";
        const std::string pid_file = "--pid-file=" + d + "/munged.pid";
        const std::string log = "--log-file=" + d + "/munged.log";
        const std::string seed = "--seed-file=" + d + "/munged.seed";
        // munged in the foreground also talks on stderr: keep the caller's output clean.
        const int out = ::open((d + "/munged.out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (out >= 0) {
            ::dup2(out, STDOUT_FILENO);
            ::dup2(out, STDERR_FILENO);
        }
        ::execlp("setpriv", "setpriv", "--reuid=munge", "--regid=munge", "--init-groups", "--",
                 "munged", "--foreground", socket.c_str(), key.c_str(), pid_file.c_str(),
                 log.c_str(), seed.c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    return pid;
}

// Whether the munged on `socket` encodes a credential within `timeout`.
inline bool munged_answers(const std::string& socket, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!munge_encode("ping", socket)) {
        if (std::chrono::steady_clock::now() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
}

class TestMunged {
  public:
    // Whether this machine can run one (munged installed, a munge user, tests run as root).
    static bool available() {
        return ::geteuid() == 0 && std::system(
                                       "command -v munged >/dev/null && id munge "
                                       ">/dev/null 2>&1") == 0;
    }

    TestMunged() {
        pid_ = start_private_munged(dir_.path());
        if (!munged_answers(socket(), std::chrono::seconds(10))) {
            stop();
            throw std::runtime_error("munged did not start in " + dir_.path().string());
        }
    }
    ~TestMunged() { stop(); }
    TestMunged(const TestMunged&) = delete;
    TestMunged& operator=(const TestMunged&) = delete;

    std::string socket() const { return (dir_.path() / "munge.socket").string(); }

    // A credential minted by `uid` (a child process that becomes that user).
    std::string credential_as(uid_t uid, const std::string& payload) const {
        int pipe_fds[2];
        if (::pipe(pipe_fds) != 0) {
            throw std::runtime_error("pipe failed");
        }
        const pid_t child = ::fork();
        if (child == 0) {
            ::close(pipe_fds[0]);
            if (::setgid(uid) != 0 || ::setuid(uid) != 0) {
                ::_exit(1);
            }
            auto credential = munge_encode(payload, socket());
            if (!credential) {
                ::_exit(2);
            }
            const ssize_t written = ::write(pipe_fds[1], credential->data(), credential->size());
            ::_exit(written == static_cast<ssize_t>(credential->size()) ? 0 : 3);
        }
        ::close(pipe_fds[1]);
        std::string out;
        char buffer[4096];
        ssize_t n = 0;
        while ((n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0) {
            out.append(buffer, static_cast<std::size_t>(n));
        }
        ::close(pipe_fds[0]);
        int status = 0;
        ::waitpid(child, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            throw std::runtime_error("cannot mint a credential as uid " + std::to_string(uid));
        }
        return out;
    }

  private:
    void stop() {
        if (pid_ > 0) {
            ::kill(pid_, SIGTERM);
            int status = 0;
            ::waitpid(pid_, &status, 0);
            pid_ = -1;
        }
    }

    TempDir dir_;
    pid_t pid_ = -1;
};

}  // namespace vcpilot
