#include "common/underlays.hpp"

#include <algorithm>
#include <array>
#include <string>

namespace vcpilot {

namespace {

IpAddress packed_address(const std::string& packed, std::size_t index, std::size_t width) {
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(packed.data()) + index * width;
    if (width == 4) {
        std::array<std::uint8_t, 4> v4{};
        std::copy_n(bytes, v4.size(), v4.begin());
        return IpAddress::from_v4_bytes(v4);
    }
    std::array<std::uint8_t, 16> v6{};
    std::copy_n(bytes, v6.size(), v6.begin());
    return IpAddress::from_v6_bytes(v6);
}

}  // namespace

Status pack_underlays(const std::vector<IpAddress>& underlays, v1::SiteView& site) {
    site.clear_underlay();
    site.clear_underlay_runs();
    if (underlays.empty()) {
        return {};
    }
    const IpFamily family = underlays.front().family();
    std::vector<std::size_t> run_starts;
    for (std::size_t i = 0; i < underlays.size(); ++i) {
        if (underlays[i].family() != family) {
            return Error{"site " + site.site() + " mixes IPv4 and IPv6 underlay addresses"};
        }
        bool follows = false;
        if (i > 0) {
            const auto next = underlays[i - 1].offset(1);
            follows = next && *next == underlays[i];
        }
        if (!follows) {
            run_starts.push_back(i);
        }
    }
    const std::size_t width = underlays.front().bytes().size();
    // A run costs its first address and a count of at most 3 bytes (a site has < 2^21 nodes).
    const bool as_runs = run_starts.size() * (width + 3) < underlays.size() * width;
    std::string& packed = *site.mutable_underlay();
    for (std::size_t i = 0; i < underlays.size(); ++i) {
        if (!as_runs || std::binary_search(run_starts.begin(), run_starts.end(), i)) {
            const auto bytes = underlays[i].bytes();
            packed.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
        }
    }
    if (as_runs) {
        run_starts.push_back(underlays.size());
        for (std::size_t k = 0; k + 1 < run_starts.size(); ++k) {
            site.add_underlay_runs(static_cast<std::uint32_t>(run_starts[k + 1] - run_starts[k]));
        }
    }
    return {};
}

Result<std::vector<IpAddress>> unpack_underlays(const v1::SiteView& site) {
    const std::uint32_t nodes = site.nodes();
    const std::string& packed = site.underlay();
    const auto& runs = site.underlay_runs();
    const std::size_t entries = runs.empty() ? nodes : static_cast<std::size_t>(runs.size());
    const std::size_t width = packed.size() == entries * 4 ? 4 : 16;
    if (packed.size() != entries * width) {
        return Error{"underlay: " + std::to_string(packed.size()) + " bytes for " +
                     std::to_string(entries) + (runs.empty() ? " nodes" : " runs") + "; expected " +
                     std::to_string(entries * 4) + " (IPv4) or " + std::to_string(entries * 16) +
                     " (IPv6)"};
    }
    const Error runs_wrong{"underlay_runs: the runs do not add up to the site's " +
                           std::to_string(nodes) + " nodes"};
    std::vector<IpAddress> underlays;
    underlays.reserve(nodes);
    for (std::size_t k = 0; k < entries; ++k) {
        const IpAddress first = packed_address(packed, k, width);
        const std::uint32_t count = runs.empty() ? 1 : runs[static_cast<int>(k)];
        if (count == 0 || count > nodes - underlays.size()) {
            return runs_wrong;
        }
        for (std::uint32_t i = 0; i < count; ++i) {
            auto address = first.offset(i);
            if (!address) {
                return Error{"underlay_runs: the run from " + first.to_string() +
                             " goes past the end of the address space"};
            }
            underlays.push_back(*address);
        }
    }
    if (underlays.size() != nodes) {
        return runs_wrong;
    }
    return underlays;
}

}  // namespace vcpilot
