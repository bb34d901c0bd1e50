// Reaching a coordinator and following a cluster, for every vcctl subcommand (command.hpp).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fmt/format.h>
#include <fstream>
#include <sstream>

#include "vcctl/command.hpp"

namespace vcpilot::vcctl {

using coordinator::ClusterClient;
using Clock = std::chrono::steady_clock;

void fail(const std::string& message, int code) {
    throw Failure{message, code};
}

namespace {

std::string read_file_or_fail(const char* flag, const std::string& path) {
    if (path.empty()) {
        fail(fmt::format("--grc needs {} (or its VCPILOT_TLS_ variable)", flag), 2);
    }
    std::ifstream in(path);
    if (!in) {
        fail(fmt::format("{} {}: cannot read it", flag, path), 2);
    }
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

}  // namespace

ClusterClient connect(const Global& global) {
    auto client =
        global.grc.empty()
            ? ClusterClient::crm({global.crm, global.munge_socket})
            : ClusterClient::grc({global.grc, read_file_or_fail("--tls-ca", global.tls_ca),
                                  read_file_or_fail("--tls-cert", global.tls_cert),
                                  read_file_or_fail("--tls-key", global.tls_key)});
    if (!client) {
        fail(client.error().message);
    }
    return std::move(*client);
}

std::unique_ptr<grpc::ClientContext> context_for(const ClusterClient& client,
                                                 std::string_view method,
                                                 std::optional<std::chrono::milliseconds> timeout) {
    auto context = client.context(method, timeout);
    if (!context) {
        fail(context.error().message);
    }
    return std::move(*context);
}

void check(const grpc::Status& status, const ClusterClient& client) {
    if (!status.ok()) {
        fail(coordinator::describe_failure(status, client.target()),
             status.error_code() == grpc::StatusCode::UNAVAILABLE ? 3 : 1);
    }
}

v1::Cluster follow(const Global& global, const ClusterClient& client, const std::string& id,
                   const std::function<bool(const v1::Cluster&)>& done, double timeout_s,
                   bool print_each) {
    auto context = context_for(client, "WatchCluster",
                               std::chrono::milliseconds(static_cast<long>(timeout_s * 1000)));
    v1::ClusterRef ref;
    ref.set_id(id);
    auto reader = client.call([&](auto& stub) { return stub.WatchCluster(context.get(), ref); });
    const auto start = Clock::now();
    const bool progress = !global.json && !print_each && ::isatty(STDERR_FILENO) == 1;
    v1::Cluster cluster;
    bool finished = false;
    while (reader->Read(&cluster)) {
        if (print_each) {
            if (global.json) {
                fmt::print("{}\n", to_json(cluster));
            } else {
                std::uint32_t total = 0;
                const auto ready = ready_nodes(cluster, &total);
                fmt::print("{} {} ready {}/{}{}\n", cluster.id(), cluster_state(cluster.state()),
                           ready, total, cluster.reason().empty() ? "" : " " + cluster.reason());
            }
            (void)std::fflush(stdout);
        } else if (progress) {
            std::uint32_t total = 0;
            const auto ready = ready_nodes(cluster, &total);
            (void)std::fprintf(stderr, "\r%s: %s, %u/%u nodes ready (%.1f s)   ", id.c_str(),
                               cluster_state(cluster.state()).c_str(), ready, total,
                               std::chrono::duration<double>(Clock::now() - start).count());
        }
        if (done(cluster)) {
            finished = true;
            context->TryCancel();
            break;
        }
    }
    if (progress) {
        (void)std::fprintf(stderr, "\n");
    }
    const auto status = reader->Finish();
    if (!finished) {
        if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
            fail(fmt::format("cluster {} is still {} after {:.0f} s", id,
                             cluster_state(cluster.state()), timeout_s));
        }
        if (!status.ok()) {
            check(status, client);
        }
    }
    return cluster;
}

bool ready_or_failed(const v1::Cluster& cluster) {
    return cluster.state() == v1::CLUSTER_STATE_READY ||
           cluster.state() == v1::CLUSTER_STATE_FAILED ||
           cluster.state() == v1::CLUSTER_STATE_RELEASED;
}

}  // namespace vcpilot::vcctl
