// vc-crmd: the Cluster Resource Manager of one site.
//
//   vc-crmd --site NAME --state FILE --listen ADDRESS... [--pool CIDR...] [--vni-range A-B]
//
// Pilots of the site attach to it, users on the site drive it with vcctl (both authenticated
// with the site's MUNGE). With --pool it hands out the site's own addresses; without, its ranges
// come from the GRC.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <fmt/ranges.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "common/log.hpp"
#include "common/store.hpp"
#include "coordinator/crm.hpp"

namespace {

using namespace vcpilot;

constexpr int kMaxMessageBytes = 64 * 1024 * 1024;

Result<std::pair<std::uint32_t, std::uint32_t>> parse_vni_range(const std::string& text) {
    const auto dash = text.find('-');
    std::uint32_t first = 0, last = 0;
    const char* end = text.data() + text.size();
    if (dash == std::string::npos ||
        std::from_chars(text.data(), text.data() + dash, first).ptr != text.data() + dash ||
        std::from_chars(text.data() + dash + 1, end, last).ptr != end || first < 1 ||
        last > 16777215 || first > last) {
        return Error{fmt::format("--vni-range {}: want FIRST-LAST within 1-16777215", text)};
    }
    return std::pair{first, last};
}

int serve(const std::string& site, const std::string& state, const std::vector<std::string>& listen,
          const std::vector<std::string>& pools, const std::string& vni_range,
          const std::string& munge_socket, int release_timeout_s, bool check_address) {
    coordinator::CrmOptions options;
    options.site = site;
    options.munge_socket = munge_socket;
    options.check_pilot_address = check_address;
    options.release_timeout = std::chrono::seconds(release_timeout_s);
    if (!pools.empty()) {
        std::vector<Cidr> cidrs;
        for (const auto& text : pools) {
            auto cidr = Cidr::parse(text);
            if (!cidr) {
                spdlog::error("--pool {}: {}", text, cidr.error().message);
                return 2;
            }
            cidrs.push_back(*cidr);
        }
        auto pool = AddressPool::create(std::move(cidrs));
        if (!pool) {
            spdlog::error("--pool: {}", pool.error().message);
            return 2;
        }
        options.pool = std::move(*pool);
    }
    auto vnis = parse_vni_range(vni_range);
    if (!vnis) {
        spdlog::error("{}", vnis.error().message);
        return 2;
    }
    std::tie(options.vni_first, options.vni_last) = *vnis;

    auto leases = LeaseStore::open(state);
    if (!leases) {
        spdlog::error("{}", leases.error().message);
        return 1;
    }
    auto crm = coordinator::CrmServer::start(std::move(options),
                                             coordinator::ClusterStore(std::move(*leases)));
    if (!crm) {
        spdlog::error("{}", crm.error().message);
        return 1;
    }
    grpc::ServerBuilder builder;
    std::vector<int> ports(listen.size(), 0);
    for (std::size_t i = 0; i < listen.size(); ++i) {
        builder.AddListeningPort(listen[i], grpc::InsecureServerCredentials(), &ports[i]);
    }
    builder.RegisterService((*crm)->service());
    builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
    builder.SetMaxSendMessageSize(kMaxMessageBytes);
    auto server = builder.BuildAndStart();
    if (!server) {
        spdlog::error("cannot listen on {}", fmt::join(listen, ", "));
        return 1;
    }
    for (std::size_t i = 0; i < listen.size(); ++i) {
        if (ports[i] == 0) {
            spdlog::error("cannot listen on {}", listen[i]);
            server->Shutdown();
            return 1;
        }
    }
    spdlog::info("vc-crmd of site {} serving on {} (state {})", site, fmt::join(listen, ", "),
                 state);

    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    int signal = 0;
    sigwait(&signals, &signal);
    spdlog::info("signal {}: shutting down", signal);
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    (*crm)->stop();
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    // Signals are taken by sigwait in main; every thread started later inherits the mask.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    CLI::App app{"vc-crmd: the vcpilot Cluster Resource Manager of one site"};
    std::string site, state, vni_range = "1-16777215", munge_socket, log_level = "info";
    std::vector<std::string> listen, pools;
    int release_timeout_s = 30;
    bool no_address_check = false;
    app.add_option("--site", site, "this site's name")->required();
    app.add_option("--state", state, "the SQLite state file")->required();
    app.add_option("--listen", listen, "where to serve: HOST:PORT or unix:/PATH (repeatable)")
        ->required();
    app.add_option("--pool", pools,
                   "the site's own address range, a CIDR (repeatable); without it, ranges come "
                   "from the GRC");
    app.add_option("--vni-range", vni_range, "VXLAN network identifiers to hand out, FIRST-LAST");
    app.add_option("--munge-socket", munge_socket, "munged's socket (default: libmunge's)");
    app.add_option("--release-timeout", release_timeout_s,
                   "seconds a release waits for pilots to confirm")
        ->check(CLI::Range(1, 3600));
    app.add_flag("--no-pilot-address-check", no_address_check,
                 "accept pilots whose host name does not resolve to their source address");
    app.add_option("--log-level", log_level, "trace, debug, info, warn or error");
    CLI11_PARSE(app, argc, argv);
    auto level = parse_log_level(log_level);
    if (!level) {
        std::fprintf(stderr, "vc-crmd: --log-level: %s\n", level.error().message.c_str());
        return 2;
    }
    if (auto ok = init_logging("vc-crmd", {*level, std::nullopt, true}); !ok) {
        std::fprintf(stderr, "vc-crmd: %s\n", ok.error().message.c_str());
        return 1;
    }
    return serve(site, state, listen, pools, vni_range, munge_socket, release_timeout_s,
                 !no_address_check);
}
