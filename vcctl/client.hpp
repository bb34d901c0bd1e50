// Calling a coordinator: one channel, and a context per call that carries the caller's proof of
// identity (a MUNGE credential made for that very method).
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "common/result.hpp"
#include "vcpilot/v1/coordinator.grpc.pb.h"

namespace vcpilot::coordinator {

struct ClientOptions {
    std::string address;       // gRPC target: HOST:PORT or unix:/PATH
    std::string munge_socket;  // empty = libmunge's default
};

class CrmClient {
  public:
    static Result<CrmClient> connect(const ClientOptions& options);

    // A context for `method` ("CreateCluster", ...), with a fresh credential and, if given, a
    // deadline.
    Result<std::unique_ptr<grpc::ClientContext>> context(
        std::string_view method,
        std::optional<std::chrono::milliseconds> timeout = std::chrono::seconds(30)) const;

    v1::Crm::Stub& stub() const { return *stub_; }

  private:
    CrmClient(ClientOptions options, std::shared_ptr<grpc::Channel> channel);
    ClientOptions options_;
    std::shared_ptr<grpc::Channel> channel_;
    std::unique_ptr<v1::Crm::Stub> stub_;
};

// Where the GRC is and the caller's TLS identity (PEM text; the certificate's common name is the
// user).
struct GrcClientOptions {
    std::string address;  // HOST:PORT
    std::string tls_ca;
    std::string tls_cert;
    std::string tls_key;
};

// The cluster methods, asked of a site's CRM (MUNGE) or of the GRC (mutual TLS) alike: both
// services have them with the same messages.
class ClusterClient {
  public:
    static Result<ClusterClient> crm(const ClientOptions& options);
    static Result<ClusterClient> grc(const GrcClientOptions& options);

    // Who answers, for messages: "the CRM at ..." or "the GRC at ...".
    const std::string& target() const { return target_; }
    Result<std::unique_ptr<grpc::ClientContext>> context(
        std::string_view method,
        std::optional<std::chrono::milliseconds> timeout = std::chrono::seconds(30)) const;

    // `call(f)` runs f(stub) with whichever stub this client has.
    template <typename F>
    auto call(F&& f) const {
        return crm_ ? f(crm_->stub()) : f(*grc_);
    }

  private:
    ClusterClient() = default;
    std::string target_;
    std::optional<CrmClient> crm_;
    std::unique_ptr<v1::Grc::Stub> grc_;
};

// A one-line message for a failed call: the server's message, or what the code means.
std::string describe_failure(const grpc::Status& status, std::string_view target);

}  // namespace vcpilot::coordinator
