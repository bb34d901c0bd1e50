#include "tests/support/sim_pilot.hpp"

#include <deque>
#include <grpcpp/grpcpp.h>

#include "common/munge.hpp"

namespace vcpilot::coordinator {

class SimPilotFleet::Pilot final
    : public grpc::ClientBidiReactor<v1::PilotReport, v1::PilotCommand> {
  public:
    Pilot(SimPilotFleet& fleet, v1::Crm::Stub& stub, const SimPilotSpec& spec)
        : fleet_(fleet), stub_(stub), spec_(spec) {}

    void start() {
        stub_.async()->Attach(&context_, this);
        v1::PilotReport hello;
        auto* h = hello.mutable_hello();
        h->set_cluster_id(spec_.cluster);
        if (spec_.job_cluster) {
            *h->mutable_job_cluster() = *spec_.job_cluster;
        }
        if (spec_.join) {
            *h->mutable_join() = *spec_.join;
        }
        h->set_job_id(spec_.job);
        h->set_host(spec_.host);
        h->set_underlay_address(spec_.underlay);
        h->set_rank(spec_.rank);
        h->set_munge_credential(spec_.credential);
        h->mutable_status()->set_state(v1::PILOT_STATE_NEW);
        send(std::move(hello));
        StartRead(&in_);
        StartCall();
    }

    void cancel() { context_.TryCancel(); }

    // As a pilot whose job ended: STOPPING, GONE, and the end of its reports.
    void stop_on_its_own() {
        send(status(v1::PILOT_STATE_STOPPING));
        send(status(v1::PILOT_STATE_GONE));
        close_after_writes();
    }

    void OnReadDone(bool ok) override {
        if (!ok) {
            return;  // the CRM ended the stream; OnDone follows
        }
        std::unique_lock lock(mutex_);
        outcome_.bytes_received += in_.ByteSizeLong();
        switch (in_.command_case()) {
            case v1::PilotCommand::kSetup: {
                outcome_.got_setup = true;
                outcome_.setup = in_.setup();
                lock.unlock();
                v1::PilotReport keys;
                keys.mutable_keys()->set_host_key(spec_.host_key);
                keys.mutable_keys()->set_user_key(spec_.user_key);
                send(std::move(keys));
                send(status(v1::PILOT_STATE_CONFIGURED));
                break;
            }
            case v1::PilotCommand::kView: {
                const bool first = !outcome_.got_view;
                outcome_.got_view = true;
                // Taken, not copied: in_ is parsed afresh by the next read. (A view of a
                // 10,000-node cluster is 44 KB; thousands of pilots copying it cost seconds.)
                outcome_.view.Swap(in_.mutable_view());
                lock.unlock();
                send(status(spec_.state_after_view, spec_.failure_reason));
                if (first) {
                    ++fleet_.ready_;
                    fleet_.changed();
                }
                break;
            }
            case v1::PilotCommand::kShutdown:
                outcome_.got_shutdown = true;
                lock.unlock();
                send(status(v1::PILOT_STATE_STOPPING));
                send(status(v1::PILOT_STATE_GONE));
                close_after_writes();
                break;
            case v1::PilotCommand::kRun: {
                lock.unlock();
                v1::PilotReport out;
                out.mutable_output()->set_request(in_.run().request());
                std::string echo;
                for (const auto& arg : in_.run().command().argv()) {
                    echo += (echo.empty() ? "" : " ") + arg;
                }
                out.mutable_output()->mutable_output()->set_stdout(spec_.host + ": " + echo + "\n");
                send(out);
                out.mutable_output()->mutable_output()->set_exit_status(0);
                send(std::move(out));
                break;
            }
            default:
                break;
        }
        StartRead(&in_);
    }

    void OnWriteDone(bool ok) override {
        std::lock_guard lock(mutex_);
        queue_.pop_front();
        if (!ok) {
            queue_.clear();
        }
        if (!queue_.empty()) {
            StartWrite(&queue_.front());
        } else {
            writing_ = false;
            if (closing_ && !closed_) {
                closed_ = true;
                StartWritesDone();
            }
        }
    }

    void OnDone(const grpc::Status& status) override {
        {
            std::lock_guard lock(mutex_);
            outcome_.final_status = status;
            outcome_.done = true;
        }
        ++fleet_.done_;
        fleet_.changed();
    }

    SimPilotOutcome outcome() const {
        std::lock_guard lock(mutex_);
        return outcome_;
    }

  private:
    static v1::PilotReport status(v1::PilotState state, const std::string& reason = {}) {
        v1::PilotReport report;
        report.mutable_status()->set_state(state);
        report.mutable_status()->set_reason(reason);
        return report;
    }

    void send(v1::PilotReport report) {
        std::lock_guard lock(mutex_);
        if (closing_) {
            return;
        }
        queue_.push_back(std::move(report));
        if (!writing_) {
            writing_ = true;
            StartWrite(&queue_.front());
        }
    }

    void close_after_writes() {
        std::lock_guard lock(mutex_);
        closing_ = true;
        if (!writing_ && !closed_) {
            closed_ = true;
            StartWritesDone();
        }
    }

    SimPilotFleet& fleet_;
    v1::Crm::Stub& stub_;
    const SimPilotSpec& spec_;
    grpc::ClientContext context_;
    v1::PilotCommand in_;
    mutable std::recursive_mutex mutex_;
    std::deque<v1::PilotReport> queue_;
    bool writing_ = false;
    bool closing_ = false;
    bool closed_ = false;
    SimPilotOutcome outcome_;
};

SimPilotFleet::SimPilotFleet(std::vector<std::shared_ptr<grpc::Channel>> channels,
                             std::vector<SimPilotSpec> specs)
    : channels_(std::move(channels)), specs_(std::move(specs)) {
    for (const auto& channel : channels_) {
        stubs_.push_back(v1::Crm::NewStub(channel));
    }
    for (std::size_t i = 0; i < specs_.size(); ++i) {
        pilots_.push_back(std::make_unique<Pilot>(*this, *stubs_[i % stubs_.size()], specs_[i]));
    }
}

SimPilotFleet::~SimPilotFleet() {
    cancel();
    wait_done(std::chrono::seconds(30));
}

void SimPilotFleet::start() {
    for (auto& pilot : pilots_) {
        pilot->start();
    }
}

void SimPilotFleet::cancel() {
    for (auto& pilot : pilots_) {
        pilot->cancel();
    }
}

void SimPilotFleet::stop_pilot(std::size_t index) {
    pilots_.at(index)->stop_on_its_own();
}

void SimPilotFleet::changed() {
    std::lock_guard lock(mutex_);
    changed_.notify_all();
}

std::size_t SimPilotFleet::wait_ready(std::size_t count, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, timeout, [&] { return ready_ >= count || done_ == pilots_.size(); });
    return ready_;
}

