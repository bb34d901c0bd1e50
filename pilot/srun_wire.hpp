// What the job's srun (vc-srun, inside the job) and the pilot's srun relay say to each other
// over the relay's unix socket. A socket between a process and its own pilot on one node,
// carrying file descriptors, which gRPC cannot: one request, then signal numbers one way and
// the wait status the other.
//
//   vc-srun -> relay: u32 length, with SCM_RIGHTS carrying its stdin, stdout and stderr;
//                     then `length` bytes of the encoded SrunRequest;
//                     then an i32 for every signal vc-srun receives (to pass on to srun).
//   relay -> vc-srun: an i32, srun's wait status, when srun has ended.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace vcpilot::pilot {

struct SrunRequest {
    std::string cwd;
    std::vector<std::string> argv;  // argv[0] included
    std::vector<std::string> env;   // NAME=VALUE
};

inline constexpr std::size_t kMaxSrunRequestBytes = std::size_t{4} << 20;

// NUL-separated: cwd, the argument count, the arguments, the variable count, the variables.
std::string encode_srun_request(const SrunRequest& request);
Result<SrunRequest> decode_srun_request(std::string_view bytes);

}  // namespace vcpilot::pilot
