#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fmt/format.h>
#include <fstream>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <iterator>
#include <map>
#include <random>
#include <sqlite3.h>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "coordinator/lease_store.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/unit/expect_error.hpp"
#include "tests/unit/literals.hpp"

namespace vcpilot {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using vcpilot::testing::TempDir;

std::vector<Cidr> blocks_of(const std::vector<LeaseRecord>& records) {
    std::vector<Cidr> blocks;
    blocks.reserve(records.size());
    for (const LeaseRecord& record : records) {
        blocks.push_back(record.lease.block);
    }
    return blocks;
}

// Every pair, so that a bug in any cleverer check cannot hide a bug in the store.
void expect_no_overlaps(const std::vector<Cidr>& blocks) {
    for (std::size_t i = 0; i < blocks.size(); ++i) {
        for (std::size_t j = i + 1; j < blocks.size(); ++j) {
            EXPECT_FALSE(blocks[i].overlaps(blocks[j]))
                << blocks[i].to_string() << " overlaps " << blocks[j].to_string();
        }
    }
}

// Runs SQL on the file behind the store's back, as an admin or a damaged disk would.
void raw_sql(const std::filesystem::path& path, const char* sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    char* message = nullptr;
    const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &message);
    EXPECT_EQ(rc, SQLITE_OK) << (message != nullptr ? message : "");
    sqlite3_free(message);
    sqlite3_close(db);
}

std::string raw_query(const std::filesystem::path& path, const char* sql) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    std::string value;
    sqlite3_stmt* statement = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &statement, nullptr) == SQLITE_OK &&
        sqlite3_step(statement) == SQLITE_ROW) {
        value = reinterpret_cast<const char*>(sqlite3_column_text(statement, 0));
    }
    sqlite3_finalize(statement);
    sqlite3_close(db);
    return value;
}

