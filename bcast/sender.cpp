#include "bcast/sender.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/process/args.hpp>
#include <boost/process/child.hpp>
#include <boost/process/exe.hpp>
#include <boost/process/io.hpp>
#include <boost/process/pipe.hpp>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <fmt/format.h>
#include <fstream>
#include <grpcpp/grpcpp.h>
#include <map>
#include <mutex>
#include <spdlog/spdlog.h>
#include <thread>

#include "bcast/forwarder.hpp"
#include "bcast/handshake.hpp"
#include "bcast/receiver.hpp"
#include "common/fd.hpp"
#include "common/process.hpp"
#include "common/text.hpp"
#include "vcpilot/v1/bcast.grpc.pb.h"

namespace vcpilot::bcast {

namespace v1 = ::vcpilot::v1;
namespace bp = boost::process;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::string mib(std::uint64_t bytes) {
    return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / 1048576.0);
}

// The file, as the head of the ring reads it: a chunk is read (and its digest taken) when the
// forwarder first asks for it; the whole file's digest is taken on the way, in order, in `file`.
class FileSource final : public ChunkSource {
  public:
    FileSource(int fd, Layout layout, Sha256 file, std::function<void(const Digest&)> file_digest)
        : fd_(fd),
          layout_(layout),
          digests_(layout.chunks()),
          file_(std::move(file)),
          file_digest_(std::move(file_digest)) {}

    // An empty file has no chunk to read: its digest is known at once.
    Status start() { return layout_.chunks() == 0 ? finish_file() : Status{}; }

    std::variant<Piece, NotYet, Error> read(std::uint64_t chunk, std::uint32_t offset,
                                            std::span<std::byte> out, Clock::time_point) override {
        std::lock_guard lock(mutex_);
        if (chunk != cached_chunk_) {
            if (auto loaded = load(chunk); !loaded) {
                return loaded.error();
            }
        }
        const std::uint32_t length = layout_.length(chunk);
        Piece piece;
        piece.length = std::min<std::size_t>(out.size(), length - offset);
        std::memcpy(out.data(), cache_.data() + offset, piece.length);
        piece.last = offset + piece.length == length;
        piece.sha = digests_[chunk];
        return piece;
    }

  private:
    Status load(std::uint64_t chunk) {
        if (hash_failed_) {
            return *hash_failed_;
        }
        // The file digest needs every chunk once, in order; a resumed successor may ask for an
        // earlier one again, never (in practice) a later one first.
        while (next_digest_ <= chunk) {
            if (auto read = read_chunk(next_digest_); !read) {
                return read;
            }
            if (auto hashed = take_digests(); !hashed) {
                // For good: the file's digest may have taken the chunk, or part of it.
                hash_failed_ = hashed.error();
                return hashed;
            }
        }
        if (cached_chunk_ != chunk) {
            if (auto read = read_chunk(chunk); !read) {
                return read;
            }
            cached_chunk_ = chunk;
        }
        return {};
    }

    // Takes the digest of the chunk next_digest_, just read into cache_, and feeds the file's
    // digest with it; after the last chunk, hands the file's digest on.
    Status take_digests() {
        auto digest = sha256(cache_);
        if (!digest) {
            return digest.error();
        }
        if (auto fed = file_.update(cache_); !fed) {
            return fed;
        }
        digests_[next_digest_] = *digest;
        cached_chunk_ = next_digest_;
        if (++next_digest_ == layout_.chunks()) {
            return finish_file();
        }
        return {};
    }

    Status finish_file() {
        auto digest = file_.finish();
        if (!digest) {
            return digest.error();
        }
        file_digest_(*digest);
        return {};
    }

    Status read_chunk(std::uint64_t chunk) {
        cache_.resize(layout_.length(chunk));
        if (auto read = read_exactly(fd_, cache_, layout_.offset(chunk)); !read) {
            return Error{"reading the file " + read.error().message};
        }
        return {};
    }

    const int fd_;
    const Layout layout_;
    std::mutex mutex_;
    std::vector<std::byte> cache_;
    std::uint64_t cached_chunk_ = UINT64_MAX;
    std::vector<Digest> digests_;
    Sha256 file_;
    std::uint64_t next_digest_ = 0;
    std::optional<Error> hash_failed_;
    std::function<void(const Digest&)> file_digest_;
};

