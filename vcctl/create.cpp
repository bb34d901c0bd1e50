// vcctl create: reserve a virtual cluster, on one site (--crm) or across sites (--grc).
#include <charconv>
#include <fmt/format.h>
#include <vector>

#include "vcctl/command.hpp"

namespace vcpilot::vcctl {

namespace {

// --walltime: minutes ("90"), or with a unit ("90m", "2h", "1d"), or HOURS:MINUTES ("1:30").
std::uint32_t parse_walltime(const std::string& text) {
    auto number = [&](std::string_view digits, std::uint32_t& out) {
        return !digits.empty() &&
               std::from_chars(digits.data(), digits.data() + digits.size(), out).ptr ==
                   digits.data() + digits.size();
    };
    std::uint32_t value = 0, minutes = 0;
    const std::string_view t = text;
    if (const auto colon = t.find(':'); colon != std::string_view::npos) {
        if (number(t.substr(0, colon), value) && number(t.substr(colon + 1), minutes) &&
            t.size() - colon == 3 && minutes < 60 && value < 10000) {
            return value * 60 + minutes;
        }
    } else if (!t.empty() && (t.back() == 'm' || t.back() == 'h' || t.back() == 'd')) {
        const std::uint32_t unit = t.back() == 'm' ? 1 : t.back() == 'h' ? 60 : 24 * 60;
        if (number(t.substr(0, t.size() - 1), value) && value < 1000000 / unit) {
            return value * unit;
        }
    } else if (number(t, value) && value < 1000000) {
        return value;
    }
    fail(fmt::format("--walltime {}: want minutes (90), 90m, 2h, 1d or H:MM", text), 2);
}

v1::SiteRequest parse_site(const std::string& text) {
    // SITE:NODES or SITE:NODES:CIDR
    const auto first = text.find(':');
    if (first == std::string::npos) {
        fail(fmt::format("--site {}: want SITE:NODES or SITE:NODES:CIDR", text), 2);
    }
    const auto second = text.find(':', first + 1);
    const std::string count = text.substr(
        first + 1, second == std::string::npos ? std::string::npos : second - first - 1);
    std::uint32_t nodes = 0;
    if (std::from_chars(count.data(), count.data() + count.size(), nodes).ptr !=
            count.data() + count.size() ||
        count.empty()) {
        fail(fmt::format("--site {}: {} is not a node count", text, count), 2);
    }
    v1::SiteRequest site;
    site.set_site(text.substr(0, first));
    site.set_nodes(nodes);
    if (second != std::string::npos) {
        site.set_block(text.substr(second + 1));
    }
    return site;
}

struct CreateOptions {
    std::vector<std::string> sites;
    std::string keys = "ca", prefix;
    std::uint32_t slots = 0;
    bool wait = false;
    double timeout_s = 300;
    std::string pilots, walltime;
    std::string overlay = "vxlan";
};

int create(const Global& global, CreateOptions options) {
    auto client = connect(global);
    v1::CreateClusterRequest request;
    for (const auto& site : options.sites) {
        *request.add_sites() = parse_site(site);
    }
    request.set_key_mode(options.keys == "exchange" ? v1::KEY_MODE_EXCHANGE : v1::KEY_MODE_CA);
    request.set_name_prefix(options.prefix);
    request.set_slots(options.slots);
    if (options.pilots.empty()) {
        options.pilots = global.grc.empty() ? "jobs" : "slurm";
    }
    request.set_pilots(options.pilots == "slurm" ? v1::PILOT_SOURCE_SLURM : v1::PILOT_SOURCE_JOBS);
    request.set_overlay(options.overlay == "n2n"    ? v1::OVERLAY_N2N
                        : options.overlay == "auto" ? v1::OVERLAY_AUTO
                                                    : v1::OVERLAY_VXLAN);
    if (!options.walltime.empty()) {
        const std::uint32_t minutes = parse_walltime(options.walltime);
        if (minutes == 0) {
            fail("--walltime: give at least one minute", 2);
        }
        request.set_walltime_minutes(minutes);
    }
    auto context = context_for(client, "CreateCluster");
    v1::Cluster cluster;
    check(client.call(
              [&](auto& stub) { return stub.CreateCluster(context.get(), request, &cluster); }),
          client);
    if (options.wait) {
        cluster = follow(global, client, cluster.id(), ready_or_failed, options.timeout_s, false);
    }
    if (global.json) {
        fmt::print("{}\n", to_json(cluster));
    } else if (options.wait) {
        print_cluster(cluster);
    } else {
        fmt::print("{}\n", cluster.id());
    }
    return cluster.state() == v1::CLUSTER_STATE_FAILED ? 1 : 0;
}

}  // namespace

Command add_create(CLI::App& app, const Global& global) {
    auto* create_cmd = app.add_subcommand("create", "reserve a virtual cluster");
    auto options = std::make_shared<CreateOptions>();
    create_cmd->add_option("--site", options->sites, "SITE:NODES[:CIDR], once per site")
        ->required();
    create_cmd->add_option("--keys", options->keys, "how nodes trust each other: ca or exchange")
        ->check(CLI::IsMember({"ca", "exchange"}))
        ->capture_default_str();
    create_cmd->add_option("--name-prefix", options->prefix,
                           "virtual host names are PREFIX-SITE-N (vc)");
    create_cmd->add_option("--slots", options->slots, "MPI slots per node (1)");
    create_cmd
        ->add_option("--pilots", options->pilots,
                     "who starts the pilots: slurm (each site's CRM submits a job holding the "
                     "nodes; the default with --grc) or jobs (your own sbatch/srun "
                     "--vc-cluster=ID; the default with --crm)")
        ->check(CLI::IsMember({"slurm", "jobs"}));
    create_cmd
        ->add_option("--overlay", options->overlay,
                     "how the nodes are joined: vxlan (kernel VXLAN; every node reaches every "
                     "other), n2n (encrypted, through a supernode; sites behind NAT) or auto "
                     "(n2n if a site is behind NAT)")
        ->check(CLI::IsMember({"vxlan", "n2n", "auto"}))
        ->capture_default_str();
    create_cmd->add_option("--walltime", options->walltime,
                           "release the cluster after this long: minutes, 90m, 2h, 1d or H:MM");
    create_cmd->add_flag("--wait", options->wait, "wait until every node is READY");
    create_cmd->add_option("--timeout", options->timeout_s, "seconds to wait with --wait")
        ->capture_default_str();
    return {create_cmd, [&global, options] { return create(global, *options); }};
}

}  // namespace vcpilot::vcctl
