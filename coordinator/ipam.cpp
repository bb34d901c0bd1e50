#include "coordinator/ipam.hpp"

#include <algorithm>
#include <array>
#include <fmt/format.h>
#include <optional>
#include <utility>

#include "common/text.hpp"

namespace vcpilot {

namespace {

int max_prefix_of(IpFamily family) {
    return family == IpFamily::v4 ? 32 : 128;
}

const char* family_name(IpFamily family) {
    return family == IpFamily::v4 ? "IPv4" : "IPv6";
}

// 2^count - 1, without the undefined shift by 128.
uint128 low_bits(int count) {
    return count >= 128 ? ~uint128{0} : (uint128{1} << count) - 1;
}

uint128 value_of(const IpAddress& address) {
    uint128 value = 0;
    for (std::uint8_t byte : address.bytes()) {
        value = (value << 8) | byte;
    }
    return value;
}

// Only for values that fit the family and are aligned to `prefix`, so Cidr::from cannot fail.
Cidr block_at(IpFamily family, uint128 first, int prefix) {
    if (family == IpFamily::v4) {
        std::array<std::uint8_t, 4> bytes{};
        for (std::size_t i = bytes.size(); i-- > 0; first >>= 8) {
            bytes[i] = static_cast<std::uint8_t>(first & 0xff);
        }
        return Cidr::from(IpAddress::from_v4_bytes(bytes), prefix).value();
    }
    std::array<std::uint8_t, 16> bytes{};
    for (std::size_t i = bytes.size(); i-- > 0; first >>= 8) {
        bytes[i] = static_cast<std::uint8_t>(first & 0xff);
    }
    return Cidr::from(IpAddress::from_v6_bytes(bytes), prefix).value();
}

// A live block as an inclusive range of address values, with where it came from for messages.
struct Span {
    uint128 first;
    uint128 last;
    std::size_t index;  // into the caller's live vector
};

Span span_of(const Cidr& block, std::size_t index) {
    return Span{value_of(block.network()), value_of(block.last()), index};
}

// The live blocks of `family`, sorted by first address: the sweep below relies on the order.
template <typename Live, typename BlockOf>
std::vector<Span> sorted_spans(const std::vector<Live>& live, IpFamily family, BlockOf block_of) {
    std::vector<Span> spans;
    spans.reserve(live.size());
    for (std::size_t i = 0; i < live.size(); ++i) {
        const Cidr& block = block_of(live[i]);
        if (block.family() == family) {
            spans.push_back(span_of(block, i));
        }
    }
    std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
        return a.first != b.first ? a.first < b.first : a.last < b.last;
    });
    return spans;
}

std::string pool_list(const std::vector<Cidr>& pools) {
    std::string text;
    for (const Cidr& pool : pools) {
        text += (text.empty() ? "" : ", ") + pool.to_string();
    }
    return text;
}

const Cidr& block_of_cidr(const Cidr& block) {
    return block;
}
const Cidr& block_of_lease(const Lease& lease) {
    return lease.block;
}

// First fit inside one pool: the lowest aligned block of 2^bits addresses that no span touches.
// Invariant: every span already passed ends before `candidate`.
std::optional<uint128> first_fit(const Cidr& pool, int prefix_len, const std::vector<Span>& spans) {
    const uint128 mask = low_bits(pool.network().max_prefix() - prefix_len);
    const uint128 pool_first = value_of(pool.network());
    const uint128 pool_last = value_of(pool.last());
    uint128 candidate = pool_first;
    for (const Span& span : spans) {
        if (span.last < candidate) {
            continue;
        }
        if (span.first > candidate + mask) {
            break;  // the candidate ends before this span, and every later span starts later
        }
        // Overlap: the next candidate is the first aligned address past this span, if any is
        // left in the pool. pool_last - mask is aligned, so comparing before rounding up is
        // exact and keeps the rounding from overflowing.
        if (span.last >= pool_last || span.last + 1 > pool_last - mask) {
            return std::nullopt;
        }
        candidate = (span.last + 1 + mask) & ~mask;
    }
    return candidate;
}

