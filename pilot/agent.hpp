// The pilot's side of its site coordinator (vc-crmd, service Crm in coordinator.proto): one
// Crm.Attach stream that the pilot opens and keeps open for its whole life. Over it the pilot
// says who it is (a MUNGE credential of root on this node, bound to cluster, host and job),
// reports its keys and every state change, and takes the coordinator's commands: SETUP, the
// cluster view (SET_KEYS), SHUTDOWN and RUN/EXEC. Each command goes through the same code as the
// pilot's own RPC of that name.
//
// The agent runs on its own thread and never holds anything the pilot's unix-socket service
// needs. A broken stream is opened again with exponential backoff; a coordinator that refuses
// the pilot for good, or none reachable for too long, stops the pilot (the job cannot become
// part of its cluster any more, and what it holds should be freed).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/result.hpp"
#include "pilot/service.hpp"
#include "vcpilot/v1/coordinator.grpc.pb.h"

namespace vcpilot::pilot {

// Mints the credential that proves the caller is root on this node: munge_encode(payload).
using CredentialSource = std::function<Result<std::string>(std::string_view payload)>;

struct AgentOptions {
    std::string target;            // the CRM: a gRPC target, "unix:/path" or "host:port"
    std::string cluster_id;        // the cluster this pilot joins
    std::string job_id;            // the Slurm job
    std::string host;              // this physical node's name, as the site knows it
    std::string underlay_address;  // empty: the CRM takes the connection's source address
    // A job's own cluster (cluster_id "vcj-<job>"), made by the first of its pilots to attach.
    std::optional<v1::JobCluster> job_cluster;
    // A job joining a cluster reserved beforehand (--vc-cluster): its user, node count, image.
    std::optional<v1::JoinCluster> join;
    // This node's place in the Slurm job's node list, 1-based (0: unknown): the CRM gives the
    // pilot the node of that ordinal when it is free (PilotHello.rank).
    std::uint32_t rank = 0;
    CredentialSource credential;
    // Without any CRM (no connection, no credential) for this long in a row, the pilot stops.
    std::chrono::milliseconds give_up_after{60'000};
    // The wait before attaching again doubles from the first to the last value.
    std::chrono::milliseconds first_retry{100};
    std::chrono::milliseconds last_retry{5'000};
};

// "vcpilot-attach\n<cluster>\n<host>\n<job>": what the credential in PilotHello vouches for.
std::string attach_payload(const AgentOptions& options);

// A CredentialSource asking the munged listening on `socket` (empty: libmunge's default).
CredentialSource munge_credentials(std::string socket);

// The gRPC codes with which a CRM refuses a pilot for good; any other end of the stream is a
// break, and the pilot attaches again.
bool is_final_refusal(grpc::StatusCode code);

class CrmAgent {
  public:
    // `service` must outlive the agent.
    CrmAgent(PilotService& service, AgentOptions options);
    ~CrmAgent();
    CrmAgent(const CrmAgent&) = delete;
    CrmAgent& operator=(const CrmAgent&) = delete;

    // Starts the agent's thread, which attaches at once.
    void start();

    // Ends the agent: first waits up to `grace` for it to end by itself, which it does once the
    // pilot has stopped and its last status has reached the CRM, then cancels the stream. Joins
    // every thread the agent started. Idempotent.
    void stop(std::chrono::milliseconds grace);

    // Why the agent gave up and stopped the pilot (the CRM refused it, or was unreachable for
    // too long); nothing if it did not.
    std::optional<std::string> failure() const;

  private:
    class Connection;
    struct AttachOutcome;

    void run();
    AttachOutcome attach_once();
    void forward_status(const std::shared_ptr<Connection>& connection);
    void handle(const std::shared_ptr<Connection>& connection, const v1::PilotCommand& command);
    void handle_setup(Connection& connection, const v1::SetupRequest& request);
    void handle_view(Connection& connection, const v1::ClusterView& view);
    void start_command(const std::shared_ptr<Connection>& connection,
                       const v1::PilotCommandRequest& request);
    bool send_keys(Connection& connection);
    void give_up(const std::string& reason);
    // Sleeps up to `duration`, less if stop() is called; returns false if it was.
    bool pause(std::chrono::milliseconds duration);
    bool stop_requested() const;
    void join_finished_commands(bool all);

    PilotService& service_;
    const AgentOptions options_;
    std::shared_ptr<grpc::Channel> channel_;
    std::unique_ptr<v1::Crm::Stub> stub_;

    mutable std::mutex mutex_;  // guards everything below
    std::condition_variable wake_;
    bool stop_requested_ = false;
    bool finished_ = false;  // the agent's thread has returned
    std::optional<std::string> failure_;
    std::shared_ptr<Connection> current_;  // the open Attach call, for stop() to cancel
    struct CommandThread {
        std::thread thread;
        std::shared_ptr<std::atomic<bool>> done;
    };
    std::vector<CommandThread> commands_;
    std::thread thread_;
};

}  // namespace vcpilot::pilot
