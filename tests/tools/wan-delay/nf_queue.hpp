#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "rate_limiter.hpp"

struct nfgenmsg;
struct nfq_data;
struct nfq_handle;
struct nfq_q_handle;

namespace wan_delay {

// What the kernel counted for a queue (from /proc/net/netfilter/nfnetlink_queue): the packets it
// dropped itself, which we never see.
struct KernelQueueCounters {
    uint64_t dropped_queue_full;  // queue at its maximum length
    uint64_t lost_socket_full;    // our socket's receive buffer was full
};

// One NFQUEUE queue bound through libnetfilter_queue: metadata only, not fail-open, GSO packets
// passed whole. Holds the netlink socket and the binding; the destructor unbinds and closes.
// Setup failures throw std::system_error with errno.
class NfQueue {
  public:
    using PacketHandler = std::function<void(NfQueue& queue, uint32_t packet_id)>;

    // `on_packet` runs for every packet read, inside receive() -- and possibly already inside
    // this constructor, since packets can arrive as soon as the queue is bound.
    NfQueue(uint16_t queue_num, uint32_t kernel_max_len, PacketHandler on_packet);
    ~NfQueue();
    NfQueue(const NfQueue&) = delete;
    NfQueue& operator=(const NfQueue&) = delete;

    int fd() const { return fd_; }

    // Reads up to `max_messages` messages without blocking. Returns false once the socket is empty.
    bool receive(int max_messages);

    // Accepts every packet still held by the kernel whose id is not after `id`.
    void accept_through(uint32_t id);
    void drop(uint32_t id);

    // nullopt if the kernel's table cannot be read; only meaningful while bound.
    std::optional<KernelQueueCounters> kernel_counters() const;

    // Unbinds and closes now; failures are logged (the kernel unbinds on close anyway).
    void close();

  private:
    struct QueueUnbinder {
        void operator()(nfq_q_handle* queue) const;
    };
    struct HandleCloser {
        void operator()(nfq_handle* handle) const;
    };

    static int on_message(nfq_q_handle* queue, nfgenmsg* message, nfq_data* data, void* self);
    void dispatch(char* message, int length);

    uint16_t queue_num_;
    PacketHandler on_packet_;
    std::exception_ptr handler_error_;  // an exception may not unwind through libnfnetlink's C
    std::vector<char> receive_buffer_;
    RateLimiter kernel_error_log_;
    std::unique_ptr<nfq_handle, HandleCloser> handle_;
    std::unique_ptr<nfq_q_handle, QueueUnbinder> queue_;  // after handle_: destroyed before it
    int fd_ = -1;                                         // owned by handle_
};

}  // namespace wan_delay
