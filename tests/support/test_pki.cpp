#include "tests/support/test_pki.hpp"

#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <iterator>

#include "coordinator/daemon.hpp"
#include "tests/support/process.hpp"

namespace vcpilot::testing {
namespace {

std::string text_of(const std::filesystem::path& file) {
    std::ifstream in(file);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Runs the script; its output goes to `log`.
Status run_script(const std::filesystem::path& dir, const TestPkiSpec& spec,
                  const std::filesystem::path& log) {
    ExecSpec script{{(spec.source_dir / "scripts" / "make-test-ca.sh").string(), "--out",
                     dir.string(), "--grc-address", spec.grc_address},
                    log};
    for (const auto& site : spec.sites) {
        script.argv.insert(script.argv.end(), {"--site", site});
    }
    for (const auto& user : spec.users) {
        script.argv.insert(script.argv.end(), {"--user", user});
    }
    ChildProcess process("make-test-ca.sh");
    if (auto started = process.start(script); !started) {
        return started;
    }
    // Generous: 200 sites take a few seconds on an idle machine.
    auto status = process.wait_exit(std::chrono::minutes(10));
    if (!status) {
        return status.error();
    }
    if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
        return Error{"make-test-ca.sh " + describe_wait_status(*status) + ": " + text_of(log)};
    }
    return {};
}

}  // namespace

Result<TestPki> TestPki::make(const std::filesystem::path& dir, const TestPkiSpec& spec) {
    if (auto made = run_script(dir, spec, dir.string() + ".log"); !made) {
        return made.error();
    }
    TestPki pki;
    pki.dir_ = dir;
    std::string failure;
    auto pem = [&](const std::string& name) {
        auto text = coordinator::read_pem("the test PKI", (dir / name).string());
        if (!text) {
            failure = text.error().message;
            return std::string();
        }
        return std::move(*text);
    };
    auto identity = [&](const std::string& name) {
        return TlsIdentity{pem(name + ".pem"), pem(name + ".key")};
    };
    pki.ca_ = pem("ca.pem");
    pki.grc_ = identity("grc");
    for (const auto& site : spec.sites) {
        pki.crms_[site] = identity("crm-" + site);
    }
    for (const auto& user : spec.users) {
        pki.users_[user] = identity("user-" + user);
    }
    if (!failure.empty()) {
        return Error{failure};
    }
    return pki;
}

std::vector<std::string> TestPki::tls_flags(const std::string& identity) const {
    return {"--tls-ca",   (dir_ / "ca.pem").string(),
            "--tls-cert", (dir_ / (identity + ".pem")).string(),
            "--tls-key",  (dir_ / (identity + ".key")).string()};
}

std::shared_ptr<grpc::ServerCredentials> TestPki::grc_server_credentials() const {
    return coordinator::mutual_tls(ca_, grc_.cert, grc_.key);
}

}  // namespace vcpilot::testing
