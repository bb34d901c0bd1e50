// vcctl: create, inspect, use and release vcpilot virtual clusters.
//
//   vcctl create --site SITE:NODES[:CIDR]... [--keys ca|exchange] [--pilots slurm|jobs]
//                [--walltime T] [--wait]
//   vcctl list [--all] | show ID | watch ID | wait ID | release ID [--wait]
//   vcctl run ID -- CMD...     (on the first node, as the cluster's owner)
//   vcctl exec ID -- CMD...    (on every node, as root; root only)
//
// Talks to the site's CRM (--crm, or $VCPILOT_CRM), proving who the caller is with MUNGE; or,
// with --grc (or $VCPILOT_GRC), to the GRC for clusters across sites, proving it with a TLS
// client certificate (--tls-ca/--tls-cert/--tls-key, or $VCPILOT_TLS_CA/_CERT/_KEY).
// Human output by default; --json prints one JSON document (or one per line for watch).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <filesystem>
#include <cstdio>
#include <fmt/format.h>
#include <fstream>
#include <google/protobuf/util/json_util.h>
#include <iostream>
#include <sstream>

#include "common/text.hpp"
#include "vcctl/client.hpp"

namespace {

using namespace vcpilot;
using namespace vcpilot::coordinator;
using Clock = std::chrono::steady_clock;

constexpr const char* kDefaultCrm = "unix:/run/vcpilot/crmd.sock";

struct Global {
    std::string crm;
    std::string munge_socket;
    std::string grc;
    std::string tls_ca, tls_cert, tls_key;
    bool json = false;
};

[[noreturn]] void fail(const std::string& message, int code = 1) {
    std::fprintf(stderr, "vcctl: %s\n", message.c_str());
    std::exit(code);
}

std::string to_json(const google::protobuf::Message& message) {
    std::string out;
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(message, &out, options);
    return out;
}

std::string short_state(int state, const std::string& name, std::string_view prefix) {
    return state == 0 ? "-" : name.substr(prefix.size());
}

std::string cluster_state(v1::ClusterState state) {
    return short_state(state, v1::ClusterState_Name(state), "CLUSTER_STATE_");
}

std::string pilot_state(v1::PilotState state) {
    return short_state(state, v1::PilotState_Name(state), "PILOT_STATE_");
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

std::unique_ptr<grpc::ClientContext> context_for(
    const ClusterClient& client, std::string_view method,
    std::optional<std::chrono::milliseconds> timeout = std::chrono::seconds(30)) {
    auto context = client.context(method, timeout);
    if (!context) {
        fail(context.error().message);
    }
    return std::move(*context);
}

void check(const grpc::Status& status, const ClusterClient& client) {
    if (!status.ok()) {
        fail(describe_failure(status, client.target()),
             status.error_code() == grpc::StatusCode::UNAVAILABLE ? 3 : 1);
    }
}

// Follows the cluster until `done` says so or the timeout passes; a progress line on a terminal.
v1::Cluster follow(const Global& global, const ClusterClient& client, const std::string& id,
                   const std::function<bool(const v1::Cluster&)>& done, double timeout_s,
                   bool print_each) {
    auto context = context_for(client, "WatchCluster",
                               std::chrono::milliseconds(static_cast<long>(timeout_s * 1000)));
    v1::ClusterRef ref;
    ref.set_id(id);
    auto reader = client.call([&](auto& stub) { return stub.WatchCluster(context.get(), ref); });
    const auto start = Clock::now();
    const bool progress = !global.json && !print_each && ::isatty(STDERR_FILENO);
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
            std::fflush(stdout);
        } else if (progress) {
            std::uint32_t total = 0;
            const auto ready = ready_nodes(cluster, &total);
            std::fprintf(stderr, "\r%s: %s, %u/%u nodes ready (%.1f s)   ", id.c_str(),
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
        std::fprintf(stderr, "\n");
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

int run_command(const Global& global, const std::string& id, const std::vector<std::string>& argv,
                bool every_node) {
    auto client = connect(global);
    auto context = context_for(client, every_node ? "Exec" : "Run", std::nullopt);
    v1::ClusterCommandRequest request;
    request.set_id(id);
    for (const auto& arg : argv) {
        request.mutable_command()->add_argv(arg);
    }
    auto reader = client.call([&](auto& stub) {
        return every_node ? stub.Exec(context.get(), request) : stub.Run(context.get(), request);
    });
    v1::NodeOutput output;
    int worst = 0;
    while (reader->Read(&output)) {
        const auto& out = output.output();
        const std::string prefix = every_node ? output.node() + ": " : "";
        if (out.has_stdout()) {
            if (prefix.empty()) {
                std::fwrite(out.stdout().data(), 1, out.stdout().size(), stdout);
            } else {
                fmt::print("{}{}", prefix, out.stdout());
            }
            std::fflush(stdout);
        } else if (out.has_stderr()) {
            std::fprintf(stderr, "%s%.*s", prefix.c_str(), static_cast<int>(out.stderr().size()),
                         out.stderr().data());
        } else if (out.has_exit_status()) {
            if (every_node && out.exit_status() != 0) {
                std::fprintf(stderr, "%sexit status %d\n", prefix.c_str(), out.exit_status());
            }
            worst = std::max(worst, out.exit_status());
        }
    }
    check(reader->Finish(), client);
    return worst;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"vcctl: create, inspect, use and release vcpilot virtual clusters"};
    app.require_subcommand(1);
    app.fallthrough();  // global options may come after the subcommand too
    Global global;
    const char* env_crm = std::getenv("VCPILOT_CRM");
    global.crm = env_crm != nullptr && *env_crm != '\0' ? env_crm : kDefaultCrm;
    app.add_option("--crm", global.crm, "the site's CRM: HOST:PORT or unix:/PATH ($VCPILOT_CRM)")
        ->capture_default_str();
    app.add_option("--munge-socket", global.munge_socket, "munged's socket");
    auto env = [](const char* name) {
        const char* value = std::getenv(name);
        return value != nullptr ? std::string(value) : std::string();
    };
    global.grc = env("VCPILOT_GRC");
    global.tls_ca = env("VCPILOT_TLS_CA");
    global.tls_cert = env("VCPILOT_TLS_CERT");
    global.tls_key = env("VCPILOT_TLS_KEY");
    app.add_option("--grc", global.grc,
                   "the GRC, HOST:PORT ($VCPILOT_GRC): clusters across sites; instead of --crm");
    app.add_option("--tls-ca", global.tls_ca, "with --grc: the CA of the GRC's certificate");
    app.add_option("--tls-cert", global.tls_cert, "with --grc: your certificate (CN = you)");
    app.add_option("--tls-key", global.tls_key, "with --grc: its private key");
    app.add_flag("--json", global.json, "machine-readable output");

    auto* create = app.add_subcommand("create", "reserve a virtual cluster");
    std::vector<std::string> sites;
    std::string keys = "ca", prefix;
    std::uint32_t slots = 0;
    bool wait = false;
    double timeout_s = 300;
    create->add_option("--site", sites, "SITE:NODES[:CIDR], once per site")->required();
    create->add_option("--keys", keys, "how nodes trust each other: ca or exchange")
        ->check(CLI::IsMember({"ca", "exchange"}))
        ->capture_default_str();
    create->add_option("--name-prefix", prefix, "virtual host names are PREFIX-SITE-N (vc)");
    create->add_option("--slots", slots, "MPI slots per node (1)");
    std::string pilots, walltime;
    create
        ->add_option("--pilots", pilots,
                     "who starts the pilots: slurm (each site's CRM submits a job holding the "
                     "nodes; the default with --grc) or jobs (your own sbatch/srun "
                     "--vc-cluster=ID; the default with --crm)")
        ->check(CLI::IsMember({"slurm", "jobs"}));
    std::string overlay = "vxlan";
    create
        ->add_option("--overlay", overlay,
                     "how the nodes are joined: vxlan (kernel VXLAN; every node reaches every "
                     "other), n2n (encrypted, through a supernode; sites behind NAT) or auto "
                     "(n2n if a site is behind NAT)")
        ->check(CLI::IsMember({"vxlan", "n2n", "auto"}))
        ->capture_default_str();
    create->add_option("--walltime", walltime,
                       "release the cluster after this long: minutes, 90m, 2h, 1d or H:MM");
    create->add_flag("--wait", wait, "wait until every node is READY");
    create->add_option("--timeout", timeout_s, "seconds to wait with --wait")
        ->capture_default_str();

    auto* list = app.add_subcommand("list", "list your clusters");
    bool all = false;
    list->add_flag("--all", all, "every user's clusters (root)");

    std::string id;
    auto* show = app.add_subcommand("show", "show a cluster and its nodes");
    show->add_option("ID", id, "cluster id")->required();
    auto* watch = app.add_subcommand("watch", "print every change of a cluster until released");
    watch->add_option("ID", id, "cluster id")->required();
    auto* wait_cmd = app.add_subcommand("wait", "wait until a cluster is READY (or FAILED)");
    wait_cmd->add_option("ID", id, "cluster id")->required();
    wait_cmd->add_option("--timeout", timeout_s, "seconds to wait")->capture_default_str();
    auto* release = app.add_subcommand("release", "release a cluster: stop its pilots, free it");
    release->add_option("ID", id, "cluster id")->required();
    release->add_flag("--wait", wait, "wait until it is RELEASED");
    release->add_option("--timeout", timeout_s, "seconds to wait with --wait");

    std::vector<std::string> command;
    auto* run = app.add_subcommand("run", "run a command on the first node, as the owner");
    run->add_option("ID", id, "cluster id")->required();
    run->add_option("command", command, "the command, after --")->required();
    auto* exec = app.add_subcommand("exec", "run a command on every node, as root (root only)");
    exec->add_option("ID", id, "cluster id")->required();
    exec->add_option("command", command, "the command, after --")->required();

    std::string bcast_file, bcast_dest, bcast_program;
    std::vector<std::string> bcast_options;
    auto* bcast = app.add_subcommand(
        "bcast", "send a file to every node of a cluster (vc-bcast's pipelined ring, run as the "
                 "owner from the first node, which must be able to read FILE)");
    bcast->add_option("ID", id, "cluster id")->required();
    bcast->add_option("FILE", bcast_file, "the file (a path the first node can read)")->required();
    bcast->add_option("DEST", bcast_dest, "where it goes on every node (absolute path)")->required();
    bcast->add_option("--program", bcast_program,
                      "vc-bcast's path on the nodes (default: the one next to vcctl)");
    bcast->add_option("--bcast-option", bcast_options,
                      "an option for `vc-bcast send`, such as --chunk-size=8M (repeatable)");

    CLI11_PARSE(app, argc, argv);

    if (bcast->parsed()) {
        if (bcast_program.empty()) {
            std::error_code ec;
            const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
            const auto sibling = self.parent_path() / "vc-bcast";
            bcast_program = !ec && std::filesystem::exists(sibling) ? sibling.string() : "vc-bcast";
        }
        if (!std::filesystem::path(bcast_dest).is_absolute()) {
            fail(fmt::format("DEST {} must be an absolute path", vcpilot::quote(bcast_dest)), 2);
        }
        std::vector<std::string> argv_send = {bcast_program, "send"};
        argv_send.insert(argv_send.end(), bcast_options.begin(), bcast_options.end());
        argv_send.push_back("--");
        argv_send.push_back(std::filesystem::absolute(bcast_file).string());
        argv_send.push_back(bcast_dest);
        return run_command(global, id, argv_send, false);
    }

    if (create->parsed()) {
        auto client = connect(global);
        v1::CreateClusterRequest request;
        for (const auto& site : sites) {
            *request.add_sites() = parse_site(site);
        }
        request.set_key_mode(keys == "exchange" ? v1::KEY_MODE_EXCHANGE : v1::KEY_MODE_CA);
        request.set_name_prefix(prefix);
        request.set_slots(slots);
        if (pilots.empty()) {
            pilots = global.grc.empty() ? "jobs" : "slurm";
        }
        request.set_pilots(pilots == "slurm" ? v1::PILOT_SOURCE_SLURM : v1::PILOT_SOURCE_JOBS);
        request.set_overlay(overlay == "n2n"    ? v1::OVERLAY_N2N
                            : overlay == "auto" ? v1::OVERLAY_AUTO
                                                : v1::OVERLAY_VXLAN);
        if (!walltime.empty()) {
            const std::uint32_t minutes = parse_walltime(walltime);
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
        if (wait) {
            cluster = follow(global, client, cluster.id(), ready_or_failed, timeout_s, false);
        }
        if (global.json) {
            fmt::print("{}\n", to_json(cluster));
        } else if (wait) {
            print_cluster(cluster);
        } else {
            fmt::print("{}\n", cluster.id());
        }
        return cluster.state() == v1::CLUSTER_STATE_FAILED ? 1 : 0;
    }
    if (list->parsed()) {
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
                where +=
                    fmt::format("{}{}:{}", where.empty() ? "" : " ", site.site(), site.nodes());
            }
            fmt::print("{:<12} {:<12} {:<10} {:>7}  {}\n", cluster.id(), cluster.owner(),
                       cluster_state(cluster.state()), fmt::format("{}/{}", ready, total), where);
        }
        return 0;
    }
    if (show->parsed()) {
        auto client = connect(global);
        v1::ClusterRef ref;
        ref.set_id(id);
        v1::Cluster cluster;
        auto context = context_for(client, "GetCluster");
        check(
            client.call([&](auto& stub) { return stub.GetCluster(context.get(), ref, &cluster); }),
            client);
        if (global.json) {
            fmt::print("{}\n", to_json(cluster));
        } else {
            print_cluster(cluster);
        }
        return 0;
    }
    if (watch->parsed()) {
        auto client = connect(global);
        follow(
            global, client, id,
            [](const v1::Cluster& cluster) {
                return cluster.state() == v1::CLUSTER_STATE_RELEASED;
            },
            1e7, true);
        return 0;
    }
    if (wait_cmd->parsed()) {
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
    if (release->parsed()) {
        auto client = connect(global);
        v1::ClusterRef ref;
        ref.set_id(id);
        v1::Cluster cluster;
        auto context = context_for(client, "ReleaseCluster");
        check(client.call(
                  [&](auto& stub) { return stub.ReleaseCluster(context.get(), ref, &cluster); }),
              client);
        if (wait && cluster.state() != v1::CLUSTER_STATE_RELEASED) {
            cluster = follow(
                global, client, id,
                [](const v1::Cluster& c) { return c.state() == v1::CLUSTER_STATE_RELEASED; },
                timeout_s, false);
        }
        if (global.json) {
            fmt::print("{}\n", to_json(cluster));
        } else {
            fmt::print("{} {}\n", cluster.id(), cluster_state(cluster.state()));
        }
        return 0;
    }
    if (run->parsed() || exec->parsed()) {
        return run_command(global, id, command, exec->parsed());
    }
    return 0;
}
