// The lease store's building blocks, for stores that keep their own tables in the same database
// (the coordinators' clusters) and must change leases inside their own transactions. Every
// function here expects the caller to hold a write transaction (BEGIN IMMEDIATE) where it
// writes, and may throw SQLite::Exception; callers turn those into errors with db_error().
#pragma once

#include <cstdint>
#include <filesystem>
#include <string_view>
#include <vector>

#include "common/store.hpp"

namespace SQLite {
class Exception;
}

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
