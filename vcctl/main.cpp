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
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "vcctl/command.hpp"

namespace {

constexpr const char* kDefaultCrm = "unix:/run/vcpilot/crmd.sock";

// main's body; main reports a Failure or an exception that escapes it.
int run(int argc, char** argv) {
    CLI::App app{"vcctl: create, inspect, use and release vcpilot virtual clusters"};
    app.require_subcommand(1);
    app.fallthrough();  // global options may come after the subcommand too
    vcpilot::vcctl::Global global;
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

    using namespace vcpilot::vcctl;
    const std::vector<Command> commands = {
        add_create(app, global), add_list(app, global), add_show(app, global),
        add_watch(app, global),  add_wait(app, global), add_release(app, global),
        add_run(app, global),    add_exec(app, global), add_bcast(app, global),
    };

    CLI11_PARSE(app, argc, argv);

    for (const auto& command : commands) {
        if (command.app->parsed()) {
            return command.run();
        }
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const vcpilot::vcctl::Failure& failure) {
        (void)std::fprintf(stderr, "vcctl: %s\n", failure.message.c_str());
        return failure.code;
    } catch (const std::exception& error) {
        (void)std::fprintf(stderr, "vcctl: %s\n", error.what());
        return 1;
    }
}
