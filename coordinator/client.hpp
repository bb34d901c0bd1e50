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

// A one-line message for a failed call: the server's message, or what the code means.
std::string describe_failure(const grpc::Status& status, std::string_view target);

}  // namespace vcpilot::coordinator
