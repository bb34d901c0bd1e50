// How vcctl prints clusters: JSON with --json, else aligned columns (command.hpp).
#include <algorithm>
#include <chrono>
#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>

#include "vcctl/command.hpp"

namespace vcpilot::vcctl {

namespace {

std::string short_state(int state, const std::string& name, std::string_view prefix) {
    return state == 0 ? "-" : name.substr(prefix.size());
}

std::string pilot_state(v1::PilotState state) {
    return short_state(state, v1::PilotState_Name(state), "PILOT_STATE_");
}

}  // namespace

std::string to_json(const google::protobuf::Message& message) {
    std::string out;
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(message, &out, options);
    return out;
}

std::string cluster_state(v1::ClusterState state) {
    return short_state(state, v1::ClusterState_Name(state), "CLUSTER_STATE_");
}

std::uint32_t ready_nodes(const v1::Cluster& cluster, std::uint32_t* total) {
    std::uint32_t ready = 0;
    *total = 0;
    for (const auto& site : cluster.sites()) {
        ready += site.ready();
        *total += site.nodes();
    }
    return ready;
}

void print_cluster(const v1::Cluster& cluster) {
    std::uint32_t total = 0;
    const std::uint32_t ready = ready_nodes(cluster, &total);
    const bool slurm = cluster.pilots() == v1::PILOT_SOURCE_SLURM;
    fmt::print("cluster {}  owner {}  state {}  keys {}  {}  ready {}/{}  pilots {}\n",
               cluster.id(), cluster.owner(), cluster_state(cluster.state()),
               cluster.key_mode() == v1::KEY_MODE_EXCHANGE ? "exchange" : "ca",
               cluster.overlay() == v1::OVERLAY_N2N ? "overlay n2n"
                                                    : fmt::format("vxlan {}", cluster.vni()),
               ready, total, slurm ? "slurm (one job per site)" : "jobs (--vc-cluster)");
    if (cluster.walltime_minutes() > 0) {
        const auto left_ms = static_cast<std::int64_t>(cluster.expires_unix_ms()) -
                             std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
        fmt::print("walltime {} min{}\n", cluster.walltime_minutes(),
                   cluster.expires_unix_ms() == 0
                       ? ""
                       : fmt::format(", released in {} min",
                                     std::max<std::int64_t>(0, (left_ms + 59999) / 60000)));
    }
    if (!cluster.reason().empty()) {
        fmt::print("reason: {}\n", cluster.reason());
    }
    fmt::print("{:<12} {:>6} {:>6}  {:<18} {}\n", "SITE", "NODES", "READY", "BLOCK",
               slurm ? "SLURM JOB" : "");
    for (const auto& site : cluster.sites()) {
        fmt::print("{:<12} {:>6} {:>6}  {:<18} {}\n", site.site(), site.nodes(), site.ready(),
                   site.block(),
                   !slurm                     ? ""
                   : site.pilot_job().empty() ? "-"
                                              : site.pilot_job());
    }
    if (cluster.nodes_size() > 0) {
        fmt::print("\n{:<20} {:<12} {:<16} {:<20} {:<16} {}\n", "NODE", "SITE", "ADDRESS", "HOST",
                   "UNDERLAY", "STATE");
        for (const auto& node : cluster.nodes()) {
            fmt::print("{:<20} {:<12} {:<16} {:<20} {:<16} {}{}\n", node.name(), node.site(),
                       node.address(), node.host().empty() ? "-" : node.host(),
                       node.underlay_address().empty() ? "-" : node.underlay_address(),
                       pilot_state(node.state()),
                       node.reason().empty() ? "" : "  (" + node.reason() + ")");
        }
    }
}

}  // namespace vcpilot::vcctl
