// vc-crmd: the Cluster Resource Manager of one site.
//
//   vc-crmd [--config FILE] --site NAME --state FILE --listen ADDRESS... [--pool CIDR...]
//           [--vni-range A-B]
//           [--grc HOST:PORT --tls-ca FILE --tls-cert FILE --tls-key FILE]
//           [--slurm-conf FILE [--slurm-bin DIR]]
//
// Pilots of the site attach to it, users on the site drive it with vcctl (both authenticated
// with the site's MUNGE). With --pool it hands out the site's own addresses; with --grc it also
// takes the site's share of clusters that span sites from the GRC (mutual TLS, certificate
// common name "crm:<site>"). With --slurm-conf it submits, for clusters that ask for it, the
// Slurm job that holds the cluster's nodes at this site, as the cluster's owner.
//
// Every option can also come from a TOML file, --config FILE (coordinator/daemon_config.hpp).
#include <CLI/CLI.hpp>
#include <filesystem>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "common/grpc_runtime.hpp"
#include "common/log.hpp"
#include "coordinator/daemon.hpp"
#include "coordinator/daemon_config.hpp"
#include "coordinator/lease_store.hpp"
#include "crm/crm.hpp"

namespace {

using namespace vcpilot;
using namespace vcpilot::coordinator;

struct Flags {
    std::string site, state, vni_range = "1-16777215", munge_socket, log_level = "info";
    std::vector<std::string> listen, pools;
    int release_timeout_s = 30;
    int reattach_grace_s = 60;
    bool no_address_check = false;
    std::string grc, tls_ca, tls_cert, tls_key;
    std::string slurm_conf, slurm_bin = "/usr/bin";
    std::string n2n_supernode;
    bool behind_nat = false;
};

Result<CrmOptions> options_from(const Flags& flags) {
    CrmOptions options;
    options.site = flags.site;
    options.munge_socket = flags.munge_socket;
    options.check_pilot_address = !flags.no_address_check;
    options.release_timeout = std::chrono::seconds(flags.release_timeout_s);
    options.reattach_grace = std::chrono::seconds(flags.reattach_grace_s);
    if (!flags.pools.empty()) {
        auto pool = parse_pools("--pool", flags.pools);
        if (!pool) {
            return pool.error();
        }
        options.pool = std::move(*pool);
    }
    auto vnis = parse_vni_range(flags.vni_range);
    if (!vnis) {
        return vnis.error();
    }
    std::tie(options.vni_first, options.vni_last) = *vnis;
    if (!flags.grc.empty()) {
        GrcUplinkOptions grc;
        grc.target = flags.grc;
        for (auto [flag, path, out] : {std::tuple{"--tls-ca", &flags.tls_ca, &grc.tls_ca},
                                       std::tuple{"--tls-cert", &flags.tls_cert, &grc.tls_cert},
                                       std::tuple{"--tls-key", &flags.tls_key, &grc.tls_key}}) {
            auto pem = read_pem(flag, *path);
            if (!pem) {
                return pem.error();
            }
            *out = std::move(*pem);
        }
        options.grc = std::move(grc);
    }
    options.behind_nat = flags.behind_nat;
    if (!flags.n2n_supernode.empty()) {
        if (auto ok = check_supernode("--n2n-supernode", flags.n2n_supernode); !ok) {
            return ok.error();
        }
        options.n2n_supernode = flags.n2n_supernode;
    }
    if (!flags.slurm_conf.empty()) {
        std::error_code ec;
        if (!std::filesystem::is_regular_file(flags.slurm_conf, ec)) {
            return Error{fmt::format("--slurm-conf {}: not a file", flags.slurm_conf)};
        }
        if (!std::filesystem::exists(std::filesystem::path(flags.slurm_bin) / "sbatch", ec)) {
            return Error{fmt::format("--slurm-bin {}: it has no sbatch", flags.slurm_bin)};
        }
        SlurmOptions slurm;
        slurm.slurm_conf = flags.slurm_conf;
        slurm.bin_dir = flags.slurm_bin;
        options.slurm = std::move(slurm);
    }
    return options;
}

int serve(const Flags& flags) {
    auto options = options_from(flags);
    if (!options) {
        spdlog::error("{}", options.error().message);
        return 2;
    }
    auto leases = LeaseStore::open(flags.state);
    if (!leases) {
        spdlog::error("{}", leases.error().message);
        return 1;
    }
    auto crm = CrmServer::start(std::move(*options), ClusterStore(std::move(*leases)));
    if (!crm) {
        spdlog::error("{}", crm.error().message);
        return 1;
    }
    // Pilots and users prove who they are with MUNGE in the messages, not with the transport.
    std::vector<std::shared_ptr<grpc::ServerCredentials>> credentials(
        flags.listen.size(), grpc::InsecureServerCredentials());
    auto server = serve_on(flags.listen, credentials, (*crm)->service());
    if (!server) {
        spdlog::error("{}", server.error().message);
        return 1;
    }
    spdlog::info("vc-crmd of site {} serving on {} (state {}{}{})", flags.site,
                 fmt::join(flags.listen, ", "), flags.state,
                 flags.grc.empty() ? "" : ", GRC " + flags.grc,
                 flags.slurm_conf.empty() ? "" : ", Slurm " + flags.slurm_conf);
    const int signal = wait_for_stop_signal();
    spdlog::info("signal {}: shutting down", signal);
    (*server)->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    (*crm)->stop();
    return 0;
}

// main's body; guarded_main reports an exception that escapes it.
int run(int argc, char** argv) {
    vcpilot::tune_grpc_runtime();
    block_stop_signals();  // taken by sigwait; every thread started later inherits the mask

    CLI::App app{"vc-crmd: the vcpilot Cluster Resource Manager of one site"};
    Flags flags;
    app.add_option("--site", flags.site, "this site's name")->required();
    app.add_option("--state", flags.state, "the SQLite state file")->required();
    app.add_option("--listen", flags.listen, "where to serve: HOST:PORT or unix:/PATH (repeatable)")
        ->required();
    app.add_option("--pool", flags.pools,
                   "the site's own address range, a CIDR (repeatable); without it, clusters come "
                   "from the GRC only");
    app.add_option("--vni-range", flags.vni_range,
                   "VXLAN network identifiers for the site's own clusters, FIRST-LAST");
    app.add_option("--munge-socket", flags.munge_socket, "munged's socket (default: libmunge's)");
    app.add_option("--release-timeout", flags.release_timeout_s,
                   "seconds a release waits for pilots to confirm")
        ->check(CLI::Range(1, 3600));
    app.add_option("--reattach-grace", flags.reattach_grace_s,
                   "seconds a pilot that lost its stream may take to attach again before its "
                   "node counts as gone")
        ->check(CLI::Range(1, 3600));
    app.add_flag("--no-pilot-address-check", flags.no_address_check,
                 "accept pilots whose host name does not resolve to their source address");
    auto* grc = app.add_option("--grc", flags.grc,
                               "the GRC (HOST:PORT) whose clusters across sites this site joins");
    app.add_option("--tls-ca", flags.tls_ca, "the CA that signed the GRC's certificate (PEM)")
        ->needs(grc);
    app.add_option("--tls-cert", flags.tls_cert, "this CRM's certificate, CN crm:<site> (PEM)")
        ->needs(grc);
    app.add_option("--tls-key", flags.tls_key, "its private key (PEM)")->needs(grc);
    auto* slurm_conf = app.add_option(
        "--slurm-conf", flags.slurm_conf,
        "the site's slurm.conf: submit the Slurm job that holds a cluster's nodes here, for "
        "clusters made with pilots from Slurm");
    app.add_option("--slurm-bin", flags.slurm_bin, "where sbatch, squeue and scancel are")
        ->needs(slurm_conf)
        ->capture_default_str();
    app.add_option("--n2n-supernode", flags.n2n_supernode,
                   "an n2n supernode (IPV4:PORT) the site's nodes reach: the site's own "
                   "clusters with the n2n overlay");
    app.add_flag("--behind-nat", flags.behind_nat,
                 "the site's nodes cannot be reached from other sites (NAT): the GRC makes no "
                 "VXLAN cluster spanning this site and another")
        ->needs(grc);
    app.add_option("--log-level", flags.log_level, "trace, debug, info, warn or error");
    if (auto code = parse_command_line(app, "vc-crmd", argc, argv)) {
        return *code;
    }
    if (!flags.grc.empty() &&
        (flags.tls_ca.empty() || flags.tls_cert.empty() || flags.tls_key.empty())) {
        (void)std::fprintf(stderr, "vc-crmd: --grc needs --tls-ca, --tls-cert and --tls-key\n");
        return 2;
    }
    if (auto code = start_logging("vc-crmd", flags.log_level)) {
        return *code;
    }
    return serve(flags);
}

}  // namespace

int main(int argc, char** argv) {
    return guarded_main("vc-crmd", [&] { return run(argc, argv); });
}
