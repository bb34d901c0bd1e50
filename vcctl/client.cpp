#include "vcctl/client.hpp"

#include <fmt/format.h>

#include "common/munge.hpp"
#include "coordinator/auth.hpp"
#include "coordinator/streams.hpp"

namespace vcpilot::coordinator {

CrmClient::CrmClient(ClientOptions options, std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      stub_(v1::Crm::NewStub(channel_)) {}

Result<CrmClient> CrmClient::connect(const ClientOptions& options) {
    if (options.address.empty()) {
        return Error{"no CRM address"};
    }
    grpc::ChannelArguments arguments;
    arguments.SetMaxReceiveMessageSize(kMaxCoordinatorMessage);
    arguments.SetMaxSendMessageSize(kMaxCoordinatorMessage);
    auto channel =
        grpc::CreateCustomChannel(options.address, grpc::InsecureChannelCredentials(), arguments);
    return CrmClient(options, std::move(channel));
}

Result<std::unique_ptr<grpc::ClientContext>> CrmClient::context(
    std::string_view method, std::optional<std::chrono::milliseconds> timeout) const {
    auto credential = munge_encode(munge_payload_for(method), options_.munge_socket);
    if (!credential) {
        return credential.error();
    }
    auto context = std::make_unique<grpc::ClientContext>();
    context->AddMetadata(kMungeMetadata, *credential);
    if (timeout) {
        context->set_deadline(std::chrono::system_clock::now() + *timeout);
    }
    return context;
}

Result<ClusterClient> ClusterClient::crm(const ClientOptions& options) {
    auto client = CrmClient::connect(options);
    if (!client) {
        return client.error();
    }
    ClusterClient out;
    out.target_ = "the CRM at " + options.address;
    out.crm_.emplace(std::move(*client));
    return out;
}

Result<ClusterClient> ClusterClient::grc(const GrcClientOptions& options) {
    if (options.address.empty()) {
        return Error{"no GRC address"};
    }
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = options.tls_ca;
    tls.pem_cert_chain = options.tls_cert;
    tls.pem_private_key = options.tls_key;
    grpc::ChannelArguments arguments;
    arguments.SetMaxReceiveMessageSize(kMaxCoordinatorMessage);
    arguments.SetMaxSendMessageSize(kMaxCoordinatorMessage);
    ClusterClient out;
    out.target_ = "the GRC at " + options.address;
    out.grc_ = v1::Grc::NewStub(
        grpc::CreateCustomChannel(options.address, grpc::SslCredentials(tls), arguments));
    return out;
}

Result<std::unique_ptr<grpc::ClientContext>> ClusterClient::context(
    std::string_view method, std::optional<std::chrono::milliseconds> timeout) const {
    if (crm_) {
        return crm_->context(method, timeout);
    }
    auto context = std::make_unique<grpc::ClientContext>();  // TLS says who we are
    if (timeout) {
        context->set_deadline(std::chrono::system_clock::now() + *timeout);
    }
    return context;
}

std::string describe_failure(const grpc::Status& status, std::string_view target) {
    switch (status.error_code()) {
        case grpc::StatusCode::UNAVAILABLE:
            return fmt::format("cannot reach {}: {}", target, status.error_message());
        case grpc::StatusCode::DEADLINE_EXCEEDED:
            return fmt::format("{} did not answer in time", target);
        default:
            return status.error_message().empty()
                       ? fmt::format("{} failed with code {}", target,
                                     static_cast<int>(status.error_code()))
                       : status.error_message();
    }
}

}  // namespace vcpilot::coordinator
