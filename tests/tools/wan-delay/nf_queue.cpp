#include "nf_queue.hpp"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <linux/netlink.h>
#include <string.h>
#include <sys/socket.h>

#include <cstdio>
#include <fstream>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>

#include "common/error.hpp"

namespace wan_delay {
namespace {

// Held packets stay in the kernel, not in this buffer: it only absorbs the messages that pile up
// while we are busy releasing. A metadata-only message costs about 1 KiB of buffer, so this is
// tens of thousands of packets of slack.
constexpr unsigned kSocketBufferBytes = 32u << 20;

// Metadata-only messages are a few hundred bytes; this never truncates one.
constexpr std::size_t kReceiveBufferBytes = 64u << 10;

std::system_error sys_error(const std::string& what) {
    return std::system_error(errno, std::generic_category(), what);
}

}  // namespace

NfQueue::NfQueue(uint16_t queue_num, uint32_t kernel_max_len, PacketHandler on_packet)
    : queue_num_(queue_num),
      on_packet_(std::move(on_packet)),
      receive_buffer_(kReceiveBufferBytes),
      kernel_error_log_(std::chrono::seconds(1)) {
    handle_.reset(nfq_open());
    if (!handle_) {
        throw sys_error("cannot open a netfilter queue socket");
    }
    fd_ = nfq_fd(handle_.get());

    // Both socket options go on before the bind, so that the first burst already finds them.
    const unsigned granted = nfnl_rcvbufsiz(nfq_nfnlh(handle_.get()), kSocketBufferBytes);
    if (granted < kSocketBufferBytes) {
        (void)std::fprintf(stderr, "wan-delay: socket receive buffer is only %u bytes, wanted %u\n",
                           granted, kSocketBufferBytes);
    }
    // Without it a full buffer makes the next recv() fail with ENOBUFS. There is nothing to
    // recover then: the kernel has already dropped those packets and counts them itself.
    const int enable = 1;
    if (setsockopt(fd_, SOL_NETLINK, NETLINK_NO_ENOBUFS, &enable, sizeof enable) < 0) {
        throw sys_error("cannot set NETLINK_NO_ENOBUFS");
    }

    // No nfq_bind_pf(): it has been a no-op since Linux 3.8, and on older kernels the customary
    // unbind-then-bind would take AF_INET away from every other queue user.
    queue_.reset(nfq_create_queue(handle_.get(), queue_num, &NfQueue::on_message, this));
    if (!queue_) {
        throw sys_error("cannot bind queue " + std::to_string(queue_num) +
                        " (is another program bound to it?)");
    }

    // Packets may already be arriving, and the callback may already have run, from here on.
    const auto check = [this](int result, const char* what) {
        if (handler_error_) {
            std::rethrow_exception(std::exchange(handler_error_, nullptr));
        }
        if (result < 0) {
            throw sys_error(what);
        }
    };
    // We never read payloads; copying them would only cost memory and bandwidth.
    check(nfq_set_mode(queue_.get(), NFQNL_COPY_META, 0), "cannot set metadata-only copy mode");
    // GSO: hand GSO packets over whole; otherwise the kernel segments each one first, which costs
    // CPU and turns one verdict into dozens. FAIL_OPEN off: when the queue is full the kernel
    // drops, as a router's full buffer does, instead of letting packets through undelayed.
    check(nfq_set_queue_flags(queue_.get(), NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_GSO),
          "cannot set queue flags (GSO on, fail-open off)");
    // The kernel's default maximum of 1024 packets is far below a bandwidth-delay product.
    check(nfq_set_queue_maxlen(queue_.get(), kernel_max_len), "cannot set the queue's length");
}

NfQueue::~NfQueue() {
    close();
}

void NfQueue::close() {
    // Unbinding waits for an ACK and may read packets meanwhile; those are the kernel's to drop
    // with the rest of the queue, and the handler may already refer to things gone.
    on_packet_ = nullptr;
    queue_.reset();
    handle_.reset();
    fd_ = -1;
}

void NfQueue::QueueUnbinder::operator()(nfq_q_handle* queue) const {
    if (nfq_destroy_queue(queue) < 0) {
        (void)std::fprintf(stderr,
                           "wan-delay: cannot unbind the queue (closing the socket will): %s\n",
                           vcpilot::errno_text(errno).c_str());
    }
}

void NfQueue::HandleCloser::operator()(nfq_handle* handle) const {
    if (nfq_close(handle) < 0) {
        (void)std::fprintf(stderr, "wan-delay: cannot close the netfilter queue socket: %s\n",
                           vcpilot::errno_text(errno).c_str());
    }
}

bool NfQueue::receive(int max_messages) {
    for (int i = 0; i < max_messages; ++i) {
        const ssize_t length =
            recv(fd_, receive_buffer_.data(), receive_buffer_.size(), MSG_DONTWAIT);
        if (length < 0) {
            if (errno == EAGAIN) {
                return false;
            }
            if (errno == EINTR) {
                continue;
            }
            // NETLINK_NO_ENOBUFS should keep this away; if it comes anyway, the lost messages are
            // packets the kernel has dropped and counted, so carry on.
            if (errno == ENOBUFS) {
                if (kernel_error_log_.allow(RateLimiter::Clock::now())) {
                    (void)std::fprintf(stderr,
                                       "wan-delay: socket overrun, the kernel dropped packets\n");
                }
                continue;
            }
            throw sys_error("cannot read from the queue socket");
        }
        dispatch(receive_buffer_.data(), static_cast<int>(length));
    }
    return true;
}

void NfQueue::dispatch(char* message, int length) {
    auto* header = reinterpret_cast<nlmsghdr*>(message);
    if (length >= static_cast<int>(NLMSG_LENGTH(sizeof(nlmsgerr))) &&
        header->nlmsg_type == NLMSG_ERROR) {
        // Verdicts never ask for an ACK, so the kernel answers one only to reject it, e.g. with
        // ENOENT when it no longer holds the packet (its device went away, the rule was deleted).
        // libnfnetlink cannot parse these, hence the check here.
        const auto* error = static_cast<nlmsgerr*>(NLMSG_DATA(header));
        if (error->error != 0 && kernel_error_log_.allow(RateLimiter::Clock::now())) {
            (void)std::fprintf(stderr, "wan-delay: the kernel rejected a verdict: %s\n",
                               vcpilot::errno_text(-error->error).c_str());
        }
        return;
    }
    const int result = nfq_handle_packet(handle_.get(), message, length);
    if (handler_error_) {
        std::rethrow_exception(std::exchange(handler_error_, nullptr));
    }
    if (result < 0 && kernel_error_log_.allow(RateLimiter::Clock::now())) {
        (void)std::fprintf(stderr,
                           "wan-delay: ignored a message from the kernel that did not parse\n");
    }
}

int NfQueue::on_message(nfq_q_handle*, nfgenmsg*, nfq_data* data, void* self_pointer) {
    // Not NFNL_CB_STOP: while libnfnetlink waits for the ACK of a setup request, "stop" would make
    // it take this packet for the answer and return before the ACK is read.
    auto* self = static_cast<NfQueue*>(self_pointer);
    const nfqnl_msg_packet_hdr* packet = nfq_get_msg_packet_hdr(data);
    // The kernel puts the header in every packet message; without it there is no id to act on.
    if (packet == nullptr || !self->on_packet_) {
        return NFNL_CB_CONTINUE;
    }
    try {
        self->on_packet_(*self, ntohl(packet->packet_id));
    } catch (...) {
        self->handler_error_ = std::current_exception();
        return NFNL_CB_FAILURE;
    }
    return NFNL_CB_CONTINUE;
}

void NfQueue::accept_through(uint32_t id) {
    if (nfq_set_verdict_batch(queue_.get(), id, NF_ACCEPT) < 0) {
        throw sys_error("cannot release packets up to id " + std::to_string(id));
    }
}

void NfQueue::drop(uint32_t id) {
    if (nfq_set_verdict(queue_.get(), id, NF_DROP, 0, nullptr) < 0) {
        throw sys_error("cannot drop packet " + std::to_string(id));
    }
}

std::optional<KernelQueueCounters> NfQueue::kernel_counters() const {
    // One line per queue: number, peer portid, total held, copy mode, copy range, dropped because
    // the queue was full, dropped because our socket was full, id sequence, 1.
    std::ifstream table("/proc/net/netfilter/nfnetlink_queue");
    std::string line;
    while (std::getline(table, line)) {
        std::istringstream fields(line);
        unsigned number = 0, portid = 0, total = 0, mode = 0, range = 0;
        uint64_t queue_full = 0, socket_full = 0;
        if (fields >> number >> portid >> total >> mode >> range >> queue_full >> socket_full &&
            number == queue_num_) {
            return KernelQueueCounters{queue_full, socket_full};
        }
    }
    return std::nullopt;
}

}  // namespace wan_delay