struct Node {
    enum class State { kWaiting, kJoined, kDone, kFailed };
    std::string name;
    State state = State::kWaiting;
    std::string endpoint;
    std::string reason;
    std::uint64_t bytes = 0;  // written
    std::uint64_t received = 0;
    Clock::time_point moved;  // when `received` last grew
    std::vector<std::uint64_t> repaired;
    std::mutex write_mutex;
    grpc::ServerReaderWriter<v1::BcastNodeOrder, v1::BcastNodeReport>* stream = nullptr;
    std::optional<bp::child> launcher;
    // What ssh and the remote vc-bcast said, in memory (nothing is written on the nodes but
    // DEST, nor here).
    std::unique_ptr<FILE, decltype(&std::fclose)> launcher_output{nullptr, &std::fclose};

    bool gone = false;  // done, then lost: it holds the file but serves the ring no more

    bool alive() const { return !gone && (state == State::kJoined || state == State::kDone); }
    void send(const v1::BcastNodeOrder& order) {
        std::lock_guard lock(write_mutex);
        if (stream != nullptr) {
            stream->Write(order);
        }
    }
};

class Sender final : public v1::BcastControl::Service {
  public:
    Sender(const SendOptions& options, Secret secret) : options_(options), secret_(secret) {}
    int run();

    grpc::Status Join(
        grpc::ServerContext* context,
        grpc::ServerReaderWriter<v1::BcastNodeOrder, v1::BcastNodeReport>* stream) override;

  private:
    Node* find(const std::string& name);
    void handle(Node& node, const v1::BcastNodeReport& report);
    // With mutex_ held.
    void mark_failed(Node& node, const std::string& reason);
    void bypass(const Node& node);
    std::optional<Successor> successor_after(std::size_t index) const;
    bool settled() const;
    void send_digest(const Digest& digest);
    Status launch(Node& node, const std::string& sender_endpoint);
    std::string launcher_reason(Node& node);
    void show_progress(bool final_line);
    void find_stalls();

    const SendOptions& options_;
    const Secret secret_;
    Layout layout_;
    std::vector<std::unique_ptr<Node>> nodes_;
    std::unique_ptr<Forwarder> head_;

    std::mutex mutex_;
    std::condition_variable changed_;
    bool started_ = false;
    bool finished_ = false;
    std::optional<Digest> digest_;
    Clock::time_point began_;
    Clock::time_point last_progress_;
};

Node* Sender::find(const std::string& name) {
    for (auto& node : nodes_) {
        if (node->name == name) {
            return node.get();
        }
    }
    return nullptr;
}

std::optional<Successor> Sender::successor_after(std::size_t index) const {
    for (std::size_t i = index; i < nodes_.size(); ++i) {
        if (nodes_[i]->alive()) {
            return Successor{nodes_[i]->name, nodes_[i]->endpoint};
        }
    }
    return std::nullopt;
}

bool Sender::settled() const {
    for (const auto& node : nodes_) {
        if (node->state != Node::State::kDone && node->state != Node::State::kFailed) {
            return false;
        }
    }
    return true;
}

void Sender::mark_failed(Node& node, const std::string& reason) {
    if (node.state == Node::State::kDone || node.state == Node::State::kFailed) {
        return;
    }
    const bool was_in_ring = started_ && node.alive();
    node.state = Node::State::kFailed;
    node.reason = reason;
    spdlog::warn("{} failed: {}", node.name, reason);
    v1::BcastNodeOrder abort;
    abort.mutable_abort()->set_reason(reason);
    node.send(abort);
    if (was_in_ring) {
        bypass(node);
    }
    changed_.notify_all();
}

void Sender::bypass(const Node& node) {
    // Its live predecessor (or the head) now pushes to its live successor.
    std::size_t index = 0;
    while (nodes_[index].get() != &node) {
        ++index;
    }
    const auto next = successor_after(index + 1);
    std::size_t before = index;
    while (before > 0 && !nodes_[before - 1]->alive()) {
        --before;
    }
    if (before == 0) {
        head_->set_successor(next);
        return;
    }
    v1::BcastNodeOrder order;
    auto* successor = order.mutable_successor();
    if (next) {
        successor->set_node(next->node);
        successor->set_endpoint(next->endpoint);
    }
    nodes_[before - 1]->send(order);
}

