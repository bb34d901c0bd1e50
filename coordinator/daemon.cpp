#include "coordinator/daemon.hpp"

#include <signal.h>

#include <charconv>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <fstream>
#include <sstream>

#include "coordinator/streams.hpp"

namespace vcpilot::coordinator {

Result<std::pair<std::uint32_t, std::uint32_t>> parse_vni_range(const std::string& text) {
    const auto dash = text.find('-');
    std::uint32_t first = 0, last = 0;
    const char* end = text.data() + text.size();
    if (dash == std::string::npos ||
        std::from_chars(text.data(), text.data() + dash, first).ptr != text.data() + dash ||
        std::from_chars(text.data() + dash + 1, end, last).ptr != end || first < 1 ||
        last > 16777215 || first > last) {
        return Error{fmt::format("--vni-range {}: want FIRST-LAST within 1-16777215", text)};
    }
    return std::pair{first, last};
}

Result<AddressPool> parse_pools(const std::string& flag, const std::vector<std::string>& texts) {
    std::vector<Cidr> cidrs;
    for (const auto& text : texts) {
        auto cidr = Cidr::parse(text);
        if (!cidr) {
            return Error{fmt::format("{} {}: {}", flag, text, cidr.error().message)};
        }
        cidrs.push_back(*cidr);
    }
    auto pool = AddressPool::create(std::move(cidrs));
    if (!pool) {
        return Error{fmt::format("{}: {}", flag, pool.error().message)};
    }
    return std::move(*pool);
}

Result<std::string> read_pem(const std::string& flag, const std::string& path) {
    std::ifstream in(path);
    if (!in) {
        return Error{fmt::format("{} {}: cannot read it", flag, path)};
    }
    std::ostringstream text;
    text << in.rdbuf();
    if (text.str().find("-----BEGIN ") == std::string::npos) {
        return Error{fmt::format("{} {}: not a PEM file", flag, path)};
    }
    return text.str();
}

std::shared_ptr<grpc::ServerCredentials> mutual_tls(const std::string& ca, const std::string& cert,
                                                    const std::string& key) {
    grpc::SslServerCredentialsOptions options(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    options.pem_root_certs = ca;
    options.pem_key_cert_pairs.push_back({key, cert});
    return grpc::SslServerCredentials(options);
}

Result<std::unique_ptr<grpc::Server>> serve_on(
    const std::vector<std::string>& listen,
    const std::vector<std::shared_ptr<grpc::ServerCredentials>>& credentials,
    grpc::Service* service, std::vector<int>* chosen_ports) {
    grpc::ServerBuilder builder;
    std::vector<int> ports(listen.size(), 0);
    for (std::size_t i = 0; i < listen.size(); ++i) {
        builder.AddListeningPort(listen[i], credentials[i], &ports[i]);
    }
    builder.RegisterService(service);
    // Streams last as long as a pilot or a site: ping the peer when the stream is quiet, so that
    // a peer that vanished (its node died, a cable was cut) is noticed within ~40 s, not hours.
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    builder.SetMaxReceiveMessageSize(kMaxCoordinatorMessage);
    builder.SetMaxSendMessageSize(kMaxCoordinatorMessage);
    auto server = builder.BuildAndStart();
    if (!server) {
        return Error{fmt::format("cannot listen on {}", fmt::join(listen, ", "))};
    }
    for (std::size_t i = 0; i < listen.size(); ++i) {
        if (ports[i] == 0) {
            server->Shutdown();
            return Error{fmt::format("cannot listen on {}", listen[i])};
        }
    }
    if (chosen_ports != nullptr) {
        *chosen_ports = std::move(ports);
    }
    return server;
}

namespace {
sigset_t stop_signals() {
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    return signals;
}
}  // namespace

void block_stop_signals() {
    const sigset_t signals = stop_signals();
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

int wait_for_stop_signal() {
    const sigset_t signals = stop_signals();
    int signal = 0;
    sigwait(&signals, &signal);
    return signal;
}

Status check_supernode(const std::string& flag, const std::string& text) {
    if (!parse_ipv4_endpoint(text)) {
        return Error{fmt::format("{} {}: want IPV4:PORT", flag, text)};
    }
    return {};
}

}  // namespace vcpilot::coordinator
