// wan-delay: one direction of an emulated WAN link for the multi-site testbed, which has no
// `tc netem`. It runs in a router network namespace whose FORWARD chain sends every packet to an
// NFQUEUE queue, holds each packet there for a fixed delay, then accepts it.

#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <system_error>

#include "common/fd.hpp"
#include "delay_line.hpp"
#include "nf_queue.hpp"
#include "rate_limiter.hpp"

namespace wan_delay {
namespace {

constexpr int kExitUsage = 2;

// Messages read per wakeup at most, so that under load the packets due still leave on time.
constexpr int kMessagesPerWakeup = 256;

// Bounds the last read at exit, which must end even if traffic keeps coming.
constexpr int kMessagesAtExit = 1 << 16;

struct Options {
    uint16_t queue = 0;
    double delay_ms = 0;
    uint32_t max_queued = 65536;
};

struct Stats {
    uint64_t delayed = 0;           // held for the full delay, then accepted
    uint64_t released_at_exit = 0;  // accepted early because we were told to stop
    uint64_t dropped = 0;           // over --max-queued
    std::size_t peak_held = 0;
};

std::system_error sys_error(const std::string& what) {
    return std::system_error(errno, std::generic_category(), what);
}

// Returns an exit code when the program should stop right here (--help, bad arguments).
std::optional<int> parse_options(int argc, char** argv, Options& options) {
    CLI::App app{
        "Holds every packet of an NFQUEUE queue for a fixed delay, then accepts it: one direction "
        "of an emulated WAN link."};
    app.add_option("--queue", options.queue, "NFQUEUE queue number (iptables --queue-num)")
        ->required();
    app.add_option("--delay-ms", options.delay_ms, "one-way delay in milliseconds (fractions ok)")
        ->required()
        ->check(CLI::Range(0.0, 10000.0));
    app.add_option("--max-queued", options.max_queued,
                   "most packets held at once; past it the oldest are dropped")
        ->capture_default_str()
        ->check(CLI::Range(1u, 10'000'000u));
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& error) {
        if (error.get_exit_code() == 0) {
            return app.exit(error);  // --help
        }
        (void)std::fprintf(stderr, "wan-delay: %s (see --help)\n", error.what());
        return kExitUsage;
    }
    // CLI::Range lets NaN through: every comparison with it is false.
    if (!std::isfinite(options.delay_ms)) {
        (void)std::fprintf(stderr, "wan-delay: --delay-ms: not a number (see --help)\n");
        return kExitUsage;
    }
    return std::nullopt;
}

using vcpilot::UniqueFd;

// SIGTERM and SIGINT are blocked and read from a signalfd, so that stopping happens in the loop,
// between two steps, never in the middle of one. Blocked before the queue is bound, so that a
// signal during setup is kept for the loop instead of killing us with the queue bound.
UniqueFd open_stop_signal_fd() {
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    // pthread_sigmask, not sigprocmask, which POSIX leaves unspecified once a process has
    // threads; with our one thread the two do the same. It returns its error, errno stays put.
    if (const int error = pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr); error != 0) {
        throw std::system_error(error, std::generic_category(), "cannot block SIGTERM and SIGINT");
    }
    const int fd = signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK);
    if (fd < 0) {
        throw sys_error("cannot create a signalfd");
    }
    return UniqueFd(fd);
}

timespec time_until(Clock::time_point deadline) {
    const auto left = std::max(deadline - Clock::now(), Clock::duration::zero());
    const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(left);
    const auto nanoseconds = std::chrono::duration_cast<std::chrono::nanoseconds>(left - seconds);
    return timespec{static_cast<time_t>(seconds.count()), static_cast<long>(nanoseconds.count())};
}

