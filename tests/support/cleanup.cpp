#include "tests/support/cleanup.hpp"

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace vcpilot::testing {
namespace {

// Slots of atomics, not a container behind a lock: the fatal-signal handler reads them.
std::array<std::atomic<pid_t>, 256> g_processes{};

// Set while clean_up_and_exit runs: the program ends with it, not with a thread's failure.
std::atomic<bool> g_exiting = false;

std::mutex g_dirs_mutex;
std::vector<std::filesystem::path>& dirs() {
    static std::vector<std::filesystem::path> list;
    return list;
}

extern "C" void kill_processes_and_die(int signal_number) {
    while (g_exiting.load()) {
        ::pause();  // clean_up_and_exit ends the whole program
    }
    for (auto& slot : g_processes) {
        const pid_t pid = slot.load();
        if (pid > 0) {
            ::kill(pid, SIGKILL);
        }
    }
    (void)::signal(signal_number, SIG_DFL);
    (void)::raise(signal_number);
}

}  // namespace

namespace leftovers {

void add_process(pid_t pid) {
    for (auto& slot : g_processes) {
        pid_t empty = 0;
        if (slot.compare_exchange_strong(empty, pid)) {
            return;
        }
    }
    throw std::runtime_error("more than 256 child processes to clean up after");
}

void forget_process(pid_t pid) {
    for (auto& slot : g_processes) {
        pid_t expected = pid;
        slot.compare_exchange_strong(expected, 0);
    }
}

void forget_every_process() {
    for (auto& slot : g_processes) {
        slot.store(0);
    }
}

void add_dir(const std::filesystem::path& dir) {
    std::lock_guard lock(g_dirs_mutex);
    dirs().push_back(dir);
}

void forget_dir(const std::filesystem::path& dir) {
    std::lock_guard lock(g_dirs_mutex);
    auto& list = dirs();
    list.erase(std::remove(list.begin(), list.end(), dir), list.end());
}

void clean_up_and_exit(int status) {
    g_exiting = true;
    std::vector<pid_t> killed;
    for (auto& slot : g_processes) {
        if (const pid_t pid = slot.exchange(0); pid > 0) {
            ::kill(pid, SIGKILL);
            killed.push_back(pid);
        }
    }
    for (const pid_t pid : killed) {
        int wait_status = 0;
        ::waitpid(pid, &wait_status, 0);
    }
    std::vector<std::filesystem::path> list;
    {
        std::lock_guard lock(g_dirs_mutex);
        list.swap(dirs());
    }
    // The program's other threads run on meanwhile and may add or delete files in a directory
    // while it is removed, which makes remove_all give up: try again.
    for (const auto& dir : list) {
        std::error_code error;
        for (int attempt = 0; attempt < 20 && std::filesystem::exists(dir, error); ++attempt) {
            std::filesystem::remove_all(dir, error);
        }
    }
    std::_Exit(status);
}

}  // namespace leftovers

void clean_up_on_signals(std::string program) {
    sigset_t stop;
    sigemptyset(&stop);
    for (const int signal_number : {SIGINT, SIGTERM, SIGHUP}) {
        sigaddset(&stop, signal_number);
    }
    ::pthread_sigmask(SIG_BLOCK, &stop, nullptr);
    std::thread([stop, program = std::move(program)] {
        int signal_number = 0;
        ::sigwait(&stop, &signal_number);
        (void)std::fprintf(stderr, "%s: signal %d: cleaning up\n", program.c_str(), signal_number);
        leftovers::clean_up_and_exit(128 + signal_number);
    }).detach();
    for (const int signal_number : {SIGABRT, SIGSEGV}) {
        (void)::signal(signal_number, kill_processes_and_die);
    }
}

}  // namespace vcpilot::testing
