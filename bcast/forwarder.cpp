#include "bcast/forwarder.hpp"

#include <atomic>
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <thread>
#include <vector>

#include "bcast/handshake.hpp"
#include "vcpilot/v1/bcast.grpc.pb.h"

namespace vcpilot::bcast {

namespace v1 = ::vcpilot::v1;
using Clock = std::chrono::steady_clock;

namespace {

// Cancels a call whose current blocking step (a write the successor does not take, an answer
// it does not give) lasts longer than the stall timeout.
class Watchdog {
  public:
    Watchdog(grpc::ClientContext& context, std::chrono::milliseconds timeout)
        : context_(context), timeout_(timeout), thread_([this] { watch(); }) {}
    ~Watchdog() {
        {
            std::lock_guard lock(mutex_);
            done_ = true;
        }
        wake_.notify_all();
        thread_.join();
    }
    void arm() {
        std::lock_guard lock(mutex_);
        armed_since_ = Clock::now();
        armed_ = true;
    }
    void disarm() {
        std::lock_guard lock(mutex_);
        armed_ = false;
    }
    bool fired() const { return fired_; }

  private:
    void watch() {
        std::unique_lock lock(mutex_);
        while (!done_) {
            wake_.wait_for(lock, std::chrono::milliseconds(100));
            if (armed_ && !fired_ && Clock::now() - armed_since_ > timeout_) {
                fired_ = true;
                context_.TryCancel();
            }
        }
    }

    grpc::ClientContext& context_;
    std::chrono::milliseconds timeout_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool armed_ = false;
    bool done_ = false;
    std::atomic<bool> fired_{false};
    Clock::time_point armed_since_;
    std::thread thread_;
};

// Keepalive pings every half stall timeout: a successor that stopped reading has its
// connection closed within about the stall timeout, which releases a blocked write.
grpc::ChannelArguments ring_channel_arguments(std::chrono::milliseconds stall_timeout) {
    const int keepalive = static_cast<int>(std::max<long>(500, stall_timeout.count() / 2));
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, keepalive);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, keepalive);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    // Each ring link is its own connection: never share one with another channel.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return args;
}

}  // namespace

Forwarder::Forwarder(ChunkSource& source, const Secret& secret, ForwarderOptions options,
                     LostCallback lost, BrokenCallback broken)
    : source_(source),
      secret_(secret),
      options_(std::move(options)),
      lost_(std::move(lost)),
      broken_(std::move(broken)) {}

void Forwarder::set_successor(std::optional<Successor> successor) {
    {
        std::lock_guard lock(mutex_);
        successor_ = std::move(successor);
        assigned_ = true;
        ++version_;
        for (grpc::ClientContext* context : active_) {
            context->TryCancel();
        }
    }
    changed_.notify_all();
}

void Forwarder::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
        for (grpc::ClientContext* context : active_) {
            context->TryCancel();
        }
    }
    changed_.notify_all();
}

bool Forwarder::replaced(std::uint64_t version) {
    std::lock_guard lock(mutex_);
    return stopping_ || version_ != version;
}

void Forwarder::run() {
    std::vector<std::thread> pushes;
    std::uint64_t seen = 0;
    for (;;) {
        std::optional<Successor> successor;
        std::uint64_t version = 0;
        {
            std::unique_lock lock(mutex_);
            changed_.wait(lock, [&] { return stopping_ || (assigned_ && version_ != seen); });
            if (stopping_) {
                break;
            }
            successor = successor_;
            version = seen = version_;
        }
        if (!successor) {
            continue;  // the last of the ring: nothing to push
        }
        pushes.emplace_back([this, successor = *successor, version] {
            std::string reason;
            switch (push_to(successor, version, reason)) {
                case Outcome::kDone:
                case Outcome::kReplaced:
                    break;
                case Outcome::kLost:
                    if (!replaced(version)) {
                        spdlog::warn("successor {} lost: {}", successor.node, reason);
                        lost_(successor.node, reason);
                    }
                    break;
                case Outcome::kBroken:
                    broken_(reason);
                    break;
            }
        });
    }
    for (auto& push : pushes) {
        push.join();
    }
}

