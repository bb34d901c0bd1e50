#include "pilot/agent.hpp"

#include <algorithm>
#include <atomic>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <system_error>
#include <utility>

#include "common/munge.hpp"
#include "common/text.hpp"
#include "pilot/view.hpp"

namespace vcpilot::pilot {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// A cluster view in exchange mode carries two keys per node; 4096 nodes fit with room to spare.
constexpr int kMaxMessageBytes = 16 * 1024 * 1024;
// An Attach that lasted this long worked: the next break starts the backoff from the beginning.
constexpr auto kStableAttach = std::chrono::seconds(5);
// How often a waiting thread looks whether it should stop.
constexpr milliseconds kPollInterval{200};
// Commands from the CRM that may run at once; more is a runaway coordinator, not a workload.
constexpr std::size_t kMaxConcurrentCommands = 256;
// The exit status reported for a command the pilot could not start, as env(1) and container
// runtimes use it: 126 and 127 keep their shell meanings for the command itself.
constexpr int kCouldNotRun = 125;

const char* code_name(grpc::StatusCode code) {
    switch (code) {
        case grpc::StatusCode::OK:
            return "OK";
        case grpc::StatusCode::CANCELLED:
            return "CANCELLED";
        case grpc::StatusCode::INVALID_ARGUMENT:
            return "INVALID_ARGUMENT";
        case grpc::StatusCode::DEADLINE_EXCEEDED:
            return "DEADLINE_EXCEEDED";
        case grpc::StatusCode::NOT_FOUND:
            return "NOT_FOUND";
        case grpc::StatusCode::ALREADY_EXISTS:
            return "ALREADY_EXISTS";
        case grpc::StatusCode::PERMISSION_DENIED:
            return "PERMISSION_DENIED";
        case grpc::StatusCode::RESOURCE_EXHAUSTED:
            return "RESOURCE_EXHAUSTED";
        case grpc::StatusCode::FAILED_PRECONDITION:
            return "FAILED_PRECONDITION";
        case grpc::StatusCode::ABORTED:
            return "ABORTED";
        case grpc::StatusCode::UNIMPLEMENTED:
            return "UNIMPLEMENTED";
        case grpc::StatusCode::INTERNAL:
            return "INTERNAL";
        case grpc::StatusCode::UNAVAILABLE:
            return "UNAVAILABLE";
        case grpc::StatusCode::UNAUTHENTICATED:
            return "UNAUTHENTICATED";
        default:
            return "UNKNOWN";
    }
}

std::string describe(const grpc::Status& status) {
    std::string text = code_name(status.error_code());
    if (!status.error_message().empty()) {
        text += ": " + single_line(status.error_message());
    }
    return text;
}

bool has_keys(v1::PilotState state) {
    return state == v1::PILOT_STATE_CONFIGURED || state == v1::PILOT_STATE_KEYED ||
           state == v1::PILOT_STATE_READY;
}

std::shared_ptr<grpc::Channel> make_channel(const std::string& target) {
    grpc::ChannelArguments arguments;
    arguments.SetMaxReceiveMessageSize(kMaxMessageBytes);
    // gRPC's own reconnection backoff grows to two minutes by default; a restarted CRM should
    // see its pilots again within seconds. The minimum is the time one connection attempt may
    // take, which must leave room for a slow wide-area link.
    arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    arguments.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 2000);
    arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
    // MUNGE authenticates the pilot inside the stream; the transport carries public data only.
    return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments);
}

}  // namespace

std::string attach_payload(const AgentOptions& options) {
    return "vcpilot-attach\n" + options.cluster_id + "\n" + options.host + "\n" + options.job_id;
}

CredentialSource munge_credentials(std::string socket) {
    return [socket = std::move(socket)](std::string_view payload) {
        return munge_encode(payload, socket);
    };
}

bool is_final_refusal(grpc::StatusCode code) {
    return code == grpc::StatusCode::UNAUTHENTICATED ||
           code == grpc::StatusCode::PERMISSION_DENIED || code == grpc::StatusCode::NOT_FOUND ||
           code == grpc::StatusCode::INVALID_ARGUMENT ||
           code == grpc::StatusCode::FAILED_PRECONDITION;
}

