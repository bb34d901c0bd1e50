#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>

namespace wan_delay {

// steady_clock is CLOCK_MONOTONIC on Linux: release times do not jump with the wall clock.
using Clock = std::chrono::steady_clock;

// The packets the kernel holds for us, oldest first, each with the time it may leave.
//
// Every packet gets the same delay, so packets leave in the order they arrived, and the kernel
// numbers queued packets in that same order. The head is therefore always the next packet due,
// and "everything due" is always a prefix: one batch verdict up to its newest id releases it.
class DelayLine {
  public:
    struct Released {
        uint32_t newest_id;  // the id to pass to a batch verdict
        std::size_t count;
    };

    explicit DelayLine(Clock::duration delay) : delay_(delay) {}

    void hold(uint32_t id, Clock::time_point arrival) { held_.push_back({id, arrival + delay_}); }

    // Forgets every packet due at `now`; nullopt if none is.
    std::optional<Released> pop_due(Clock::time_point now) {
        std::optional<Released> released;
        while (!held_.empty() && held_.front().release_at <= now) {
            released = Released{held_.front().id, released ? released->count + 1 : 1};
            held_.pop_front();
        }
        return released;
    }

    std::optional<Released> pop_all() { return pop_due(Clock::time_point::max()); }

    // Precondition: !empty().
    uint32_t pop_oldest() {
        const uint32_t id = held_.front().id;
        held_.pop_front();
        return id;
    }

    std::optional<Clock::time_point> next_release() const {
        if (held_.empty()) {
            return std::nullopt;
        }
        return held_.front().release_at;
    }

    std::size_t size() const { return held_.size(); }

  private:
    struct HeldPacket {
        uint32_t id;
        Clock::time_point release_at;
    };

    Clock::duration delay_;
    std::deque<HeldPacket> held_;
};

}  // namespace wan_delay
