// Certificate mode of SET_KEYS: OpenSSH certificates from the network (pilot/keys.hpp
// check_certificate), the whole request (pilot/validate.hpp), and the sshd configuration the job
// gets (pilot/sshd.hpp job_sshd_spec). The certificates are made by ssh-keygen, so the parser is
// checked against what OpenSSH itself writes.
#include <sys/wait.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sstream>
#include <string>
#include <vector>

#include "pilot/privileged/keys.hpp"
#include "pilot/privileged/sshd.hpp"
#include "pilot/validate.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/unit/expect_error.hpp"
#include "tests/unit/literals.hpp"

namespace vcpilot::pilot {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
using vcpilot::testing::TempDir;

const fs::path kSshKeygen = "/usr/bin/ssh-keygen";

int run(const std::string& command) {
    // NOLINTNEXTLINE(concurrency-mt-unsafe): the tests start no threads of their own here.
    const int status = std::system(command.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string first_line(const fs::path& file) {
    std::ifstream in(file);
    std::string line;
    std::getline(in, line);
    return line;
}

// "type base64" of a line, without its comment.
std::string without_comment(const std::string& line) {
    const std::size_t second = line.find(' ', line.find(' ') + 1);
    return line.substr(0, second);
}

// A cluster CA and a node's host and user keys, made with ssh-keygen in a temp dir, and
// certificates signed the way the tests ask.
class Keys {
  public:
    Keys() {
        for (const char* name : {"ca", "other-ca", "host", "user", "stranger"}) {
            if (run(kSshKeygen.string() + " -q -t ed25519 -N '' -C " + name + " -f " +
                    (dir_.path() / name).string()) != 0) {
                throw std::runtime_error("ssh-keygen failed");
            }
        }
    }
    std::string public_key(const std::string& name) const {
        return first_line(dir_.path() / (name + ".pub"));
    }
    // Signs `key`'s public key with `ca`; `options` as for ssh-keygen ("-h -n vn1").
    std::string sign(const std::string& key, const std::string& options,
                     const std::string& ca = "ca") const {
        const fs::path pub = dir_.path() / (key + ".pub");
        const fs::path cert = dir_.path() / (key + "-cert.pub");
        fs::remove(cert);
        if (run(kSshKeygen.string() + " -q -s " + (dir_.path() / ca).string() + " -I test " +
                options + " " + pub.string()) != 0) {
            throw std::runtime_error("ssh-keygen -s failed");
        }
        return first_line(cert);
    }
    std::string host_certificate() const { return sign("host", "-h -n vn1,10.77.0.1"); }
    std::string user_certificate() const { return sign("user", "-n alice"); }

  private:
    TempDir dir_;
};

class Certificates : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!fs::exists(kSshKeygen)) {
            GTEST_SKIP() << "ssh-keygen not installed";
        }
        keys_ = std::make_unique<Keys>();
    }
    CertificateExpectation host_expectation() const {
        host_key_ = keys_->public_key("host");
        ca_key_ = keys_->public_key("ca");
        return {.role = CertificateRole::host,
                .certified_key = host_key_,
                .ca_key = ca_key_,
                .principal = "vn1",
                .now_unix = std::time(nullptr)};
    }
    std::unique_ptr<Keys> keys_;
    mutable std::string host_key_, ca_key_;
};

// ---- check_certificate ----

TEST_F(Certificates, AcceptsAHostCertificateFromSshKeygenAndDropsItsComment) {
    const std::string line = keys_->host_certificate();
    ASSERT_THAT(line, StartsWith("ssh-ed25519-cert-v01@openssh.com AAAA"));
    auto checked = check_certificate("host_certificate", line, host_expectation());
    ASSERT_TRUE(checked) << checked.error().message;
    EXPECT_EQ(*checked, without_comment(line));
}

