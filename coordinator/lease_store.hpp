// The durable record of live address leases: a SQLite database, the truth a coordinator
// reconciles from when it starts.
//
// Every state change is one transaction. A reservation reads the live set, picks a block and
// inserts it inside one BEGIN IMMEDIATE transaction, which takes the database's write lock
// before the read: two processes (or two connections) on the same file are serialised there and
// can never hand out overlapping blocks. Changes to an existing lease are compare-and-swap on its
// generation, so a caller acting on a stale view is refused instead of undoing someone else's
// change.
//
// One LeaseStore is one connection: use it from one thread at a time, and never across fork()
// (open a new one in the child). Errors, including a busy database, a damaged file or a file
// that is not a vcpilot store, come back as values with one-line messages; nothing throws.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip.hpp"
#include "common/result.hpp"
#include "coordinator/ipam.hpp"

namespace SQLite {
class Database;
class Exception;
}  // namespace SQLite

namespace vcpilot {

// A lease as the store keeps it: who holds it, for which cluster, out of which pool.
struct LeaseRecord {
    Lease lease;
    Cidr pool;            // the configured pool the block was taken from
    std::string cluster;  // the cluster (or site delegation) the block serves
    std::int64_t created_unix_ms = 0;
};

struct StoreOptions {
    // How long a transaction waits for another process's write lock before giving up with an
    // error. Transactions are short (one reservation), so waiting this long means something is
    // wrong with the other process.
    std::chrono::milliseconds busy_timeout{5000};
};

class LeaseStore {
  public:
    // The newest schema this code knows. A database with a newer one is refused: this code
    // cannot know what the newer one means, and must not write to it.
    static constexpr int kSchemaVersion = 6;

    // Opens (creating it if missing) and migrates the store at `path`. Refuses a file that is
    // not a SQLite database, a SQLite database of another program, a damaged one, and one with
    // a newer schema than kSchemaVersion.
    static Result<LeaseStore> open(const std::filesystem::path& path, StoreOptions options = {});

    ~LeaseStore();
    LeaseStore(LeaseStore&&) noexcept;
    LeaseStore& operator=(LeaseStore&&) noexcept;
    LeaseStore(const LeaseStore&) = delete;
    LeaseStore& operator=(const LeaseStore&) = delete;

    // Leases the first free block of length `prefix_len` in `pool` (see AddressPool::allocate),
    // overlapping no live lease of any pool.
    Result<LeaseRecord> reserve(const AddressPool& pool, int prefix_len, std::string_view owner,
                                std::string_view cluster);
    // Leases exactly `block`, which must lie inside `pool` and overlap no live lease.
    Result<LeaseRecord> reserve_explicit(const AddressPool& pool, const Cidr& block,
                                         std::string_view owner, std::string_view cluster);
    // Gives the lease of `block` a new owner and cluster, if it is still at
    // `expected_generation`; the lease gets a new generation.
    Result<LeaseRecord> reassign(const Cidr& block, std::uint64_t expected_generation,
                                 std::string_view owner, std::string_view cluster);
    // Ends the lease of `block`, if it is still at `expected_generation`.
    Status release(const Cidr& block, std::uint64_t expected_generation);

    // Every live lease, in address order.
    Result<std::vector<LeaseRecord>> live();

    const std::filesystem::path& path() const noexcept { return path_; }

    // The connection itself, for stores that keep their own tables in this database and change
    // them together with leases in one transaction (see store_detail.hpp).
    SQLite::Database& database() noexcept { return *db_; }

  private:
    LeaseStore(std::filesystem::path path, std::unique_ptr<SQLite::Database> db);

    std::filesystem::path path_;
    std::unique_ptr<SQLite::Database> db_;
};

}  // namespace vcpilot

// The lease store's building blocks, for stores that keep their own tables in the same database
// (the coordinators' clusters, cluster_store.hpp) and must change leases inside their own
// transactions. Every function here expects the caller to hold a write transaction (BEGIN
// IMMEDIATE) where it writes, and may throw SQLite::Exception; callers turn those into errors
// with db_error().
namespace vcpilot::store_detail {

// Every live lease, in address order.
Result<std::vector<LeaseRecord>> live_leases(SQLite::Database& db);
// Records a lease of `block` (which the caller has checked is free) with a new generation.
LeaseRecord insert_lease(SQLite::Database& db, const Cidr& block, const Cidr& pool,
                         std::string_view owner, std::string_view cluster);
// Owner and cluster names: non-empty, short, printable.
Status check_name(std::string_view what, std::string_view name);
// A one-line message for a SQLite failure while `doing` something to the store at `path`.
Error db_error(std::string_view doing, const std::filesystem::path& path,
               const SQLite::Exception& error);
std::int64_t now_unix_ms();

}  // namespace vcpilot::store_detail
