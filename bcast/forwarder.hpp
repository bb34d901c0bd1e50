// The pushing half of a ring member: sends every chunk, piece by piece as soon as it has it,
// to the current successor, and follows the successor's answers (where to resume, a chunk to
// send again). The sender runs one over its file, every node one over what it received.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "bcast/chunks.hpp"
#include "bcast/integrity.hpp"

namespace grpc {
class ClientContext;
}

namespace vcpilot::bcast {

struct Successor {
    std::string node;
    std::string endpoint;  // host:port of its BcastRing
};

struct ForwarderOptions {
    std::string self;  // our node name, for the handshake and messages
    Layout layout;
    std::chrono::milliseconds stall_timeout{15000};
    std::uint32_t piece_size = 256u << 10;
};

class Forwarder {
  public:
    // `lost` is called (on the forwarder's thread) when the successor cannot be pushed to: it
    // refused us, broke the stream or stalled past the timeout. The forwarder then waits for
    // the next set_successor().
    using LostCallback = std::function<void(const std::string& node, const std::string& reason)>;
    // `broken` is called when our own copy cannot be read any more (the node then fails).
    using BrokenCallback = std::function<void(const std::string& reason)>;

    Forwarder(ChunkSource& source, const Secret& secret, ForwarderOptions options,
              LostCallback lost, BrokenCallback broken);

    // From any thread: push to this successor from now on (nullopt: we are the last).
    void set_successor(std::optional<Successor> successor);
    // Ends run() soon: at once, or when the streams that were cancelled are done.
    void stop();
    // The forwarder's thread. Each successor is pushed to from a thread of its own: a write to
    // a successor that stopped reading can stay blocked until the connection's keepalive
    // gives up on it (cancelling the call does not release it), and the next successor must
    // not wait for that.
    void run();

  private:
    enum class Outcome { kDone, kReplaced, kLost, kBroken };
    // Pushes to one successor until it has everything, breaks, or is replaced; `reason` says
    // why it was lost or why we broke.
    Outcome push_to(const Successor& successor, std::uint64_t version, std::string& reason);
    bool replaced(std::uint64_t version);

    ChunkSource& source_;
    const Secret& secret_;
    ForwarderOptions options_;
    LostCallback lost_;
    BrokenCallback broken_;

    std::mutex mutex_;
    std::condition_variable changed_;
    bool assigned_ = false;
    std::optional<Successor> successor_;
    std::uint64_t version_ = 0;
    bool stopping_ = false;
    // The streams being pushed, cancelled when replaced.
    std::set<grpc::ClientContext*> active_;
};

}  // namespace vcpilot::bcast
