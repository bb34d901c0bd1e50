#include "coordinator/lease_store.hpp"

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Exception.h>
#include <SQLiteCpp/Statement.h>
#include <SQLiteCpp/Transaction.h>
#include <algorithm>
#include <array>
#include <fmt/format.h>
#include <optional>
#include <sqlite3.h>
#include <thread>
#include <utility>

#include "common/text.hpp"
#include "coordinator/lease_store.hpp"

namespace vcpilot {

namespace {

// "vcpL" in the database header (PRAGMA application_id): tells this program's stores from any
// other SQLite file, so a wrong --state path is refused instead of migrated on top of.
constexpr std::int32_t kApplicationId = 0x7663704c;

// Migration N (1-based) takes the schema from version N-1 to N. Append only: a released
// migration is never edited, since databases in the field have already run it.
// STRICT tables make SQLite refuse a value of the wrong type instead of storing it anyway.
constexpr std::array<const char*, LeaseStore::kSchemaVersion> kMigrations = {
    // 1: leases and the generation counter.
    R"sql(
    CREATE TABLE schema_version (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL
    ) STRICT;
    INSERT INTO schema_version (id, version) VALUES (1, 0);
    -- Generations come from one counter that only grows, never from max(generation) of the
    -- live rows: a block released and leased again gets a generation no stale caller holds.
    CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) STRICT;
    INSERT INTO counters (name, value) VALUES ('generation', 0);
    -- One row per live block, keyed by its canonical CIDR text. Overlap between different
    -- blocks is prevented by the allocator inside the same write transaction, not by SQL.
    CREATE TABLE leases (
        block           TEXT PRIMARY KEY,
        pool            TEXT NOT NULL,
        owner           TEXT NOT NULL CHECK (owner <> ''),
        cluster         TEXT NOT NULL CHECK (cluster <> ''),
        generation      INTEGER NOT NULL UNIQUE CHECK (generation > 0),
        created_unix_ms INTEGER NOT NULL
    ) STRICT;
    )sql",
    // 2: the coordinators' clusters. A cluster, its sites' blocks (in `leases`, cluster = id)
    // and its nodes change together in one transaction. Node addresses are not stored: they are
    // the site block's base + ordinal.
    R"sql(
    CREATE TABLE clusters (
        id              TEXT PRIMARY KEY,
        owner           TEXT NOT NULL CHECK (owner <> ''),
        state           INTEGER NOT NULL,
        reason          TEXT NOT NULL DEFAULT '',
        key_mode        INTEGER NOT NULL,
        vni             INTEGER UNIQUE,            -- NULL once released: VNIs are reused
        name_prefix     TEXT NOT NULL,
        slots           INTEGER NOT NULL,
        image           TEXT NOT NULL DEFAULT '',
        image_mount     TEXT NOT NULL DEFAULT '',
        ca_seed         BLOB,                      -- the cluster CA's private key, if held here
        created_unix_ms INTEGER NOT NULL,
        changed_unix_ms INTEGER NOT NULL,
        release_by_ms   INTEGER NOT NULL DEFAULT 0 -- RELEASING: give up waiting for pilots then
    ) STRICT;
    CREATE TABLE sites (
        cluster TEXT NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
        site    TEXT NOT NULL,
        nodes   INTEGER NOT NULL CHECK (nodes > 0),
        block   TEXT NOT NULL,
        PRIMARY KEY (cluster, site)
    ) STRICT;
    CREATE TABLE nodes (
        cluster          TEXT NOT NULL,
        site             TEXT NOT NULL,
        ordinal          INTEGER NOT NULL CHECK (ordinal > 0),
        host             TEXT NOT NULL DEFAULT '',
        job              TEXT NOT NULL DEFAULT '',
        underlay         TEXT NOT NULL DEFAULT '',
        host_key         TEXT NOT NULL DEFAULT '',
        user_key         TEXT NOT NULL DEFAULT '',
        host_certificate TEXT NOT NULL DEFAULT '',
        user_certificate TEXT NOT NULL DEFAULT '',
        state            INTEGER NOT NULL,
        reason           TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (cluster, site, ordinal),
        FOREIGN KEY (cluster, site) REFERENCES sites (cluster, site) ON DELETE CASCADE
    ) STRICT;
    -- A pilot (host, job) holds at most one node of a cluster.
    CREATE UNIQUE INDEX nodes_by_pilot ON nodes (cluster, host, job) WHERE host <> '';
    CREATE INDEX leases_by_cluster ON leases (cluster);
    )sql",
    // 3: clusters across sites. A CRM records where a cluster came from (the GRC assigns its
    // share of a cluster that spans sites); the GRC records which sites confirmed a release.
    R"sql(
    ALTER TABLE clusters ADD COLUMN origin TEXT NOT NULL DEFAULT '';
    ALTER TABLE sites ADD COLUMN released INTEGER NOT NULL DEFAULT 0;
    )sql",
    // 4: nodes lent to a Slurm job that joined a reserved cluster (--vc-cluster): free again
    // when the job's pilot stops, where any other pilot that stops fails its cluster.
    R"sql(
    ALTER TABLE nodes ADD COLUMN lent INTEGER NOT NULL DEFAULT 0;
    )sql",
    // 5: who starts the pilots (a Slurm job per site submitted by its CRM, or the owner's own
    // jobs), the walltime after which the cluster is released, and each site's pilot job.
    R"sql(
    ALTER TABLE clusters ADD COLUMN pilots INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE clusters ADD COLUMN walltime_min INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE clusters ADD COLUMN expires_unix_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sites ADD COLUMN pilot_job TEXT NOT NULL DEFAULT '';
    )sql",
    // 6: the overlay of a cluster; for n2n its community's key and supernode.
    R"sql(
    ALTER TABLE clusters ADD COLUMN overlay INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE clusters ADD COLUMN n2n_key TEXT NOT NULL DEFAULT '';
    ALTER TABLE clusters ADD COLUMN n2n_supernode TEXT NOT NULL DEFAULT '';
    )sql",
};

