#include "bcast/receiver.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <mutex>
#include <spdlog/spdlog.h>
#include <thread>

#include "bcast/forwarder.hpp"
#include "bcast/handshake.hpp"
#include "bcast/node_copy.hpp"
#include "common/fd.hpp"
#include "vcpilot/v1/bcast.grpc.pb.h"

namespace vcpilot::bcast {

namespace v1 = ::vcpilot::v1;
namespace fs = std::filesystem;

Result<std::string> local_address_towards(const std::string& host) {
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_DGRAM;
    addrinfo* found = nullptr;
    if (const int rc = ::getaddrinfo(host.c_str(), "9", &hints, &found); rc != 0) {
        return Error{fmt::format("{}: {}", host, ::gai_strerror(rc))};
    }
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> owned(found, ::freeaddrinfo);
    const UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd) {
        return sys_error("socket");
    }
    sockaddr_in local{};
    socklen_t length = sizeof local;
    if (::connect(fd.get(), found->ai_addr, found->ai_addrlen) != 0 ||
        ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &length) != 0) {
        return sys_error("no route to " + host);
    }
    char text[INET_ADDRSTRLEN];
    ::inet_ntop(AF_INET, &local.sin_addr, text, sizeof text);
    return std::string(text);
}

namespace {

std::string host_of(const std::string& endpoint) {
    const auto colon = endpoint.rfind(':');
    return colon == std::string::npos ? endpoint : endpoint.substr(0, colon);
}

class Receiver final : public v1::BcastRing::Service {
  public:
    explicit Receiver(const ReceiveOptions& options) : options_(options) {}

    int run();

    grpc::Status Push(grpc::ServerContext* context,
                      grpc::ServerReaderWriter<v1::BcastPushReply, v1::BcastPush>* stream) override;

  private:
    void report(const v1::BcastNodeReport& message);
    void fail(const std::string& reason);
    void finish_writing();
    Status open_dest(const v1::BcastStart& start);
    Status publish_dest();

    const ReceiveOptions& options_;
    std::unique_ptr<grpc::ClientReaderWriter<v1::BcastNodeReport, v1::BcastNodeOrder>> control_;
    std::mutex report_mutex_;
    bool half_closed_ = false;

