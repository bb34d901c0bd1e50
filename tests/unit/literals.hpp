// Test helper: addresses and blocks from text that is known to be valid. A typo in a test fails
// loudly (Result::value() throws), never silently.
#pragma once

#include <string_view>
#include <utility>
#include <vector>

#include "common/ip.hpp"
#include "coordinator/ipam.hpp"

namespace vcpilot {

inline IpAddress ip(std::string_view text) {
    return IpAddress::parse(text).value();
}
inline Cidr cidr(std::string_view text) {
    return Cidr::parse(text).value();
}
inline InterfaceAddress if_address(std::string_view text) {
    return InterfaceAddress::parse(text).value();
}
inline AddressPool pool_of(std::vector<Cidr> pools) {
    return AddressPool::create(std::move(pools)).value();
}

}  // namespace vcpilot