// One Attach call. Reports come from several threads (the command handler, the status
// forwarder, running commands), and a stream takes one writer at a time: every write goes
// through here, under one mutex. Commands that still run when the call ends hold on to it and
// find it closed.
class CrmAgent::Connection {
  public:
    grpc::ClientContext context;  // before the stream, which must go first
    std::unique_ptr<grpc::ClientReaderWriter<v1::PilotReport, v1::PilotCommand>> stream;
    // Held while a command's reports are sent (keys, then the status), so that the forwarder's
    // copy of the same state change does not overtake them.
    std::mutex ordering;

    bool write(const v1::PilotReport& report) {
        std::lock_guard lock(mutex_);
        return write_locked(report);
    }

    // Sends the pilot's state changes this stream has not carried yet; returns how many, or
    // nothing if the stream is closed.
    std::optional<std::size_t> send_status_changes(const PilotService& service) {
        std::lock_guard lock(mutex_);
        std::size_t sent = 0;
        for (const StatusChange& change : service.changes_after(sent_version_, milliseconds(0))) {
            v1::PilotReport report;
            *report.mutable_status() = change.status;
            if (!write_locked(report)) {
                return std::nullopt;
            }
            sent_version_ = change.version;
            ++sent;
        }
        if (!open_) {
            return std::nullopt;
        }
        return sent;
    }

    // The hello carries the status of this change; later changes are sent as they come.
    void status_sent_up_to(std::uint64_t version) {
        std::lock_guard lock(mutex_);
        sent_version_ = version;
    }
    std::uint64_t sent_version() const {
        std::lock_guard lock(mutex_);
        return sent_version_;
    }

    // Whether this stream has carried the pilot's keys.
    void keys_sent() {
        std::lock_guard lock(mutex_);
        keys_sent_ = true;
    }
    bool has_sent_keys() const {
        std::lock_guard lock(mutex_);
        return keys_sent_;
    }

    // Tells the CRM that the pilot has nothing more to say.
    void finish_writes() {
        std::lock_guard lock(mutex_);
        if (open_ && !writes_done_) {
            writes_done_ = true;
            stream->WritesDone();
        }
    }

    // No writes from now on; after this the stream may be finished.
    void close() {
        std::lock_guard lock(mutex_);
        open_ = false;
    }
    bool is_open() const {
        std::lock_guard lock(mutex_);
        return open_ && !writes_done_;
    }

  private:
    bool write_locked(const v1::PilotReport& report) {
        if (!open_ || writes_done_) {
            return false;
        }
        if (!stream->Write(report)) {
            open_ = false;  // the call is over; its reader will learn how
            return false;
        }
        return true;
    }

    mutable std::mutex mutex_;
    bool open_ = true;
    bool writes_done_ = false;
    bool keys_sent_ = false;
    std::uint64_t sent_version_ = 0;
};

struct CrmAgent::AttachOutcome {
    bool attached = false;  // the hello went out
    bool heard = false;     // the CRM sent at least one command
    grpc::Status status;
    Clock::duration lasted{};
};

CrmAgent::CrmAgent(PilotService& service, AgentOptions options)
    : service_(service),
      options_(std::move(options)),
      channel_(make_channel(options_.target)),
      stub_(v1::Crm::NewStub(channel_)) {}

CrmAgent::~CrmAgent() {
    stop(milliseconds(0));
}

void CrmAgent::start() {
    std::lock_guard lock(mutex_);
    if (!thread_.joinable() && !finished_) {
        thread_ = std::thread([this] { run(); });
    }
}

void CrmAgent::stop(milliseconds grace) {
    {
        std::unique_lock lock(mutex_);
        if (thread_.joinable()) {
            wake_.wait_for(lock, grace, [this] { return finished_; });
        }
        stop_requested_ = true;
        if (current_) {
            current_->context.TryCancel();
        }
    }
    wake_.notify_all();
    if (thread_.joinable()) {
        thread_.join();
    }
    join_finished_commands(true);
}

std::optional<std::string> CrmAgent::failure() const {
    std::lock_guard lock(mutex_);
    return failure_;
}

bool CrmAgent::stop_requested() const {
    std::lock_guard lock(mutex_);
    return stop_requested_;
}

bool CrmAgent::pause(milliseconds duration) {
    std::unique_lock lock(mutex_);
    return !wake_.wait_for(lock, duration, [this] { return stop_requested_; });
}

void CrmAgent::give_up(const std::string& reason) {
    spdlog::error("job {}: {}; tearing down", options_.job_id, reason);
    {
        std::lock_guard lock(mutex_);
        failure_ = reason;
    }
    service_.stop(reason);
}

