// IP addresses and CIDR blocks, for configuration and address management.
//
// Parsing is strict: anything that is not exactly one textual address (or address/prefix) is
// refused with a one-line error that quotes the input, so a typo in a config file or an RPC
// never turns into a surprising network. Arithmetic is done on 128-bit integers; IPv4 values
// live in the low 32 bits.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace vcpilot {

// An IPv6 network can hold 2^128 addresses, more than any standard integer type.
using uint128 = unsigned __int128;

// Decimal text of `value`, for messages and tests (iostreams cannot print it).
std::string to_string(uint128 value);

enum class IpFamily : std::uint8_t { v4, v6 };

class IpAddress {
  public:
    // Accepts dotted-quad IPv4 ("10.0.0.1") and RFC 4291 IPv6 ("2001:db8::1",
    // "::ffff:1.2.3.4"). Refuses whitespace, zone ids ("fe80::1%eth0"), short or octal-looking
    // IPv4 forms ("1.2.3", "010.0.0.1") and anything else inet_pton would not take.
    static Result<IpAddress> parse(std::string_view text);
    // From network byte order, as netlink and the socket API hand addresses over.
    static IpAddress from_v4_bytes(const std::array<std::uint8_t, 4>& bytes);
    static IpAddress from_v6_bytes(const std::array<std::uint8_t, 16>& bytes);

    IpFamily family() const noexcept { return family_; }
    bool is_v4() const noexcept { return family_ == IpFamily::v4; }
    // 32 for IPv4, 128 for IPv6.
    int max_prefix() const noexcept { return is_v4() ? 32 : 128; }
    // The address in network byte order: 4 bytes for IPv4, 16 for IPv6.
    std::span<const std::uint8_t> bytes() const noexcept;

    // The address `n` places further on; an error if that is past the family's last address.
    Result<IpAddress> offset(uint128 n) const;

    // Canonical text (inet_ntop): lower-case hex, longest zero run as "::".
    std::string to_string() const;

    // IPv4 sorts before IPv6; within a family, numeric order.
    // NOLINTNEXTLINE(modernize-use-nullptr): clang-tidy 14 misreads the generated `< 0`.
    std::strong_ordering operator<=>(const IpAddress&) const = default;

  private:
    friend class Cidr;
    friend class InterfaceAddress;

    IpAddress(IpFamily family, uint128 value);
    uint128 value() const noexcept;

    IpFamily family_;
    std::array<std::uint8_t, 16> bytes_{};  // network order; IPv4 uses the first 4
};

// A network: an address whose host bits are all zero, and a prefix length.
class Cidr {
  public:
    // "10.0.0.0/24", "2001:db8::/32". Host bits must be zero: "10.0.0.1/24" is an error that
    // names the network meant. The prefix is plain decimal without sign or leading zeros.
    static Result<Cidr> parse(std::string_view text);
    // The same rules for an address and prefix that are already parsed.
    static Result<Cidr> from(const IpAddress& network, int prefix);

    const IpAddress& network() const noexcept { return network_; }
    int prefix() const noexcept { return prefix_; }
    IpFamily family() const noexcept { return network_.family(); }
    // The highest address in the block (for IPv4 the broadcast address).
    IpAddress last() const;

    // Blocks and addresses of the other family are never contained and never overlap.
    bool contains(const IpAddress& address) const noexcept;
    bool contains(const Cidr& other) const noexcept;
    bool overlaps(const Cidr& other) const noexcept;

    // Number of addresses. ::/0 holds 2^128, which does not fit; it reports 2^128 - 1.
    uint128 size() const noexcept;
    // The n-th address, counting the network address as 0; an error past the last address.
    Result<IpAddress> nth(uint128 n) const;
    // The `index`-th block of length `new_prefix` inside this one.
    Result<Cidr> subnet(int new_prefix, uint128 index) const;
    // All blocks of length `new_prefix` inside this one, in address order; an error rather
    // than a huge allocation when there would be more than `max_blocks`.
    Result<std::vector<Cidr>> split(int new_prefix, std::size_t max_blocks = 65536) const;

    std::string to_string() const;

    // NOLINTNEXTLINE(modernize-use-nullptr): clang-tidy 14 misreads the generated `< 0`.
    std::strong_ordering operator<=>(const Cidr&) const = default;

  private:
    friend class InterfaceAddress;

    Cidr(const IpAddress& network, int prefix) : network_(network), prefix_(prefix) {}
    // For a prefix already known to be in range; `as_written` is quoted in the error message.
    static Result<Cidr> check_host_bits(const IpAddress& network, int prefix,
                                        std::string_view as_written);
    uint128 host_mask() const noexcept;

    IpAddress network_;
    int prefix_;
};

// An address assigned to an interface, with the prefix of its network: "10.0.0.5/24".
// Unlike Cidr, host bits are expected.
class InterfaceAddress {
  public:
    static Result<InterfaceAddress> parse(std::string_view text);
    static Result<InterfaceAddress> from(const IpAddress& address, int prefix);

    const IpAddress& address() const noexcept { return address_; }
    int prefix() const noexcept { return prefix_; }
    Cidr network() const;

    std::string to_string() const;

    // NOLINTNEXTLINE(modernize-use-nullptr): clang-tidy 14 misreads the generated `< 0`.
    std::strong_ordering operator<=>(const InterfaceAddress&) const = default;

  private:
    InterfaceAddress(const IpAddress& address, int prefix) : address_(address), prefix_(prefix) {}

    IpAddress address_;
    int prefix_;
};

// Where a service listens: "A.B.C.D:PORT", an IPv4 address and a port of 1-65535.
struct Ipv4Endpoint {
    IpAddress address;
    std::uint16_t port = 0;
};
Result<Ipv4Endpoint> parse_ipv4_endpoint(std::string_view text);

}  // namespace vcpilot