Forwarder::Outcome Forwarder::push_to(const Successor& successor, std::uint64_t version,
                                      std::string& reason) {
    auto channel = grpc::CreateCustomChannel(successor.endpoint, grpc::InsecureChannelCredentials(),
                                             ring_channel_arguments(options_.stall_timeout));
    auto stub = v1::BcastRing::NewStub(channel);
    grpc::ClientContext context;
    Watchdog watchdog(context, options_.stall_timeout);
    {
        std::lock_guard lock(mutex_);
        if (stopping_ || version_ != version) {
            return Outcome::kReplaced;
        }
        active_.insert(&context);
    }
    struct Inactive {
        Forwarder& self;
        grpc::ClientContext& context;
        ~Inactive() {
            std::lock_guard lock(self.mutex_);
            self.active_.erase(&context);
        }
    } inactive{*this, context};
    auto stream = stub->Push(&context);

    watchdog.arm();
    auto greeted =
        offer_handshake<v1::BcastPush, v1::BcastPushReply>(*stream, secret_, options_.self);
    v1::BcastPushReply reply;
    if (greeted && !stream->Read(&reply)) {
        greeted = Error{"the stream ended during the handshake"};
    }
    watchdog.disarm();
    if (!greeted || !reply.has_resume()) {
        context.TryCancel();
        const grpc::Status status = stream->Finish();
        if (replaced(version)) {
            return Outcome::kReplaced;
        }
        if (watchdog.fired()) {
            reason = fmt::format("stalled: no handshake within {} s",
                                 std::chrono::duration<double>(options_.stall_timeout).count());
        } else if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED) {
            reason = status.error_message();
        } else {
            reason = greeted ? "it did not say where to resume" : greeted.error().message;
        }
        return Outcome::kLost;
    }

    const std::uint64_t chunks = options_.layout.chunks();
    std::uint64_t chunk = std::min(reply.resume().next_chunk(), chunks);
    std::uint32_t offset = 0;
    std::uint64_t generation = 0;
    spdlog::debug("pushing to {} ({}) from chunk {}", successor.node, successor.endpoint, chunk);

    // The successor's answers from now on: chunks to send again; its end of the stream.
    std::mutex answers;
    std::condition_variable answered;
    std::optional<std::uint64_t> resend;
    bool ended = false;
    std::thread reader([&] {
        v1::BcastPushReply answer;
        while (stream->Read(&answer)) {
            if (answer.has_nack()) {
                std::lock_guard lock(answers);
                resend = resend ? std::min(*resend, answer.nack().chunk()) : answer.nack().chunk();
            }
            answered.notify_all();
        }
        std::lock_guard lock(answers);
        ended = true;
        answered.notify_all();
    });
    // Finish() only after the reader is done; every return below goes through close().
    bool closed = false;
    auto close = [&](bool cancel) {
        if (cancel) {
            context.TryCancel();
        }
        reader.join();
        closed = true;
        return stream->Finish();
    };
    struct CloseOnExit {
        bool& closed;
        std::function<void()> close;
        ~CloseOnExit() {
            if (!closed) {
                close();
            }
        }
    } close_on_exit{closed, [&] { (void)close(true); }};
    auto lost = [&](std::string_view doing, const grpc::Status& status) {
        reason =
            watchdog.fired()
                ? fmt::format("stalled: {} took more than {} s", doing,
                              std::chrono::duration<double>(options_.stall_timeout).count())
                : fmt::format("{} failed: {}", doing,
                              status.ok() ? "it ended the stream early" : status.error_message());
        return Outcome::kLost;
    };

    std::vector<std::byte> buffer(options_.piece_size);
    v1::BcastPush message;
    for (;;) {
        if (replaced(version)) {
            (void)close(true);
            return Outcome::kReplaced;
        }
        {
            std::unique_lock lock(answers);
            if (resend && *resend < chunks) {
                if (*resend <= chunk) {
                    chunk = *resend;
                    offset = 0;
                }
            }
            resend.reset();
            if (chunk >= chunks && !ended) {
                // Everything went out: wait for the successor to finish, or to ask again.
                answered.wait_for(lock, std::chrono::milliseconds(100));
                continue;
            }
            if (ended) {
                lock.unlock();
                const grpc::Status status = close(false);
                if (chunk >= chunks && status.ok()) {
                    return Outcome::kDone;
                }
                if (replaced(version)) {
                    return Outcome::kReplaced;
                }
                return lost("pushing", status);
            }
        }
        auto got =
            source_.read(chunk, offset, buffer, Clock::now() + std::chrono::milliseconds(100));
        if (std::holds_alternative<NotYet>(got)) {
            continue;
        }
        if (auto* error = std::get_if<Error>(&got)) {
            reason = error->message;
            (void)close(true);
            return Outcome::kBroken;
        }
        const Piece& piece = std::get<Piece>(got);
        if (offset == 0) {
            generation = piece.generation;
        } else if (piece.generation != generation) {
            offset = 0;  // the chunk was thrown away and comes again: start it over
            continue;
        }
        // The same message each time (no Clear(), which would free the piece and its data):
        // its buffers are reused.
        auto* out = message.mutable_piece();
        out->set_chunk(chunk);
        out->set_offset(offset);
        out->set_data(buffer.data(), piece.length);
        if (piece.last) {
            out->set_chunk_sha256(piece.sha.data(), piece.sha.size());
        } else {
            out->clear_chunk_sha256();
        }
        watchdog.arm();
        const bool written = stream->Write(message);
        watchdog.disarm();
        if (!written) {
            const grpc::Status status = close(false);
            if (replaced(version)) {
                return Outcome::kReplaced;
            }
            return lost("pushing", status);
        }
        offset += static_cast<std::uint32_t>(piece.length);
        if (piece.last) {
            ++chunk;
            offset = 0;
        }
    }
}

}  // namespace vcpilot::bcast
