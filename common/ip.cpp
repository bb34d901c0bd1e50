#include "common/ip.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <fmt/format.h>
#include <stdexcept>

#include "common/text.hpp"

namespace vcpilot {

namespace {

// The longest text inet_pton accepts: "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".
constexpr std::size_t kMaxAddressLength = INET6_ADDRSTRLEN - 1;

// Shifting a 128-bit value by 128 is undefined behaviour, and an IPv6 /0 needs exactly that.
uint128 low_bits(int count) {
    return count >= 128 ? ~uint128{0} : (uint128{1} << count) - 1;
}

uint128 shifted_left(uint128 value, int count) {
    return count >= 128 ? 0 : value << count;
}

const char* family_name(IpFamily family) {
    return family == IpFamily::v4 ? "IPv4" : "IPv6";
}

int max_prefix_of(IpFamily family) {
    return family == IpFamily::v4 ? 32 : 128;
}

uint128 host_mask_of(IpFamily family, int prefix) {
    return low_bits(max_prefix_of(family) - prefix);
}

// 2^exponent as text for messages: "256", or "2^128" where it does not fit in 128 bits.
std::string power_of_two(int exponent) {
    return exponent >= 128 ? "2^128" : to_string(uint128{1} << exponent);
}

bool is_decimal(std::string_view text) {
    return !text.empty() && text.find_first_not_of("0123456789") == std::string_view::npos;
}

// Only for text that is_decimal() and at most 3 digits long, so it cannot fail or overflow.
int small_decimal(std::string_view digits) {
    int value = 0;
    std::from_chars(digits.data(), digits.data() + digits.size(), value);
    return value;
}

// inet_pton refuses these too, but cannot say why; someone who typed "010.0.0.1" (octal in some
// tools) or "10.1.1" (a shorthand in others) deserves to be told what is wrong.
Status check_dotted_quad(std::string_view text) {
    std::vector<std::string_view> numbers;
    for (std::size_t start = 0;;) {
        const std::size_t dot = text.find('.', start);
        numbers.push_back(text.substr(start, dot - start));
        if (dot == std::string_view::npos) {
            break;
        }
        start = dot + 1;
    }
    if (numbers.size() != 4) {
        return Error{fmt::format("expected 4 dot-separated numbers, found {}", numbers.size())};
    }
    for (std::string_view number : numbers) {
        if (number.empty()) {
            return Error{"empty number between dots"};
        }
        if (!is_decimal(number)) {
            return Error{fmt::format("{} is not a decimal number", quote(number))};
        }
        if (number.size() > 1 && number[0] == '0') {
            return Error{fmt::format("{} has a leading zero (octal or decimal?)", quote(number))};
        }
        if (number.size() > 3 || small_decimal(number) > 255) {
            return Error{fmt::format("{} is larger than 255", quote(number))};
        }
    }
    return {};
}

// Errors carry only the reason; the callers say what was being parsed and quote the input.
Result<IpAddress> parse_address(std::string_view text) {
    if (text.empty()) {
        return Error{"the address is empty"};
    }
    if (text.size() > kMaxAddressLength) {
        return Error{
            fmt::format("longer than the {} characters of the longest address", kMaxAddressLength)};
    }
    if (const std::size_t percent = text.find('%'); percent != std::string_view::npos) {
        return Error{fmt::format("zone ids ({}) are not supported", quote(text.substr(percent)))};
    }
    // Also rules out whitespace and embedded NULs, where inet_pton would skip or stop.
    const std::size_t bad = text.find_first_not_of("0123456789abcdefABCDEF.:");
    if (bad != std::string_view::npos) {
        return Error{
            fmt::format("unexpected character {} at position {}", quote(text.substr(bad, 1)), bad)};
    }

    const std::string c_string(text);
    if (text.find(':') == std::string_view::npos) {
        if (auto status = check_dotted_quad(text); !status) {
            return status.error();
        }
        std::array<std::uint8_t, 4> bytes{};
        if (inet_pton(AF_INET, c_string.c_str(), bytes.data()) != 1) {
            return Error{"not a valid IPv4 address"};
        }
        return IpAddress::from_v4_bytes(bytes);
    }

    const std::string_view last_group = text.substr(text.rfind(':') + 1);
    if (last_group.find('.') != std::string_view::npos) {
        if (auto status = check_dotted_quad(last_group); !status) {
            return Error{"in the embedded IPv4 address: " + status.error().message};
        }
    }
    std::array<std::uint8_t, 16> bytes{};
    if (inet_pton(AF_INET6, c_string.c_str(), bytes.data()) != 1) {
        return Error{"not a valid IPv6 address"};
    }
    return IpAddress::from_v6_bytes(bytes);
}

Status check_prefix_digits(std::string_view digits, IpFamily family) {
    if (digits.empty()) {
        return Error{"the prefix length after '/' is empty"};
    }
    if (!is_decimal(digits)) {
        return Error{fmt::format("prefix length {} is not a decimal number", quote(digits))};
    }
    if (digits.size() > 1 && digits[0] == '0') {
        return Error{fmt::format("prefix length {} has a leading zero", quote(digits))};
    }
    if (digits.size() > 3 || small_decimal(digits) > max_prefix_of(family)) {
        return Error{fmt::format("prefix length {} is out of range; an {} prefix is 0 to {}",
                                 quote(digits), family_name(family), max_prefix_of(family))};
    }
    return {};
}

Status check_prefix(int prefix, IpFamily family) {
    if (prefix < 0 || prefix > max_prefix_of(family)) {
        return Error{fmt::format("prefix length {} is out of range; an {} prefix is 0 to {}",
                                 prefix, family_name(family), max_prefix_of(family))};
    }
    return {};
}

struct AddressAndPrefix {
    IpAddress address;
    int prefix;
};

Result<AddressAndPrefix> parse_address_and_prefix(std::string_view text, std::string_view example) {
    if (text.empty()) {
        return Error{"the text is empty"};
    }
    const std::size_t slash = text.find('/');
    if (slash == std::string_view::npos) {
        return Error{fmt::format("missing the /prefix length (for example {})", example)};
    }
    auto address = parse_address(text.substr(0, slash));
    if (!address) {
        return address.error();
    }
    const std::string_view digits = text.substr(slash + 1);
    if (auto status = check_prefix_digits(digits, address->family()); !status) {
        return status.error();
    }
    return AddressAndPrefix{*address, small_decimal(digits)};
}

}  // namespace

std::string to_string(uint128 value) {
    return fmt::format("{}", value);
}

// ---- IpAddress ----

IpAddress::IpAddress(IpFamily family, uint128 value) : family_(family) {
    for (std::size_t i = family == IpFamily::v4 ? 4 : 16; i-- > 0;) {
        bytes_[i] = static_cast<std::uint8_t>(value & 0xff);
        value >>= 8;
    }
}

IpAddress IpAddress::from_v4_bytes(const std::array<std::uint8_t, 4>& bytes) {
    IpAddress address(IpFamily::v4, 0);
    std::copy(bytes.begin(), bytes.end(), address.bytes_.begin());
    return address;
}

IpAddress IpAddress::from_v6_bytes(const std::array<std::uint8_t, 16>& bytes) {
    IpAddress address(IpFamily::v6, 0);
    address.bytes_ = bytes;
    return address;
}

Result<IpAddress> IpAddress::parse(std::string_view text) {
    auto address = parse_address(text);
    if (!address) {
        return Error{
            fmt::format("invalid IP address {}: {}", quote(text), address.error().message)};
    }
    return address;
}

std::span<const std::uint8_t> IpAddress::bytes() const noexcept {
    return std::span<const std::uint8_t>(bytes_).first(is_v4() ? 4 : 16);
}

uint128 IpAddress::value() const noexcept {
    uint128 number = 0;
    for (std::uint8_t byte : bytes()) {
        number = (number << 8) | byte;
    }
    return number;
}

Result<IpAddress> IpAddress::offset(uint128 n) const {
    if (n > low_bits(max_prefix()) - value()) {
        return Error{fmt::format("{} + {} is past the last {} address", to_string(),
                                 vcpilot::to_string(n), family_name(family_))};
    }
    return IpAddress(family_, value() + n);
}

std::string IpAddress::to_string() const {
    char text[INET6_ADDRSTRLEN] = {};
    if (inet_ntop(is_v4() ? AF_INET : AF_INET6, bytes_.data(), text, sizeof text) == nullptr) {
        // Only possible with an unknown family or a short buffer, both ruled out here.
        throw std::logic_error("inet_ntop failed on a valid address");
    }
    return text;
}

// ---- Cidr ----

Result<Cidr> Cidr::check_host_bits(const IpAddress& network, int prefix,
                                   std::string_view as_written) {
    const uint128 host_mask = host_mask_of(network.family(), prefix);
    if ((network.value() & host_mask) != 0) {
        const Cidr meant(IpAddress(network.family(), network.value() & ~host_mask), prefix);
        return Error{fmt::format("invalid CIDR block {}: host bits are set; the network is {}",
                                 quote(as_written), meant.to_string())};
    }
    return Cidr(network, prefix);
}

Result<Cidr> Cidr::parse(std::string_view text) {
    auto parts = parse_address_and_prefix(text, "10.0.0.0/24");
    if (!parts) {
        return Error{fmt::format("invalid CIDR block {}: {}", quote(text), parts.error().message)};
    }
    return check_host_bits(parts->address, parts->prefix, text);
}

Result<Cidr> Cidr::from(const IpAddress& network, int prefix) {
    const std::string as_written = fmt::format("{}/{}", network.to_string(), prefix);
    if (auto status = check_prefix(prefix, network.family()); !status) {
        return Error{
            fmt::format("invalid CIDR block {}: {}", quote(as_written), status.error().message)};
    }
    return check_host_bits(network, prefix, as_written);
}

uint128 Cidr::host_mask() const noexcept {
    return host_mask_of(family(), prefix_);
}

IpAddress Cidr::last() const {
    return IpAddress(family(), network_.value() | host_mask());
}

bool Cidr::contains(const IpAddress& address) const noexcept {
    return address.family() == family() && (address.value() & ~host_mask()) == network_.value();
}

bool Cidr::contains(const Cidr& other) const noexcept {
    return other.prefix_ >= prefix_ && contains(other.network_);
}

// Aligned blocks are either disjoint or nested, so checking both network addresses suffices.
bool Cidr::overlaps(const Cidr& other) const noexcept {
    return contains(other.network_) || other.contains(network_);
}

uint128 Cidr::size() const noexcept {
    const uint128 mask = host_mask();
    return mask == ~uint128{0} ? mask : mask + 1;
}

Result<IpAddress> Cidr::nth(uint128 n) const {
    if (n > host_mask()) {
        return Error{fmt::format("address index {} is outside {}, which holds {} addresses",
                                 vcpilot::to_string(n), to_string(),
                                 power_of_two(network_.max_prefix() - prefix_))};
    }
    return IpAddress(family(), network_.value() | n);
}

Result<Cidr> Cidr::subnet(int new_prefix, uint128 index) const {
    if (new_prefix < prefix_ || new_prefix > network_.max_prefix()) {
        return Error{fmt::format("cannot take a /{} out of {}: the prefix must be {} to {}",
                                 new_prefix, to_string(), prefix_, network_.max_prefix())};
    }
    const int index_bits = new_prefix - prefix_;
    if (index > low_bits(index_bits)) {
        return Error{fmt::format("block index {} is outside {}, which holds {} blocks of /{}",
                                 vcpilot::to_string(index), to_string(), power_of_two(index_bits),
                                 new_prefix)};
    }
    const uint128 offset = shifted_left(index, network_.max_prefix() - new_prefix);
    return Cidr(IpAddress(family(), network_.value() | offset), new_prefix);
}

Result<std::vector<Cidr>> Cidr::split(int new_prefix, std::size_t max_blocks) const {
    if (new_prefix < prefix_ || new_prefix > network_.max_prefix()) {
        return Error{fmt::format("cannot split {} into /{} blocks: the prefix must be {} to {}",
                                 to_string(), new_prefix, prefix_, network_.max_prefix())};
    }
    const int index_bits = new_prefix - prefix_;
    if (index_bits >= 64 || (uint128{1} << index_bits) > max_blocks) {
        return Error{fmt::format(
            "splitting {} into /{} blocks would make {} blocks, more than the limit of {}",
            to_string(), new_prefix, power_of_two(index_bits), max_blocks)};
    }
    const std::size_t count = std::size_t{1} << index_bits;
    std::vector<Cidr> blocks;
    blocks.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
        blocks.push_back(subnet(new_prefix, i).value());
    }
    return blocks;
}

