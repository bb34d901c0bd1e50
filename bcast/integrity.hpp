// What vc-bcast checks and proves: SHA-256 of chunks and of whole files, and the handshake that
// admits only holders of a transfer's secret to its ring (OpenSSL underneath).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace vcpilot::bcast {

using Digest = std::array<std::uint8_t, 32>;

std::string to_hex(std::span<const std::uint8_t> bytes);

// SHA-256 fed piece by piece (a whole file, in order) or in one call (a chunk).
class Sha256 {
  public:
    Sha256();
    ~Sha256();
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;
    void update(std::span<const std::byte> data);
    Digest finish();  // once

  private:
    struct State;
    std::unique_ptr<State> state_;
};

Digest sha256(std::span<const std::byte> data);

// A transfer's secret: 32 random bytes, exchanged as 64 hex digits.
class Secret {
  public:
    static Result<Secret> random();
    static Result<Secret> from_hex(std::string_view hex);
    std::string hex() const;

    // Both sides of a stream prove they hold the secret: the client sends a nonce, the server
    // answers with its nonce and server_mac(), the client with client_mac().
    std::string server_mac(std::string_view client_nonce, std::string_view server_nonce) const;
    std::string client_mac(std::string_view server_nonce, std::string_view client_nonce) const;

  private:
    std::array<std::uint8_t, 32> key_{};
    std::string mac(std::string_view label, std::string_view first, std::string_view second) const;
};

Result<std::string> random_nonce();
bool same_mac(std::string_view expected, std::string_view got);  // constant time

}  // namespace vcpilot::bcast