TEST_F(Certificates, AcceptsAUserCertificateForTheJobUser) {
    const std::string user_key = keys_->public_key("user");
    const std::string ca_key = keys_->public_key("ca");
    auto checked = check_certificate("user_certificate", keys_->user_certificate(),
                                     {.role = CertificateRole::user,
                                      .certified_key = user_key,
                                      .ca_key = ca_key,
                                      .principal = "alice",
                                      .now_unix = std::time(nullptr)});
    EXPECT_TRUE(checked) << checked.error().message;
}

TEST_F(Certificates, RefusesAUserCertificateWhereAHostCertificateBelongs) {
    EXPECT_THAT(error_of(check_certificate("host_certificate", keys_->sign("host", "-n vn1"),
                                           host_expectation())),
                HasSubstr("host_certificate: this is a user certificate; a host certificate"));
}

TEST_F(Certificates, RefusesACertificateOfAnotherKey) {
    EXPECT_THAT(error_of(check_certificate("host_certificate", keys_->sign("stranger", "-h -n vn1"),
                                           host_expectation())),
                HasSubstr("host_certificate: certifies another key than this node's host key"));
}

TEST_F(Certificates, RefusesACertificateSignedByAnotherCa) {
    EXPECT_THAT(
        error_of(check_certificate("host_certificate", keys_->sign("host", "-h -n vn1", "other-ca"),
                                   host_expectation())),
        HasSubstr("was not signed by the cluster's CA"));
}

TEST_F(Certificates, RefusesACertificateNotValidForThisNode) {
    EXPECT_THAT(error_of(check_certificate("host_certificate", keys_->sign("host", "-h -n vn2"),
                                           host_expectation())),
                HasSubstr("host_certificate: is not valid for 'vn1'"));
}

TEST_F(Certificates, RefusesAnExpiredCertificate) {
    EXPECT_THAT(error_of(check_certificate("host_certificate",
                                           keys_->sign("host", "-h -n vn1 -V 20000101:20000102"),
                                           host_expectation())),
                HasSubstr("host_certificate: expired at "));
}

TEST_F(Certificates, RefusesLinesThatAreNotCertificates) {
    const auto expectation = host_expectation();
    const std::string line = keys_->host_certificate();
    const std::string data = line.substr(line.find(' ') + 1, line.rfind(' ') - line.find(' ') - 1);
    const auto refused = [&](const std::string& text) {
        return error_of(check_certificate("host_certificate", text, expectation));
    };
    EXPECT_THAT(refused(""), HasSubstr("host_certificate: certificate is empty"));
    EXPECT_THAT(refused("ssh-ed25519 " + data), HasSubstr("'ssh-ed25519' is not accepted"));
    EXPECT_THAT(refused(keys_->public_key("host")), HasSubstr("is not accepted"));
    EXPECT_THAT(refused("ssh-ed25519-cert-v01@openssh.com"), HasSubstr("no key data"));
    EXPECT_THAT(refused("ssh-ed25519-cert-v01@openssh.com " + data.substr(1)),
                HasSubstr("not valid base64"));
    EXPECT_THAT(refused(line + "\nssh-ed25519 x"), HasSubstr("one line"));
    EXPECT_THAT(refused(std::string(kMaxPublicKeyLine + 1, 'A')), HasSubstr("more than the limit"));
    // A plain key's blob inside a certificate line: its key type and then nothing certified.
    const std::string plain = keys_->public_key("host");
    EXPECT_THAT(refused("ssh-ed25519-cert-v01@openssh.com " + without_comment(plain).substr(12)),
                HasSubstr("not a well-formed"));
    // Base64 whose unused low bits are set: another spelling of the same bytes. Only padded
    // base64 has such bits (the certificate's length depends on the key id and principals).
    if (data.back() == '=') {
        constexpr std::string_view kAlphabet =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        std::string respelled = data;
        const std::size_t last = respelled.find_last_not_of('=');
        respelled[last] = kAlphabet[kAlphabet.find(respelled[last]) ^ 1];
        EXPECT_THAT(refused("ssh-ed25519-cert-v01@openssh.com " + respelled),
                    HasSubstr("not valid base64"));
    }
}

