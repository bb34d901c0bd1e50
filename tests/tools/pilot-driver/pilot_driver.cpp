// pilot-driver: stands in for the coordinators in tests. It wires several vc-pilot instances
// into one virtual cluster the way the CRM will (SETUP each, GET_KEYS from all, the same
// SET_KEYS to all), and runs commands and SHUTDOWN through their control sockets.
//
//   pilot-driver up --cluster C --cidr 10.77.0.0/24 --vni 100 --user vcuser SOCKET...
//   pilot-driver run SOCKET -- CMD [ARGS...]
//   pilot-driver status SOCKET...
//   pilot-driver shutdown SOCKET...
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <exception>
#include <grpcpp/grpcpp.h>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "common/ip.hpp"
#include "vcpilot/v1/pilot.grpc.pb.h"

namespace {

using vcpilot::v1::Pilot;

std::unique_ptr<Pilot::Stub> connect(const std::string& socket) {
    return Pilot::NewStub(
        grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials()));
}

bool check(const grpc::Status& status, const std::string& what) {
    if (!status.ok()) {
        (void)std::fprintf(stderr, "pilot-driver: %s: %s\n", what.c_str(),
                           status.error_message().c_str());
    }
    return status.ok();
}

std::unique_ptr<grpc::ClientContext> context_with_deadline(int seconds) {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
    return context;
}

const char* state_name(vcpilot::v1::PilotState state) {
    return vcpilot::v1::PilotState_Name(state).c_str() + sizeof("PILOT_STATE_") - 1;
}

double ms_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
        .count();
}

int up(const std::string& cluster, const std::string& cidr_text, unsigned vni,
       const std::string& user, const std::string& prefix, const std::vector<std::string>& sockets,
       bool timing) {
    const auto start = std::chrono::steady_clock::now();
    auto cidr = vcpilot::Cidr::parse(cidr_text);
    if (!cidr) {
        (void)std::fprintf(stderr, "pilot-driver: --cidr: %s\n", cidr.error().message.c_str());
        return 2;
    }
    vcpilot::v1::SetKeysRequest keys;
    std::vector<std::unique_ptr<Pilot::Stub>> pilots;
    for (std::size_t i = 0; i < sockets.size(); ++i) {
        pilots.push_back(connect(sockets[i]));
        auto address = cidr->nth(i + 1);
        if (!address) {
            (void)std::fprintf(stderr, "pilot-driver: %s\n", address.error().message.c_str());
            return 2;
        }
        vcpilot::v1::SetupRequest setup;
        setup.set_cluster_id(cluster);
        setup.set_node_name(prefix + std::to_string(i + 1));
        setup.set_address(address->to_string() + "/" + std::to_string(cidr->prefix()));
        setup.mutable_vxlan()->set_vni(vni);
        setup.set_user(user);
        vcpilot::v1::PilotStatus status;
        if (!check(pilots[i]->Setup(context_with_deadline(30).get(), setup, &status),
                   "SETUP " + sockets[i])) {
            return 1;
        }
        vcpilot::v1::GetKeysResponse got;
        if (!check(pilots[i]->GetKeys(context_with_deadline(10).get(), {}, &got),
                   "GET_KEYS " + sockets[i])) {
            return 1;
        }
        auto* node = keys.add_nodes();
        node->set_name(got.node_name());
        node->set_address(got.address());
        node->set_mac(got.mac());
        node->set_underlay_address(got.underlay_address());
        node->set_host_key(got.host_key());
        node->set_user_key(got.user_key());
    }
    for (std::size_t i = 0; i < sockets.size(); ++i) {
        vcpilot::v1::PilotStatus status;
        if (!check(pilots[i]->SetKeys(context_with_deadline(30).get(), keys, &status),
                   "SET_KEYS " + sockets[i])) {
            return 1;
        }
        std::printf("%s %s %s %s\n", keys.nodes(static_cast<int>(i)).name().c_str(),
                    keys.nodes(static_cast<int>(i)).address().c_str(),
                    keys.nodes(static_cast<int>(i)).underlay_address().c_str(),
                    state_name(status.state()));
    }
    if (timing) {
        // From the first SETUP sent to the last SET_KEYS answered READY.
        std::printf("bringup_ms %.3f\n", ms_since(start));
    }
    return 0;
}