void Sender::handle(Node& node, const v1::BcastNodeReport& report) {
    std::lock_guard lock(mutex_);
    if (report.has_progress()) {
        node.bytes = std::max(node.bytes, report.progress().bytes_written());
        if (report.progress().bytes_received() > node.received) {
            node.received = report.progress().bytes_received();
            node.moved = Clock::now();
        }
    } else if (report.has_done()) {
        if (!digest_ ||
            report.done().sha256() !=
                std::string(reinterpret_cast<const char*>(digest_->data()), digest_->size())) {
            mark_failed(node, "its copy's SHA-256 differs from the file's");
        } else if (node.state == Node::State::kJoined) {
            node.state = Node::State::kDone;
            node.bytes = layout_.size;
        }
    } else if (report.has_failure()) {
        mark_failed(node, single_line(report.failure().reason()));
    } else if (report.has_successor_lost()) {
        if (Node* lost = find(report.successor_lost().node());
            lost != nullptr && lost->state == Node::State::kJoined) {
            mark_failed(*lost, fmt::format("{} could not push to it: {}", node.name,
                                           single_line(report.successor_lost().reason())));
        }
    } else if (report.has_repaired()) {
        node.repaired.push_back(report.repaired().chunk());
    }
    changed_.notify_all();
}

grpc::Status Sender::Join(
    grpc::ServerContext*,
    grpc::ServerReaderWriter<v1::BcastNodeOrder, v1::BcastNodeReport>* stream) {
    auto greeting = accept_handshake<v1::BcastNodeReport, v1::BcastNodeOrder>(*stream, secret_);
    if (!greeting) {
        spdlog::warn("refused a node: {}", greeting.error().message);
        return {grpc::StatusCode::PERMISSION_DENIED, greeting.error().message};
    }
    Node* node = nullptr;
    {
        std::lock_guard lock(mutex_);
        node = find(greeting->node);
        if (node == nullptr) {
            return {grpc::StatusCode::PERMISSION_DENIED,
                    fmt::format("{} is not a node of this broadcast", quote(greeting->node))};
        }
        if (node->state != Node::State::kWaiting || started_) {
            return {grpc::StatusCode::ALREADY_EXISTS,
                    fmt::format("{} joined already, or too late", node->name)};
        }
        node->state = Node::State::kJoined;
        node->endpoint = greeting->ring_endpoint;
        std::lock_guard write(node->write_mutex);
        node->stream = stream;
    }
    changed_.notify_all();
    v1::BcastNodeReport report;
    while (stream->Read(&report)) {
        handle(*node, report);
    }
    // The node closes its side once told the broadcast is finished, or on Abort, or dies.
    std::lock_guard lock(mutex_);
    if (node->state == Node::State::kJoined) {
        mark_failed(*node, "lost contact: its vc-bcast exited or its node went away");
    } else if (node->state == Node::State::kDone && !finished_ && !node->gone) {
        spdlog::warn("{} went away after it was done: bypassed", node->name);
        node->gone = true;
        bypass(*node);
    }
    std::lock_guard write(node->write_mutex);
    node->stream = nullptr;
    return node->state == Node::State::kDone
               ? grpc::Status::OK
               : grpc::Status{grpc::StatusCode::ABORTED, node->reason};
}

void Sender::send_digest(const Digest& digest) {
    std::lock_guard lock(mutex_);
    digest_ = digest;
    v1::BcastNodeOrder order;
    order.mutable_digest()->set_sha256(digest.data(), digest.size());
    for (auto& node : nodes_) {
        if (node->alive()) {
            node->send(order);
        }
    }
}

std::string shell_word(const std::string& word) {
    std::string out = "'";
    for (const char c : word) {
        if (c == '\'') {
            out += "'\\''";
        } else {
            out += c;
        }
    }
    return out + "'";
}

