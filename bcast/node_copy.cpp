#include "bcast/node_copy.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fmt/format.h>

namespace vcpilot::bcast {

NodeCopy::NodeCopy(Layout layout, int fd, std::size_t max_buffers)
    : layout_(layout),
      fd_(fd),
      max_buffers_(max_buffers < 2 ? 2 : max_buffers),
      digests_(layout.chunks()),
      generation_(layout.chunks()) {}

std::pair<std::uint64_t, std::uint64_t> NodeCopy::begin_stream() {
    std::lock_guard lock(mutex_);
    if (auto it = buffers_.find(next_needed_); it != buffers_.end() && !it->second.checked) {
        it->second.filled = 0;
        generation_[next_needed_] = ++generations_;
    }
    changed_.notify_all();
    return {++stream_, next_needed_};
}

std::uint64_t NodeCopy::next_needed() const {
    std::lock_guard lock(mutex_);
    return next_needed_;
}

Result<NodeCopy::Put> NodeCopy::put(std::uint64_t stream, std::uint64_t chunk, std::uint32_t offset,
                                    std::string_view data, std::string_view sha) {
    std::unique_lock lock(mutex_);
    if (check_failed_ || stream != stream_ || chunk != next_needed_ || chunk >= layout_.chunks()) {
        return Put::kIgnored;
    }
    const std::uint32_t length = layout_.length(chunk);
    auto it = buffers_.find(chunk);
    if (offset == 0) {
        if (it == buffers_.end()) {
            changed_.wait(lock, [&] {
                return stopping_ || stream != stream_ || buffers_.size() < max_buffers_;
            });
            if (stopping_ || stream != stream_) {
                return Put::kIgnored;
            }
            it = buffers_.emplace(chunk, Buffer{}).first;
            if (!spare_.empty()) {
                it->second.data = std::move(spare_.back());
                spare_.pop_back();
            }
            it->second.data.resize(length);
        }
        it->second.filled = 0;
        generation_[chunk] = ++generations_;
    } else if (it == buffers_.end() || offset != it->second.filled) {
        return Put::kIgnored;
    }
    Buffer& buffer = it->second;
    if (data.size() > length - buffer.filled) {
        return Error{fmt::format("chunk {}: a piece at offset {} runs past the chunk's {} bytes",
                                 chunk, offset, length)};
    }
    std::memcpy(buffer.data.data() + buffer.filled, data.data(), data.size());
    buffer.filled += static_cast<std::uint32_t>(data.size());
    changed_.notify_all();
    if (buffer.filled < length) {
        if (!sha.empty()) {
            return Error{fmt::format("chunk {}: a checksum before the chunk's end", chunk)};
        }
        return Put::kTaken;
    }
    if (sha.size() != sizeof(Digest)) {
        return Error{fmt::format("chunk {}: its last piece has no SHA-256", chunk)};
    }
    if (corrupt_ == chunk) {
        buffer.data[length / 2] ^= std::byte{0x10};
        corrupt_.reset();
    }
    // Check outside the lock: this buffer only changes through this stream, whose pieces come
    // one at a time, and it stays until checked and written.
    const std::uint64_t generation = generation_[chunk];
    lock.unlock();
    const auto digest = sha256(buffer.data);
    lock.lock();
    if (!digest) {
        check_failed_ = Error{fmt::format("chunk {}: cannot take its SHA-256 on this node: {}",
                                          chunk, digest.error().message)};
        changed_.notify_all();  // write_all() reports it
        return Put::kIgnored;
    }
    if (stream != stream_ || generation_[chunk] != generation) {
        return Put::kIgnored;  // a new predecessor started the chunk over meanwhile
    }
    if (std::memcmp(digest->data(), sha.data(), digest->size()) != 0) {
        buffer.filled = 0;
        generation_[chunk] = ++generations_;
        changed_.notify_all();
        return Put::kBadChecksum;
    }
    buffer.checked = true;
    digests_[chunk] = *digest;
    ++next_needed_;
    changed_.notify_all();
    return Put::kChecked;
}

Result<Digest> NodeCopy::write_all() {
    auto file = Sha256::start();
    if (!file) {
        return file.error();
    }
    const std::uint64_t chunks = layout_.chunks();
    for (;;) {
        Buffer* buffer = nullptr;
        std::uint64_t chunk = 0;
        {
            std::unique_lock lock(mutex_);
            changed_.wait(lock, [&] {
                if (stopping_ || check_failed_ || next_write_ == chunks) {
                    return true;
                }
                auto it = buffers_.find(next_write_);
                return it != buffers_.end() && it->second.checked;
            });
            if (check_failed_) {
                return *check_failed_;
            }
            if (stopping_) {
                return Error{"stopped"};
            }
            if (next_write_ == chunks) {
                return file->finish();
            }
            chunk = next_write_;
            buffer = &buffers_.at(chunk);
        }
        // A checked buffer does not change; only this thread removes it.
        std::size_t done = 0;
        while (done < buffer->data.size()) {
            const ssize_t n = ::pwrite(fd_, buffer->data.data() + done, buffer->data.size() - done,
                                       static_cast<off_t>(layout_.offset(chunk) + done));
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                return Error{fmt::format("writing {} bytes at offset {}: {}",
                                         buffer->data.size() - done, layout_.offset(chunk) + done,
                                         n < 0 ? errno_text(errno) : "nothing written")};
            }
            done += static_cast<std::size_t>(n);
        }
        if (auto fed = file->update(buffer->data); !fed) {
            return fed.error();
        }
        {
            std::lock_guard lock(mutex_);
            auto it = buffers_.find(chunk);
            spare_.push_back(std::move(it->second.data));
            buffers_.erase(it);
            ++next_write_;
        }
        changed_.notify_all();
    }
}

