// Per-job SSH keys (libssh): ed25519 host and user keys generated on this node, and the check of
// public keys that arrive from the network. Private keys are written to one file and nowhere
// else: they never leave the node that generated them.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace vcpilot::pilot {

// The only key type the pilots generate, and so the only one they accept from each other.
inline constexpr std::string_view kKeyType = "ssh-ed25519";
// A public key line longer than this is refused before any parsing (an ed25519 line is ~80
// bytes plus its comment).
inline constexpr std::size_t kMaxPublicKeyLine = std::size_t{8} * 1024;
// Longest comment generate_ed25519_key() writes into a public key line.
inline constexpr std::size_t kMaxKeyComment = 256;

struct KeyFiles {
    std::filesystem::path private_key;
    std::filesystem::path public_key;
};

// The file names generate_ed25519_key() writes for `private_key`: the key itself and
// "<private_key>.pub".
KeyFiles key_files(const std::filesystem::path& private_key);

// Generates an ed25519 key pair on this node and writes the private key in OpenSSH format, mode
// 0600, and "<private_key>.pub" (the public key line and a newline), mode 0644, both owned by
// uid:gid. Returns the public key line "ssh-ed25519 AAAA... comment" ("ssh-ed25519 AAAA..." when
// `comment` is empty); `comment` must be printable ASCII, at most kMaxKeyComment bytes.
//
// Both files are created with O_CREAT|O_EXCL|O_NOFOLLOW in the same directory: an existing file
// or a symlink planted in that directory (it may belong to the job user) is never followed nor
// overwritten, it is an error. They are not fsync'd: a job's keys live in its run directory and
// die with the job (a node that crashes loses the job anyway), and syncing them cost job start
// several disk flushes. On any error nothing is left: files this call created are removed again.
// The private key exists only in libssh's buffers, which are wiped, and in that one file.
Result<std::string> generate_ed25519_key(const std::filesystem::path& private_key, uid_t uid,
                                         gid_t gid, std::string_view comment);

// Validates an OpenSSH public key line that came from the network: "ssh-ed25519 <base64>",
// optionally followed by a comment; fields are separated by spaces, the whole line is printable
// ASCII (no newline or other control character), at most kMaxPublicKeyLine bytes. The base64 must
// be canonical and hold exactly one ed25519 public key that libssh imports. Other key types
// (ssh-rsa, ecdsa, certificates, security keys) are refused: pilots only generate ed25519, so
// anything else is a bug or an attack, and a narrow parser is a smaller target. Returns the
// normalised line "ssh-ed25519 <base64>" without the comment. Errors start with `field` and never
// repeat key material (a private key pasted by mistake is named as such, not echoed).
Result<std::string> check_public_key(std::string_view field, std::string_view line);

// The only certificate type the pilots accept: an ed25519 key certified by an ed25519 CA.
inline constexpr std::string_view kCertificateType = "ssh-ed25519-cert-v01@openssh.com";

// OpenSSH's certificate types (PROTOCOL.certkeys): who the certified key proves to be.
enum class CertificateRole : std::uint32_t { user = 1, host = 2 };

// What a certificate from the network must be to be of use on this node. Key lines are
// "ssh-ed25519 <base64>[ comment]" as check_public_key() accepts them.
struct CertificateExpectation {
    CertificateRole role = CertificateRole::user;
    std::string_view certified_key;  // this node's own key that the certificate must certify
    std::string_view ca_key;         // the key that must have signed it
    std::string_view principal;      // a name it must be valid for (user or host name)
    std::int64_t now_unix = 0;       // it must not have expired by then
};

// Validates an OpenSSH certificate line that came from the network,
// "ssh-ed25519-cert-v01@openssh.com <base64>[ comment]", with the same rules for the line as
// check_public_key(). The blob is parsed completely (PROTOCOL.certkeys: type, nonce, key,
// serial, role, key id, principals, validity, options, extensions, reserved, signature key,
// signature; nothing left over) and must match `expected`: the role, the certified key, the CA
// that signed it, the principal, an unexpired validity interval. The signature itself is left to
// ssh and sshd, which check it on every use; what is checked here are the mistakes that would
// otherwise only show up as a refused login. Returns the normalised line
// "ssh-ed25519-cert-v01@openssh.com <base64>" without the comment. Errors start with `field`.
Result<std::string> check_certificate(std::string_view field, std::string_view line,
                                      const CertificateExpectation& expected);

}  // namespace vcpilot::pilot