TEST_F(Certificates, NeverEchoesAPastedPrivateKey) {
    const std::string message = error_of(check_certificate(
        "host_certificate", "-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXktdjEAAAA",
        host_expectation()));
    EXPECT_THAT(message, HasSubstr("private key"));
    EXPECT_THAT(message, Not(HasSubstr("b3BlbnNzaC1rZXktdjE")));
}

// ---- SET_KEYS in certificate mode ----

SetupPlan vn1_plan() {
    SetupLimits limits;
    limits.find_user = [](std::string_view) -> Result<UserIdentity> {
        return UserIdentity{"alice", 1000, 1000, "/home/alice"};
    };
    v1::SetupRequest setup;
    setup.set_cluster_id("c1");
    setup.set_node_name("vn1");
    setup.set_address("10.77.0.1/24");
    setup.mutable_vxlan()->set_vni(100);
    setup.set_user("alice");
    return validate_setup(setup, limits).value();
}

class CertificateSetKeys : public Certificates {
  protected:
    void SetUp() override {
        Certificates::SetUp();
        if (IsSkipped()) {
            return;
        }
        own_ = OwnKeys{keys_->public_key("host"), keys_->public_key("user")};
        request_.set_ca_key(keys_->public_key("ca"));
        request_.set_host_certificate(keys_->host_certificate());
        request_.set_user_certificate(keys_->user_certificate());
        for (int i = 1; i <= 2; ++i) {
            v1::ClusterNode* node = request_.add_nodes();
            node->set_name("vn" + std::to_string(i));
            node->set_address("10.77.0." + std::to_string(i));
            node->set_mac(to_string(mac_for_address(ip(node->address()))));
            node->set_underlay_address("172.16.1.1" + std::to_string(i));
        }
    }
    SetupPlan self_ = vn1_plan();
    OwnKeys own_;
    v1::SetKeysRequest request_;
};

TEST_F(CertificateSetKeys, AcceptsNodesWithoutKeysAndTheCertificatesOfThisNode) {
    auto cluster = validate_set_keys(request_, self_, own_);
    ASSERT_TRUE(cluster) << cluster.error().message;
    ASSERT_TRUE(cluster->certificates);
    EXPECT_EQ(cluster->certificates->ca_key, without_comment(keys_->public_key("ca")));
    EXPECT_THAT(cluster->certificates->host_certificate,
                StartsWith("ssh-ed25519-cert-v01@openssh.com AAAA"));
    EXPECT_THAT(cluster->certificates->user_certificate,
                StartsWith("ssh-ed25519-cert-v01@openssh.com AAAA"));
    ASSERT_EQ(cluster->nodes.size(), 2u);
    EXPECT_TRUE(cluster->nodes[1].host_key.empty() && cluster->nodes[1].user_key.empty());
}

TEST_F(CertificateSetKeys, RefusesNodeKeysMixedWithACa) {
    request_.mutable_nodes(1)->set_host_key(keys_->public_key("stranger"));
    EXPECT_THAT(error_of(validate_set_keys(request_, self_, own_)),
                HasSubstr("nodes[1].host_key: given together with ca_key; in certificate mode the "
                          "nodes carry no keys"));
    request_.mutable_nodes(1)->clear_host_key();
    request_.mutable_nodes(0)->set_user_key(keys_->public_key("stranger"));
    EXPECT_THAT(error_of(validate_set_keys(request_, self_, own_)),
                HasSubstr("nodes[0].user_key: given together with ca_key"));
}

TEST_F(CertificateSetKeys, RefusesCertificatesWithoutACa) {
    request_.clear_ca_key();
    for (auto& node : *request_.mutable_nodes()) {
        node.set_host_key(keys_->public_key("stranger"));
        node.set_user_key(keys_->public_key("stranger"));
    }
    EXPECT_THAT(error_of(validate_set_keys(request_, self_, own_)),
                HasSubstr("host_certificate: given without ca_key"));
    request_.clear_host_certificate();
    EXPECT_THAT(error_of(validate_set_keys(request_, self_, own_)),
                HasSubstr("user_certificate: given without ca_key"));
}

