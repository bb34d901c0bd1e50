// Leftovers: what a test program or benchmark started and must not leave behind when it is
// stopped or crashes. ChildProcess (process.hpp) lists each child while it runs, TempDir
// (temp_dir.hpp) each directory it will remove; destructors clean up on every ordinary path.
// For the other paths a program calls clean_up_on_signals() once, first thing in main:
//   - SIGINT, SIGTERM, SIGHUP: a thread of its own kills every listed process (SIGKILL, reaped),
//     removes every listed directory and exits with 128 + the signal (clean_up_and_exit);
//   - SIGABRT, SIGSEGV: the handler kills every listed process (all it may do there) and the
//     program dies of the signal as it would have; during clean_up_and_exit (whose kills make
//     other threads fail), it waits for that to end the program instead.
// The lists are process-wide; a forked child starts with an empty list of processes.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>

namespace vcpilot::testing {

namespace leftovers {

// A child (by pid) to kill if the program is stopped. At most 256 at once.
void add_process(pid_t pid);
void forget_process(pid_t pid);
// In a forked child: the parent's processes are not the child's to kill.
void forget_every_process();

// A directory to remove if the program is stopped.
void add_dir(const std::filesystem::path& dir);
void forget_dir(const std::filesystem::path& dir);

// Kills and reaps every listed process, removes every listed directory, then ends the program
// with _Exit(status). While it runs, a thread that aborts or faults (once clean_up_on_signals
// installed the handlers) waits for it instead of ending the program half-way. Not for a signal
// handler (it allocates and takes a lock); safe from any thread.
[[noreturn]] void clean_up_and_exit(int status);

}  // namespace leftovers

// Blocks the stop signals in this thread (so call it before any other thread starts: threads
// inherit the mask) and installs the handling described above; `program` prefixes the one line
// it prints on a stop signal. Children started by ChildProcess get a clear mask again.
void clean_up_on_signals(std::string program);

}  // namespace vcpilot::testing