bool SimPilotFleet::wait_done(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return done_ == pilots_.size(); });
}

SimPilotOutcome SimPilotFleet::outcome(std::size_t index) const {
    return pilots_.at(index)->outcome();
}

std::uint64_t SimPilotFleet::bytes_received() const {
    std::uint64_t total = 0;
    for (const auto& pilot : pilots_) {
        total += pilot->outcome().bytes_received;
    }
    return total;
}

std::string attach_payload(const SimPilotSpec& spec) {
    return "vcpilot-attach\n" + spec.cluster + "\n" + spec.host + "\n" + spec.job;
}

Status mint_credential(SimPilotSpec& spec, const std::string& munge_socket) {
    auto credential = munge_encode(attach_payload(spec), munge_socket);
    if (!credential) {
        return credential.error();
    }
    spec.credential = std::move(*credential);
    return {};
}

std::vector<std::shared_ptr<grpc::Channel>> separate_channels(const std::string& target,
                                                              std::size_t count) {
    std::vector<std::shared_ptr<grpc::Channel>> channels;
    for (std::size_t i = 0; i < count; ++i) {
        grpc::ChannelArguments arguments;
        arguments.SetInt("vcpilot.connection", static_cast<int>(i));  // unique: no sharing
        arguments.SetMaxReceiveMessageSize(64 * 1024 * 1024);
        channels.push_back(
            grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments));
    }
    return channels;
}

}  // namespace vcpilot::coordinator
