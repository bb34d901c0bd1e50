// Settings of the gRPC runtime that every vcpilot daemon applies once, first thing in main().
#pragma once

namespace vcpilot {

// Debian builds Abseil without NDEBUG, which leaves absl::Mutex's lock-order (deadlock) graph on:
// every lock gRPC takes updates a global graph under a global lock. Upstream release builds
// have it off; so do we. It measured 3-4 % of all CPU at 10,000 pilot streams (bench
// coordinator-scale).
void tune_grpc_runtime();

}  // namespace vcpilot