TEST_F(CertificateSetKeys, RefusesABadCaKey) {
    request_.set_ca_key("ssh-rsa AAAA");
    EXPECT_THAT(error_of(validate_set_keys(request_, self_, own_)), StartsWith("ca_key: "));
}

TEST_F(CertificateSetKeys, RefusesMissingCertificates) {
    request_.clear_host_certificate();
    EXPECT_THAT(error_of(validate_set_keys(request_, self_, own_)),
                HasSubstr("host_certificate: certificate is empty"));
    request_.set_host_certificate(keys_->host_certificate());
    request_.clear_user_certificate();
    EXPECT_THAT(error_of(validate_set_keys(request_, self_, own_)),
                HasSubstr("user_certificate: certificate is empty"));
}

TEST_F(CertificateSetKeys, RefusesCertificatesOfAnotherNodeOrUser) {
    std::swap(own_.host_key, own_.user_key);
    EXPECT_THAT(error_of(validate_set_keys(request_, self_, own_)),
                HasSubstr("host_certificate: certifies another key than this node's host key"));
    std::swap(own_.host_key, own_.user_key);
    request_.set_user_certificate(keys_->sign("user", "-n bob"));
    EXPECT_THAT(error_of(validate_set_keys(request_, self_, own_)),
                HasSubstr("user_certificate: is not valid for 'alice'"));
}

TEST_F(CertificateSetKeys, TheNodeListCheckAloneStaysExchangeMode) {
    // validate_set_keys(request, self) checks the node list only, as before certificates.
    EXPECT_THAT(error_of(validate_set_keys(request_, self_)), HasSubstr("nodes[0].host_key: "));
}

// ---- the job's sshd ----

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream stream(text);
    for (std::string line; std::getline(stream, line);) {
        lines.push_back(line);
    }
    return lines;
}

TEST(JobSshdSpec, InCertificateModeAddsTheHostCertificateAndTheUserCa) {
    const auto paths = JobPaths::make("/run/vcpilot", "node1", "job1").value();
    const auto config = render_sshd_config(job_sshd_spec(paths, ip("10.77.0.1"), "alice", true));
    ASSERT_TRUE(config) << config.error().message;
    EXPECT_THAT(lines_of(*config),
                ::testing::IsSupersetOf({
                    "ListenAddress 10.77.0.1",
                    "AllowUsers alice",
                    "HostKey /run/vcpilot/node1/job1/sshd/ssh_host_ed25519_key",
                    "HostCertificate /run/vcpilot/node1/job1/sshd/ssh_host_ed25519_key-cert.pub",
                    "TrustedUserCAKeys /run/vcpilot/node1/job1/sshd/trusted_user_ca_keys",
                    "AuthorizedKeysFile /run/vcpilot/node1/job1/home-ssh/authorized_keys",
                    "AuthenticationMethods publickey",
                }));
}

TEST(JobSshdSpec, InExchangeModeHasNeitherCertificateNorCa) {
    const auto paths = JobPaths::make("/run/vcpilot", "node1", "job1").value();
    const auto config = render_sshd_config(job_sshd_spec(paths, ip("10.77.0.1"), "alice", false));
    ASSERT_TRUE(config) << config.error().message;
    const auto lines = lines_of(*config);
    EXPECT_THAT(lines, Contains("HostKey /run/vcpilot/node1/job1/sshd/ssh_host_ed25519_key"));
    EXPECT_THAT(*config, Not(HasSubstr("HostCertificate")));
    EXPECT_THAT(*config, Not(HasSubstr("TrustedUserCAKeys")));
}

TEST(JobPaths, PutsTheUserCertificateNextToTheUserKeyForSshToFind) {
    const auto paths = JobPaths::make("/run/vcpilot", "node1", "job1").value();
    EXPECT_EQ(paths.user_certificate().string(), paths.user_key().string() + "-cert.pub");
    EXPECT_EQ(paths.host_certificate().string(), paths.host_key().string() + "-cert.pub");
}

}  // namespace
}  // namespace vcpilot::pilot
