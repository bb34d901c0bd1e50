#include "coordinator/sshcert.hpp"

#include <algorithm>
#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <utility>

#include "common/sshwire.hpp"
#include "common/text.hpp"

namespace vcpilot {

namespace {

constexpr std::size_t kEd25519KeyLength = 32;
constexpr std::size_t kEd25519SignatureLength = 64;
constexpr std::size_t kNonceLength = 32;

// The extensions of every user certificate: a terminal and port forwarding (what MPI launchers
// and interactive use need), nothing else. OpenSSH refuses a certificate whose extensions are
// not in lexical order, so the order here matters.
constexpr std::array<std::string_view, 2> kUserExtensions = {"permit-port-forwarding",
                                                             "permit-pty"};
static_assert(kUserExtensions[0] < kUserExtensions[1], "OpenSSH requires sorted extensions");

// The oldest error on OpenSSL's queue, and the queue emptied, so that the next failure does not
// report this one.
std::string take_openssl_error() {
    const unsigned long code = ERR_get_error();
    ERR_clear_error();
    if (code == 0) {
        return "unknown OpenSSL error";
    }
    std::array<char, 256> text{};
    ERR_error_string_n(code, text.data(), text.size());
    return single_line(text.data());
}

Error openssl_failure(std::string_view what) {
    return Error{fmt::format("{}: {}", what, take_openssl_error())};
}

std::string_view as_chars(std::span<const std::uint8_t> bytes) {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

bool is_printable_ascii(std::string_view text) {
    return std::all_of(text.begin(), text.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

bool has_control_character(std::string_view text) {
    return std::any_of(text.begin(), text.end(), [](char c) {
        const auto byte = static_cast<unsigned char>(c);
        return byte < 0x20 || byte == 0x7f;
    });
}

Status check_principal(std::string_view principal) {
    if (principal.empty()) {
        return Error{"a principal is empty"};
    }
    if (principal.size() > kMaxPrincipalLength) {
        return Error{fmt::format("principal {} is {} bytes, at most {} are allowed",
                                 quote(principal), principal.size(), kMaxPrincipalLength)};
    }
    if (principal.find(',') != std::string_view::npos) {
        return Error{
            fmt::format("principal {} has a comma, which OpenSSH would read as two principals",
                        quote(principal))};
    }
    if (principal.find(' ') != std::string_view::npos || has_control_character(principal)) {
        return Error{fmt::format(
            "principal {} has a space or control character, so no login could ever match it",
            quote(principal))};
    }
    return {};
}

Status check_request(const CertificateRequest& request) {
    if (request.type != CertificateType::User && request.type != CertificateType::Host) {
        return Error{fmt::format("certificate type {} is neither user (1) nor host (2)",
                                 static_cast<std::uint32_t>(request.type))};
    }
    if (request.key_id.empty()) {
        return Error{"the key id is empty; it is what sshd logs for every login"};
    }
    if (request.key_id.size() > kMaxKeyIdLength) {
        return Error{fmt::format("the key id is {} bytes, at most {} are allowed",
                                 request.key_id.size(), kMaxKeyIdLength)};
    }
    if (!is_printable_ascii(request.key_id)) {
        return Error{fmt::format("the key id {} is not printable ASCII", quote(request.key_id))};
    }
    if (request.principals.empty()) {
        return Error{"no principals; OpenSSH would accept the certificate for any name"};
    }
    if (request.principals.size() > kMaxPrincipals) {
        return Error{fmt::format("{} principals, at most {} are allowed", request.principals.size(),
                                 kMaxPrincipals)};
    }
    for (const std::string& principal : request.principals) {
        if (Status status = check_principal(principal); !status) {
            return status;
        }
    }
    if (request.valid_after_unix < 0) {
        return Error{
            fmt::format("valid_after_unix {} is before the epoch", request.valid_after_unix)};
    }
    if (request.valid_after_unix >= request.valid_before_unix) {
        return Error{fmt::format("valid_after_unix {} is not before valid_before_unix {}",
                                 request.valid_after_unix, request.valid_before_unix)};
    }
    return {};
}

// The signed part of a certificate: every field of PROTOCOL.certkeys up to and including the
// signature key.
std::string certificate_body(const CertificateRequest& request,
                             std::span<const std::uint8_t, kNonceLength> nonce,
                             const std::array<std::uint8_t, 32>& subject_key,
                             std::string_view ca_public_key_blob) {
    std::string principals;
    for (const std::string& principal : request.principals) {
        put_string(principals, principal);
    }
    std::string extensions;
    if (request.type == CertificateType::User) {
        for (std::string_view extension : kUserExtensions) {
            put_string(extensions, extension);
            put_string(extensions, "");  // these extensions carry no data
        }
    }

    std::string body;
    body.reserve(512 + principals.size() + request.key_id.size());
    put_string(body, kSshEd25519Cert);
    put_string(body, as_chars(nonce));
    put_string(body, as_chars(subject_key));
    put_u64(body, request.serial);
    put_u32(body, static_cast<std::uint32_t>(request.type));
    put_string(body, request.key_id);
    put_string(body, principals);
    put_u64(body, static_cast<std::uint64_t>(request.valid_after_unix));
    put_u64(body, static_cast<std::uint64_t>(request.valid_before_unix));
    put_string(body, "");  // critical options: none
    put_string(body, extensions);
    put_string(body, "");  // reserved
    put_string(body, ca_public_key_blob);
    return body;
}

}  // namespace

// ---- SshCa ----

void SshCa::PkeyDeleter::operator()(evp_pkey_st* key) const noexcept {
    EVP_PKEY_free(key);
}

void SshCa::MdCtxDeleter::operator()(evp_md_ctx_st* context) const noexcept {
    EVP_MD_CTX_free(context);
}

SshCa::SshCa(PkeyPtr key, const std::array<std::uint8_t, 32>& public_key, MdCtxPtr signer)
    : key_(std::move(key)), signer_(std::move(signer)), public_key_(public_key) {
    put_string(public_key_blob_, kSshEd25519);
    put_string(public_key_blob_, as_chars(public_key_));
}

SshCa::~SshCa() = default;
SshCa::SshCa(SshCa&&) noexcept = default;
SshCa& SshCa::operator=(SshCa&&) noexcept = default;

Result<SshCa> SshCa::from_pkey(PkeyPtr key) {
    std::array<std::uint8_t, 32> public_key{};
    std::size_t length = public_key.size();
    if (EVP_PKEY_get_raw_public_key(key.get(), public_key.data(), &length) != 1 ||
        length != public_key.size()) {
        return openssl_failure("cannot read the CA's ed25519 public key");
    }
    // Initialising a signing context looks the algorithm up in OpenSSL's provider tables, which
    // costs about as much as hashing a certificate; do it once here and copy the ready context
    // for each signature.
    MdCtxPtr signer(EVP_MD_CTX_new());
    if (signer == nullptr ||
        EVP_DigestSignInit(signer.get(), nullptr, nullptr, nullptr, key.get()) != 1) {
        return openssl_failure("cannot prepare ed25519 signing with the CA key");
    }
    return SshCa(std::move(key), public_key, std::move(signer));
}

Result<SshCa> SshCa::generate() {
    PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
    if (key == nullptr) {
        return openssl_failure("cannot generate an ed25519 CA key");
    }
    return from_pkey(std::move(key));
}

Result<SshCa> SshCa::from_private_bytes(std::span<const std::uint8_t, 32> seed) {
    PkeyPtr key(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed.data(), seed.size()));
    if (key == nullptr) {
        return openssl_failure("cannot load the ed25519 CA key from its seed");
    }
    return from_pkey(std::move(key));
}

Result<SshCa> SshCa::from_private_bytes(std::string_view seed) {
    if (seed.size() != kEd25519KeyLength) {
        return Error{fmt::format("the CA's private key seed is {} bytes, an ed25519 seed is {}",
                                 seed.size(), kEd25519KeyLength)};
    }
    std::array<std::uint8_t, 32> bytes{};
    std::copy(seed.begin(), seed.end(), bytes.begin());
    Result<SshCa> ca = from_private_bytes(std::span<const std::uint8_t, 32>(bytes));
    OPENSSL_cleanse(bytes.data(), bytes.size());
    return ca;
}

std::array<std::uint8_t, 32> SshCa::private_seed() const {
    std::array<std::uint8_t, 32> seed{};
    std::size_t length = seed.size();
    // Cannot fail: every constructor holds a private ed25519 key.
    if (EVP_PKEY_get_raw_private_key(key_.get(), seed.data(), &length) != 1) {
        ERR_clear_error();
    }
    return seed;
}

std::string SshCa::public_key_line(std::string_view comment) const {
    std::string line = fmt::format("{} {}", kSshEd25519, encode_base64(public_key_blob_));
    if (!comment.empty()) {
        line += ' ';
        line += comment;
    }
    return line;
}

Result<std::string> SshCa::sign(const CertificateRequest& request) const {
    auto refuse = [&](std::string_view reason) {
        return Error{fmt::format("cannot sign certificate {}: {}", quote(request.key_id), reason)};
    };
    if (Status valid = check_request(request); !valid) {
        return refuse(valid.error().message);
    }
    Result<std::array<std::uint8_t, 32>> subject_key =
        parse_ed25519_public_key(request.public_key_line);
    if (!subject_key) {
        return refuse("subject key is " + subject_key.error().message);
    }

    std::array<std::uint8_t, kNonceLength> nonce{};
    if (RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) != 1) {
        return refuse("no random nonce: " + take_openssl_error());
    }
    std::string certificate = certificate_body(request, nonce, *subject_key, public_key_blob_);

    // A copy of the prepared context: an ed25519 context signs once, and copying is far cheaper
    // than initialising. Copying only reads `signer_`, so concurrent sign() calls are safe.
    MdCtxPtr context(EVP_MD_CTX_new());
    if (context == nullptr || EVP_MD_CTX_copy_ex(context.get(), signer_.get()) != 1) {
        return refuse("cannot copy the signing context: " + take_openssl_error());
    }
    std::array<std::uint8_t, kEd25519SignatureLength> signature{};
    std::size_t signature_length = signature.size();
    if (EVP_DigestSign(context.get(), signature.data(), &signature_length,
                       reinterpret_cast<const unsigned char*>(certificate.data()),
                       certificate.size()) != 1 ||
        signature_length != signature.size()) {
        return refuse("ed25519 signing failed: " + take_openssl_error());
    }

    std::string signature_blob;
    put_string(signature_blob, kSshEd25519);
    put_string(signature_blob, as_chars(signature));
    put_string(certificate, signature_blob);

    return fmt::format("{} {} {}", kSshEd25519Cert, encode_base64(certificate), request.key_id);
}

// ---- public key lines ----

Result<std::array<std::uint8_t, 32>> parse_ed25519_public_key(std::string_view line) {
    auto refuse = [](std::string_view reason) {
        return Error{fmt::format("not an ssh-ed25519 public key: {}", reason)};
    };
    if (line.size() > kMaxPublicKeyLineLength) {
        return refuse(fmt::format("the line is {} bytes, at most {} are allowed", line.size(),
                                  kMaxPublicKeyLineLength));
    }
    if (line.empty()) {
        return refuse("the line is empty");
    }
    if (has_control_character(line)) {
        return refuse("the line has control characters (give one line, without its newline)");
    }

    const std::size_t type_end = line.find(' ');
    const std::string_view type = line.substr(0, type_end);
    if (type != kSshEd25519) {
        return refuse(fmt::format("the key type is {}", quote(type, 40)));
    }
    if (type_end == std::string_view::npos) {
        return refuse("no key data after the type");
    }
    const std::string_view after_type = line.substr(type_end + 1);
    const std::string_view encoded = after_type.substr(0, after_type.find(' '));
    if (encoded.empty()) {
        return refuse("no key data after the type (one space between the fields)");
    }

    Result<std::string> blob = decode_base64_strict(encoded);
    if (!blob) {
        return refuse(blob.error().message);
    }
    WireReader reader(*blob);
    const std::string_view blob_type = reader.string();
    if (!reader.ok()) {
        return refuse("the key blob is truncated before its type");
    }
    if (blob_type != kSshEd25519) {
        return refuse(fmt::format("the key blob is of type {}, the line says {}",
                                  quote(blob_type, 40), kSshEd25519));
    }
    const std::string_view key = reader.string();
    if (!reader.ok()) {
        return refuse("the key blob is truncated inside the key");
    }
    if (key.size() != kEd25519KeyLength) {
        return refuse(fmt::format("the key is {} bytes, an ed25519 key is {}", key.size(),
                                  kEd25519KeyLength));
    }
    if (reader.remaining() != 0) {
        return refuse(fmt::format("{} bytes follow the key in the key blob", reader.remaining()));
    }

    std::array<std::uint8_t, 32> raw{};
    std::copy(key.begin(), key.end(), raw.begin());
    return raw;
}

}  // namespace vcpilot
