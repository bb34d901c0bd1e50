// The write side of a gRPC callback stream, shared between the reactor that owns the stream and
// the coordinator's writer thread that produces its messages.
//
// gRPC allows one outstanding write per stream; messages produced meanwhile wait in a queue.
// The reactor may be gone (client left, server stopping) while the writer still holds this
// object: then messages are dropped and `open()` says so.
#pragma once

#include <deque>
#include <grpcpp/grpcpp.h>
#include <mutex>
#include <optional>

namespace vcpilot::coordinator {

// The largest message a coordinator sends or accepts (a cluster view of many sites, a batch of
// node reports).
inline constexpr int kMaxCoordinatorMessage = 64 * 1024 * 1024;

template <typename T>
class Outbox {
  public:
    // `start_write(const T*)` and `finish(const grpc::Status&)` act on the reactor.
    template <typename StartWrite, typename Finish>
    Outbox(StartWrite start_write, Finish finish)
        : start_write_(std::move(start_write)), finish_(std::move(finish)) {}

    // Queues `message`; false if the stream is finishing or gone.
    bool send(T message) {
        std::lock_guard lock(mutex_);
        if (gone_ || finishing_) {
            return false;
        }
        queue_.push_back(std::move(message));
        if (!writing_) {
            writing_ = true;
            start_write_(&queue_.front());
        }
        return true;
    }

    // Ends the stream with `status` once the queued messages are written. Only the first call
    // counts.
    void finish(grpc::Status status) {
        std::lock_guard lock(mutex_);
        if (gone_ || finishing_) {
            return;
        }
        finishing_ = std::move(status);
        if (!writing_) {
            finished_ = true;
            finish_(*finishing_);
        }
    }

    // From the reactor's OnWriteDone.
    void write_done(bool ok) {
        std::lock_guard lock(mutex_);
        queue_.pop_front();
        if (!ok) {
            queue_.clear();  // the client is gone; OnDone follows
        }
        if (!queue_.empty()) {
            start_write_(&queue_.front());
            return;
        }
        writing_ = false;
        if (finishing_ && !finished_) {
            finished_ = true;
            finish_(*finishing_);
        }
    }

    // From the reactor's OnDone: the reactor is about to be deleted.
    void gone() {
        std::lock_guard lock(mutex_);
        gone_ = true;
        queue_.clear();
    }

    bool open() const {
        std::lock_guard lock(mutex_);
        return !gone_ && !finishing_;
    }

  private:
    // Recursive: gRPC may, in principle, run a reaction inline from StartWrite.
    mutable std::recursive_mutex mutex_;
    std::function<void(const T*)> start_write_;
    std::function<void(const grpc::Status&)> finish_;
    std::deque<T> queue_;  // a deque: pushing never moves the message being written
    bool writing_ = false;
    std::optional<grpc::Status> finishing_;
    bool finished_ = false;
    bool gone_ = false;
};

}  // namespace vcpilot::coordinator