// Owner and cluster names end up in error messages and logs; keep them short and printable.
constexpr std::size_t kMaxNameLength = 128;

Status check_name(std::string_view what, std::string_view name) {
    if (name.empty()) {
        return Error{fmt::format("the {} is empty", what)};
    }
    if (name.size() > kMaxNameLength) {
        return Error{
            fmt::format("the {} {} is longer than {} bytes", what, quote(name), kMaxNameLength)};
    }
    if (std::any_of(name.begin(), name.end(),
                    [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
        return Error{fmt::format("the {} {} contains control characters", what, quote(name))};
    }
    return {};
}

Error db_error(std::string_view doing, const std::filesystem::path& path,
               const SQLite::Exception& error) {
    std::string hint;
    switch (error.getErrorCode()) {
        case SQLITE_NOTADB:
            return Error{fmt::format(
                "lease store {}: not a SQLite database; point to the right file or move this "
                "one aside",
                quote(path.string(), 256))};
        case SQLITE_CANTOPEN:
            hint = "; check that its directory exists and is writable";
            break;
        case SQLITE_CORRUPT:
            hint = "; the database is damaged: restore it from a backup";
            break;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
            hint = "; another process held the database for too long";
            break;
        default:
            break;
    }
    return Error{fmt::format("lease store {}: {}: {}{}", quote(path.string(), 256), doing,
                             single_line(error.what()), hint)};
}

std::int64_t now_unix_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// The schema version of an open database: 0 for an empty one (a new file), an error for a
// SQLite database that is not a vcpilot lease store.
Result<int> read_schema_version(SQLite::Database& db) {
    const int id = db.execAndGet("PRAGMA application_id").getInt();
    const bool has_version_table = db.tableExists("schema_version");
    if (id == 0 && !has_version_table) {
        const int objects = db.execAndGet("SELECT count(*) FROM sqlite_schema").getInt();
        if (objects == 0) {
            return 0;
        }
    }
    if (id != kApplicationId || !has_version_table) {
        return Error{"it is a SQLite database of another program, not a vcpilot lease store"};
    }
    return static_cast<int>(db.execAndGet("SELECT version FROM schema_version").getInt());
}

// The same, as one consistent snapshot: read piecemeal, another process's first migration
// could land between the reads and make a fresh file look like another program's database.
Result<int> read_schema_version_once(SQLite::Database& db) {
    SQLite::Transaction snapshot(db, SQLite::TransactionBehavior::DEFERRED);
    return read_schema_version(db);  // the snapshot rolls back: nothing was written
}

// Changing the journal mode needs an exclusive lock, and SQLite reports a conflict there at once
// instead of calling the busy handler; when several processes open a new store together, all
// but one see SQLITE_BUSY. Retry for as long as any other statement would wait. WAL mode is
// stored in the file, so this only ever races on a new store.
std::string switch_to_wal(SQLite::Database& db, std::chrono::milliseconds busy_timeout) {
    const auto deadline = std::chrono::steady_clock::now() + busy_timeout;
    for (;;) {
        try {
            return db.execAndGet("PRAGMA journal_mode = WAL").getString();
        } catch (const SQLite::Exception& error) {
            if (error.getErrorCode() != SQLITE_BUSY ||
                std::chrono::steady_clock::now() > deadline) {
                throw;
            }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

Error newer_schema(int version) {
    return Error{fmt::format(
        "its schema version is {}, newer than {}, the newest this vcpilot knows; run a vcpilot at "
        "least as new as the one that wrote it",
        version, LeaseStore::kSchemaVersion)};
}

// Each migration is one transaction, so a crash leaves the database at the previous version or
// at the next one, never in between. The version is read again inside the write lock because
// another process may have migrated in the meantime.
Status migrate(SQLite::Database& db) {
    for (;;) {
        SQLite::Transaction transaction(db, SQLite::TransactionBehavior::IMMEDIATE);
        auto version = read_schema_version(db);
        if (!version) {
            return version.error();
        }
        if (*version > LeaseStore::kSchemaVersion) {
            return newer_schema(*version);
        }
        if (*version == LeaseStore::kSchemaVersion) {
            return {};
        }
        if (*version == 0) {
            db.exec(fmt::format("PRAGMA application_id = {}", kApplicationId));
        }
        db.exec(kMigrations[static_cast<std::size_t>(*version)]);
        SQLite::Statement update(db, "UPDATE schema_version SET version = ?");
        update.bind(1, *version + 1);
        update.exec();
        transaction.commit();
    }
}

Result<LeaseRecord> record_from_row(SQLite::Statement& row) {
    const std::string block_text = row.getColumn(0).getString();
    auto block = Cidr::parse(block_text);
    auto pool = Cidr::parse(row.getColumn(1).getString());
    const std::int64_t generation = row.getColumn(4).getInt64();
    if (!block || !pool || generation <= 0) {
        return Error{fmt::format("the lease row {} is unreadable ({}); the database is damaged",
                                 quote(block_text),
                                 !block  ? block.error().message
                                 : !pool ? pool.error().message
                                         : "bad generation")};
    }
    return LeaseRecord{
        Lease{*block, row.getColumn(2).getString(), static_cast<std::uint64_t>(generation)}, *pool,
        row.getColumn(3).getString(), row.getColumn(5).getInt64()};
}

constexpr const char* kSelectColumns =
    "SELECT block, pool, owner, cluster, generation, created_unix_ms FROM leases";

Result<std::vector<LeaseRecord>> read_live(SQLite::Database& db) {
    SQLite::Statement query(db, kSelectColumns);
    std::vector<LeaseRecord> records;
    while (query.executeStep()) {
        auto record = record_from_row(query);
        if (!record) {
            return record.error();
        }
        records.push_back(std::move(*record));
    }
    std::sort(records.begin(), records.end(), [](const LeaseRecord& a, const LeaseRecord& b) {
        return a.lease.block < b.lease.block;
    });
    return records;
}

Result<std::optional<LeaseRecord>> read_one(SQLite::Database& db, const Cidr& block) {
    SQLite::Statement query(db, std::string(kSelectColumns) + " WHERE block = ?");
    query.bind(1, block.to_string());
    if (!query.executeStep()) {
        return std::optional<LeaseRecord>{};
    }
    auto record = record_from_row(query);
    if (!record) {
        return record.error();
    }
    return std::optional<LeaseRecord>{std::move(*record)};
}

std::uint64_t next_generation(SQLite::Database& db) {
    db.exec("UPDATE counters SET value = value + 1 WHERE name = 'generation'");
    return static_cast<std::uint64_t>(
        db.execAndGet("SELECT value FROM counters WHERE name = 'generation'").getInt64());
}

LeaseRecord insert_lease(SQLite::Database& db, const Cidr& block, const Cidr& pool,
                         std::string_view owner, std::string_view cluster) {
    LeaseRecord record{Lease{block, std::string(owner), next_generation(db)}, pool,
                       std::string(cluster), now_unix_ms()};
    SQLite::Statement insert(db,
                             "INSERT INTO leases (block, pool, owner, cluster, generation, "
                             "created_unix_ms) VALUES (?, ?, ?, ?, ?, ?)");
    insert.bind(1, block.to_string());
    insert.bind(2, pool.to_string());
    insert.bind(3, record.lease.owner);
    insert.bind(4, record.cluster);
    insert.bind(5, static_cast<std::int64_t>(record.lease.generation));
    insert.bind(6, record.created_unix_ms);
    insert.exec();
    return record;
}

std::vector<Lease> leases_of(const std::vector<LeaseRecord>& records) {
    std::vector<Lease> leases;
    leases.reserve(records.size());
    for (const LeaseRecord& record : records) {
        leases.push_back(record.lease);
    }
    return leases;
}

// Why a compare-and-swap on `block` found no row at `expected`.
Error cas_failure(SQLite::Database& db, std::string_view doing, const Cidr& block,
                  std::uint64_t expected) {
    auto current = read_one(db, block);
    if (!current) {
        return current.error();
    }
    if (!*current) {
        return Error{fmt::format("cannot {} {}: there is no live lease of that block", doing,
                                 block.to_string())};
    }
    return Error{fmt::format(
        "cannot {} {}: stale generation {}; the lease is at generation {} now (it changed since "
        "it was read): read it again and retry",
        doing, block.to_string(), expected, (*current)->lease.generation)};
}

}  // namespace

LeaseStore::LeaseStore(std::filesystem::path path, std::unique_ptr<SQLite::Database> db)
    : path_(std::move(path)), db_(std::move(db)) {}
LeaseStore::~LeaseStore() = default;
LeaseStore::LeaseStore(LeaseStore&&) noexcept = default;
LeaseStore& LeaseStore::operator=(LeaseStore&&) noexcept = default;

Result<LeaseStore> LeaseStore::open(const std::filesystem::path& path, StoreOptions options) {
    std::string step = "cannot open it";
    try {
        auto db =
            std::make_unique<SQLite::Database>(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE,
                                               static_cast<int>(options.busy_timeout.count()));

        // Look before writing anything: a foreign or newer database is refused unchanged.
        step = "cannot read it";
        auto version = read_schema_version_once(*db);
        if (!version) {
            return Error{fmt::format("lease store {}: {}", quote(path.string(), 256),
                                     version.error().message)};
        }
        if (*version > kSchemaVersion) {
            return Error{fmt::format("lease store {}: {}", quote(path.string(), 256),
                                     newer_schema(*version).message)};
        }
        // Cheap for a table of leases, and a daemon that trusts the store must not start on a
        // damaged one.
        step = "integrity check failed";
        const std::string integrity = db->execAndGet("PRAGMA quick_check").getString();
        if (integrity != "ok") {
            return Error{
                fmt::format("lease store {}: the database is damaged ({}); restore it "
                            "from a backup",
                            quote(path.string(), 256), quote(integrity))};
        }

        // WAL: readers never block the writer, and a commit is one append to the log.
        // synchronous=FULL syncs the log on every commit: a lease that was reported as made
        // survives a power loss or kernel crash too, not only a crash of the process (NORMAL
        // would only guarantee the latter).
        step = "cannot configure it";
        const std::string mode = switch_to_wal(*db, options.busy_timeout);
        if (mode != "wal") {
            return Error{
                fmt::format("lease store {}: cannot switch to write-ahead logging (the "
                            "journal mode stayed {}); is the file on a network or "
                            "read-only filesystem?",
                            quote(path.string(), 256), quote(mode))};
        }
        db->exec("PRAGMA synchronous = FULL");
        db->exec("PRAGMA foreign_keys = ON");

        step = "cannot migrate its schema";
        if (auto status = migrate(*db); !status) {
            return Error{fmt::format("lease store {}: {}", quote(path.string(), 256),
                                     status.error().message)};
        }
        return LeaseStore(path, std::move(db));
    } catch (const SQLite::Exception& error) {
        return db_error(step, path, error);
    }
}

Result<LeaseRecord> LeaseStore::reserve(const AddressPool& pool, int prefix_len,
                                        std::string_view owner, std::string_view cluster) {
    for (auto [what, name] : {std::pair{"owner", owner}, std::pair{"cluster", cluster}}) {
        if (auto status = check_name(what, name); !status) {
            return Error{"cannot reserve a block: " + status.error().message};
        }
    }
    try {
        // IMMEDIATE takes the write lock before the read, so no other writer can slip a lease
        // in between reading the live set and inserting the new block.
        SQLite::Transaction transaction(*db_, SQLite::TransactionBehavior::IMMEDIATE);
        auto records = read_live(*db_);
        if (!records) {
            return records.error();
        }
        auto block = pool.allocate(prefix_len, leases_of(*records));
        if (!block) {
            return block.error();
        }
        LeaseRecord record = insert_lease(*db_, *block, *pool.pool_of(*block), owner, cluster);
        transaction.commit();
        return record;
    } catch (const SQLite::Exception& error) {
        return db_error(fmt::format("cannot reserve a /{}", prefix_len), path_, error);
    }
}

Result<LeaseRecord> LeaseStore::reserve_explicit(const AddressPool& pool, const Cidr& block,
                                                 std::string_view owner, std::string_view cluster) {
    for (auto [what, name] : {std::pair{"owner", owner}, std::pair{"cluster", cluster}}) {
        if (auto status = check_name(what, name); !status) {
            return Error{
                fmt::format("cannot lease {}: {}", block.to_string(), status.error().message)};
        }
    }
    try {
        SQLite::Transaction transaction(*db_, SQLite::TransactionBehavior::IMMEDIATE);
        auto records = read_live(*db_);
        if (!records) {
            return records.error();
        }
        if (auto status = pool.check_explicit(block, leases_of(*records)); !status) {
            return status.error();
        }
        LeaseRecord record = insert_lease(*db_, block, *pool.pool_of(block), owner, cluster);
        transaction.commit();
        return record;
    } catch (const SQLite::Exception& error) {
        return db_error(fmt::format("cannot lease {}", block.to_string()), path_, error);
    }
}

Result<LeaseRecord> LeaseStore::reassign(const Cidr& block, std::uint64_t expected_generation,
                                         std::string_view owner, std::string_view cluster) {
    for (auto [what, name] : {std::pair{"owner", owner}, std::pair{"cluster", cluster}}) {
        if (auto status = check_name(what, name); !status) {
            return Error{
                fmt::format("cannot reassign {}: {}", block.to_string(), status.error().message)};
        }
    }
    try {
        SQLite::Transaction transaction(*db_, SQLite::TransactionBehavior::IMMEDIATE);
        const std::uint64_t generation = next_generation(*db_);
        SQLite::Statement update(*db_,
                                 "UPDATE leases SET owner = ?, cluster = ?, generation = ? "
                                 "WHERE block = ? AND generation = ?");
        update.bind(1, std::string(owner));
        update.bind(2, std::string(cluster));
        update.bind(3, static_cast<std::int64_t>(generation));
        update.bind(4, block.to_string());
        update.bind(5, static_cast<std::int64_t>(expected_generation));
        if (update.exec() != 1) {
            return cas_failure(*db_, "reassign", block, expected_generation);
        }
        auto record = read_one(*db_, block);
        if (!record) {
            return record.error();
        }
        transaction.commit();
        return std::move(**record);
    } catch (const SQLite::Exception& error) {
        return db_error(fmt::format("cannot reassign {}", block.to_string()), path_, error);
    }
}

Status LeaseStore::release(const Cidr& block, std::uint64_t expected_generation) {
    try {
        SQLite::Transaction transaction(*db_, SQLite::TransactionBehavior::IMMEDIATE);
        SQLite::Statement remove(*db_, "DELETE FROM leases WHERE block = ? AND generation = ?");
        remove.bind(1, block.to_string());
        remove.bind(2, static_cast<std::int64_t>(expected_generation));
        if (remove.exec() != 1) {
            return cas_failure(*db_, "release", block, expected_generation);
        }
        transaction.commit();
        return {};
    } catch (const SQLite::Exception& error) {
        return db_error(fmt::format("cannot release {}", block.to_string()), path_, error);
    }
}

Result<std::vector<LeaseRecord>> LeaseStore::live() {
    try {
        // One read transaction: a consistent snapshot even while other processes write.
        SQLite::Transaction transaction(*db_, SQLite::TransactionBehavior::DEFERRED);
        auto records = read_live(*db_);
        transaction.commit();
        return records;
    } catch (const SQLite::Exception& error) {
        return db_error("cannot list the live leases", path_, error);
    }
}

namespace store_detail {

Result<std::vector<LeaseRecord>> live_leases(SQLite::Database& db) {
    return read_live(db);
}

LeaseRecord insert_lease(SQLite::Database& db, const Cidr& block, const Cidr& pool,
                         std::string_view owner, std::string_view cluster) {
    return vcpilot::insert_lease(db, block, pool, owner, cluster);
}

Status check_name(std::string_view what, std::string_view name) {
    return vcpilot::check_name(what, name);
}

Error db_error(std::string_view doing, const std::filesystem::path& path,
               const SQLite::Exception& error) {
    return vcpilot::db_error(doing, path, error);
}

std::int64_t now_unix_ms() {
    return vcpilot::now_unix_ms();
}

}  // namespace store_detail

}  // namespace vcpilot
