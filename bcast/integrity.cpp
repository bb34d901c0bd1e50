#include "bcast/integrity.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

namespace vcpilot::bcast {

std::string to_hex(std::span<const std::uint8_t> bytes) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (const std::uint8_t b : bytes) {
        out += kDigits[b >> 4];
        out += kDigits[b & 15];
    }
    return out;
}

struct Sha256::State {
    EVP_MD_CTX* context = EVP_MD_CTX_new();
    ~State() { EVP_MD_CTX_free(context); }
};

Result<Sha256> Sha256::start() {
    auto state = std::make_unique<State>();
    if (state->context == nullptr ||
        EVP_DigestInit_ex(state->context, EVP_sha256(), nullptr) != 1) {
        return Error{"OpenSSL: cannot start a SHA-256"};
    }
    return Sha256(std::move(state));
}

Sha256::Sha256(std::unique_ptr<State> state) : state_(std::move(state)) {}
Sha256::~Sha256() = default;
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;

Status Sha256::update(std::span<const std::byte> data) {
    if (EVP_DigestUpdate(state_->context, data.data(), data.size()) != 1) {
        return Error{"OpenSSL: SHA-256 update failed"};
    }
    return {};
}

Result<Digest> Sha256::finish() {
    Digest digest{};
    unsigned int length = 0;
    if (EVP_DigestFinal_ex(state_->context, digest.data(), &length) != 1 ||
        length != digest.size()) {
        return Error{"OpenSSL: SHA-256 final failed"};
    }
    return digest;
}

Result<Digest> sha256(std::span<const std::byte> data) {
    auto hash = Sha256::start();
    if (!hash) {
        return hash.error();
    }
    if (auto updated = hash->update(data); !updated) {
        return updated.error();
    }
    return hash->finish();
}

Result<Secret> Secret::random() {
    Secret secret;
    if (RAND_bytes(secret.key_.data(), static_cast<int>(secret.key_.size())) != 1) {
        return Error{"OpenSSL could not make random bytes for the transfer's secret"};
    }
    return secret;
}

Result<Secret> Secret::from_hex(std::string_view hex) {
    while (!hex.empty() && (hex.back() == '\n' || hex.back() == '\r')) {
        hex.remove_suffix(1);
    }
    Secret secret;
    if (hex.size() != secret.key_.size() * 2) {
        return Error{"the secret must be 64 hex digits"};
    }
    auto value = [](char c) -> int {
        if (c >= '0' && c <= '9') {
            return c - '0';
        }
        if (c >= 'a' && c <= 'f') {
            return c - 'a' + 10;
        }
        if (c >= 'A' && c <= 'F') {
            return c - 'A' + 10;
        }
        return -1;
    };
    for (std::size_t i = 0; i < secret.key_.size(); ++i) {
        const int high = value(hex[2 * i]);
        const int low = value(hex[2 * i + 1]);
        if (high < 0 || low < 0) {
            return Error{"the secret must be 64 hex digits"};
        }
        secret.key_[i] = static_cast<std::uint8_t>(high * 16 + low);
    }
    return secret;
}

std::string Secret::hex() const {
    return to_hex(key_);
}

Result<std::string> Secret::mac(std::string_view label, std::string_view first,
                                std::string_view second) const {
    std::string message;
    message.reserve(label.size() + 1 + first.size() + second.size());
    message.append(label).append(1, '\0').append(first).append(second);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
             reinterpret_cast<const unsigned char*>(message.data()), message.size(), out,
             &length) == nullptr) {
        return Error{"OpenSSL: HMAC-SHA256 failed"};
    }
    return std::string(reinterpret_cast<const char*>(out), length);
}

Result<std::string> Secret::server_mac(std::string_view client_nonce,
                                       std::string_view server_nonce) const {
    return mac("vc-bcast server", client_nonce, server_nonce);
}

Result<std::string> Secret::client_mac(std::string_view server_nonce,
                                       std::string_view client_nonce) const {
    return mac("vc-bcast client", server_nonce, client_nonce);
}

Result<std::string> random_nonce() {
    std::string nonce(32, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(nonce.data()),
                   static_cast<int>(nonce.size())) != 1) {
        return Error{"OpenSSL could not make a random nonce"};
    }
    return nonce;
}

bool same_mac(std::string_view expected, std::string_view got) {
    return expected.size() == got.size() &&
           CRYPTO_memcmp(expected.data(), got.data(), expected.size()) == 0;
}

}  // namespace vcpilot::bcast