Status Sender::launch(Node& node, const std::string& sender_endpoint) {
    std::vector<std::string> remote = {
        options_.program,
        "receive",
        "--sender",
        sender_endpoint,
        "--name",
        node.name,
        "--secret-stdin",
        "--memory",
        std::to_string(options_.memory_bytes),
        "--stall-timeout",
        std::to_string(std::chrono::duration<double>(options_.stall_timeout).count()),
        options_.dest.native()};
    std::string command;
    for (const auto& word : remote) {
        command += (command.empty() ? "" : " ") + shell_word(word);
    }
    std::vector<std::string> args = {"-T", "-o", "BatchMode=yes"};
    for (const auto& option : options_.ssh_options) {
        args.push_back("-o");
        args.push_back(option);
    }
    args.push_back(node.name);
    args.push_back(command);
    UniqueFd output(::memfd_create(("ssh-" + node.name).c_str(), MFD_CLOEXEC));
    if (!output) {
        return sys_error("memfd_create");
    }
    node.launcher_output.reset(::fdopen(output.get(), "w+"));
    if (!node.launcher_output) {
        return sys_error("fdopen");
    }
    output.release();  // the FILE's now
    bp::opstream secret_in;
    std::error_code ec;
    node.launcher.emplace(bp::exe = "/usr/bin/ssh", bp::args = args,
                          bp::std_in<secret_in, bp::std_out> node.launcher_output.get(),
                          bp::std_err > node.launcher_output.get(), ec);
    if (ec) {
        node.launcher.reset();
        return Error{fmt::format("ssh: {}", ec.message())};
    }
    secret_in << secret_.hex() << '\n';
    secret_in.flush();
    secret_in.pipe().close();
    return {};
}

std::string Sender::launcher_reason(Node& node) {
    if (!node.launcher_output) {
        return {};
    }
    std::string text(4096, '\0');
    const ssize_t n = ::pread(::fileno(node.launcher_output.get()), text.data(), text.size(), 0);
    text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    std::string last;
    std::size_t start = 0;
    while (start < text.size()) {
        const std::size_t end = std::min(text.find('\n', start), text.size());
        if (end > start) {
            last = text.substr(start, end - start);
        }
        start = end + 1;
    }
    return last.empty() ? std::string{} : ": " + quote(last, 300);
}

// A node that receives nothing for the stall timeout while its predecessor holds more than it
// does and is not stuck itself is stalled (stopped, swapping, its link dead). The nodes behind
// it are not blamed: they hold what it holds; once it is bypassed they get a new predecessor and
// a new grace period. (Its predecessor's push may not block for a long while: the connection's
// buffers take megabytes.)
void Sender::find_stalls() {
    const auto now = Clock::now();
    std::uint64_t upstream = layout_.size;  // the head holds the whole file and never stalls
    bool upstream_stuck = false;
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
        Node& node = *nodes_[i];
        if (!node.alive()) {
            continue;
        }
        const bool stuck = node.state == Node::State::kJoined &&
                           now - std::max(node.moved, began_) > options_.stall_timeout;
        if (stuck && !upstream_stuck && node.received < upstream) {
            mark_failed(node,
                        fmt::format("stalled: received nothing for {} s (at {} of {})",
                                    std::chrono::duration<double>(options_.stall_timeout).count(),
                                    mib(node.received), mib(layout_.size)));
            for (std::size_t j = i + 1; j < nodes_.size(); ++j) {
                nodes_[j]->moved = now;
            }
            return;
        }
        upstream = node.state == Node::State::kDone ? layout_.size : node.received;
        upstream_stuck = stuck;
    }
}

void Sender::show_progress(bool final_line) {
    if (!options_.progress) {
        return;
    }
    const auto now = Clock::now();
    if (!final_line && now - last_progress_ < std::chrono::seconds(1)) {
        return;
    }
    last_progress_ = now;
    std::uint64_t slowest = UINT64_MAX;
    std::string slowest_name;
    std::size_t alive = 0;
    for (const auto& node : nodes_) {
        if (node->alive()) {
            ++alive;
            if (node->bytes < slowest) {
                slowest = node->bytes;
                slowest_name = node->name;
            }
        }
    }
    if (alive == 0) {
        return;
    }
    const double seconds = std::chrono::duration<double>(now - began_).count();
    const auto size = static_cast<double>(layout_.size);
    const auto done = static_cast<double>(slowest);
    const double rate = seconds > 0 ? done / seconds : 0;
    const std::string eta =
        rate > 0 ? fmt::format("{:.0f} s", (size - done) / rate) : std::string("?");
    const int percent = layout_.size == 0 ? 100 : static_cast<int>(100.0 * done / size);
    fmt::print(stderr, "vc-bcast: {} of {} ({}%) on {} nodes, {:.1f} MiB/s, ETA {}, slowest {}\n",
               mib(slowest), mib(layout_.size), percent, alive, rate / 1048576.0, eta,
               slowest_name);
}

