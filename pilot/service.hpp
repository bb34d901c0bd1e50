// The pilot's control service: the NodeManager's commands SETUP, GET_KEYS, SET_KEYS, RUN, EXEC,
// SHUTDOWN and GET_STATUS, and the state machine behind them. Operations that change the node
// are serialised; status reads and Watch streams never wait for them.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/fd.hpp"
#include "pilot/privileged/privileged.hpp"
#include "pilot/srun_relay.hpp"
#include "pilot/validate.hpp"
#include "vcpilot/v1/pilot.grpc.pb.h"

namespace vcpilot::pilot {

// Slurm jobs: srun inside the job is vc-srun, which the pilot's relay serves (srun_relay.hpp).
struct SrunRelayOptions {
    std::filesystem::path srun;  // the real srun
    std::filesystem::path shim;  // vc-srun
    std::string slurm_conf;      // SLURM_CONF for the relayed srun; empty: the request's
};

struct PilotOptions {
    SetupLimits limits;
    std::chrono::milliseconds teardown_grace{3000};
    std::optional<SrunRelayOptions> srun_relay;
    // n2n's edge, for N2nOverlay; empty: kFixedN2nEdge if installed, else Debian's.
    std::filesystem::path n2n_edge;
};

// n2n's edge as scripts/build-n2n-edge.sh builds it: Debian's, with a fix to its peer table.
inline constexpr const char* kFixedN2nEdge = "/usr/local/lib/vcpilot/n2n/edge";
inline constexpr const char* kDebianN2nEdge = "/usr/sbin/edge";

// Receives a RUN or EXEC command's output, message by message, the exit status last. Returns
// false when nobody listens any more, which stops the command.
using RunOutputSink = std::function<bool(const v1::RunOutput&)>;

// One state change: the status after it, and its number (they count up from 1).
struct StatusChange {
    std::uint64_t version = 0;
    v1::PilotStatus status;
};

class PilotService final : public v1::Pilot::Service {
  public:
    PilotService(JobPaths paths, PilotOptions options);
    ~PilotService() override;

    grpc::Status Setup(grpc::ServerContext*, const v1::SetupRequest*, v1::PilotStatus*) override;
    grpc::Status GetKeys(grpc::ServerContext*, const v1::GetKeysRequest*,
                         v1::GetKeysResponse*) override;
    grpc::Status SetKeys(grpc::ServerContext*, const v1::SetKeysRequest*,
                         v1::PilotStatus*) override;
    grpc::Status Run(grpc::ServerContext*, const v1::RunRequest*,
                     grpc::ServerWriter<v1::RunOutput>*) override;
    grpc::Status Exec(grpc::ServerContext*, const v1::RunRequest*,
                      grpc::ServerWriter<v1::RunOutput>*) override;
    grpc::Status Shutdown(grpc::ServerContext*, const v1::ShutdownRequest*,
                          v1::PilotStatus*) override;
    grpc::Status GetStatus(grpc::ServerContext*, const v1::GetStatusRequest*,
                           v1::PilotStatus*) override;
    grpc::Status Watch(grpc::ServerContext*, const v1::WatchRequest*,
                       grpc::ServerWriter<v1::PilotStatus>*) override;

    // Tears the job down (SHUTDOWN, SIGTERM, the launcher's death) and ends in GONE, or FAILED
    // if something could not be removed. Idempotent.
    void stop(const std::string& reason);
    v1::PilotStatus status() const;
    // The status and the number of the last change, for a caller that then follows changes.
    StatusChange current_status() const;
    // Every state change after `version`, in order, waiting up to `timeout` for the first; empty
    // if none came. Only the most recent changes are kept: a caller that fell far behind gets
    // the newest of them.
    std::vector<StatusChange> changes_after(std::uint64_t version,
                                            std::chrono::milliseconds timeout) const;
    // Blocks until the state is GONE or FAILED-after-stop, or the timeout passes.
    bool wait_until_stopped(std::chrono::milliseconds timeout) const;
    // Readable after a state change (an eventfd, non-blocking; read it to clear): a poll loop
    // sees GONE at once. -1 if the eventfd could not be made.
    int state_changed_fd() const { return state_changed_.get(); }
    // Whether stop() has begun: the pilot will never serve a job again.
    bool stopping() const { return stopped_; }

    // RUN (as the job user) or EXEC (`as_root`) of `request` inside the job, its output handed
    // to `sink` until the command ends or `sink` returns false. For the Run and Exec RPCs and
    // for commands that come from the coordinator; several may run at once.
    grpc::Status run_command(const v1::RunRequest& request, bool as_root,
                             const RunOutputSink& sink);

  private:
    void set_state(v1::PilotState state, const std::string& reason = {});
    void write_state_file() const;  // with mutex_ held
    grpc::Status fail_setup(const std::string& reason);
    void release_holder();
    Status write_certificate_files(const ClusterPlan& cluster);
    Status write_cluster_files(const ClusterPlan& cluster);
    // Starts listening for ssh connections (an sshd per connection), or rewrites the config
    // the next sessions read.
    Status start_sshd(bool certificates);
    // n2n: starts edge in the node's network namespace, waits for its TAP device and moves it
    // into the job's as eth0. stop_edge() ends it (the TAP goes with it).
    Status start_n2n_overlay(const SetupPlan& plan, int job_netns_fd);
    void stop_edge();

    const JobPaths paths_;
    const PilotOptions options_;

    // Serialises the operations that change the node.
    std::mutex operation_mutex_;
    std::optional<SetupPlan> plan_;
    IpAddress underlay_ = *IpAddress::parse("0.0.0.0");
    std::string host_key_, user_key_;
    std::optional<EscapeFilter> filter_;
    std::unique_ptr<JobNamespaces> namespaces_;
    std::optional<Sshd> sshd_;
    pid_t edge_ = -1;  // n2n's edge, our child (forked by the launcher thread: it dies with it)
    std::unique_ptr<SrunRelay> srun_relay_;
    LauncherThread launcher_;
    std::atomic<bool> stopped_ = false;

    // Guards status_ only; Watch streams wait on changed_.
    mutable std::mutex status_mutex_;
    mutable std::condition_variable changed_;
    UniqueFd state_changed_;
    v1::PilotStatus status_;
    std::uint64_t version_ = 0;                // counts state changes, for Watch
    std::deque<StatusChange> recent_changes_;  // the last kKeptChanges, for changes_after()
    static constexpr std::size_t kKeptChanges = 64;
};

}  // namespace vcpilot::pilot
