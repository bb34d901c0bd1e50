// The pilot's control service: the NodeManager's commands SETUP, GET_KEYS, SET_KEYS, RUN, EXEC,
// SHUTDOWN and GET_STATUS, and the state machine behind them. Operations that change the node
// are serialised; status reads and Watch streams never wait for them.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "pilot/launcher.hpp"
#include "pilot/namespaces.hpp"
#include "pilot/paths.hpp"
#include "pilot/seccomp.hpp"
#include "pilot/sshd.hpp"
#include "pilot/validate.hpp"
#include "vcpilot/v1/pilot.grpc.pb.h"

namespace vcpilot::pilot {

struct PilotOptions {
    SetupLimits limits;
    std::chrono::milliseconds teardown_grace{3000};
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
    // Blocks until the state is GONE or FAILED-after-stop, or the timeout passes.
    bool wait_until_stopped(std::chrono::milliseconds timeout) const;

  private:
    void set_state(v1::PilotState state, const std::string& reason = {});
    void write_state_file() const;  // with mutex_ held
    grpc::Status fail_setup(const std::string& reason);
    void reap_holder();
    grpc::Status run_command(grpc::ServerContext* context, const v1::RunRequest& request,
                             grpc::ServerWriter<v1::RunOutput>* writer);
    Status write_cluster_files(const std::vector<ClusterNodeView>& nodes);
    Status start_sshd();

    const JobPaths paths_;
    const PilotOptions options_;

    // Serialises the operations that change the node.
    std::mutex operation_mutex_;
    std::optional<SetupPlan> plan_;
    IpAddress underlay_ = *IpAddress::parse("0.0.0.0");
    std::string host_key_, user_key_;
    std::optional<EscapeFilter> filter_;
    std::optional<JobNamespaces> namespaces_;
    std::optional<Sshd> sshd_;
    LauncherThread launcher_;
    std::atomic<bool> stopped_ = false;

    // Guards status_ only; Watch streams wait on changed_.
    mutable std::mutex status_mutex_;
    mutable std::condition_variable changed_;
    v1::PilotStatus status_;
    std::uint64_t version_ = 0;  // counts state changes, for Watch
};

}  // namespace vcpilot::pilot
