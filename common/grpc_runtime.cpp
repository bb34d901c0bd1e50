#include "common/grpc_runtime.hpp"

#include <absl/synchronization/mutex.h>

namespace vcpilot {

void tune_grpc_runtime() {
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

}  // namespace vcpilot
