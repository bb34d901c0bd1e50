// vcctl list, show, watch and wait: what a user asks about clusters.
#include <fmt/format.h>

#include "vcctl/command.hpp"

namespace vcpilot::vcctl {

namespace {

int list(const Global& global, bool all) {
    auto client = connect(global);
    v1::ListClustersRequest request;
    request.set_all(all);
    v1::ListClustersResponse response;
    auto context = context_for(client, "ListClusters");
    check(client.call(
              [&](auto& stub) { return stub.ListClusters(context.get(), request, &response); }),
          client);
    if (global.json) {
        fmt::print("{}\n", to_json(response));
        return 0;
    }
    fmt::print("{:<12} {:<12} {:<10} {:>7}  {}\n", "ID", "OWNER", "STATE", "READY", "SITES");
    for (const auto& cluster : response.clusters()) {
        std::uint32_t total = 0;
        const auto ready = ready_nodes(cluster, &total);
        std::string where;
        for (const auto& site : cluster.sites()) {
            where += fmt::format("{}{}:{}", where.empty() ? "" : " ", site.site(), site.nodes());
        }
        fmt::print("{:<12} {:<12} {:<10} {:>7}  {}\n", cluster.id(), cluster.owner(),
                   cluster_state(cluster.state()), fmt::format("{}/{}", ready, total), where);
    }
    return 0;
}

int show(const Global& global, const std::string& id) {
    auto client = connect(global);
    v1::ClusterRef ref;
    ref.set_id(id);
    v1::Cluster cluster;
    auto context = context_for(client, "GetCluster");
    check(client.call([&](auto& stub) { return stub.GetCluster(context.get(), ref, &cluster); }),
          client);
    if (global.json) {
        fmt::print("{}\n", to_json(cluster));
    } else {
        print_cluster(cluster);
    }
    return 0;
}

int watch(const Global& global, const std::string& id) {
    auto client = connect(global);
    follow(
        global, client, id,
        [](const v1::Cluster& cluster) { return cluster.state() == v1::CLUSTER_STATE_RELEASED; },
        1e7, true);
    return 0;
}

int wait(const Global& global, const std::string& id, double timeout_s) {
    auto client = connect(global);
    const auto cluster = follow(global, client, id, ready_or_failed, timeout_s, false);
    if (global.json) {
        fmt::print("{}\n", to_json(cluster));
    } else {
        fmt::print("{} {}{}\n", cluster.id(), cluster_state(cluster.state()),
                   cluster.reason().empty() ? "" : ": " + cluster.reason());
    }
    return cluster.state() == v1::CLUSTER_STATE_READY ? 0 : 1;
}

// A subcommand whose one argument is a cluster id.
CLI::App* with_id(CLI::App& app, const char* name, const char* help,
                  const std::shared_ptr<std::string>& id) {
    auto* command = app.add_subcommand(name, help);
    command->add_option("ID", *id, "cluster id")->required();
    return command;
}

}  // namespace

Command add_list(CLI::App& app, const Global& global) {
    auto* command = app.add_subcommand("list", "list your clusters");
    auto all = std::make_shared<bool>(false);
    command->add_flag("--all", *all, "every user's clusters (root)");
    return {command, [&global, all] { return list(global, *all); }};
}

Command add_show(CLI::App& app, const Global& global) {
    auto id = std::make_shared<std::string>();
    auto* command = with_id(app, "show", "show a cluster and its nodes", id);
    return {command, [&global, id] { return show(global, *id); }};
}

Command add_watch(CLI::App& app, const Global& global) {
    auto id = std::make_shared<std::string>();
    auto* command = with_id(app, "watch", "print every change of a cluster until released", id);
    return {command, [&global, id] { return watch(global, *id); }};
}

Command add_wait(CLI::App& app, const Global& global) {
    auto id = std::make_shared<std::string>();
    auto timeout_s = std::make_shared<double>(300);
    auto* command = with_id(app, "wait", "wait until a cluster is READY (or FAILED)", id);
    command->add_option("--timeout", *timeout_s, "seconds to wait")->capture_default_str();
    return {command, [&global, id, timeout_s] { return wait(global, *id, *timeout_s); }};
}

}  // namespace vcpilot::vcctl