int run(const std::string& socket, const std::vector<std::string>& argv, std::size_t stdin_bytes) {
    auto pilot = connect(socket);
    vcpilot::v1::RunRequest request;
    for (const auto& arg : argv) {
        request.add_argv(arg);
    }
    // For tests of the message size limit: that many bytes of input.
    request.set_stdin(std::string(stdin_bytes, 'x'));
    grpc::ClientContext context;
    auto reader = pilot->Run(&context, request);
    vcpilot::v1::RunOutput output;
    int exit_status = 255;
    while (reader->Read(&output)) {
        if (output.has_stdout()) {
            (void)std::fwrite(output.stdout().data(), 1, output.stdout().size(), stdout);
        } else if (output.has_stderr()) {
            (void)std::fwrite(output.stderr().data(), 1, output.stderr().size(), stderr);
        } else {
            exit_status = output.exit_status();
        }
    }
    (void)std::fflush(stdout);
    if (!check(reader->Finish(), "RUN " + socket)) {
        return 255;
    }
    return exit_status;
}

// Prints every state the pilot reports until it is GONE (or the stream ends).
int watch(const std::string& socket) {
    auto pilot = connect(socket);
    grpc::ClientContext context;
    auto reader = pilot->Watch(&context, {});
    vcpilot::v1::PilotStatus status;
    while (reader->Read(&status)) {
        std::printf("%s%s%s\n", state_name(status.state()), status.reason().empty() ? "" : " ",
                    status.reason().c_str());
        (void)std::fflush(stdout);
    }
    return check(reader->Finish(), "WATCH " + socket) ? 0 : 1;
}

int for_each(const std::vector<std::string>& sockets, bool shutdown) {
    int rc = 0;
    for (const auto& socket : sockets) {
        auto pilot = connect(socket);
        vcpilot::v1::PilotStatus status;
        const grpc::Status result =
            shutdown ? pilot->Shutdown(context_with_deadline(30).get(), {}, &status)
                     : pilot->GetStatus(context_with_deadline(10).get(), {}, &status);
        if (!check(result, (shutdown ? "SHUTDOWN " : "GET_STATUS ") + socket)) {
            rc = 1;
            continue;
        }
        std::printf("%s %s%s%s\n", socket.c_str(), state_name(status.state()),
                    status.reason().empty() ? "" : " ", status.reason().c_str());
    }
    return rc;
}

// main's body; main reports an exception that escapes it.
int run_main(int argc, char** argv) {
    CLI::App app{"pilot-driver: wires vc-pilot instances into a virtual cluster, for tests"};
    app.require_subcommand(1);
    std::string cluster = "test", cidr = "10.77.0.0/24", user = "vcuser", prefix = "vn";
    unsigned vni = 100;
    std::vector<std::string> sockets, command;
    std::string socket;
    auto* up_command = app.add_subcommand("up", "SETUP, GET_KEYS and SET_KEYS on every pilot");
    up_command->add_option("--cluster", cluster)->capture_default_str();
    up_command->add_option("--cidr", cidr)->capture_default_str();
    up_command->add_option("--vni", vni)->capture_default_str();
    up_command->add_option("--user", user)->capture_default_str();
    up_command->add_option("--name-prefix", prefix)->capture_default_str();
    bool timing = false;
    up_command->add_flag("--timing", timing, "print the SETUP-to-READY time in milliseconds");
    up_command->add_option("sockets", sockets, "control sockets, in node order")->required();
    auto* run_command = app.add_subcommand("run", "RUN a command on one pilot");
    run_command->add_option("socket", socket)->required();
    run_command->add_option("command", command)->required();
    std::size_t stdin_bytes = 0;
    run_command->add_option("--stdin-bytes", stdin_bytes, "send that many bytes as input");
    auto* watch_command = app.add_subcommand("watch", "print a pilot's states until GONE");
    watch_command->add_option("socket", socket)->required();
    auto* status_command = app.add_subcommand("status", "GET_STATUS of pilots");
    status_command->add_option("sockets", sockets)->required();
    auto* shutdown_command = app.add_subcommand("shutdown", "SHUTDOWN pilots");
    shutdown_command->add_option("sockets", sockets)->required();
    CLI11_PARSE(app, argc, argv);
    if (up_command->parsed()) {
        return up(cluster, cidr, vni, user, prefix, sockets, timing);
    }
    if (run_command->parsed()) {
        return run(socket, command, stdin_bytes);
    }
    if (watch_command->parsed()) {
        return watch(socket);
    }
    return for_each(sockets, shutdown_command->parsed());
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run_main(argc, argv);
    } catch (const std::exception& error) {
        (void)std::fprintf(stderr, "pilot-driver: %s\n", error.what());
        return 1;
    }
}
