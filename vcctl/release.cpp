// vcctl release: stop a cluster's pilots and free what it holds.
#include <fmt/format.h>

#include "vcctl/command.hpp"

namespace vcpilot::vcctl {

namespace {

struct ReleaseOptions {
    std::string id;
    bool wait = false;
    double timeout_s = 300;
};

int release(const Global& global, const ReleaseOptions& options) {
    auto client = connect(global);
    v1::ClusterRef ref;
    ref.set_id(options.id);
    v1::Cluster cluster;
    auto context = context_for(client, "ReleaseCluster");
    check(
        client.call([&](auto& stub) { return stub.ReleaseCluster(context.get(), ref, &cluster); }),
        client);
    if (options.wait && cluster.state() != v1::CLUSTER_STATE_RELEASED) {
        cluster = follow(
            global, client, options.id,
            [](const v1::Cluster& c) { return c.state() == v1::CLUSTER_STATE_RELEASED; },
            options.timeout_s, false);
    }
    if (global.json) {
        fmt::print("{}\n", to_json(cluster));
    } else {
        fmt::print("{} {}\n", cluster.id(), cluster_state(cluster.state()));
    }
    return 0;
}

}  // namespace

Command add_release(CLI::App& app, const Global& global) {
    auto* command = app.add_subcommand("release", "release a cluster: stop its pilots, free it");
    auto options = std::make_shared<ReleaseOptions>();
    command->add_option("ID", options->id, "cluster id")->required();
    command->add_flag("--wait", options->wait, "wait until it is RELEASED");
    command->add_option("--timeout", options->timeout_s, "seconds to wait with --wait");
    return {command, [&global, options] { return release(global, *options); }};
}

}  // namespace vcpilot::vcctl
