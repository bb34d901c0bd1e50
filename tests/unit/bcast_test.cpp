// vc-bcast's pieces that need no network: the secret and its handshake, the chunk layout, and
// a node's copy (checking, asking again, holding back unchecked ends, bounded memory).
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <gtest/gtest.h>
#include <mutex>
#include <thread>

#include "bcast/handshake.hpp"
#include "bcast/integrity.hpp"
#include "bcast/node_copy.hpp"
#include "tests/support/temp_dir.hpp"
#include "vcpilot/v1/bcast.pb.h"

namespace vcpilot::bcast {
namespace {

namespace v1 = ::vcpilot::v1;
using namespace std::chrono_literals;
using vcpilot::testing::TempDir;

// The SHA-256 of `data`; a test that cannot take one cannot go on.
Digest sha256_of(std::span<const std::byte> data) {
    return sha256(data).value();
}

std::string bytes_of(const Digest& digest) {
    return std::string(reinterpret_cast<const char*>(digest.data()), digest.size());
}

std::vector<std::byte> pattern(std::size_t size, unsigned seed) {
    std::vector<std::byte> data(size);
    for (std::size_t i = 0; i < size; ++i) {
        data[i] = static_cast<std::byte>((i * 131 + std::size_t{seed} * 7 + (i >> 9)) & 0xff);
    }
    return data;
}

std::string_view view(std::span<const std::byte> data) {
    return {reinterpret_cast<const char*>(data.data()), data.size()};
}

TEST(BcastSecret, RoundTripsThroughHexAndRefusesAnythingElse) {
    auto secret = Secret::random();
    ASSERT_TRUE(secret);
    auto again = Secret::from_hex(secret->hex() + "\n");
    ASSERT_TRUE(again);
    EXPECT_EQ(secret->hex(), again->hex());
    EXPECT_FALSE(Secret::from_hex(secret->hex().substr(2)));
    EXPECT_FALSE(Secret::from_hex(std::string(64, 'g')));
    EXPECT_FALSE(Secret::from_hex(""));
}

TEST(BcastSha256, PieceByPieceIsOneCallIsTheStandardsDigest) {
    const std::string abc = "abc";
    const auto bytes = std::as_bytes(std::span(abc.data(), abc.size()));
    auto whole = sha256(bytes);
    ASSERT_TRUE(whole) << whole.error().message;
    EXPECT_EQ(to_hex(*whole), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    auto hash = Sha256::start();
    ASSERT_TRUE(hash) << hash.error().message;
    ASSERT_TRUE(hash->update(bytes.first(1)));
    ASSERT_TRUE(hash->update(bytes.subspan(1)));
    auto pieces = hash->finish();
    ASSERT_TRUE(pieces) << pieces.error().message;
    EXPECT_EQ(*whole, *pieces);
}

TEST(BcastSecret, MacsDependOnTheSecretTheSideAndBothNonces) {
    auto a = Secret::random();
    auto b = Secret::random();
    ASSERT_TRUE(a && b);
    const std::string mac = a->server_mac("c", "s").value();
    EXPECT_TRUE(same_mac(mac, a->server_mac("c", "s").value()));
    EXPECT_FALSE(same_mac(mac, b->server_mac("c", "s").value()));
    EXPECT_FALSE(same_mac(mac, a->client_mac("c", "s").value()));
    EXPECT_FALSE(same_mac(mac, a->server_mac("c", "t").value()));
    EXPECT_FALSE(same_mac(mac, a->server_mac("d", "s").value()));
    EXPECT_FALSE(same_mac(mac, mac.substr(1)));
}

TEST(BcastLayout, CutsFilesIntoChunksWithAShortLastOne) {
    const std::uint32_t chunk = 1000;
    EXPECT_EQ(0u, (Layout{0, chunk}.chunks()));
    EXPECT_EQ(1u, (Layout{1, chunk}.chunks()));
    EXPECT_EQ(1u, (Layout{999, chunk}.chunks()));
    EXPECT_EQ(1u, (Layout{1000, chunk}.chunks()));
    EXPECT_EQ(2u, (Layout{1001, chunk}.chunks()));
    EXPECT_EQ(1u, (Layout{1001, chunk}.length(1)));
    EXPECT_EQ(1000u, (Layout{1001, chunk}.length(0)));
    EXPECT_EQ(2000u, (Layout{2500, chunk}.offset(2)));
}

// Both ends of one stream, in memory: what one side writes the other reads, in order.
class FakeStreams {
  public:
    template <typename Mine, typename Theirs>
    class End {
      public:
        End(FakeStreams& pipe, bool client) : pipe_(pipe), client_(client) {}
        // Write and Read: the names of gRPC's streams, which the handshake templates call.
        // NOLINTNEXTLINE(readability-identifier-naming): gRPC's name
        bool Write(const Mine& message) { return pipe_.push(client_, message.SerializeAsString()); }
        // NOLINTNEXTLINE(readability-identifier-naming): gRPC's name
        bool Read(Theirs* message) {
            auto text = pipe_.pop(client_);
            return text && message->ParseFromString(*text);
        }
        void close() { pipe_.close(); }

      private:
        FakeStreams& pipe_;
        bool client_;
    };

    bool push(bool from_client, std::string text) {
        std::lock_guard lock(mutex_);
        if (closed_) {
            return false;
        }
        (from_client ? to_server_ : to_client_).push_back(std::move(text));
        changed_.notify_all();
        return true;
    }
    std::optional<std::string> pop(bool client) {
        std::unique_lock lock(mutex_);
        auto& queue = client ? to_client_ : to_server_;
        changed_.wait(lock, [&] { return closed_ || !queue.empty(); });
        if (queue.empty()) {
            return std::nullopt;
        }
        std::string text = std::move(queue.front());
        queue.pop_front();
        return text;
    }
    void close() {
        std::lock_guard lock(mutex_);
        closed_ = true;
        changed_.notify_all();
    }

  private:
    std::mutex mutex_;
    std::condition_variable changed_;
    std::deque<std::string> to_server_, to_client_;
    bool closed_ = false;
};

struct HandshakeOutcome {
    Result<Greeting> server{Error{"not run"}};
    Status client{Error{"not run"}};
};

HandshakeOutcome shake(const Secret& server_secret, const Secret& client_secret) {
    FakeStreams pipe;
    FakeStreams::End<v1::BcastNodeOrder, v1::BcastNodeReport> server(pipe, false);
    FakeStreams::End<v1::BcastNodeReport, v1::BcastNodeOrder> client(pipe, true);
    HandshakeOutcome outcome;
    std::thread serving([&] {
        outcome.server =
            accept_handshake<v1::BcastNodeReport, v1::BcastNodeOrder>(server, server_secret);
        pipe.close();
    });
    outcome.client = offer_handshake<v1::BcastNodeReport, v1::BcastNodeOrder>(
        client, client_secret, "node-7", "10.1.2.3:4567");
    if (!outcome.client) {
        pipe.close();  // a client that gives up hangs up
    }
    serving.join();
    return outcome;
}

TEST(BcastHandshake, AdmitsAHolderOfTheSecretAndLearnsItsNameAndEndpoint) {
    auto secret = Secret::random();
    ASSERT_TRUE(secret);
    const auto outcome = shake(*secret, *secret);
    ASSERT_TRUE(outcome.client) << outcome.client.error().message;
    ASSERT_TRUE(outcome.server) << outcome.server.error().message;
    EXPECT_EQ("node-7", outcome.server->node);
    EXPECT_EQ("10.1.2.3:4567", outcome.server->ring_endpoint);
}

TEST(BcastHandshake, NeitherSideAcceptsAnotherTransfersSecret) {
    auto mine = Secret::random();
    auto theirs = Secret::random();
    ASSERT_TRUE(mine && theirs);
    const auto outcome = shake(*mine, *theirs);
    ASSERT_FALSE(outcome.client);
    EXPECT_NE(std::string::npos, outcome.client.error().message.find("does not hold"));
    EXPECT_FALSE(outcome.server);
}

class NodeCopyTest : public ::testing::Test {
  protected:
    void SetUp() override {
        fd_ = ::open((dir_.path() / "dest").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        ASSERT_GE(fd_, 0);
    }
    void TearDown() override { ::close(fd_); }

    // Puts a whole chunk in pieces of `piece` bytes; returns the last answer.
    NodeCopy::Put put_chunk(NodeCopy& copy, std::uint64_t stream, std::uint64_t chunk,
                            std::span<const std::byte> data, std::size_t piece,
                            const Digest& digest) {
        NodeCopy::Put last = NodeCopy::Put::kIgnored;
        for (std::size_t offset = 0; offset < data.size(); offset += piece) {
            const std::size_t n = std::min(piece, data.size() - offset);
            auto put = copy.put(stream, chunk, static_cast<std::uint32_t>(offset),
                                view(data.subspan(offset, n)),
                                offset + n == data.size() ? bytes_of(digest) : std::string());
            EXPECT_TRUE(put) << put.error().message;
            last = *put;
        }
        return last;
    }

    TempDir dir_;
    int fd_ = -1;
};

TEST_F(NodeCopyTest, WritesCheckedChunksInOrderAndReturnsTheFilesDigest) {
    const auto file = pattern(2500, 1);
    const Layout layout{file.size(), 1000};
    NodeCopy copy(layout, fd_, 4);
    const auto [stream, next] = copy.begin_stream();
    EXPECT_EQ(0u, next);
    for (std::uint64_t c = 0; c < layout.chunks(); ++c) {
        auto chunk = std::span(file).subspan(layout.offset(c), layout.length(c));
        EXPECT_EQ(NodeCopy::Put::kChecked,
                  put_chunk(copy, stream, c, chunk, 300, sha256_of(chunk)));
    }
    auto written = copy.write_all();
    ASSERT_TRUE(written) << written.error().message;
    EXPECT_EQ(sha256_of(file), *written);
    EXPECT_EQ(file.size(), copy.bytes_written());
    std::vector<std::byte> back(file.size());
    ASSERT_EQ(static_cast<ssize_t>(back.size()), ::pread(fd_, back.data(), back.size(), 0));
    EXPECT_EQ(file, back);
}

TEST_F(NodeCopyTest, AChunkThatFailsItsChecksumIsDroppedAndTakenAgain) {
    const auto file = pattern(1000, 2);
    NodeCopy copy(Layout{file.size(), 1000}, fd_, 4);
    const auto stream = copy.begin_stream().first;
    auto bad = file;
    bad[500] ^= std::byte{1};
    EXPECT_EQ(NodeCopy::Put::kBadChecksum, put_chunk(copy, stream, 0, bad, 400, sha256_of(file)));
    EXPECT_EQ(0u, copy.next_needed());
    EXPECT_EQ(NodeCopy::Put::kChecked, put_chunk(copy, stream, 0, file, 400, sha256_of(file)));
    EXPECT_EQ(1u, copy.next_needed());
}

TEST_F(NodeCopyTest, TheTestHookCorruptsOnceAndTheResendRepairsIt) {
    const auto file = pattern(1000, 3);
    NodeCopy copy(Layout{file.size(), 1000}, fd_, 4);
    copy.corrupt_once(0);
    const auto stream = copy.begin_stream().first;
    EXPECT_EQ(NodeCopy::Put::kBadChecksum, put_chunk(copy, stream, 0, file, 1000, sha256_of(file)));
    EXPECT_EQ(NodeCopy::Put::kChecked, put_chunk(copy, stream, 0, file, 1000, sha256_of(file)));
}

TEST_F(NodeCopyTest, PiecesOfAReplacedStreamOrOutOfOrderAreIgnored) {
    const auto file = pattern(2000, 4);
    NodeCopy copy(Layout{file.size(), 1000}, fd_, 4);
    const auto old_stream = copy.begin_stream().first;
    auto first = std::span(file).first(1000);
    ASSERT_TRUE(copy.put(old_stream, 0, 0, view(first.first(500)), {}));
    const auto [stream, next] = copy.begin_stream();  // a new predecessor: start chunk 0 over
    EXPECT_EQ(0u, next);
    EXPECT_EQ(NodeCopy::Put::kIgnored,
              *copy.put(old_stream, 0, 500, view(first.subspan(500)), bytes_of(sha256_of(first))));
    EXPECT_EQ(NodeCopy::Put::kIgnored, *copy.put(stream, 1, 0, view(first.first(10)), {}));
    EXPECT_EQ(NodeCopy::Put::kIgnored, *copy.put(stream, 0, 10, view(first.first(10)), {}));
    EXPECT_EQ(NodeCopy::Put::kChecked, put_chunk(copy, stream, 0, first, 250, sha256_of(first)));
}

TEST_F(NodeCopyTest, RefusesPiecesThatBreakTheChunk) {
    const auto file = pattern(1000, 5);
    NodeCopy copy(Layout{file.size(), 1000}, fd_, 4);
    const auto stream = copy.begin_stream().first;
    auto too_long = pattern(1001, 5);
    EXPECT_FALSE(copy.put(stream, 0, 0, view(too_long), bytes_of(sha256_of(file))));
    copy.begin_stream();
    const auto again = copy.begin_stream().first;
    EXPECT_FALSE(copy.put(again, 0, 0, view(file), {}));  // the last piece needs the digest
}

TEST_F(NodeCopyTest, AForwarderGetsAChunksEndOnlyOnceItIsChecked) {
    const auto file = pattern(1000, 6);
    NodeCopy copy(Layout{file.size(), 1000}, fd_, 4);
    const auto stream = copy.begin_stream().first;
    ASSERT_TRUE(copy.put(stream, 0, 0, view(std::span(file).first(600)), {}));
    std::vector<std::byte> out(4096);
    auto got = copy.read(0, 0, out, std::chrono::steady_clock::now());
    ASSERT_TRUE(std::holds_alternative<Piece>(got));
    EXPECT_EQ(600u, std::get<Piece>(got).length);
    EXPECT_FALSE(std::get<Piece>(got).last);
    const auto generation = std::get<Piece>(got).generation;
    ASSERT_TRUE(
        copy.put(stream, 0, 600, view(std::span(file).subspan(600)), bytes_of(sha256_of(file))));
    got = copy.read(0, 600, out, std::chrono::steady_clock::now());
    ASSERT_TRUE(std::holds_alternative<Piece>(got));
    EXPECT_EQ(400u, std::get<Piece>(got).length);
    EXPECT_TRUE(std::get<Piece>(got).last);
    EXPECT_EQ(sha256_of(file), std::get<Piece>(got).sha);
    ASSERT_TRUE(copy.write_all());
    // Written and out of memory: read back from the file, same generation (no restart).
    got = copy.read(0, 0, out, std::chrono::steady_clock::now());
    ASSERT_TRUE(std::holds_alternative<Piece>(got));
    EXPECT_EQ(1000u, std::get<Piece>(got).length);
    EXPECT_EQ(generation, std::get<Piece>(got).generation);
    EXPECT_EQ(0, std::memcmp(file.data(), out.data(), file.size()));
}

TEST_F(NodeCopyTest, NothingYetBeforeTheDeadlineWhenNoBytesCame) {
    NodeCopy copy(Layout{1000, 1000}, fd_, 4);
    std::vector<std::byte> out(100);
    auto got = copy.read(0, 0, out, std::chrono::steady_clock::now() + 10ms);
    EXPECT_TRUE(std::holds_alternative<NotYet>(got));
}

TEST_F(NodeCopyTest, ReceivingWaitsForRoomWhenTheBuffersAreFull) {
    const auto file = pattern(3000, 7);
    const Layout layout{file.size(), 1000};
    NodeCopy copy(layout, fd_, 2);
    const auto stream = copy.begin_stream().first;
    for (std::uint64_t c = 0; c < 2; ++c) {
        auto chunk = std::span(file).subspan(layout.offset(c), 1000);
        ASSERT_EQ(NodeCopy::Put::kChecked,
                  put_chunk(copy, stream, c, chunk, 1000, sha256_of(chunk)));
    }
    std::atomic<bool> returned{false};
    auto third = std::span(file).subspan(2000);
    std::thread receiving([&] {
        EXPECT_EQ(NodeCopy::Put::kChecked,
                  *copy.put(stream, 2, 0, view(third), bytes_of(sha256_of(third))));
        returned = true;
    });
    std::this_thread::sleep_for(100ms);
    EXPECT_FALSE(returned) << "a third chunk was taken with two buffers full";
    auto written = copy.write_all();  // frees the buffers as it writes
    receiving.join();
    EXPECT_TRUE(returned);
    ASSERT_TRUE(written);
    EXPECT_EQ(sha256_of(file), *written);
}

}  // namespace
}  // namespace vcpilot::bcast
