// The coordinators as coordinator-scale-bench runs them: GRC and CRM engines in this process,
// each with its own SQLite store in a directory and its own gRPC server (the GRC on 127.0.0.1
// with mutual TLS, a CRM on a unix socket); vcctl's client code to call them; and a
// WatchCluster stream read by a thread of its own.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <grpcpp/grpcpp.h>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench/coordinator_scale/common.hpp"
#include "crm/crm.hpp"
#include "grc/grc.hpp"
#include "tests/support/test_pki.hpp"
#include "vcctl/client.hpp"

namespace vcpilot::coordinator::scale_bench {

struct CrmEngine {
    std::string site;
    std::string target;  // unix:PATH
    std::unique_ptr<CrmServer> crm;
    std::unique_ptr<grpc::Server> server;

    CrmEngine() = default;
    CrmEngine(CrmEngine&&) = default;
    CrmEngine& operator=(CrmEngine&&) = default;
    ~CrmEngine() { stop(); }
    void stop();
};

struct GrcEngine {
    std::string target;  // 127.0.0.1:PORT
    std::unique_ptr<GrcServer> grc;
    std::unique_ptr<grpc::Server> server;

    ~GrcEngine() { stop(); }
    void stop();
};

// A CRM of `options.site` with its store and socket in `dir`.
CrmEngine start_crm(const std::filesystem::path& dir, CrmOptions options);
// The GRC of `sites` (pool 10.96.0.0/12) with its store in `dir`, serving with `pki`'s
// certificate on a port of 127.0.0.1.
std::unique_ptr<GrcEngine> start_grc(const std::filesystem::path& dir, const testing::TestPki& pki,
                                     const std::vector<std::string>& sites);

// A site's CRM, connected to `grc` with its certificate from `pki`.
CrmOptions site_crm_options(const std::string& site, const std::string& munge_socket,
                            const GrcEngine& grc, const testing::TestPki& pki);
// A CRM on its own (pool 10.64.0.0/16).
CrmOptions standalone_crm_options(const std::string& site, const std::string& munge_socket);

// User alice at the GRC (her certificate), root at a CRM (MUNGE).
ClusterClient alice_at(const GrcEngine& grc, const testing::TestPki& pki);
ClusterClient root_at(const CrmEngine& crm, const std::string& munge_socket);

// ---- calls ----

v1::CreateClusterRequest request_for(
    const std::vector<std::pair<std::string, std::uint32_t>>& sites, v1::KeyMode mode);
// With `context` made beforehand, minting its credential is not part of the call.
grpc::Status create(const ClusterClient& client, const v1::CreateClusterRequest& request,
                    v1::Cluster* cluster, std::unique_ptr<grpc::ClientContext> context = {});
grpc::Status get(const ClusterClient& client, const std::string& id, v1::Cluster* cluster);
grpc::Status release(const ClusterClient& client, const std::string& id);
grpc::Status list(const ClusterClient& client, v1::ListClustersResponse* response);

// Polls (bounded) until `client` sees the cluster in `state`; when it did, or nothing.
std::optional<Clock::time_point> poll_state(const ClusterClient& client, const std::string& id,
                                            v1::ClusterState state, Clock::time_point deadline,
                                            std::chrono::milliseconds interval);

// A WatchCluster stream, read by a thread of its own: when each state was first seen.
class Watch {
  public:
    Watch(const ClusterClient& client, const std::string& id, std::chrono::milliseconds timeout);
    ~Watch();
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;

    // When the stream first carried `state`, waiting for it until `deadline`.
    std::optional<Clock::time_point> wait_for(v1::ClusterState state, Clock::time_point deadline);
    std::size_t messages() const;
    std::uint64_t bytes() const;

    // What each message said about the nodes: attached, CONFIGURED or later, READY.
    struct Point {
        Clock::time_point at;
        std::size_t attached = 0, configured = 0, ready = 0;
    };
    std::vector<Point> timeline() const;

  private:
    void read();

    std::unique_ptr<grpc::ClientContext> context_;
    std::unique_ptr<grpc::ClientReader<v1::Cluster>> reader_;
    mutable std::mutex mutex_;
    std::condition_variable changed_;
    std::map<v1::ClusterState, Clock::time_point> seen_;
    std::vector<Point> timeline_;
    std::size_t messages_ = 0;
    std::uint64_t bytes_ = 0;
    bool ended_ = false;
    std::thread thread_;
};

}  // namespace vcpilot::coordinator::scale_bench