void CrmAgent::run() {
    milliseconds retry = options_.first_retry;
    Clock::time_point unreachable_since = Clock::now();
    bool in_outage = false;
    while (!stop_requested() && !service_.stopping()) {
        // Waits for a connection in short steps, so that stop() is never kept waiting long.
        // Never past the moment of giving up, so that --crm-timeout holds to the poll interval.
        const Clock::time_point connect_by =
            std::min(Clock::now() + retry, unreachable_since + options_.give_up_after);
        bool connected = false;
        while (!connected && !stop_requested() && !service_.stopping() &&
               Clock::now() < connect_by) {
            const auto step = std::min<Clock::duration>(connect_by - Clock::now(), kPollInterval);
            // gRPC takes deadlines on the system clock only.
            connected = channel_->WaitForConnected(std::chrono::system_clock::now() + step);
        }
        if (connected) {
            const AttachOutcome outcome = attach_once();
            if (stop_requested() || service_.stopping()) {
                break;
            }
            if (outcome.attached) {
                unreachable_since = Clock::now();
            }
            if (is_final_refusal(outcome.status.error_code())) {
                give_up("the CRM at " + options_.target +
                        " refused the pilot: " + describe(outcome.status));
                break;
            }
            if (outcome.heard || outcome.lasted >= kStableAttach) {
                retry = options_.first_retry;
            }
            if (outcome.attached) {
                spdlog::warn("job {}: the stream to the CRM at {} ended ({}); attaching again",
                             options_.job_id, options_.target, describe(outcome.status));
                in_outage = false;
            } else if (!in_outage) {
                spdlog::warn(
                    "job {}: cannot attach to the CRM at {}: {}; retrying for up to {} s",
                    options_.job_id, options_.target, describe(outcome.status),
                    std::chrono::duration_cast<std::chrono::seconds>(options_.give_up_after)
                        .count());
                in_outage = true;
            }
        } else if (!in_outage && !stop_requested()) {
            spdlog::warn(
                "job {}: cannot reach the CRM at {}; retrying for up to {} s", options_.job_id,
                options_.target,
                std::chrono::duration_cast<std::chrono::seconds>(options_.give_up_after).count());
            in_outage = true;
        }
        if (stop_requested()) {
            break;
        }
        if (Clock::now() - unreachable_since >= options_.give_up_after) {
            give_up("no CRM reachable at " + options_.target + " for " +
                    std::to_string(
                        std::chrono::duration_cast<std::chrono::seconds>(options_.give_up_after)
                            .count()) +
                    " s");
            break;
        }
        // Also after a stream that ended at once: a CRM that refuses every attach for a while
        // (restarting, overloaded) must not be hammered.
        if (connected && !pause(retry)) {
            break;
        }
        retry = std::min(retry * 2, options_.last_retry);
    }
    std::lock_guard lock(mutex_);
    finished_ = true;
    wake_.notify_all();
}

CrmAgent::AttachOutcome CrmAgent::attach_once() {
    AttachOutcome outcome;
    auto credential = options_.credential(attach_payload(options_));
    if (!credential) {
        outcome.status = grpc::Status(grpc::StatusCode::UNAVAILABLE, credential.error().message);
        return outcome;
    }
    auto connection = std::make_shared<Connection>();
    connection->stream = stub_->Attach(&connection->context);
    {
        std::lock_guard lock(mutex_);
        current_ = connection;
        if (stop_requested_) {
            connection->context.TryCancel();
        }
    }
    const Clock::time_point started = Clock::now();
    const StatusChange now = service_.current_status();
    v1::PilotReport report;
    v1::PilotHello& hello = *report.mutable_hello();
    hello.set_cluster_id(options_.cluster_id);
    hello.set_job_id(options_.job_id);
    hello.set_host(options_.host);
    hello.set_underlay_address(options_.underlay_address);
    hello.set_rank(options_.rank);
    hello.set_munge_credential(*credential);
    *hello.mutable_status() = now.status;
    if (options_.job_cluster) {
        *hello.mutable_job_cluster() = *options_.job_cluster;
    }
    if (options_.join) {
        *hello.mutable_join() = *options_.join;
    }
    connection->status_sent_up_to(now.version);

    std::thread forwarder;
    if (connection->write(report)) {
        outcome.attached = true;
        spdlog::info("job {}: attached to the CRM at {} as {} ({})", options_.job_id,
                     options_.target, options_.host, v1::PilotState_Name(now.status.state()));
        if (has_keys(now.status.state())) {
            // After a break the CRM may have lost what it knew: the keys go again at once.
            std::lock_guard order(connection->ordering);
            send_keys(*connection);
        }
        forwarder = std::thread([this, connection] { forward_status(connection); });
        v1::PilotCommand command;
        while (connection->stream->Read(&command)) {
            outcome.heard = true;
            handle(connection, command);
            command.Clear();
        }
    }
    connection->close();
    if (forwarder.joinable()) {
        forwarder.join();
    }
    outcome.status = connection->stream->Finish();
    outcome.lasted = Clock::now() - started;
    std::lock_guard lock(mutex_);
    current_.reset();
    return outcome;
}

