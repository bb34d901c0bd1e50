// What vc-bcast checks and proves: SHA-256 of chunks and of whole files, and the handshake that
// admits only holders of a transfer's secret to its ring (OpenSSL underneath). OpenSSL can fail
// (out of memory, a provider that will not load): that is reported as an Error value, never
// thrown, since these run on the ring's threads, where nothing would catch it.
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
    static Result<Sha256> start();
    ~Sha256();
    Sha256(Sha256&&) noexcept;
    Sha256& operator=(Sha256&&) noexcept;
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;

    Status update(std::span<const std::byte> data);
    Result<Digest> finish();  // once

  private:
    struct State;
    explicit Sha256(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

Result<Digest> sha256(std::span<const std::byte> data);

// A transfer's secret: 32 random bytes, exchanged as 64 hex digits.
class Secret {
  public:
    static Result<Secret> random();
    static Result<Secret> from_hex(std::string_view hex);
    std::string hex() const;

    // Both sides of a stream prove they hold the secret: the client sends a nonce, the server
    // answers with its nonce and server_mac(), the client with client_mac().
    Result<std::string> server_mac(std::string_view client_nonce,
                                   std::string_view server_nonce) const;
    Result<std::string> client_mac(std::string_view server_nonce,
                                   std::string_view client_nonce) const;

  private:
    std::array<std::uint8_t, 32> key_{};
    Result<std::string> mac(std::string_view label, std::string_view first,
                            std::string_view second) const;
};

Result<std::string> random_nonce();
bool same_mac(std::string_view expected, std::string_view got);  // constant time

}  // namespace vcpilot::bcast
