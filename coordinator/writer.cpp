#include "coordinator/writer.hpp"

#include <SQLiteCpp/Exception.h>
#include <spdlog/spdlog.h>

#include "coordinator/lease_store.hpp"

namespace vcpilot::coordinator {

Writer::Writer(SQLite::Database& db, std::filesystem::path path, WriterHooks hooks)
    : db_(db), path_(std::move(path)), hooks_(std::move(hooks)) {}

// Runs one of the transaction's statements, prepared on first use and kept: a batch of tiny
// items (one pilot's report each) otherwise spends much of its time parsing SAVEPOINT and RELEASE.
void Writer::step(std::unique_ptr<SQLite::Statement>& statement, const char* sql) {
    if (!statement) {
        statement = std::make_unique<SQLite::Statement>(db_, sql);
    }
    statement->tryReset();
    try {
        statement->exec();
    } catch (const SQLite::Exception&) {
        statement->tryReset();  // holds nothing while the caller rolls back
        throw;
    }
    statement->tryReset();
}

Writer::~Writer() {
    stop();
}

void Writer::start() {
    thread_ = std::thread([this] { run(); });
}

void Writer::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    changed_.notify_one();
    if (thread_.joinable()) {
        thread_.join();
    }
}

void Writer::post(Work work) {
    std::unique_lock lock(mutex_);
    if (stopping_) {
        lock.unlock();
        if (work.reply) {
            work.reply(Error{"the coordinator is shutting down"});
        }
        return;
    }
    queue_.push_back(std::move(work));
    lock.unlock();
    changed_.notify_one();
}

void Writer::run() {
    for (;;) {
        std::deque<Work> batch;
        {
            std::unique_lock lock(mutex_);
            auto ready = [this] { return stopping_ || !queue_.empty(); };
            const auto next = hooks_.next_deadline ? hooks_.next_deadline() : std::nullopt;
            if (next) {
                const auto wait = std::chrono::milliseconds(
                    std::max<std::int64_t>(0, *next - store_detail::now_unix_ms()));
                changed_.wait_for(lock, wait, ready);
            } else {
                changed_.wait(lock, ready);
            }
            if (stopping_ && queue_.empty()) {
                return;
            }
            batch.swap(queue_);
        }
        run_batch(batch);
    }
}

void Writer::run_batch(std::deque<Work>& batch) {
    Effects effects;
    std::vector<Status> outcomes(batch.size());
    Status committed;
    try {
        step(begin_, "BEGIN IMMEDIATE");
        for (std::size_t i = 0; i < batch.size(); ++i) {
            step(savepoint_, "SAVEPOINT work");
            Effects own;
            try {
                outcomes[i] = batch[i].apply ? batch[i].apply(own) : Status{};
            } catch (const SQLite::Exception& error) {
                outcomes[i] = store_detail::db_error("cannot apply a change", path_, error);
            }
            if (outcomes[i]) {
                step(release_, "RELEASE work");
                std::move(own.begin(), own.end(), std::back_inserter(effects));
            } else {
                step(rollback_to_, "ROLLBACK TO work");
                step(release_, "RELEASE work");
            }
        }
        if (hooks_.on_tick) {
            hooks_.on_tick(effects);
        }
        step(commit_, "COMMIT");
    } catch (const SQLite::Exception& error) {
        committed = store_detail::db_error("cannot commit", path_, error);
        spdlog::error("{}", committed.error().message);
        try {
            db_.exec("ROLLBACK");
        } catch (const SQLite::Exception&) {
        }
        effects.clear();
        if (hooks_.after_failure) {
            hooks_.after_failure();
        }
    }
    for (auto& effect : effects) {
        effect();
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
        if (batch[i].reply) {
            batch[i].reply(committed ? outcomes[i] : committed);
        }
    }
    if (committed && hooks_.after_commit) {
        hooks_.after_commit();
    }
}

}  // namespace vcpilot::coordinator
