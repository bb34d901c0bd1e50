// Child processes of a test program or benchmark: a daemon (vc-crmd, vc-grcd, munged, a script)
// started with exec, or a worker that runs a function of this program in a fork and talks to it
// over a pair of sockets, a line a message. Each is started, stopped and reaped by its own pid
// only, by the thread that owns its ChildProcess, and is listed with the leftovers (cleanup.hpp)
// while it runs; the destructor kills (SIGKILL) and reaps one that still runs.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common/result.hpp"

namespace vcpilot::testing {

using Clock = std::chrono::steady_clock;

// A program to exec.
struct ExecSpec {
    std::vector<std::string> argv;  // argv[0]: the program (a path, or looked up in PATH)
    // Where its stdout and stderr go (appended, after a "=== start N ===" line); empty: /dev/null.
    std::filesystem::path output;
};

// Where a daemon serves: a unix socket, or else a TCP port on 127.0.0.1.
struct Endpoint {
    std::string unix_socket;
    int tcp_port = 0;
};

// Whether something accepts connections at `endpoint` now.
bool accepts_connections(const Endpoint& endpoint);

// A port on 127.0.0.1 nothing listens on right now, below the ephemeral range (so that no
// outgoing connection takes it as its source port while a daemon restarts on it).
int free_loopback_port(std::mt19937_64& rng);

// "exited with status 1", "died of signal 9 (Killed)".
std::string describe_wait_status(int status);

// The last `lines` lines of a text file, each indented by four spaces.
std::string tail_of_file(const std::filesystem::path& file, std::size_t lines);

// The parent's or the worker's end of a connected pair of unix sockets between them, a line a
// message. Movable; closes its end. Sending to a worker that is gone is an error, not SIGPIPE.
class LineChannel {
  public:
    LineChannel() = default;
    explicit LineChannel(int fd) : fd_(fd) {}
    LineChannel(LineChannel&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    LineChannel& operator=(LineChannel&& other) noexcept;
    ~LineChannel();

    // One line (without its newline); an error if the other end is gone.
    Status send(const std::string& line);
    // The next line, waiting at most until `deadline`; nothing at end of input or in time.
    std::optional<std::string> receive(Clock::time_point deadline);
    // The other end reads end of input (and may still answer).
    void close_sending();

    int fd() const { return fd_; }

  private:
    int fd_ = -1;
};

class ChildProcess {
  public:
    explicit ChildProcess(std::string name) : name_(std::move(name)) {}
    ~ChildProcess();
    ChildProcess(const ChildProcess&) = delete;
    ChildProcess& operator=(const ChildProcess&) = delete;

    // Execs `spec`, again and again if need be (one at a time). The child gets /dev/null as
    // stdin, no other descriptor of this process, a clear signal mask with the stop signals at
    // their defaults, and SIGKILL when the thread that started it ends (start from the thread
    // that lives longest: the main thread). Only async-signal-safe calls run between fork and
    // exec, so a process with threads may call it.
    Status start(const ExecSpec& spec);

    // Forks a worker that runs `body` with its end of the channel and _exits with what it
    // returns (1 if it throws); the parent's end is returned. The worker keeps stdout, stderr and
    // the signal mask, loses every other descriptor, and gets SIGKILL when the starting thread
    // ends. Fork before this process starts threads that hold locks a worker needs (gRPC's).
    Result<LineChannel> start_worker(const std::function<int(LineChannel&)>& body);

    const std::string& name() const { return name_; }
    pid_t pid() const { return pid_; }
    bool running() const { return pid_ > 0; }
    int starts() const { return starts_; }
    // Where an exec'd child's output goes.
    const std::filesystem::path& output() const { return output_; }

    // If it has ended, how (and it is reaped); nothing while it runs or when none was started.
    std::optional<std::string> exited();
    // Waits until it accepts connections at `endpoint`; an error if it ends meanwhile ("NAME
    // exited with status 1 while starting") or `timeout` passes.
    Status wait_serving(const Endpoint& endpoint, std::chrono::milliseconds timeout);
    // SIGKILL and reap; an error if it had ended on its own before.
    Status kill9();
    // SIGTERM; it must exit with status 0 within `timeout` (else SIGKILL, reap and an error).
    Status terminate(std::chrono::milliseconds timeout);
    // Waits for it to end on its own; past `timeout`, SIGKILL. Its wait status, or an error
    // saying that it had to be killed.
    Result<int> wait_exit(std::chrono::milliseconds timeout);

  private:
    Status check_startable();
    // The output file opened for appending, after the start line; -1 if it cannot be.
    int open_output() const;
    void started(pid_t pid);
    int reap_blocking();

    std::string name_;
    std::filesystem::path output_;
    pid_t pid_ = -1;
    int starts_ = 0;
};

}  // namespace vcpilot::testing
