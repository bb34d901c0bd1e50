// Waiting for processes to exit without sleeping in steps: through pidfds, which become
// readable the moment their process exits.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <span>

namespace vcpilot {

// Waits until every process in `pids` has exited (a zombie has), or until `deadline`. A process
// that no longer exists counts as exited. Returns whether all of them exited in time; false too
// if one cannot be watched for another reason (no pidfd support), since it was not waited for.
// The processes are not reaped.
bool wait_for_exit(std::span<const pid_t> pids, std::chrono::steady_clock::time_point deadline);

}  // namespace vcpilot