    // Set once Start has come; the ring waits for it.
    std::mutex mutex_;
    std::condition_variable changed_;
    std::unique_ptr<NodeCopy> copy_;
    Layout layout_;
    std::optional<std::string> sender_digest_;
    std::atomic<bool> failed_{false};
    std::atomic<bool> done_{false};
    bool stopping_ = false;
    UniqueFd fd_;               // DEST, or the unnamed file that becomes DEST
    bool writes_dest_ = false;  // no O_TMPFILE here: DEST itself is written
};

void Receiver::report(const v1::BcastNodeReport& message) {
    std::lock_guard lock(report_mutex_);
    if (!half_closed_) {
        control_->Write(message);
    }
}

void Receiver::fail(const std::string& reason) {
    if (done_ || failed_.exchange(true)) {
        return;
    }
    spdlog::error("{}", reason);
    v1::BcastNodeReport message;
    message.mutable_failure()->set_reason(reason);
    report(message);
    // Leave the ring: the sender bypasses this node and then sends Abort.
    std::lock_guard lock(mutex_);
    if (copy_) {
        copy_->stop();
    }
}

grpc::Status Receiver::Push(grpc::ServerContext*,
                            grpc::ServerReaderWriter<v1::BcastPushReply, v1::BcastPush>* stream) {
    auto greeting = accept_handshake<v1::BcastPush, v1::BcastPushReply>(*stream, options_.secret);
    if (!greeting) {
        spdlog::warn("refused a ring stream: {}", greeting.error().message);
        return {grpc::StatusCode::PERMISSION_DENIED, greeting.error().message};
    }
    NodeCopy* copy = nullptr;
    {
        std::unique_lock lock(mutex_);
        changed_.wait_for(lock, options_.stall_timeout, [&] { return stopping_ || copy_; });
        if (!copy_ || stopping_ || failed_) {
            return {grpc::StatusCode::UNAVAILABLE, "this node is not receiving"};
        }
        copy = copy_.get();
    }
    const auto [id, next] = copy->begin_stream();
    spdlog::debug("{} pushes to us from chunk {}", greeting->node, next);
    v1::BcastPushReply reply;
    reply.mutable_resume()->set_next_chunk(next);
    if (!stream->Write(reply)) {
        return {grpc::StatusCode::CANCELLED, "the predecessor went away"};
    }
    const std::uint64_t chunks = layout_.chunks();
    if (next >= chunks) {
        return grpc::Status::OK;
    }
    v1::BcastPush message;
    while (stream->Read(&message)) {
        if (!message.has_piece()) {
            return {grpc::StatusCode::INVALID_ARGUMENT, "expected a piece of a chunk"};
        }
        const auto& piece = message.piece();
        auto put = copy->put(id, piece.chunk(), piece.offset(), piece.data(), piece.chunk_sha256());
        if (!put) {
            spdlog::warn("{} sent a bad piece: {}", greeting->node, put.error().message);
            return {grpc::StatusCode::INVALID_ARGUMENT, put.error().message};
        }
        switch (*put) {
            case NodeCopy::Put::kBadChecksum: {
                spdlog::warn("chunk {} failed its checksum: asking {} for it again", piece.chunk(),
                             greeting->node);
                reply.Clear();
                reply.mutable_nack()->set_chunk(piece.chunk());
                if (!stream->Write(reply)) {
                    return {grpc::StatusCode::CANCELLED, "the predecessor went away"};
                }
                v1::BcastNodeReport repaired;
                repaired.mutable_repaired()->set_chunk(piece.chunk());
                report(repaired);
                break;
            }
            case NodeCopy::Put::kChecked:
                if (piece.chunk() + 1 == chunks) {
                    return grpc::Status::OK;  // every chunk is here and checked
                }
                break;
            case NodeCopy::Put::kIgnored:
                if (copy->next_needed() >= chunks) {
                    return grpc::Status::OK;
                }
                break;
            case NodeCopy::Put::kTaken:
                break;
        }
        if (failed_) {
            return {grpc::StatusCode::ABORTED, "this node failed"};
        }
    }
    return {grpc::StatusCode::CANCELLED, "the predecessor went away"};
}

// The copy is written into an unnamed file in DEST's directory (O_TMPFILE) and linked as DEST
// only once checked: DEST never holds a partial file, and a node killed midway leaves nothing.
// Where the file system cannot do that, DEST itself is written and removed on failure.
Status Receiver::open_dest(const v1::BcastStart& start) {
    const fs::path& dest = options_.dest;
    struct stat st {};
    if (::lstat(dest.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
        return Error{fmt::format("{}: exists and is not a regular file", dest.native())};
    }
    const fs::path directory = dest.parent_path().empty() ? fs::path(".") : dest.parent_path();
    fd_.reset(::open(directory.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    if (!fd_ && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
        fd_.reset(::open(dest.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
        writes_dest_ = static_cast<bool>(fd_);
    }
    if (!fd_) {
        return sys_error(dest.native());
    }
    if (start.size() > 0) {
        // Room for the whole file now: a full disk shows before any byte travels.
        const int rc = ::posix_fallocate(fd_.get(), 0, static_cast<off_t>(start.size()));
        if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL) {
            return sys_error(fmt::format("{}: no room for {} bytes", dest.native(), start.size()),
                             rc);
        }
    }
    if (::fchmod(fd_.get(), start.mode() & 0777) != 0) {
        return sys_error(dest.native() + ": chmod");
    }
    return {};
}

Status Receiver::publish_dest() {
    if (writes_dest_) {
        return {};
    }
    const fs::path& dest = options_.dest;
    const std::string self = fmt::format("/proc/self/fd/{}", fd_.get());
    if (::unlink(dest.c_str()) != 0 && errno != ENOENT) {
        return sys_error(dest.native() + ": cannot replace it");
    }
    if (::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, dest.c_str(), AT_SYMLINK_FOLLOW) != 0) {
        return sys_error(dest.native());
    }
    return {};
}

void Receiver::finish_writing() {
    auto written = copy_->write_all();
    std::unique_lock lock(mutex_);
    if (!written) {
        // Stopped by fail() or the end of the broadcast, or a write failed.
        if (!stopping_ && !failed_) {
            lock.unlock();
            fail(fmt::format("{}: {}", options_.dest.native(), written.error().message));
        }
        return;
    }
    const std::string our_digest(reinterpret_cast<const char*>(written->data()), written->size());
    changed_.wait(lock, [&] { return stopping_ || sender_digest_.has_value(); });
    if (!sender_digest_) {
        return;
    }
    if (*sender_digest_ != our_digest) {
        lock.unlock();
        fail(fmt::format("{}: the file's SHA-256 differs from the sender's",
                         options_.dest.native()));
        return;
    }
    lock.unlock();
    if (auto published = publish_dest(); !published) {
        fail(published.error().message);
        return;
    }
    done_ = true;
    v1::BcastNodeReport message;
    message.mutable_progress()->set_bytes_written(layout_.size);
    report(message);
    message.Clear();
    message.mutable_done()->set_sha256(our_digest);
    report(message);
}

int Receiver::run() {
    std::string listen_host = options_.listen_host;
    if (listen_host.empty()) {
        auto local = local_address_towards(host_of(options_.sender));
        if (!local) {
            spdlog::error("cannot reach the sender {}: {}", options_.sender, local.error().message);
            return 1;
        }
        listen_host = *local;
    }
    int port = 0;
    grpc::ServerBuilder builder;
    builder.AddListeningPort(listen_host + ":0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(this);
    builder.SetMaxReceiveMessageSize(8 << 20);
    // The predecessor pings as often as every half stall timeout (see the forwarder): allow it.
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 250);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    auto server = builder.BuildAndStart();
    if (!server || port == 0) {
        spdlog::error("cannot listen on {}", listen_host);
        return 1;
    }

    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
    auto channel =
        grpc::CreateCustomChannel(options_.sender, grpc::InsecureChannelCredentials(), args);
    auto stub = v1::BcastControl::NewStub(channel);
    grpc::ClientContext context;
    control_ = stub->Join(&context);
    const std::string endpoint = fmt::format("{}:{}", listen_host, port);
    if (auto greeted = offer_handshake<v1::BcastNodeReport, v1::BcastNodeOrder>(
            *control_, options_.secret, options_.name, endpoint);
        !greeted) {
        // The sender's refusal (not a node of this broadcast, joined twice) is in its status;
        // a sender that failed our check is not told anything.
        context.TryCancel();
        const grpc::Status status = control_->Finish();
        const bool refused = status.error_code() == grpc::StatusCode::PERMISSION_DENIED ||
                             status.error_code() == grpc::StatusCode::ALREADY_EXISTS;
        spdlog::error("joining the sender {}: {}", options_.sender,
                      refused ? status.error_message() : greeted.error().message);
        server->Shutdown();
        return 1;
    }

    std::unique_ptr<Forwarder> forwarder;
    std::thread forwarding, writing, reporting;
    std::string abort_reason;
    v1::BcastNodeOrder order;
    while (control_->Read(&order)) {
        if (order.has_start()) {
            const auto& start = order.start();
            if (copy_ || start.chunk_size() == 0) {
                abort_reason = "the sender sent a second or bad start";
                break;
            }
            layout_ = Layout{start.size(), start.chunk_size()};
            if (auto opened = open_dest(start); !opened) {
                fail(opened.error().message);
                continue;
            }
            {
                std::lock_guard lock(mutex_);
                copy_ = std::make_unique<NodeCopy>(
                    layout_, fd_.get(),
                    std::max<std::size_t>(2, options_.memory_bytes / start.chunk_size()));
                if (options_.corrupt_chunk) {
                    copy_->corrupt_once(*options_.corrupt_chunk);
                }
            }
            changed_.notify_all();
            forwarder = std::make_unique<Forwarder>(
                *copy_, options_.secret,
                ForwarderOptions{options_.name, layout_, options_.stall_timeout},
                [this](const std::string& node, const std::string& reason) {
                    v1::BcastNodeReport lost;
                    lost.mutable_successor_lost()->set_node(node);
                    lost.mutable_successor_lost()->set_reason(reason);
                    report(lost);
                },
                [this](const std::string& reason) { fail(reason); });
            if (start.successor().node().empty()) {
                forwarder->set_successor(std::nullopt);
            } else {
                forwarder->set_successor(
                    Successor{start.successor().node(), start.successor().endpoint()});
            }
            forwarding = std::thread([&] { forwarder->run(); });
            writing = std::thread([this] { finish_writing(); });
            reporting = std::thread([this] {
                std::uint64_t written = 0, received = 0;
                std::unique_lock lock(mutex_);
                while (!stopping_ && !done_ && !failed_) {
                    changed_.wait_for(lock, std::chrono::milliseconds(250));
                    const std::uint64_t now_written = copy_->bytes_written();
                    const std::uint64_t now_received = copy_->bytes_received();
                    if ((now_written != written || now_received != received) && !done_) {
                        written = now_written;
                        received = now_received;
                        lock.unlock();
                        v1::BcastNodeReport progress;
                        progress.mutable_progress()->set_bytes_written(written);
                        progress.mutable_progress()->set_bytes_received(received);
                        report(progress);
                        lock.lock();
                    }
                }
            });
        } else if (order.has_successor()) {
            if (forwarder) {
                const auto& next = order.successor();
                forwarder->set_successor(next.node().empty() ? std::nullopt
                                                             : std::optional<Successor>(Successor{
                                                                   next.node(), next.endpoint()}));
            }
        } else if (order.has_digest()) {
            std::lock_guard lock(mutex_);
            sender_digest_ = order.digest().sha256();
            changed_.notify_all();
        } else if (order.has_abort()) {
            abort_reason = order.abort().reason();
            break;
        } else if (order.has_finished()) {
            break;
        }
    }

    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
        if (copy_) {
            copy_->stop();
        }
    }
    changed_.notify_all();
    if (forwarder) {
        forwarder->stop();
    }
    for (auto* thread : {&forwarding, &writing, &reporting}) {
        if (thread->joinable()) {
            thread->join();
        }
    }
    {
        std::lock_guard lock(report_mutex_);
        half_closed_ = true;
        control_->WritesDone();
    }
    const grpc::Status status = control_->Finish();
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    fd_.reset();
    if (done_) {
        return 0;
    }
    if (writes_dest_) {
        ::unlink(options_.dest.c_str());
    }
    if (!abort_reason.empty()) {
        spdlog::error("the sender stopped this node: {}", abort_reason);
    } else if (!failed_) {
        spdlog::error("the sender went away before the transfer finished{}",
                      status.ok() ? "" : ": " + status.error_message());
    }
    return 1;
}

}  // namespace

int run_receiver(const ReceiveOptions& options) {
    Receiver receiver(options);
    return receiver.run();
}

}  // namespace vcpilot::bcast
