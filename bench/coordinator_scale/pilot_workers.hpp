// The big cluster's simulated pilots run in processes of their own, as pilots run on nodes of
// their own. In one process with the GRC and the CRMs, every call shares gRPC's one callback
// completion queue, and Debian's libgrpc (built without NDEBUG) looks through every outstanding
// operation of that queue at each completion (cq_check_tag in completion_queue.cc): at 10,000
// pilots some 40,000 operations, 12 % of all CPU, growing with the square of the pilots. The
// workers (tests/support's ChildProcess::start_worker) are forked before this process first uses
// gRPC, sites dealt out in contiguous runs, and take commands a line each:
//   prepare CLUSTER NODES JOB TARGET...  (a CRM target per site of the worker) -> prepared MINT_S
//   go                                   -> views READY TOTAL STEADY_NS BYTES SETUP_BYTES
//   drain MS                             -> drained
//   exit
// Every method throws std::runtime_error when a worker does not answer as it should.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bench/coordinator_scale/common.hpp"
#include "bench/coordinator_scale/options.hpp"
#include "bench/coordinator_scale/pilots.hpp"
#include "tests/support/process.hpp"

namespace vcpilot::coordinator::scale_bench {

class PilotWorkers {
  public:
    struct Views {
        std::size_t ready = 0, total = 0;
        Clock::time_point last;  // when the last worker's last pilot had the view
        std::uint64_t bytes = 0, setup_bytes = 0;
    };

    // Forks min(--pilot-workers, --sites) workers; node n of site s gets keys[(s - 1) * nodes + n].
    PilotWorkers(const Options& options, const std::vector<KeyPair>& keys,
                 const std::string& munge_socket);
    // Tells every worker to exit, and waits (30 s at most, then SIGKILL).
    ~PilotWorkers();
    PilotWorkers(const PilotWorkers&) = delete;
    PilotWorkers& operator=(const PilotWorkers&) = delete;

    // Each worker makes its pilots (credentials minted: not timed); the longest it took.
    double prepare(const std::string& cluster, std::uint32_t nodes, const std::string& job,
                   const std::vector<std::string>& targets, Clock::time_point deadline);
    // The pilots start.
    void go();
    // Waits for every worker's pilots to have the view, or to give up at `deadline`.
    Views wait_views(Clock::time_point deadline);
    // Waits (at most `wait`) for every pilot's stream to end, and drops the pilots.
    void drain(std::chrono::milliseconds wait);

    // CPU seconds the workers have used so far.
    double cpu_seconds() const;
    std::size_t size() const { return workers_.size(); }

  private:
    struct Worker {
        std::unique_ptr<testing::ChildProcess> process;
        testing::LineChannel channel;
        std::vector<std::uint32_t> sites;
    };

    void tell(Worker& worker, const std::string& line);
    // Every worker's answer, which must start with `word` and have `words` words.
    std::vector<std::vector<std::string>> answers(const std::string& word, std::size_t words,
                                                  Clock::time_point deadline);

    std::vector<Worker> workers_;
};

}  // namespace vcpilot::coordinator::scale_bench