// Releases packets as they fall due and takes in new ones, until SIGTERM or SIGINT; returns it.
int run(NfQueue& queue, DelayLine& line, int stop_fd, Stats& stats) {
    pollfd watched[] = {{queue.fd(), POLLIN, 0}, {stop_fd, POLLIN, 0}};
    for (;;) {
        if (const auto released = line.pop_due(Clock::now())) {
            queue.accept_through(released->newest_id);
            stats.delayed += released->count;
        }
        // ppoll, not poll: a timespec keeps sub-millisecond delays exact.
        const auto next_release = line.next_release();
        timespec timeout{};
        if (next_release) {
            timeout = time_until(*next_release);
        }
        if (ppoll(watched, 2, next_release ? &timeout : nullptr, nullptr) < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw sys_error("ppoll");
        }
        if (watched[1].revents != 0) {
            signalfd_siginfo info{};
            if (read(stop_fd, &info, sizeof info) != static_cast<ssize_t>(sizeof info)) {
                throw sys_error("cannot read the signalfd");
            }
            return static_cast<int>(info.ssi_signo);
        }
        if (watched[0].revents != 0) {
            queue.receive(kMessagesPerWakeup);
        }
    }
}

void print_stats(const Options& options, int stop_signal, const Stats& stats,
                 const std::optional<KernelQueueCounters>& kernel) {
    std::string kernel_part = "kernel counters unreadable";
    if (kernel) {
        kernel_part = "kernel dropped " + std::to_string(kernel->dropped_queue_full) +
                      " (queue full) and " + std::to_string(kernel->lost_socket_full) +
                      " (socket full)";
    }
    (void)std::fprintf(stderr,
                       "wan-delay: queue %u stopped by SIG%s: %" PRIu64 " packets delayed, %" PRIu64
                       " released early at exit, %" PRIu64
                       " dropped over --max-queued (peak %zu held); %s\n",
                       options.queue, sigabbrev_np(stop_signal), stats.delayed,
                       stats.released_at_exit, stats.dropped, stats.peak_held, kernel_part.c_str());
}

int serve(const Options& options) {
    // The default 50 us timer slack lets ppoll wake that much late, twice per round trip.
    if (prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL) < 0) {
        throw sys_error("cannot set the timer slack");
    }
    const UniqueFd stop_fd = open_stop_signal_fd();
    DelayLine line(std::chrono::duration_cast<Clock::duration>(
        std::chrono::nanoseconds(std::llround(options.delay_ms * 1e6))));
    Stats stats;
    RateLimiter drop_log(std::chrono::seconds(1));

    const auto on_packet = [&](NfQueue& queue, uint32_t id) {
        const auto now = Clock::now();
        if (line.size() >= options.max_queued) {
            // Drop the oldest, not the newcomer: the kernel looks up a single verdict's packet by
            // walking its queue from the oldest, so this is O(1) where dropping the newest would
            // walk every held packet, under a lock, once per packet of the overload.
            queue.drop(line.pop_oldest());
            ++stats.dropped;
            if (drop_log.allow(now)) {
                (void)std::fprintf(
                    stderr,
                    "wan-delay: %u packets held (--max-queued), dropping the oldest; "
                    "%" PRIu64 " dropped so far\n",
                    options.max_queued, stats.dropped);
            }
        }
        line.hold(id, now);
        stats.peak_held = std::max(stats.peak_held, line.size());
    };
    // Twice our own bound: the other half is for packets queued to our socket but not read yet,
    // so that under overload our bound, which says so in the log, trips before the kernel's.
    NfQueue queue(options.queue, 2 * options.max_queued, on_packet);
    (void)std::fprintf(stderr, "wan-delay: queue %u, delay %g ms, at most %u packets held\n",
                       options.queue, options.delay_ms, options.max_queued);

    const int stop_signal = run(queue, line, stop_fd.get(), stats);

    // What the kernel already queued to us leaves with the rest instead of being dropped with
    // the unbind.
    queue.receive(kMessagesAtExit);
    if (const auto rest = line.pop_all()) {
        queue.accept_through(rest->newest_id);
        stats.released_at_exit = rest->count;
    }
    const auto kernel = queue.kernel_counters();  // the unbind deletes them
    queue.close();
    print_stats(options, stop_signal, stats, kernel);
    return 0;
}

}  // namespace
}  // namespace wan_delay

int main(int argc, char** argv) {
    try {
        wan_delay::Options options;
        if (const auto exit_code = wan_delay::parse_options(argc, argv, options)) {
            return *exit_code;
        }
        return wan_delay::serve(options);
    } catch (const std::exception& error) {
        (void)std::fprintf(stderr, "wan-delay: %s\n", error.what());
        return 1;
    }
}
