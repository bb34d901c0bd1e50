// Simulated pilots: real gRPC clients of Crm.Attach that walk the pilot's side of the protocol
// (hello, SETUP, keys, the cluster view, READY, shutdown) without building namespaces. Tests
// use them to drive a CRM through every path; the coordinator benchmark uses thousands at once.
//
// Each pilot is a callback-API reactor: no thread per pilot. Credentials and keys are made
// before the pilots start (as each real pilot makes its own, on its own node).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "vcpilot/v1/coordinator.grpc.pb.h"

namespace vcpilot::coordinator {

struct SimPilotSpec {
    std::string cluster;
    std::string host;
    std::string job = "1";
    std::string underlay;    // sent in the hello (required on unix sockets)
    std::string credential;  // MUNGE credential for the hello
    std::string host_key;    // OpenSSH public key lines
    std::string user_key;
    // A pilot started by Slurm for its job's own cluster (cluster "vcj-<job>").
    std::optional<v1::JobCluster> job_cluster;
    // A pilot started by Slurm for a job joining a reserved cluster (--vc-cluster).
    std::optional<v1::JoinCluster> join;
    // This node's place in its Slurm job's node list (PilotHello.rank); 0: none.
    std::uint32_t rank = 0;
    // Misbehaviour, for tests: report this state instead of READY after the view.
    v1::PilotState state_after_view = v1::PILOT_STATE_READY;
    std::string failure_reason;
};

// What one simulated pilot saw.
struct SimPilotOutcome {
    bool got_setup = false;
    bool got_view = false;
    bool got_shutdown = false;
    v1::SetupRequest setup;
    v1::ClusterView view;
    std::uint64_t bytes_received = 0;  // serialized size of every command received
    grpc::Status final_status;         // how the CRM ended the stream
    bool done = false;
};

class SimPilotFleet {
  public:
    // Pilots connect round-robin over `channels`.
    SimPilotFleet(std::vector<std::shared_ptr<grpc::Channel>> channels,
                  std::vector<SimPilotSpec> specs);
    ~SimPilotFleet();  // cancels whatever still runs and waits for it
    SimPilotFleet(const SimPilotFleet&) = delete;
    SimPilotFleet& operator=(const SimPilotFleet&) = delete;

    void start();
    // Waits until `count` pilots reached the view (READY), or every stream ended, or the time
    // passes; returns how many are ready.
    std::size_t wait_ready(std::size_t count, std::chrono::milliseconds timeout);
    // Waits until every stream has ended.
    bool wait_done(std::chrono::milliseconds timeout);
    void cancel();
    // Pilot `index` stops on its own, as at the end of its job (STOPPING, GONE, end of stream).
    void stop_pilot(std::size_t index);

    std::size_t size() const { return specs_.size(); }
    // Snapshots; valid for every pilot once its stream ended.
    SimPilotOutcome outcome(std::size_t index) const;
    std::uint64_t bytes_received() const;

    class Pilot;

  private:
    void changed();

    std::vector<std::shared_ptr<grpc::Channel>> channels_;
    std::vector<std::unique_ptr<v1::Crm::Stub>> stubs_;
    std::vector<SimPilotSpec> specs_;
    std::vector<std::unique_ptr<Pilot>> pilots_;
    mutable std::mutex mutex_;
    std::condition_variable changed_;
    std::atomic<std::size_t> ready_ = 0;
    std::atomic<std::size_t> done_ = 0;
};

// The MUNGE payload a pilot's credential vouches for, "vcpilot-attach\n<cluster>\n<host>\n<job>"
// (pilot/agent.cpp writes it, the CRM checks it).
std::string attach_payload(const SimPilotSpec& spec);
// Sets spec.credential: attach_payload(spec) minted as this process's user through the munged
// on `munge_socket`.
Status mint_credential(SimPilotSpec& spec, const std::string& munge_socket);

// Channels to `target` that do not share a connection (gRPC would otherwise multiplex them all
// over one): `count` distinct connections, as `count` nodes would open.
std::vector<std::shared_ptr<grpc::Channel>> separate_channels(const std::string& target,
                                                              std::size_t count);

}  // namespace vcpilot::coordinator