int Sender::run() {
    const UniqueFd file(::open(options_.file.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st {};
    if (!file || ::fstat(file.get(), &st) != 0) {
        fmt::print(stderr, "vc-bcast: {}: {}\n", options_.file.native(), errno_text(errno));
        return 2;
    }
    if (!S_ISREG(st.st_mode)) {
        fmt::print(stderr, "vc-bcast: {}: not a regular file\n", options_.file.native());
        return 2;
    }
    auto file_hash = Sha256::start();
    if (!file_hash) {
        fmt::print(stderr, "vc-bcast: {}\n", file_hash.error().message);
        return 2;
    }
    layout_ = Layout{static_cast<std::uint64_t>(st.st_size), options_.chunk_size};
    for (const auto& name : options_.nodes) {
        auto node = std::make_unique<Node>();
        node->name = name;
        nodes_.push_back(std::move(node));
    }

    int port = 0;
    grpc::ServerBuilder builder;
    builder.AddListeningPort(options_.listen + ":0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(this);
    auto server = builder.BuildAndStart();
    if (!server || port == 0) {
        fmt::print(stderr, "vc-bcast: cannot listen on {}\n", options_.listen);
        return 2;
    }
    std::string advertise = options_.advertise;
    if (advertise.empty()) {
        auto local = local_address_towards(options_.nodes.front());
        if (!local) {
            fmt::print(stderr, "vc-bcast: {}\n", local.error().message);
            server->Shutdown();
            return 2;
        }
        advertise = *local;
    }
    const std::string endpoint = fmt::format("{}:{}", advertise, port);
    if (options_.port_file) {
        std::ofstream(*options_.port_file) << port << '\n';
    }

    FileSource source(file.get(), layout_, std::move(*file_hash),
                      [this](const Digest& digest) { send_digest(digest); });
    const auto cannot_read = [this](const std::string& reason) {
        std::lock_guard lock(mutex_);
        for (auto& node : nodes_) {
            mark_failed(*node, "the sender cannot read the file: " + reason);
        }
    };
    head_ = std::make_unique<Forwarder>(
        source, secret_, ForwarderOptions{"sender", layout_, options_.stall_timeout},
        [this](const std::string& name, const std::string& reason) {
            std::lock_guard lock(mutex_);
            if (Node* lost = find(name); lost != nullptr && lost->state == Node::State::kJoined) {
                mark_failed(*lost, "the sender could not push to it: " + single_line(reason));
            }
        },
        cannot_read);

    if (options_.launch) {
        for (auto& node : nodes_) {
            if (auto launched = launch(*node, endpoint); !launched) {
                std::lock_guard lock(mutex_);
                mark_failed(*node, launched.error().message);
            }
        }
    }

    // Everyone joins, or the join timeout passes; a launcher that ended says why its node
    // will not come.
    const auto join_deadline = Clock::now() + options_.join_timeout;
    {
        std::unique_lock lock(mutex_);
        for (;;) {
            bool waiting = false;
            for (auto& node : nodes_) {
                if (node->state != Node::State::kWaiting) {
                    continue;
                }
                if (node->launcher && !node->launcher->running()) {
                    mark_failed(*node,
                                fmt::format("ssh ended with status {} before it joined{}",
                                            node->launcher->exit_code(), launcher_reason(*node)));
                } else {
                    waiting = true;
                }
            }
            if (!waiting) {
                break;
            }
            if (Clock::now() >= join_deadline) {
                for (auto& node : nodes_) {
                    if (node->state == Node::State::kWaiting) {
                        mark_failed(*node, fmt::format("did not join within {} s{}",
                                                       options_.join_timeout.count() / 1000,
                                                       launcher_reason(*node)));
                    }
                }
                break;
            }
            changed_.wait_for(lock, std::chrono::milliseconds(100));
        }
        started_ = true;
        began_ = last_progress_ = Clock::now();
        for (std::size_t i = 0; i < nodes_.size(); ++i) {
            Node& node = *nodes_[i];
            if (!node.alive()) {
                continue;
            }
            v1::BcastNodeOrder order;
            auto* start = order.mutable_start();
            start->set_size(layout_.size);
            start->set_chunk_size(layout_.chunk_size);
            start->set_mode(st.st_mode & 0777);
            if (auto next = successor_after(i + 1)) {
                start->mutable_successor()->set_node(next->node);
                start->mutable_successor()->set_endpoint(next->endpoint);
            }
            node.send(order);
        }
        head_->set_successor(successor_after(0));
    }
    if (auto started = source.start(); !started) {
        cannot_read(started.error().message);
    }
    std::thread pushing([&] { head_->run(); });

    {
        std::unique_lock lock(mutex_);
        while (!settled()) {
            changed_.wait_for(lock, std::chrono::milliseconds(200));
            find_stalls();
            show_progress(false);
        }
        show_progress(true);
        finished_ = true;
        // A node that is done kept serving the ring (its successor could have needed to resume
        // from it) until now.
        v1::BcastNodeOrder finished;
        finished.mutable_finished();
        for (auto& node : nodes_) {
            if (node->state == Node::State::kDone) {
                node->send(finished);
            }
        }
    }
    changed_.notify_all();
    head_->stop();
    pushing.join();
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));

    // The receivers exit once their stream ends; their ssh with them.
    std::vector<pid_t> launchers;
    for (auto& node : nodes_) {
        if (node->launcher && node->launcher->running()) {
            launchers.push_back(node->launcher->id());
        }
    }
    if (!launchers.empty() && !wait_for_exit(launchers, Clock::now() + std::chrono::seconds(10))) {
        for (auto& node : nodes_) {
            std::error_code ec;
            if (node->launcher && node->launcher->running(ec)) {
                node->launcher->terminate(ec);
            }
        }
    }
    for (auto& node : nodes_) {
        std::error_code ec;
        if (node->launcher) {
            node->launcher->wait(ec);
        }
    }

    const double seconds = std::chrono::duration<double>(Clock::now() - began_).count();
    std::size_t failed = 0;
    for (const auto& node : nodes_) {
        failed += node->state == Node::State::kFailed ? 1 : 0;
    }
    fmt::print("vc-bcast: {} ({}) to {} nodes in {:.2f} s ({:.1f} MiB/s): {} ok, {} failed\n",
               options_.file.native(), mib(layout_.size), nodes_.size(), seconds,
               seconds > 0 ? static_cast<double>(layout_.size) / seconds / 1048576.0 : 0.0,
               nodes_.size() - failed, failed);
    for (const auto& node : nodes_) {
        std::string line = node->state == Node::State::kDone ? "ok" : "FAILED: " + node->reason;
        if (!node->repaired.empty()) {
            line += fmt::format(" (chunks that failed their checksum here and were sent again: {})",
                                fmt::join(node->repaired, ", "));
        }
        fmt::print("  {}  {}\n", node->name, line);
    }
    return failed == 0 ? 0 : 1;
}

}  // namespace

int run_sender(const SendOptions& options) {
    auto secret = Secret::random();
    if (!secret) {
        fmt::print(stderr, "vc-bcast: {}\n", secret.error().message);
        return 2;
    }
    if (options.secret_file) {
        const UniqueFd fd(::open(options.secret_file->c_str(),
                                 O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
        const std::string hex = secret->hex() + "\n";
        if (!fd || ::write(fd.get(), hex.data(), hex.size()) != static_cast<ssize_t>(hex.size())) {
            fmt::print(stderr, "vc-bcast: {}: {}\n", options.secret_file->native(),
                       errno_text(errno));
            return 2;
        }
    }
    Sender sender(options, *secret);
    return sender.run();
}

}  // namespace vcpilot::bcast
