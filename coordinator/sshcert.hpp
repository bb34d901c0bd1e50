// An OpenSSH certificate authority for ed25519 keys: the per-cluster CA that signs the host and
// user certificates of a virtual cluster, so that its nodes trust each other through one
// `@cert-authority` line and one `TrustedUserCAKeys` entry instead of N^2 known_hosts lines.
//
// Certificates follow OpenSSH's PROTOCOL.certkeys (ssh-ed25519-cert-v01@openssh.com) and are
// signed in-process with OpenSSL's Ed25519: a coordinator signs thousands of them when clusters
// start, and spawning ssh-keygen for each would dominate that. Only ed25519 exists here, for the
// CA and for the subject keys, because that is the only key type the pilots generate.
//
// Errors come back as values with one-line messages; nothing throws. An SshCa may be used from
// several threads at once: all its const members only read it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

// OpenSSL's EVP_PKEY and EVP_MD_CTX; OpenSSL stays an implementation detail.
struct evp_pkey_st;
struct evp_md_ctx_st;

namespace vcpilot {

inline constexpr std::string_view kSshEd25519 = "ssh-ed25519";
inline constexpr std::string_view kSshEd25519Cert = "ssh-ed25519-cert-v01@openssh.com";

// Limits on what a certificate may carry. OpenSSH itself allows more; nothing a cluster needs
// comes near these, so anything beyond them is a bug or an attack.
inline constexpr std::size_t kMaxPrincipals = 256;
inline constexpr std::size_t kMaxPrincipalLength = 255;
inline constexpr std::size_t kMaxKeyIdLength = 255;
// A public key line longer than this is refused before any parsing (an ed25519 line is 80 bytes
// plus its comment).
inline constexpr std::size_t kMaxPublicKeyLineLength = std::size_t{8} * 1024;

enum class CertificateType : std::uint32_t {
    User = 1,  // proves a user to sshd (TrustedUserCAKeys)
    Host = 2,  // proves a host to ssh (@cert-authority in known_hosts)
};

struct CertificateRequest {
    CertificateType type = CertificateType::User;
    // The subject's key: "ssh-ed25519 AAAA... [comment]", without a newline.
    std::string public_key_line;
    // Shown by `ssh-keygen -L` and logged by sshd on every login with the certificate: printable
    // ASCII, 1 to kMaxKeyIdLength bytes. It is also the comment of the certificate line.
    std::string key_id;
    // User names (user certificates) or host names (host certificates) the certificate is valid
    // for: 1 to kMaxPrincipals of them, each 1 to kMaxPrincipalLength bytes without commas,
    // spaces or control characters. An empty list would mean "any principal" to OpenSSH, and a
    // comma would be ambiguous wherever OpenSSH handles principals as a comma-separated list.
    std::vector<std::string> principals;
    std::uint64_t serial = 0;
    // The validity interval, seconds since the epoch: valid from valid_after_unix up to (not
    // including) valid_before_unix. 0 <= valid_after_unix < valid_before_unix.
    std::int64_t valid_after_unix = 0;
    std::int64_t valid_before_unix = 0;
};

// The certificate authority: one ed25519 key pair, held in memory.
class SshCa {
  public:
    // A new CA with a fresh key from OpenSSL's random generator.
    static Result<SshCa> generate();
    // The CA whose private key is this 32-byte ed25519 seed (as private_seed() returned it), so a
    // coordinator can keep its CA across restarts.
    static Result<SshCa> from_private_bytes(std::span<const std::uint8_t, 32> seed);
    // The same from a string of exactly 32 raw bytes (a SQLite blob, say); any other length is
    // refused.
    static Result<SshCa> from_private_bytes(std::string_view seed);

    ~SshCa();
    SshCa(SshCa&&) noexcept;
    SshCa& operator=(SshCa&&) noexcept;
    SshCa(const SshCa&) = delete;
    SshCa& operator=(const SshCa&) = delete;

    // The private key's 32-byte seed: everything needed to restore this CA. Secret; the caller
    // should wipe its copy (OPENSSL_cleanse) when done with it.
    std::array<std::uint8_t, 32> private_seed() const;
    // The raw 32-byte ed25519 public key.
    const std::array<std::uint8_t, 32>& public_key() const noexcept { return public_key_; }
    // "ssh-ed25519 AAAA... comment" ("ssh-ed25519 AAAA..." when `comment` is empty), without a
    // newline: the line for TrustedUserCAKeys, or for known_hosts after "@cert-authority host ".
    std::string public_key_line(std::string_view comment) const;

    // Signs a certificate for the request's key. Returns the certificate line
    // "ssh-ed25519-cert-v01@openssh.com AAAA... key_id", as `ssh-keygen -s` writes it to
    // "<key>-cert.pub" (without the newline). Every certificate gets a fresh random nonce. User
    // certificates carry the extensions permit-port-forwarding and permit-pty and nothing else
    // (no agent or X11 forwarding, no ~/.ssh/rc); host certificates carry none. Neither carries
    // critical options. Refuses a request that breaks any rule of CertificateRequest.
    Result<std::string> sign(const CertificateRequest& request) const;

  private:
    struct PkeyDeleter {
        void operator()(evp_pkey_st* key) const noexcept;
    };
    using PkeyPtr = std::unique_ptr<evp_pkey_st, PkeyDeleter>;
    struct MdCtxDeleter {
        void operator()(evp_md_ctx_st* context) const noexcept;
    };
    using MdCtxPtr = std::unique_ptr<evp_md_ctx_st, MdCtxDeleter>;

    SshCa(PkeyPtr key, const std::array<std::uint8_t, 32>& public_key, MdCtxPtr signer);
    static Result<SshCa> from_pkey(PkeyPtr key);

    PkeyPtr key_;
    // A signing context initialised once with key_; sign() copies it (see there).
    MdCtxPtr signer_;
    std::array<std::uint8_t, 32> public_key_{};
    // The wire blob of the public key (string "ssh-ed25519", string key), which every
    // certificate repeats as its signature key.
    std::string public_key_blob_;
};

// The raw 32-byte key of an OpenSSH public key line "ssh-ed25519 AAAA... [comment]" (without a
// newline). Refuses anything else: other key types and certificates, control characters, base64
// that is not canonical (bad characters, wrong padding, whitespace inside), and a key blob whose
// type does not match the line's, whose lengths are not exact or that has bytes left over.
// Errors start with "not an ssh-ed25519 public key: " and never repeat the key data.
Result<std::array<std::uint8_t, 32>> parse_ed25519_public_key(std::string_view line);

}  // namespace vcpilot
