// What every vcctl subcommand shares: the global options, the way to reach a coordinator and
// follow a cluster, and the way to print one. Each subcommand lives in the file named after it
// (create.cpp, inspect.cpp, release.cpp, run.cpp) and registers itself with an add_* function.
//
// vcctl is a short-lived client: on any failure these helpers print one line, "vcctl: ...", and
// exit with 1 (the coordinator refused or failed), 2 (bad usage) or 3 (the coordinator cannot
// be reached).
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "vcctl/client.hpp"

namespace vcpilot::vcctl {

struct Global {
    std::string crm;
    std::string munge_socket;
    std::string grc;
    std::string tls_ca, tls_cert, tls_key;
    bool json = false;
};

// A registered subcommand: run() is called if `app` was the one given, and returns the exit code.
struct Command {
    CLI::App* app = nullptr;
    std::function<int()> run;
};

// The subcommands, in the order `vcctl --help` lists them. Each keeps its options itself.
Command add_create(CLI::App& app, const Global& global);
Command add_list(CLI::App& app, const Global& global);
Command add_show(CLI::App& app, const Global& global);
Command add_watch(CLI::App& app, const Global& global);
Command add_wait(CLI::App& app, const Global& global);
Command add_release(CLI::App& app, const Global& global);
Command add_run(CLI::App& app, const Global& global);
Command add_exec(CLI::App& app, const Global& global);
Command add_bcast(CLI::App& app, const Global& global);

// Ends the command: main prints "vcctl: MESSAGE" and exits with `code`. A throw, not exit(), so
// that gRPC's threads never see the process torn down under them.
struct Failure {
    std::string message;
    int code = 1;
};
[[noreturn]] void fail(const std::string& message, int code = 1);

// A client of the CRM (--crm) or, with --grc, of the GRC.
coordinator::ClusterClient connect(const Global& global);
std::unique_ptr<grpc::ClientContext> context_for(
    const coordinator::ClusterClient& client, std::string_view method,
    std::optional<std::chrono::milliseconds> timeout = std::chrono::seconds(30));
// Exits with the call's one-line failure unless it succeeded.
void check(const grpc::Status& status, const coordinator::ClusterClient& client);

// Follows the cluster until `done` says so or the timeout passes; a progress line on a terminal,
// or with print_each a line (or JSON document) for every change.
v1::Cluster follow(const Global& global, const coordinator::ClusterClient& client,
                   const std::string& id, const std::function<bool(const v1::Cluster&)>& done,
                   double timeout_s, bool print_each);
bool ready_or_failed(const v1::Cluster& cluster);

std::string to_json(const google::protobuf::Message& message);
std::string cluster_state(v1::ClusterState state);
// The READY nodes of the cluster; *total is set to all its nodes.
std::uint32_t ready_nodes(const v1::Cluster& cluster, std::uint32_t* total);
void print_cluster(const v1::Cluster& cluster);

}  // namespace vcpilot::vcctl