std::string file_contents(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

class Store : public ::testing::Test {
  protected:
    std::filesystem::path db_path() const { return dir_.path() / "leases.db"; }
    LeaseStore open() { return LeaseStore::open(db_path()).value(); }

    TempDir dir_;
    const AddressPool pool_ = pool_of({cidr("10.0.0.0/16")});
};

// ---- single process ----

TEST_F(Store, ReservesFirstFitAndRecordsWhoHoldsTheBlock) {
    LeaseStore store = open();
    const LeaseRecord first = store.reserve(pool_, 24, "alice", "c1").value();
    const LeaseRecord second = store.reserve(pool_, 26, "bob", "c2").value();
    EXPECT_EQ(first.lease.block, cidr("10.0.0.0/24"));
    EXPECT_EQ(second.lease.block, cidr("10.0.1.0/26"));
    EXPECT_EQ(first.lease.owner, "alice");
    EXPECT_EQ(first.cluster, "c1");
    EXPECT_EQ(first.pool, cidr("10.0.0.0/16"));
    EXPECT_GT(second.lease.generation, first.lease.generation);
    EXPECT_GT(first.created_unix_ms, 1'600'000'000'000);

    const auto live = store.live().value();
    ASSERT_EQ(live.size(), 2U);
    EXPECT_EQ(live[0].lease.block, first.lease.block);
    EXPECT_EQ(live[0].lease.generation, first.lease.generation);
    EXPECT_EQ(live[1].lease.owner, "bob");
    EXPECT_EQ(live[1].cluster, "c2");
}

TEST_F(Store, ReopenKeepsLeases) {
    {
        LeaseStore store = open();
        ASSERT_TRUE(store.reserve(pool_, 24, "alice", "c1"));
        ASSERT_TRUE(store.reserve_explicit(pool_, cidr("10.0.200.0/24"), "bob", "c2"));
    }
    LeaseStore store = open();
    const auto live = store.live().value();
    ASSERT_EQ(live.size(), 2U);
    EXPECT_EQ(live[0].lease.block, cidr("10.0.0.0/24"));
    EXPECT_EQ(live[1].lease.block, cidr("10.0.200.0/24"));
    EXPECT_EQ(live[1].lease.owner, "bob");
    // And allocation continues around them.
    EXPECT_EQ(store.reserve(pool_, 24, "carol", "c3")->lease.block, cidr("10.0.1.0/24"));
}

TEST_F(Store, UsesWriteAheadLogging) {
    { open(); }
    EXPECT_EQ(raw_query(db_path(), "PRAGMA journal_mode"), "wal");
    EXPECT_EQ(raw_query(db_path(), "SELECT version FROM schema_version"),
              std::to_string(LeaseStore::kSchemaVersion));
}

TEST_F(Store, ReleaseFreesTheBlockForReuse) {
    LeaseStore store = open();
    const LeaseRecord first = store.reserve(pool_, 24, "alice", "c1").value();
    ASSERT_TRUE(store.reserve(pool_, 24, "bob", "c2"));
    ASSERT_TRUE(store.release(first.lease.block, first.lease.generation));
    EXPECT_EQ(store.live()->size(), 1U);
    EXPECT_EQ(store.reserve(pool_, 24, "carol", "c3")->lease.block, cidr("10.0.0.0/24"));
}

TEST_F(Store, RefusesAStaleGeneration) {
    LeaseStore store = open();
    const LeaseRecord original = store.reserve(pool_, 24, "alice", "c1").value();
    const LeaseRecord moved =
        store.reassign(original.lease.block, original.lease.generation, "bob", "c2").value();
    EXPECT_EQ(moved.lease.owner, "bob");
    EXPECT_EQ(moved.cluster, "c2");
    EXPECT_GT(moved.lease.generation, original.lease.generation);

    // Someone still holding the old view can neither release nor reassign.
    EXPECT_THAT(error_of(store.release(original.lease.block, original.lease.generation)),
                AllOf(HasSubstr("10.0.0.0/24"), HasSubstr("stale generation"),
                      HasSubstr(std::to_string(moved.lease.generation))));
    EXPECT_THAT(
        error_of(store.reassign(original.lease.block, original.lease.generation, "eve", "c9")),
        HasSubstr("stale generation"));
    EXPECT_EQ(store.live()->front().lease.owner, "bob");

    // Released and leased again, the block gets a generation no earlier holder has seen.
    ASSERT_TRUE(store.release(moved.lease.block, moved.lease.generation));
    const LeaseRecord again = store.reserve(pool_, 24, "carol", "c3").value();
    EXPECT_EQ(again.lease.block, original.lease.block);
    EXPECT_GT(again.lease.generation, moved.lease.generation);
    EXPECT_THAT(error_of(store.release(moved.lease.block, moved.lease.generation)),
                HasSubstr("stale generation"));
    EXPECT_EQ(store.live()->size(), 1U);
}

TEST_F(Store, ReleasingABlockThatIsNotLeasedIsAClearError) {
    LeaseStore store = open();
    EXPECT_THAT(error_of(store.release(cidr("10.0.3.0/24"), 1)),
                AllOf(HasSubstr("10.0.3.0/24"), HasSubstr("no live lease")));
}

TEST_F(Store, RefusesAnOverlappingExplicitBlockAndChangesNothing) {
    LeaseStore store = open();
    ASSERT_TRUE(store.reserve_explicit(pool_, cidr("10.0.4.0/22"), "alice", "c1"));
    EXPECT_THAT(error_of(store.reserve_explicit(pool_, cidr("10.0.5.0/24"), "bob", "c2")),
                AllOf(HasSubstr("overlaps"), HasSubstr("10.0.4.0/22"), HasSubstr("'alice'")));
    EXPECT_THAT(error_of(store.reserve_explicit(pool_, cidr("10.9.0.0/24"), "bob", "c2")),
                HasSubstr("not inside any address pool"));
    EXPECT_EQ(store.live()->size(), 1U);
}

TEST_F(Store, ExhaustionIsAClearErrorAndChangesNothing) {
    LeaseStore store = open();
    const AddressPool small = pool_of({cidr("10.0.0.0/23")});
    ASSERT_TRUE(store.reserve(small, 24, "alice", "c1"));
    ASSERT_TRUE(store.reserve(small, 24, "alice", "c2"));
    EXPECT_THAT(error_of(store.reserve(small, 24, "alice", "c3")), HasSubstr("exhausted"));
    EXPECT_EQ(store.live()->size(), 2U);
}

TEST_F(Store, RefusesBadOwnersAndClusters) {
    LeaseStore store = open();
    EXPECT_THAT(error_of(store.reserve(pool_, 24, "", "c1")), HasSubstr("owner is empty"));
    EXPECT_THAT(error_of(store.reserve(pool_, 24, "alice\nroot", "c1")),
                HasSubstr("control characters"));
    EXPECT_THAT(error_of(store.reserve(pool_, 24, "alice", std::string(500, 'x'))),
                HasSubstr("longer than"));
    EXPECT_TRUE(store.live()->empty());
}

// ---- files that are not what they should be ----

TEST_F(Store, RefusesASchemaNewerThanTheCode) {
    { open(); }
    const int newer = LeaseStore::kSchemaVersion + 1;
    raw_sql(db_path(), ("UPDATE schema_version SET version = " + std::to_string(newer)).c_str());
    EXPECT_THAT(error_of(LeaseStore::open(db_path())),
                AllOf(HasSubstr("leases.db"), HasSubstr(fmt::format("schema version is {}", newer)),
                      HasSubstr(fmt::format("newer than {}", LeaseStore::kSchemaVersion))));
}

TEST_F(Store, RefusesAFileThatIsNotADatabaseAndLeavesItAlone) {
    const std::string garbage = "this is a text file, not a database\n" + std::string(8192, '\x5a');
    const std::filesystem::path path = dir_.write("leases.db", garbage);
    EXPECT_THAT(error_of(LeaseStore::open(path)),
                AllOf(HasSubstr("leases.db"), HasSubstr("not a SQLite database")));
    EXPECT_EQ(file_contents(path), garbage);
}

TEST_F(Store, RefusesTheDatabaseOfAnotherProgram) {
    raw_sql(db_path(), "CREATE TABLE users (name TEXT)");
    EXPECT_THAT(error_of(LeaseStore::open(db_path())), HasSubstr("not a vcpilot lease store"));
}

TEST_F(Store, RefusesADamagedDatabase) {
    {
        LeaseStore store = open();
        for (int i = 0; i < 200; ++i) {
            ASSERT_TRUE(store.reserve(pool_, 28, "owner-with-a-long-name-" + std::to_string(i),
                                      "cluster-" + std::to_string(i)));
        }
    }
    // Closing the last connection checkpoints the log into the main file; scribble over the
    // pages after the first (which holds the header and the schema).
    std::string contents = file_contents(db_path());
    constexpr std::ptrdiff_t kPage = 4096;
    ASSERT_GT(contents.size(), std::size_t{3} * kPage);
    std::fill(contents.begin() + kPage, contents.begin() + 3 * kPage, '\x7f');
    std::ofstream(db_path(), std::ios::binary | std::ios::trunc) << contents;
    EXPECT_THAT(error_of(LeaseStore::open(db_path())), HasSubstr("damaged"));
}

// ---- several processes ----

// Forks a child that runs `body` and exits with its return value. The parent must have no open
// store at this point: a SQLite connection must not cross fork().
template <typename Body>
pid_t fork_child(Body body) {
    const pid_t pid = fork();
    if (pid == 0) {
        int code = 1;
        try {
            code = body();
        } catch (...) {
            code = 2;
        }
        _exit(code);
    }
    return pid;
}

int exit_code_of(pid_t pid) {
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) {
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST_F(Store, TwoProcessesReservingAtOnceNeverOverlap) {
    { open(); }
    constexpr int kPerProcess = 200;
    std::vector<pid_t> children;
    for (const char* owner : {"first", "second"}) {
        children.push_back(fork_child([&, owner] {
            auto store = LeaseStore::open(db_path(), {std::chrono::seconds(30)});
            if (!store) {
                (void)std::fprintf(stderr, "%s\n", store.error().message.c_str());
                return 3;
            }
            std::mt19937 random(owner[0]);
            for (int i = 0; i < kPerProcess; ++i) {
                auto lease = store->reserve(pool_, 26 + static_cast<int>(random() % 4), owner,
                                            "c-" + std::to_string(i));
                if (!lease) {
                    (void)std::fprintf(stderr, "%s\n", lease.error().message.c_str());
                    return 4;
                }
            }
            return 0;
        }));
    }
    for (pid_t child : children) {
        EXPECT_EQ(exit_code_of(child), 0);
    }

    const auto live = open().live().value();
    ASSERT_EQ(live.size(), 2U * kPerProcess);
    expect_no_overlaps(blocks_of(live));
    EXPECT_EQ(std::count_if(live.begin(), live.end(),
                            [](const LeaseRecord& r) { return r.lease.owner == "first"; }),
              kPerProcess);
}

TEST_F(Store, ProcessesCreatingANewStoreTogetherAllSucceed) {
    // Daemons started together on a fresh node race to create the file, set WAL and migrate.
    for (int round = 0; round < 20; ++round) {
        const std::filesystem::path path = dir_.path() / ("new-" + std::to_string(round) + ".db");
        std::vector<pid_t> children;
        children.reserve(4);
        for (int i = 0; i < 4; ++i) {
            children.push_back(fork_child([&] {
                auto store = LeaseStore::open(path);
                if (!store) {
                    (void)std::fprintf(stderr, "%s\n", store.error().message.c_str());
                    return 3;
                }
                return 0;
            }));
        }
        for (pid_t child : children) {
            EXPECT_EQ(exit_code_of(child), 0) << "round " << round;
        }
    }
}

// What the child reported as committed, replayed: block -> generation.
std::map<std::string, std::uint64_t> replay(const std::string& reports) {
    std::map<std::string, std::uint64_t> leases;
    std::istringstream lines(reports);
    std::string verb;
    std::string block;
    std::uint64_t generation = 0;
    while (lines >> verb >> block >> generation) {
        if (verb == "reserved") {
            leases[block] = generation;
        } else {
            leases.erase(block);
        }
    }
    return leases;
}

TEST_F(Store, AKillAtAnyPointLeavesAConsistentStore) {
    { open(); }
    std::mt19937 random(77);
    for (int round = 0; round < 8; ++round) {
        int pipe_fds[2];
        ASSERT_EQ(pipe(pipe_fds), 0);
        const pid_t child = fork_child([&] {
            close(pipe_fds[0]);
            auto store = LeaseStore::open(db_path());
            if (!store) {
                return 3;
            }
            std::mt19937 child_random(static_cast<unsigned>(round));
            std::vector<LeaseRecord> held;
            // Far more work than the parent lets it finish.
            for (int i = 0; i < 100000; ++i) {
                std::string report;
                if (!held.empty() && child_random() % 3 == 0) {
                    const std::size_t index = child_random() % held.size();
                    const Lease lease = held[index].lease;
                    if (!store->release(lease.block, lease.generation)) {
                        return 4;
                    }
                    held.erase(held.begin() + static_cast<std::ptrdiff_t>(index));
                    report = "released " + lease.block.to_string() + " " +
                             std::to_string(lease.generation) + "\n";
                } else {
                    auto lease = store->reserve(pool_, 26 + static_cast<int>(child_random() % 5),
                                                "owner", "cluster");
                    if (!lease) {
                        return 5;
                    }
                    held.push_back(*lease);
                    report = "reserved " + lease->lease.block.to_string() + " " +
                             std::to_string(lease->lease.generation) + "\n";
                }
                // Reported only once committed: everything reported must survive the kill.
                if (write(pipe_fds[1], report.data(), report.size()) !=
                    static_cast<ssize_t>(report.size())) {
                    return 6;
                }
            }
            return 0;
        });
        close(pipe_fds[1]);

        // Let it commit a random number of changes, then kill it at a random moment after that.
        const std::size_t wanted_reports = random() % 40;
        std::string reports;
        char buffer[4096];
        while (static_cast<std::size_t>(std::count(reports.begin(), reports.end(), '\n')) <
               wanted_reports) {
            const ssize_t n = read(pipe_fds[0], buffer, sizeof buffer);
            ASSERT_GT(n, 0) << "the child stopped early: exit " << exit_code_of(child);
            reports.append(buffer, static_cast<std::size_t>(n));
        }
        std::this_thread::sleep_for(std::chrono::microseconds(random() % 3000));
        ASSERT_EQ(kill(child, SIGKILL), 0);
        EXPECT_EQ(exit_code_of(child), 128 + SIGKILL) << "round " << round;
        for (ssize_t n = 0; (n = read(pipe_fds[0], buffer, sizeof buffer)) > 0;) {
            reports.append(buffer, static_cast<std::size_t>(n));
        }
        close(pipe_fds[0]);
        // A report cut in the middle of its line was not completely written: drop it.
        reports.erase(reports.rfind('\n') + 1);

        // The previous rounds' leases stay; this round's must match what the child reported,
        // except for at most one change it committed but was killed before reporting.
        auto store = LeaseStore::open(db_path());
        ASSERT_TRUE(store) << error_of(store);
        const auto live = store->live().value();
        expect_no_overlaps(blocks_of(live));
        std::map<std::string, std::uint64_t> expected = replay(reports);
        std::size_t differences = 0;
        for (const LeaseRecord& record : live) {
            if (record.lease.owner != "owner") {
                continue;
            }
            auto found = expected.find(record.lease.block.to_string());
            if (found == expected.end() || found->second != record.lease.generation) {
                ++differences;
            } else {
                expected.erase(found);
            }
        }
        differences += expected.size();  // reported as reserved, missing from the store
        EXPECT_LE(differences, 1U) << "round " << round << ", reports:\n" << reports;
        // The store is usable at once, and this round's leases are moved aside for the next.
        for (const LeaseRecord& record : live) {
            if (record.lease.owner == "owner") {
                ASSERT_TRUE(store->reassign(record.lease.block, record.lease.generation,
                                            "round-" + std::to_string(round), "done"));
            }
        }
        ASSERT_TRUE(store->reserve(pool_, 30, "after-kill", "check"));
        EXPECT_EQ(store->live()->size(), live.size() + 1);
    }
}

}  // namespace
}  // namespace vcpilot