void CrmAgent::forward_status(const std::shared_ptr<Connection>& connection) {
    while (connection->is_open() && !stop_requested()) {
        // Only waits: the changes are sent below, with the ordering lock held.
        (void)service_.changes_after(connection->sent_version(), kPollInterval);
        {
            std::lock_guard order(connection->ordering);
            // A SETUP over the pilot's own socket: the CRM gets the keys as after its own.
            if (!connection->has_sent_keys() && has_keys(service_.status().state())) {
                send_keys(*connection);
            }
            if (!connection->send_status_changes(service_)) {
                return;
            }
        }
        if (service_.wait_until_stopped(milliseconds(0)) &&
            connection->sent_version() >= service_.current_status().version) {
            // The pilot is gone and the CRM has heard it: nothing more will come from here.
            connection->finish_writes();
            return;
        }
    }
}

bool CrmAgent::send_keys(Connection& connection) {
    v1::GetKeysRequest request;
    v1::GetKeysResponse keys;
    if (const grpc::Status status = service_.GetKeys(nullptr, &request, &keys); !status.ok()) {
        spdlog::warn("job {}: no keys to report to the CRM: {}", options_.job_id, describe(status));
        return false;
    }
    v1::PilotReport report;
    report.mutable_keys()->set_host_key(keys.host_key());
    report.mutable_keys()->set_user_key(keys.user_key());
    if (!connection.write(report)) {
        return false;
    }
    connection.keys_sent();
    return true;
}

namespace {

// The CRM learns of a refused command as a FAILED status with the reason. The pilot's own state
// is not changed by a refusal (as with the RPCs); the next status report shows it again.
v1::PilotReport refusal(const PilotService& service, const std::string& reason) {
    v1::PilotReport report;
    v1::PilotStatus& status = *report.mutable_status();
    status = service.status();
    status.set_state(v1::PILOT_STATE_FAILED);
    status.set_reason(reason);
    return report;
}

}  // namespace

void CrmAgent::handle(const std::shared_ptr<Connection>& connection,
                      const v1::PilotCommand& command) {
    switch (command.command_case()) {
        case v1::PilotCommand::kSetup:
            handle_setup(*connection, command.setup());
            return;
        case v1::PilotCommand::kView:
            handle_view(*connection, command.view());
            return;
        case v1::PilotCommand::kShutdown: {
            spdlog::info("job {}: SHUTDOWN from the CRM", options_.job_id);
            v1::PilotStatus status;
            if (!service_.Shutdown(nullptr, &command.shutdown(), &status).ok()) {
                service_.stop("SHUTDOWN from the CRM");  // a bad reason does not stop a stop
            }
            return;
        }
        case v1::PilotCommand::kRun:
            start_command(connection, command.run());
            return;
        default:
            // A newer CRM: saying so is more useful than ending the stream.
            spdlog::warn("job {}: ignoring an unknown command from the CRM (field {})",
                         options_.job_id, static_cast<int>(command.command_case()));
            return;
    }
}

void CrmAgent::handle_setup(Connection& connection, const v1::SetupRequest& request) {
    std::lock_guard order(connection.ordering);
    const v1::PilotStatus before = service_.status();
    if (request.cluster_id() != options_.cluster_id) {
        const std::string reason = "SETUP refused: cluster_id " + quote(request.cluster_id()) +
                                   " is not this pilot's cluster " + quote(options_.cluster_id);
        spdlog::error("job {}: {}", options_.job_id, reason);
        connection.write(refusal(service_, reason));
        return;
    }
    // The CRM sends the assignment again after a break if it cannot tell that it arrived.
    const bool already_done =
        has_keys(before.state()) && before.cluster_id() == request.cluster_id() &&
        before.node_name() == request.node_name() && before.address() == request.address();
    if (!already_done) {
        v1::PilotStatus status;
        if (const grpc::Status result = service_.Setup(nullptr, &request, &status); !result.ok()) {
            const std::string reason = "SETUP failed: " + single_line(result.error_message());
            spdlog::error("job {}: {}", options_.job_id, reason);
            const auto sent = connection.send_status_changes(service_);
            if (sent && service_.status().state() != v1::PILOT_STATE_FAILED) {
                connection.write(refusal(service_, reason));
            }
            return;
        }
    }
    send_keys(connection);
    if (const auto sent = connection.send_status_changes(service_); sent && *sent == 0) {
        v1::PilotReport report;
        *report.mutable_status() = service_.status();
        connection.write(report);
    }
}

