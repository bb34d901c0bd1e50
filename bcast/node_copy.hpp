// A node's copy of the file being broadcast: chunks arrive from the predecessor into a bounded
// set of buffers, are checked against the sender's digest, written to DEST in order, and read
// by the node's forwarder (from memory while there, from DEST once written). Memory stays
// below `max_buffers` chunks whatever the file size: a chunk leaves memory once written, and
// receiving waits for room.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "bcast/chunks.hpp"
#include "bcast/integrity.hpp"

namespace vcpilot::bcast {

class NodeCopy : public ChunkSource {
  public:
    // `fd`: DEST, open for reading and writing; owned by the caller.
    NodeCopy(Layout layout, int fd, std::size_t max_buffers);

    // ---- the receiving side (the Push handler) ----
    // A new predecessor stream: a partly received chunk is dropped. Returns the stream's
    // number and the first chunk this node does not hold.
    std::pair<std::uint64_t, std::uint64_t> begin_stream();
    enum class Put { kTaken, kIgnored, kChecked, kBadChecksum };
    // One piece from stream `stream`. Pieces of an older stream, of another chunk than the next
    // one needed, or out of order are ignored (they were in flight when we asked again).
    // An error is a protocol violation by the predecessor. A chunk this node cannot check
    // (OpenSSL fails here) is not the predecessor's fault: it is ignored, as is all that comes
    // after it, and write_all() returns why.
    Result<Put> put(std::uint64_t stream, std::uint64_t chunk, std::uint32_t offset,
                    std::string_view data, std::string_view sha);
    std::uint64_t next_needed() const;
    // Testing only: flip one bit of this chunk the first time it arrives.
    void corrupt_once(std::uint64_t chunk) { corrupt_ = chunk; }

    // ---- the writing side ----
    // Writes checked chunks to DEST in order until all are written (returns the file's
    // SHA-256) or a write, a checksum here or the file's fails or stop() is called (returns
    // an error).
    Result<Digest> write_all();
    std::uint64_t bytes_written() const;
    std::uint64_t bytes_received() const;

    void stop();

    // ---- ChunkSource, for the forwarder (nothing new once stopped) ----
    std::variant<Piece, NotYet, Error> read(
        std::uint64_t chunk, std::uint32_t offset, std::span<std::byte> out,
        std::chrono::steady_clock::time_point deadline) override;

  private:
    struct Buffer {
        std::vector<std::byte> data;
        std::uint32_t filled = 0;
        bool checked = false;
    };

    const Layout layout_;
    const int fd_;
    const std::size_t max_buffers_;

    mutable std::mutex mutex_;
    std::condition_variable changed_;
    std::map<std::uint64_t, Buffer> buffers_;
    // Buffers of written chunks, reused: a fresh 4 MiB allocation per chunk cost a memset and
    // a page fault per page (a fifth of all CPU with 16 nodes on 2 cores).
    std::vector<std::vector<std::byte>> spare_;
    std::vector<Digest> digests_;  // of checked chunks
    // Bumped each time a chunk starts over; a checked chunk keeps its last one, in memory
    // and in DEST, so that a forwarder halfway through it carries on.
    std::vector<std::uint64_t> generation_;
    std::uint64_t next_needed_ = 0;  // chunks below are checked
    std::uint64_t next_write_ = 0;   // chunks below are in DEST
    std::uint64_t stream_ = 0;
    std::uint64_t generations_ = 0;
    std::optional<std::uint64_t> corrupt_;
    std::optional<Error> check_failed_;  // a chunk's SHA-256 could not be taken here
    bool stopping_ = false;
};

}  // namespace vcpilot::bcast
