// vc-grcd: the Global Resource Coordinator of several sites.
//
//   vc-grcd [--config FILE] --state FILE --listen HOST:PORT... --pool CIDR... --site NAME...
//           [--vni-range A-B]
//           --tls-ca FILE --tls-cert FILE --tls-key FILE
//
// Every caller proves who it is with a TLS client certificate signed by --tls-ca: a site's CRM
// with common name "crm:<site>", a user with their user name ("root" sees every cluster).
//
// Every option can also come from a TOML file, --config FILE (coordinator/daemon_config.hpp).
#include <CLI/CLI.hpp>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "common/grpc_runtime.hpp"
#include "common/log.hpp"
#include "coordinator/daemon.hpp"
#include "coordinator/daemon_config.hpp"
#include "coordinator/lease_store.hpp"
#include "grc/grc.hpp"

namespace {

using namespace vcpilot;
using namespace vcpilot::coordinator;

struct Flags {
    std::string state, vni_range = "1-16777215", log_level = "info";
    std::vector<std::string> listen, pools, sites;
    int release_timeout_s = 60;
    std::string tls_ca, tls_cert, tls_key;
    std::string n2n_supernode;
};

int serve(const Flags& flags) {
    auto pool = parse_pools("--pool", flags.pools);
    if (!pool) {
        spdlog::error("{}", pool.error().message);
        return 2;
    }
    GrcOptions options{.sites = {}, .pool = std::move(*pool)};
    for (const auto& site : flags.sites) {
        v1::CreateClusterRequest probe;
        probe.add_sites()->set_site(site);
        probe.mutable_sites(0)->set_nodes(1);
        if (auto ok = validate_create(probe, "root"); !ok) {
            spdlog::error("--site {}: not a site name (a lowercase label of at most 32 characters)",
                          site);
            return 2;
        }
        options.sites.insert(site);
    }
    auto vnis = parse_vni_range(flags.vni_range);
    if (!vnis) {
        spdlog::error("{}", vnis.error().message);
        return 2;
    }
    std::tie(options.vni_first, options.vni_last) = *vnis;
    options.release_timeout = std::chrono::seconds(flags.release_timeout_s);
    if (!flags.n2n_supernode.empty()) {
        if (auto ok = check_supernode("--n2n-supernode", flags.n2n_supernode); !ok) {
            spdlog::error("{}", ok.error().message);
            return 2;
        }
        options.n2n_supernode = flags.n2n_supernode;
    }
    std::string pem[3];
    const std::pair<const char*, const std::string*> files[3] = {{"--tls-ca", &flags.tls_ca},
                                                                 {"--tls-cert", &flags.tls_cert},
                                                                 {"--tls-key", &flags.tls_key}};
    for (int i = 0; i < 3; ++i) {
        auto text = read_pem(files[i].first, *files[i].second);
        if (!text) {
            spdlog::error("{}", text.error().message);
            return 2;
        }
        pem[i] = std::move(*text);
    }

    auto leases = LeaseStore::open(flags.state);
    if (!leases) {
        spdlog::error("{}", leases.error().message);
        return 1;
    }
    auto grc = GrcServer::start(std::move(options), ClusterStore(std::move(*leases)));
    if (!grc) {
        spdlog::error("{}", grc.error().message);
        return 1;
    }
    std::vector<std::shared_ptr<grpc::ServerCredentials>> credentials(
        flags.listen.size(), mutual_tls(pem[0], pem[1], pem[2]));
    auto server = serve_on(flags.listen, credentials, (*grc)->service());
    if (!server) {
        spdlog::error("{}", server.error().message);
        return 1;
    }
    spdlog::info("vc-grcd serving sites {} on {} (state {})", fmt::join(flags.sites, ", "),
                 fmt::join(flags.listen, ", "), flags.state);
    const int signal = wait_for_stop_signal();
    spdlog::info("signal {}: shutting down", signal);
    (*server)->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    (*grc)->stop();
    return 0;
}

// main's body; guarded_main reports an exception that escapes it.
int run(int argc, char** argv) {
    vcpilot::tune_grpc_runtime();
    block_stop_signals();  // taken by sigwait; every thread started later inherits the mask

    CLI::App app{"vc-grcd: the vcpilot Global Resource Coordinator of several sites"};
    Flags flags;
    app.add_option("--state", flags.state, "the SQLite state file")->required();
    app.add_option("--listen", flags.listen, "where to serve: HOST:PORT (repeatable)")->required();
    app.add_option("--pool", flags.pools,
                   "the global address range every site's blocks come from, a CIDR (repeatable)")
        ->required();
    app.add_option("--site", flags.sites, "a site this GRC serves (repeatable)")->required();
    app.add_option("--vni-range", flags.vni_range,
                   "VXLAN network identifiers for clusters across sites, FIRST-LAST");
    app.add_option("--release-timeout", flags.release_timeout_s,
                   "seconds a release waits for every site to confirm")
        ->check(CLI::Range(1, 3600));
    app.add_option("--tls-ca", flags.tls_ca, "the CA that signs every caller's certificate (PEM)")
        ->required();
    app.add_option("--tls-cert", flags.tls_cert, "the GRC's certificate (PEM)")->required();
    app.add_option("--tls-key", flags.tls_key, "its private key (PEM)")->required();
    app.add_option("--n2n-supernode", flags.n2n_supernode,
                   "an n2n supernode (IPV4:PORT) that every site's nodes reach: clusters with "
                   "the n2n overlay");
    app.add_option("--log-level", flags.log_level, "trace, debug, info, warn or error");
    if (auto code = parse_command_line(app, "vc-grcd", argc, argv)) {
        return *code;
    }
    if (auto code = start_logging("vc-grcd", flags.log_level)) {
        return *code;
    }
    return serve(flags);
}

}  // namespace

int main(int argc, char** argv) {
    return guarded_main("vc-grcd", [&] { return run(argc, argv); });
}
