// How vc-bcast cuts a file into chunks, and what a ring forwarder reads them from.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <variant>

#include "bcast/integrity.hpp"
#include "common/result.hpp"

namespace vcpilot::bcast {

struct Layout {
    std::uint64_t size = 0;
    std::uint32_t chunk_size = 4u << 20;

    std::uint64_t chunks() const { return size == 0 ? 0 : (size - 1) / chunk_size + 1; }
    std::uint64_t offset(std::uint64_t chunk) const { return chunk * chunk_size; }
    std::uint32_t length(std::uint64_t chunk) const {
        const std::uint64_t rest = size - offset(chunk);
        return static_cast<std::uint32_t>(rest < chunk_size ? rest : chunk_size);
    }
};

// Bytes a forwarder may send: a piece of one chunk. A chunk's last bytes are only handed out
// once the chunk is checked; `last` then says so and `sha` is the chunk's digest. `generation`
// changes when a chunk that was partly handed out is thrown away (it failed its checksum) and
// comes again: the forwarder then starts that chunk over.
struct Piece {
    std::size_t length = 0;
    std::uint64_t generation = 0;
    bool last = false;
    Digest sha{};
};
struct NotYet {};  // nothing new before the deadline

class ChunkSource {
  public:
    virtual ~ChunkSource() = default;
    // Copies bytes of `chunk` from `offset` into `out` (at most out.size()), waiting until the
    // deadline for them to arrive.
    virtual std::variant<Piece, NotYet, Error> read(
        std::uint64_t chunk, std::uint32_t offset, std::span<std::byte> out,
        std::chrono::steady_clock::time_point deadline) = 0;
};

// Fills `out` from `fd` at `offset` (pread, whole or an error: "at byte N: why").
Status read_exactly(int fd, std::span<std::byte> out, std::uint64_t offset);

}  // namespace vcpilot::bcast