template <typename Live, typename BlockOf>
Result<Cidr> allocate_from(const std::vector<Cidr>& pools, int prefix_len,
                           const std::vector<Live>& live, BlockOf block_of) {
    const IpFamily family = pools.front().family();
    if (prefix_len < 0 || prefix_len > max_prefix_of(family)) {
        return Error{fmt::format("cannot allocate a /{}: an {} prefix length is 0 to {}",
                                 prefix_len, family_name(family), max_prefix_of(family))};
    }
    const auto widest = std::min_element(pools.begin(), pools.end(),
                                         [](auto& a, auto& b) { return a.prefix() < b.prefix(); });
    if (widest->prefix() > prefix_len) {
        return Error{fmt::format("cannot allocate a /{}: the largest address pool, {}, is smaller",
                                 prefix_len, widest->to_string())};
    }
    const std::vector<Span> spans = sorted_spans(live, family, block_of);
    for (const Cidr& pool : pools) {
        if (pool.prefix() > prefix_len) {
            continue;
        }
        if (auto first = first_fit(pool, prefix_len, spans)) {
            return block_at(family, *first, prefix_len);
        }
    }
    return Error{fmt::format(
        "address pool exhausted: no free /{} left in {} ({} live blocks); release a cluster, ask "
        "for fewer nodes or add a pool",
        prefix_len, pool_list(pools), spans.size())};
}

template <typename Live, typename BlockOf, typename Describe>
Status check_explicit_in(const AddressPool& pool, const Cidr& wanted, const std::vector<Live>& live,
                         BlockOf block_of, Describe describe) {
    if (wanted.family() != pool.family()) {
        return Error{fmt::format("cannot lease {}: it is {} but the address pools are {}",
                                 wanted.to_string(), family_name(wanted.family()),
                                 family_name(pool.family()))};
    }
    if (pool.pool_of(wanted) == nullptr) {
        return Error{fmt::format("cannot lease {}: it is not inside any address pool ({})",
                                 wanted.to_string(), pool_list(pool.pools()))};
    }
    // One pass, no sort: a single check is O(L) either way.
    for (const Live& entry : live) {
        if (block_of(entry).overlaps(wanted)) {
            return Error{fmt::format("cannot lease {}: it overlaps the live block {}",
                                     wanted.to_string(), describe(entry))};
        }
    }
    return {};
}

}  // namespace

Result<AddressPool> AddressPool::create(std::vector<Cidr> pools) {
    if (pools.empty()) {
        return Error{"no address pool is configured; give at least one CIDR block"};
    }
    for (const Cidr& pool : pools) {
        if (pool.family() != pools.front().family()) {
            return Error{
                fmt::format("address pools {} and {} are of different families; use one "
                            "pool set per family",
                            pools.front().to_string(), pool.to_string())};
        }
    }
    for (std::size_t i = 0; i < pools.size(); ++i) {
        for (std::size_t j = i + 1; j < pools.size(); ++j) {
            if (pools[i].overlaps(pools[j])) {
                return Error{fmt::format("address pools {} and {} overlap", pools[i].to_string(),
                                         pools[j].to_string())};
            }
        }
    }
    return AddressPool(std::move(pools));
}

const Cidr* AddressPool::pool_of(const Cidr& block) const noexcept {
    for (const Cidr& pool : pools_) {
        if (pool.contains(block)) {
            return &pool;
        }
    }
    return nullptr;
}

Result<Cidr> AddressPool::allocate(int prefix_len, const std::vector<Cidr>& live) const {
    return allocate_from(pools_, prefix_len, live, block_of_cidr);
}

Result<Cidr> AddressPool::allocate(int prefix_len, const std::vector<Lease>& live) const {
    return allocate_from(pools_, prefix_len, live, block_of_lease);
}

Status AddressPool::check_explicit(const Cidr& wanted, const std::vector<Cidr>& live) const {
    return check_explicit_in(*this, wanted, live, block_of_cidr,
                             [](const Cidr& block) { return block.to_string(); });
}

Status AddressPool::check_explicit(const Cidr& wanted, const std::vector<Lease>& live) const {
    return check_explicit_in(*this, wanted, live, block_of_lease, [](const Lease& lease) {
        return fmt::format("{} of {} (generation {})", lease.block.to_string(), quote(lease.owner),
                           lease.generation);
    });
}

Result<int> prefix_for_nodes(std::size_t nodes, IpFamily family) {
    if (nodes == 0) {
        return Error{"a block for 0 nodes was asked for; a cluster needs at least 1 node"};
    }
    if (nodes > kMaxNodesPerBlock) {
        return Error{fmt::format("{} nodes is more than the {} one address block may hold", nodes,
                                 kMaxNodesPerBlock)};
    }
    // Network and broadcast addresses are never handed to a node.
    int host_bits = 2;
    while ((std::size_t{1} << host_bits) - 2 < nodes) {
        ++host_bits;
    }
    return max_prefix_of(family) - host_bits;
}

}  // namespace vcpilot
