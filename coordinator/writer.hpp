// The single writer of a coordinator: every change goes through it, in order.
//
// Work items are applied in batches: one write transaction per batch and a savepoint per item,
// so a refused item changes nothing and a burst of items costs one fsync. Effects (messages to
// streams) and replies run only after the commit: nothing is announced that the store does not
// hold. If the commit fails, no effect runs and every item is answered with the error.
#pragma once

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/result.hpp"

namespace vcpilot::coordinator {

using Effects = std::vector<std::function<void()>>;

struct Work {
    // On the writer thread, inside the batch's transaction.
    std::function<Status(Effects& effects)> apply;
    // After the commit (or its failure), with apply's outcome. May be empty.
    std::function<void(const Status&)> reply;
};

struct WriterHooks {
    // Inside the transaction, after the batch's items: time-driven changes.
    std::function<void(Effects&)> on_tick;
    // After a successful commit and its effects.
    std::function<void()> after_commit;
    // After a failed commit: drop whatever in-memory state was derived from the lost changes.
    std::function<void()> after_failure;
    // When on_tick next has something to do (unix ms), if ever.
    std::function<std::optional<std::int64_t>()> next_deadline;
};

class Writer {
  public:
    Writer(SQLite::Database& db, std::filesystem::path path, WriterHooks hooks);
    ~Writer();

    void start();
    // Applies what is queued, then stops; later posts are answered with an error.
    void stop();
    void post(Work work);

  private:
    void run();
    void run_batch(std::deque<Work>& batch);
    void step(std::unique_ptr<SQLite::Statement>& statement, const char* sql);

    SQLite::Database& db_;
    // BEGIN IMMEDIATE, SAVEPOINT work, RELEASE work, ROLLBACK TO work, COMMIT: prepared on first
    // use, on the writer thread (destroyed with the writer, before the database closes).
    std::unique_ptr<SQLite::Statement> begin_, savepoint_, release_, rollback_to_, commit_;
    const std::filesystem::path path_;
    const WriterHooks hooks_;
    std::mutex mutex_;
    std::condition_variable changed_;
    std::deque<Work> queue_;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace vcpilot::coordinator