std::uint64_t NodeCopy::bytes_written() const {
    std::lock_guard lock(mutex_);
    return next_write_ == layout_.chunks() ? layout_.size : layout_.offset(next_write_);
}

std::uint64_t NodeCopy::bytes_received() const {
    std::lock_guard lock(mutex_);
    if (next_needed_ == layout_.chunks()) {
        return layout_.size;
    }
    auto it = buffers_.find(next_needed_);
    return layout_.offset(next_needed_) + (it == buffers_.end() ? 0 : it->second.filled);
}

void NodeCopy::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    changed_.notify_all();
}

std::variant<Piece, NotYet, Error> NodeCopy::read(std::uint64_t chunk, std::uint32_t offset,
                                                  std::span<std::byte> out,
                                                  std::chrono::steady_clock::time_point deadline) {
    const std::uint32_t length = layout_.length(chunk);
    std::unique_lock lock(mutex_);
    // In memory: the bytes received so far, but the last one only once the chunk is checked,
    // so that the successor gets the end of a chunk (and its digest) only when it is good.
    auto available = [&]() -> std::uint32_t {
        auto it = buffers_.find(chunk);
        if (it == buffers_.end()) {
            return 0;
        }
        return it->second.checked ? length : std::min(it->second.filled, length - 1);
    };
    // Stopped, nothing more comes: the forwarder hears of it from its owner (stop() or a new
    // successor), not from here.
    const bool ready = changed_.wait_until(lock, deadline, [&] {
        return !stopping_ && (chunk < next_write_ || available() > offset);
    });
    if (!ready) {
        return NotYet{};
    }
    Piece piece;
    if (auto it = buffers_.find(chunk); it != buffers_.end()) {
        piece.length = std::min<std::size_t>(out.size(), available() - offset);
        std::memcpy(out.data(), it->second.data.data() + offset, piece.length);
        piece.generation = generation_[chunk];
        piece.last = it->second.checked && offset + piece.length == length;
        piece.sha = digests_[chunk];
        return piece;
    }
    // Written: read it back from DEST (the page cache, mostly).
    piece.sha = digests_[chunk];
    piece.generation = generation_[chunk];
    lock.unlock();
    piece.length = std::min<std::size_t>(out.size(), length - offset);
    if (auto read = read_exactly(fd_, out.first(piece.length), layout_.offset(chunk) + offset);
        !read) {
        return Error{
            fmt::format("reading back chunk {} from DEST {}", chunk, read.error().message)};
    }
    piece.last = offset + piece.length == length;
    return piece;
}

}  // namespace vcpilot::bcast
