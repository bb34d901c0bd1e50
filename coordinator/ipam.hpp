// Address management: which CIDR block a cluster or site gets out of the configured pools.
//
// Pure logic, no I/O: the caller hands in the live blocks (from the store, inside the same
// transaction that will record the result), so the decision and its record cannot drift apart.
// Blocks are the unit of allocation and of compare-and-swap (as Calico does with its /26 blocks);
// the addresses inside a block derive from (block base, node ordinal) and are never stored.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/ip.hpp"
#include "common/result.hpp"

namespace vcpilot {

// One live block and who holds it. `generation` changes on every change of the lease and is
// never reused for another lease, so "release X at generation G" cannot hit a newer lease of
// the same block (no ABA).
struct Lease {
    Cidr block;
    std::string owner;
    std::uint64_t generation = 0;
};

// The configured pools of one address family, and first-fit allocation out of them.
class AddressPool {
  public:
    // Refuses an empty list, pools of mixed families and pools that overlap one another (a
    // configuration error that would make the same space appear twice).
    static Result<AddressPool> create(std::vector<Cidr> pools);

    // The pools in configured order: allocation tries them in this order.
    const std::vector<Cidr>& pools() const noexcept { return pools_; }
    IpFamily family() const noexcept { return pools_.front().family(); }
    // The pool that contains `block`, if any.
    const Cidr* pool_of(const Cidr& block) const noexcept;

    // The first block of length `prefix_len` (lowest address in the first pool that has room)
    // that overlaps no live block. Live blocks of the other family, or outside the pools, are
    // ignored for placement but still never overlapped. Deterministic: the same pools and live
    // set always give the same block. O(L log L + P * L) for L live blocks and P pools.
    Result<Cidr> allocate(int prefix_len, const std::vector<Cidr>& live) const;
    Result<Cidr> allocate(int prefix_len, const std::vector<Lease>& live) const;

    // Whether `wanted` may be leased as it is: inside one pool and overlapping no live block.
    // The error names the live block it overlaps and, for leases, its owner.
    Status check_explicit(const Cidr& wanted, const std::vector<Cidr>& live) const;
    Status check_explicit(const Cidr& wanted, const std::vector<Lease>& live) const;

  private:
    explicit AddressPool(std::vector<Cidr> pools) : pools_(std::move(pools)) {}

    std::vector<Cidr> pools_;
};

// The most nodes one block may be sized for: 2^20 - 2 (an IPv4 /12). Anything larger is a typo
// or an attack, not a cluster.
inline constexpr std::size_t kMaxNodesPerBlock = (std::size_t{1} << 20) - 2;

// The prefix of the smallest block that holds `nodes` host addresses. The rule, for both
// families: a block of 2^k addresses keeps its first (network) and last (IPv4 broadcast)
// address out of use, so it holds 2^k - 2 nodes, at base+1 ... base+nodes. 1 or 2 nodes -> /30,
// 254 -> /24, 255 -> /23 (for IPv6 the same host bits: 2 nodes -> /126). Refuses 0 nodes and
// more than kMaxNodesPerBlock.
Result<int> prefix_for_nodes(std::size_t nodes, IpFamily family = IpFamily::v4);

}  // namespace vcpilot