std::string Cidr::to_string() const {
    return fmt::format("{}/{}", network_.to_string(), prefix_);
}

// ---- InterfaceAddress ----

Result<InterfaceAddress> InterfaceAddress::parse(std::string_view text) {
    auto parts = parse_address_and_prefix(text, "10.0.0.5/24");
    if (!parts) {
        return Error{
            fmt::format("invalid interface address {}: {}", quote(text), parts.error().message)};
    }
    return InterfaceAddress(parts->address, parts->prefix);
}

Result<InterfaceAddress> InterfaceAddress::from(const IpAddress& address, int prefix) {
    if (auto status = check_prefix(prefix, address.family()); !status) {
        return Error{fmt::format("invalid interface address {}: {}",
                                 quote(fmt::format("{}/{}", address.to_string(), prefix)),
                                 status.error().message)};
    }
    return InterfaceAddress(address, prefix);
}

Cidr InterfaceAddress::network() const {
    const uint128 host_mask = host_mask_of(address_.family(), prefix_);
    return Cidr(IpAddress(address_.family(), address_.value() & ~host_mask), prefix_);
}

std::string InterfaceAddress::to_string() const {
    return fmt::format("{}/{}", address_.to_string(), prefix_);
}

Result<Ipv4Endpoint> parse_ipv4_endpoint(std::string_view text) {
    const auto colon = text.rfind(':');
    const std::string_view digits =
        colon == std::string_view::npos ? std::string_view{} : text.substr(colon + 1);
    auto address = IpAddress::parse(text.substr(0, colon == std::string_view::npos ? 0 : colon));
    unsigned port = 0;
    const bool port_ok = !digits.empty() && digits.size() <= 5 &&
                         std::from_chars(digits.data(), digits.data() + digits.size(), port).ptr ==
                             digits.data() + digits.size() &&
                         port >= 1 && port <= 65535;
    if (!address || !address->is_v4() || !port_ok) {
        return Error{fmt::format("{} is not an IPv4 address and port", quote(text))};
    }
    return Ipv4Endpoint{*address, static_cast<std::uint16_t>(port)};
}

}  // namespace vcpilot
