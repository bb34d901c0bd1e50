#pragma once

#include <chrono>

namespace wan_delay {

// Lets a repeating log line through at most once per period, so that a packet flood cannot turn
// into a log flood. Counters carry the totals; the line only says that it is happening.
class RateLimiter {
  public:
    using Clock = std::chrono::steady_clock;

    explicit RateLimiter(Clock::duration period) : period_(period) {}

    bool allow(Clock::time_point now) {
        if (now < next_allowed_) {
            return false;
        }
        next_allowed_ = now + period_;
        return true;
    }

  private:
    Clock::duration period_;
    Clock::time_point next_allowed_{};
};

}  // namespace wan_delay