void CrmAgent::handle_view(Connection& connection, const v1::ClusterView& view) {
    std::lock_guard order(connection.ordering);
    const v1::PilotStatus before = service_.status();
    const auto refuse = [&](const std::string& reason) {
        spdlog::error("job {}: {}", options_.job_id, reason);
        connection.write(refusal(service_, reason));
    };
    if (!has_keys(before.state())) {
        refuse("cluster view refused: SET_KEYS is not possible before SETUP");
        return;
    }
    auto own_address = InterfaceAddress::parse(before.address());
    if (!own_address) {
        refuse("cluster view refused: this node has no address yet");
        return;
    }
    auto request = expand_cluster_view(view, options_.cluster_id, *own_address);
    if (!request) {
        refuse("cluster view refused: " + request.error().message);
        return;
    }
    v1::PilotStatus status;
    if (const grpc::Status result = service_.SetKeys(nullptr, &*request, &status); !result.ok()) {
        const std::string reason = "SET_KEYS failed: " + single_line(result.error_message());
        spdlog::error("job {}: {}", options_.job_id, reason);
        const auto sent = connection.send_status_changes(service_);
        if (sent && service_.status().state() != v1::PILOT_STATE_FAILED) {
            connection.write(refusal(service_, reason));
        }
        return;
    }
    // A repeated view changes no state, but the CRM still gets its answer.
    if (const auto sent = connection.send_status_changes(service_); sent && *sent == 0) {
        v1::PilotReport report;
        *report.mutable_status() = service_.status();
        connection.write(report);
    }
}

void CrmAgent::start_command(const std::shared_ptr<Connection>& connection,
                             const v1::PilotCommandRequest& request) {
    join_finished_commands(false);
    const std::uint64_t id = request.request();
    const auto report = [connection, id](const v1::RunOutput& output) {
        v1::PilotReport message;
        message.mutable_output()->set_request(id);
        *message.mutable_output()->mutable_output() = output;
        return connection->write(message);
    };
    const auto cannot_run = [report](const std::string& reason) {
        v1::RunOutput error;
        error.set_stderr("vc-pilot: " + reason + "\n");
        report(error);
        v1::RunOutput last;
        last.set_exit_status(kCouldNotRun);
        report(last);
    };
    std::string reason =
        "more than " + std::to_string(kMaxConcurrentCommands) + " commands at once on this node";
    {
        std::lock_guard lock(mutex_);
        if (commands_.size() < kMaxConcurrentCommands) {
            auto done = std::make_shared<std::atomic<bool>>(false);
            try {
                // One thread per command: a command runs as long as it likes, and the stream's
                // reader must stay free for the next command (SHUTDOWN among them).
                std::thread thread([this, request, report, cannot_run, done] {
                    const grpc::Status status =
                        service_.run_command(request.command(), request.as_root(), report);
                    if (!status.ok()) {
                        cannot_run(single_line(status.error_message()));
                    }
                    done->store(true);
                });
                commands_.push_back({std::move(thread), std::move(done)});
                return;
            } catch (const std::system_error& error) {
                reason = std::string("cannot start a thread for the command: ") + error.what();
            }
        }
    }
    // Written without the agent's lock: a write may wait for the CRM to read.
    cannot_run(reason);
}

void CrmAgent::join_finished_commands(bool all) {
    std::vector<std::thread> finished;
    {
        std::lock_guard lock(mutex_);
        const auto keep = std::partition(
            commands_.begin(), commands_.end(),
            [all](const CommandThread& command) { return !all && !command.done->load(); });
        for (auto it = keep; it != commands_.end(); ++it) {
            finished.push_back(std::move(it->thread));
        }
        commands_.erase(keep, commands_.end());
    }
    for (std::thread& thread : finished) {
        thread.join();
    }
}

}  // namespace vcpilot::pilot
