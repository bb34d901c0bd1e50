// A thread that lives as long as the pilot and starts its long-lived children.
//
// PR_SET_PDEATHSIG fires when the *thread* that forked a child exits, not the process. gRPC
// serves calls on pool threads that it may retire at any time, so a daemon started from a call
// handler (sshd) could be killed long before the pilot ends. Starting it here ties its life to
// the pilot's instead.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <type_traits>

namespace vcpilot::pilot {

class LauncherThread {
  public:
    LauncherThread() : thread_([this] { serve(); }) {}
    ~LauncherThread() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_one();
        thread_.join();
    }
    LauncherThread(const LauncherThread&) = delete;
    LauncherThread& operator=(const LauncherThread&) = delete;

    // Runs `work` on the launcher thread and returns its result.
    template <typename Work>
    std::invoke_result_t<Work&> call(Work&& work) {
        std::packaged_task<std::invoke_result_t<Work&>()> task(std::forward<Work>(work));
        auto result = task.get_future();
        {
            std::lock_guard lock(mutex_);
            queue_.emplace_back([&task] { task(); });
        }
        wake_.notify_one();
        return result.get();
    }

  private:
    void serve() {
        std::unique_lock lock(mutex_);
        for (;;) {
            wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
            if (queue_.empty()) {
                return;
            }
            auto next = std::move(queue_.front());
            queue_.pop_front();
            lock.unlock();
            next();
            lock.lock();
        }
    }

    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<std::function<void()>> queue_;
    bool stopping_ = false;
    std::thread thread_;  // last: starts after the members it uses exist
};

}  // namespace vcpilot::pilot
