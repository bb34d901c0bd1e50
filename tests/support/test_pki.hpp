// TestPki: the X.509 PKI of the mutual TLS between vc-grcd, vc-crmd and vcctl, made for a test
// by scripts/make-test-ca.sh (a CA, the GRC's certificate for 127.0.0.1, one per CRM site and one
// per user) in a directory the caller owns, and every PEM file read once. Daemons get the
// files' paths (tls_flags), in-process engines and clients the PEM text.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace grpc {
class ServerCredentials;
}

namespace vcpilot::testing {

// A certificate and its key, PEM text.
struct TlsIdentity {
    std::string cert, key;
};

struct TestPkiSpec {
    std::vector<std::string> sites;  // a certificate for crm-SITE each
    std::vector<std::string> users;  // a certificate for user-USER each
    std::string grc_address = "127.0.0.1";
    std::filesystem::path source_dir = VCPILOT_SOURCE_DIR;  // where scripts/ is
};

class TestPki {
  public:
    // Runs make-test-ca.sh into `dir` (which must not hold a PKI yet) with its output in
    // DIR.log, quoted in the error if it fails, and reads what it made.
    static Result<TestPki> make(const std::filesystem::path& dir, const TestPkiSpec& spec);

    const std::filesystem::path& dir() const { return dir_; }
    const std::string& ca() const { return ca_; }
    const TlsIdentity& grc() const { return grc_; }
    // Of a site or a user the PKI was made for; std::out_of_range for others.
    const TlsIdentity& crm(const std::string& site) const { return crms_.at(site); }
    const TlsIdentity& user(const std::string& name) const { return users_.at(name); }

    // --tls-ca, --tls-cert and --tls-key with the files of `identity` ("grc", "crm-SITE"), as
    // vc-grcd and vc-crmd take them.
    std::vector<std::string> tls_flags(const std::string& identity) const;
    // What vc-grcd serves with: its certificate, and clients must present one of this CA's.
    std::shared_ptr<grpc::ServerCredentials> grc_server_credentials() const;

  private:
    std::filesystem::path dir_;
    std::string ca_;
    TlsIdentity grc_;
    std::map<std::string, TlsIdentity> crms_;
    std::map<std::string, TlsIdentity> users_;
};

}  // namespace vcpilot::testing
