// The pilot's CRM agent (pilot/agent.hpp) against a fake in-process CRM on a unix socket. The
// pilot behind it stays in NEW: everything checked here (the hello, reports of refused commands,
// reconnection, final refusals, giving up, SHUTDOWN, stopping) needs no namespaces and no root;
// building a job is the integration tests' part. No munged either: credentials are faked.
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "pilot/agent.hpp"
#include "tests/support/temp_dir.hpp"

namespace vcpilot::pilot {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;
using vcpilot::testing::TempDir;

constexpr milliseconds kPatience{10'000};  // how long a test waits for what must happen

// ---- a fake CRM ----

struct Received {
    int attach = 0;  // which Attach call, counting from 1
    v1::PilotReport report;
};

class FakeCrm final : public v1::Crm::CallbackService {
  public:
    // One Attach call. Callbacks come on gRPC's threads; tests send and end through FakeCrm.
    class Stream final : public grpc::ServerBidiReactor<v1::PilotReport, v1::PilotCommand> {
      public:
        Stream(FakeCrm* crm, int number) : crm_(crm), number_(number) { StartRead(&incoming_); }

        void OnReadDone(bool ok) override {
            if (!ok) {
                // The pilot half-closed (its last status sent) or the call broke: end it.
                crm_->record_end(number_);
                end(grpc::Status::OK);
                return;
            }
            crm_->record(number_, incoming_);
            incoming_.Clear();
            StartRead(&incoming_);
        }
        void OnWriteDone(bool ok) override {
            std::lock_guard lock(mutex_);
            outgoing_.pop_front();
            if (ok && !outgoing_.empty() && !finished_) {
                StartWrite(&outgoing_.front());
            } else {
                writing_ = false;
                if (pending_end_ && !finished_) {
                    finished_ = true;
                    Finish(*pending_end_);
                }
            }
        }
        void OnDone() override {
            crm_->forget(number_);
            delete this;
        }

        void send(const v1::PilotCommand& command) {
            std::lock_guard lock(mutex_);
            if (finished_) {
                return;
            }
            outgoing_.push_back(command);
            if (!writing_) {
                writing_ = true;
                StartWrite(&outgoing_.front());
            }
        }
        // Ends the call with `status` once the commands queued before have gone out.
        void end(const grpc::Status& status) {
            std::lock_guard lock(mutex_);
            if (finished_) {
                return;
            }
            if (writing_) {
                pending_end_ = status;
                return;
            }
            finished_ = true;
            Finish(status);
        }

      private:
        FakeCrm* crm_;
        const int number_;
        v1::PilotReport incoming_;
        std::recursive_mutex mutex_;  // a reaction may run inside the Start call that caused it
        std::deque<v1::PilotCommand> outgoing_;
        bool writing_ = false;
        bool finished_ = false;
        std::optional<grpc::Status> pending_end_;
    };

    grpc::ServerBidiReactor<v1::PilotReport, v1::PilotCommand>* Attach(
        grpc::CallbackServerContext*) override {
        std::lock_guard lock(mutex_);
        const int number = ++attaches_;
        // Its reactions start only once this returns it, so the lock held here is never wanted
        // by one of them meanwhile.
        auto* stream = new Stream(this, number);
        streams_[number] = stream;
        changed_.notify_all();
        return stream;
    }

    // Sends a command on call `number`; false if that call is over.
    bool send(int number, const v1::PilotCommand& command) {
        std::lock_guard lock(mutex_);
        const auto found = streams_.find(number);
        if (found == streams_.end()) {
            return false;
        }
        found->second->send(command);
        return true;
    }
    void end(int number, const grpc::Status& status) {
        std::lock_guard lock(mutex_);
        if (const auto found = streams_.find(number); found != streams_.end()) {
            found->second->end(status);
        }
    }

    // Waits until a report on call `number` satisfies `wanted`, and returns it.
    std::optional<v1::PilotReport> wait_for(
        int number, const std::function<bool(const v1::PilotReport&)>& wanted) {
        std::unique_lock lock(mutex_);
        std::optional<v1::PilotReport> found;
        changed_.wait_for(lock, kPatience, [&] {
            for (const Received& received : received_) {
                if (received.attach == number && wanted(received.report)) {
                    found = received.report;
                    return true;
                }
            }
            return false;
        });
        return found;
    }
    bool wait_for_attaches(int count) {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, kPatience, [&] { return attaches_ >= count; });
    }
    bool wait_for_end(int number) {
        std::unique_lock lock(mutex_);
        return changed_.wait_for(lock, kPatience, [&] { return ended_.count(number) != 0; });
    }
    std::vector<v1::PilotReport> reports(int number) const {
        std::lock_guard lock(mutex_);
        std::vector<v1::PilotReport> reports;
        for (const Received& received : received_) {
            if (received.attach == number) {
                reports.push_back(received.report);
            }
        }
        return reports;
    }

  private:
    friend class Stream;
    void record(int number, const v1::PilotReport& report) {
        std::lock_guard lock(mutex_);
        received_.push_back({number, report});
        changed_.notify_all();
    }
    void record_end(int number) {
        std::lock_guard lock(mutex_);
        ended_.insert({number, true});
        changed_.notify_all();
    }
    void forget(int number) {
        std::lock_guard lock(mutex_);
        streams_.erase(number);
        ended_.insert({number, true});
        changed_.notify_all();
    }

    mutable std::mutex mutex_;
    std::condition_variable changed_;
    int attaches_ = 0;
    std::map<int, Stream*> streams_;
    std::map<int, bool> ended_;
    std::vector<Received> received_;
};

class CrmServer {
  public:
    explicit CrmServer(const std::string& socket) : address_("unix:" + socket) {
        grpc::ServerBuilder builder;
        builder.AddListeningPort(address_, grpc::InsecureServerCredentials());
        builder.RegisterService(&crm);
        server_ = builder.BuildAndStart();
        if (!server_) {
            throw std::runtime_error("cannot start the fake CRM on " + address_);
        }
    }
    ~CrmServer() { stop(); }
    void stop() {
        if (server_) {
            server_->Shutdown(std::chrono::system_clock::now() + milliseconds(200));
            server_->Wait();
            server_.reset();
        }
    }
    const std::string& address() const { return address_; }

    FakeCrm crm;

  private:
    std::string address_;
    std::unique_ptr<grpc::Server> server_;
};

// ---- the pilot side ----

bool is_status(const v1::PilotReport& report, v1::PilotState state) {
    return report.has_status() && report.status().state() == state;
}

class AgentTest : public ::testing::Test {
  protected:
    void SetUp() override {
        auto paths = JobPaths::make(temp_.path() / "run", "node1", "job7");
        ASSERT_TRUE(paths) << paths.error().message;
        std::filesystem::create_directories(paths->root());
        PilotOptions options;
        options.limits.find_user = [](std::string_view name) -> Result<UserIdentity> {
            return Error{"user: no user '" + std::string(name) + "' on this node"};
        };
        options.teardown_grace = milliseconds(100);
        service_ = std::make_unique<PilotService>(*paths, options);
        server_ = std::make_unique<CrmServer>((temp_.path() / "crm.sock").string());
    }
    void TearDown() override {
        if (agent_) {
            agent_->stop(milliseconds(0));
        }
        agent_.reset();
        server_.reset();
        service_.reset();
    }

    AgentOptions options() const {
        AgentOptions options;
        options.target = "unix:" + (temp_.path() / "crm.sock").string();
        options.cluster_id = "c1";
        options.job_id = "job7";
        options.host = "site1-node1";
        options.underlay_address = "172.16.1.11";
        options.credential = [](std::string_view payload) -> Result<std::string> {
            return "credential-for:" + std::string(payload);
        };
        options.give_up_after = milliseconds(30'000);
        options.first_retry = milliseconds(20);
        options.last_retry = milliseconds(200);
        return options;
    }
    void start(AgentOptions agent_options) {
        agent_ = std::make_unique<CrmAgent>(*service_, std::move(agent_options));
        agent_->start();
    }
    FakeCrm& crm() { return server_->crm; }
    std::optional<v1::PilotReport> hello(int attach) {
        return crm().wait_for(attach, [](const auto& report) { return report.has_hello(); });
    }
    bool pilot_gone() { return service_->wait_until_stopped(kPatience); }

    TempDir temp_;
    std::unique_ptr<PilotService> service_;
    std::unique_ptr<CrmServer> server_;
    std::unique_ptr<CrmAgent> agent_;
};

TEST_F(AgentTest, SaysHelloFirstWithACredentialBoundToClusterHostAndJob) {
    start(options());
    const auto report = hello(1);
    ASSERT_TRUE(report);
    const v1::PilotHello& said = report->hello();
    EXPECT_EQ(said.cluster_id(), "c1");
    EXPECT_EQ(said.job_id(), "job7");
    EXPECT_EQ(said.host(), "site1-node1");
    EXPECT_EQ(said.underlay_address(), "172.16.1.11");
    EXPECT_EQ(said.munge_credential(), "credential-for:vcpilot-attach\nc1\nsite1-node1\njob7");
    EXPECT_EQ(said.status().state(), v1::PILOT_STATE_NEW);
    EXPECT_EQ(said.status().job_id(), "job7");
    EXPECT_TRUE(crm().reports(1).front().has_hello()) << "the hello is the first report";
    EXPECT_EQ(said.rank(), 0U);
}

TEST_F(AgentTest, SaysItsPlaceInTheJobInTheHello) {
    AgentOptions agent_options = options();
    agent_options.rank = 3;
    start(std::move(agent_options));
    const auto report = hello(1);
    ASSERT_TRUE(report);
    EXPECT_EQ(report->hello().rank(), 3U);
}

TEST_F(AgentTest, ReportsARefusedSetupAsFailedWithTheReason) {
    start(options());
    ASSERT_TRUE(hello(1));
    v1::PilotCommand command;
    v1::SetupRequest& setup = *command.mutable_setup();
    setup.set_cluster_id("c1");
    setup.set_node_name("vc-site1-1");
    setup.set_address("10.20.0.1/24");
    setup.mutable_vxlan()->set_vni(7);
    setup.set_user("nobody-here");
    ASSERT_TRUE(crm().send(1, command));
    const auto failed = crm().wait_for(
        1, [](const auto& report) { return is_status(report, v1::PILOT_STATE_FAILED); });
    ASSERT_TRUE(failed);
    EXPECT_THAT(failed->status().reason(), HasSubstr("SETUP failed: user: no user 'nobody-here'"));
    // A refusal changes nothing: the pilot is still NEW.
    EXPECT_EQ(service_->status().state(), v1::PILOT_STATE_NEW);
}

TEST_F(AgentTest, RefusesASetupForAnotherCluster) {
    start(options());
    ASSERT_TRUE(hello(1));
    v1::PilotCommand command;
    command.mutable_setup()->set_cluster_id("c2");
    ASSERT_TRUE(crm().send(1, command));
    const auto failed = crm().wait_for(
        1, [](const auto& report) { return is_status(report, v1::PILOT_STATE_FAILED); });
    ASSERT_TRUE(failed);
    EXPECT_THAT(failed->status().reason(), HasSubstr("cluster_id 'c2' is not this pilot's"));
}

TEST_F(AgentTest, RefusesAClusterViewBeforeSetup) {
    start(options());
    ASSERT_TRUE(hello(1));
    v1::PilotCommand command;
    command.mutable_view()->set_cluster_id("c1");
    ASSERT_TRUE(crm().send(1, command));
    const auto failed = crm().wait_for(
        1, [](const auto& report) { return is_status(report, v1::PILOT_STATE_FAILED); });
    ASSERT_TRUE(failed);
    EXPECT_THAT(failed->status().reason(), HasSubstr("cluster view refused"));
}

TEST_F(AgentTest, AnswersACommandThatCannotRunWithItsReasonAndStatus125) {
    start(options());
    ASSERT_TRUE(hello(1));
    for (const bool as_root : {false, true}) {
        v1::PilotCommand command;
        command.mutable_run()->set_request(as_root ? 8 : 7);
        command.mutable_run()->set_as_root(as_root);
        command.mutable_run()->mutable_command()->add_argv("hostname");
        ASSERT_TRUE(crm().send(1, command));
    }
    for (const std::uint64_t request : {7, 8}) {
        const auto exit_status = crm().wait_for(1, [request](const auto& report) {
            return report.has_output() && report.output().request() == request &&
                   report.output().output().has_exit_status();
        });
        ASSERT_TRUE(exit_status) << request;
        EXPECT_EQ(exit_status->output().output().exit_status(), 125);
        const auto error = crm().wait_for(1, [request](const auto& report) {
            return report.has_output() && report.output().request() == request &&
                   !report.output().output().stderr().empty();
        });
        ASSERT_TRUE(error) << request;
        EXPECT_THAT(error->output().output().stderr(),
                    HasSubstr(request == 7 ? "RUN is not possible in state NEW"
                                           : "EXEC is not possible in state NEW"));
    }
}

TEST_F(AgentTest, AttachesAgainWithAFreshHelloWhenTheStreamBreaks) {
    int minted = 0;
    AgentOptions agent_options = options();
    agent_options.credential = [&minted](std::string_view payload) -> Result<std::string> {
        return "credential-" + std::to_string(++minted) + ":" + std::string(payload);
    };
    start(agent_options);
    ASSERT_TRUE(hello(1));
    crm().end(1, grpc::Status(grpc::StatusCode::UNAVAILABLE, "CRM restarting"));
    const auto again = hello(2);
    ASSERT_TRUE(again);
    EXPECT_THAT(again->hello().munge_credential(), ::testing::StartsWith("credential-2:"));
    EXPECT_EQ(again->hello().status().state(), v1::PILOT_STATE_NEW);
    EXPECT_FALSE(agent_->failure());
}

TEST_F(AgentTest, AttachesAgainAfterTheCrmItselfRestarts) {
    start(options());
    ASSERT_TRUE(hello(1));
    const std::string socket = (temp_.path() / "crm.sock").string();
    server_.reset();
    server_ = std::make_unique<CrmServer>(socket);
    EXPECT_TRUE(hello(1)) << "the new CRM's first Attach";
    EXPECT_FALSE(agent_->failure());
}

TEST_F(AgentTest, StopsThePilotWhenTheCrmRefusesItForGood) {
    start(options());
    ASSERT_TRUE(hello(1));
    crm().end(1, grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "credential replayed"));
    ASSERT_TRUE(pilot_gone());
    ASSERT_TRUE(agent_->failure());
    EXPECT_THAT(*agent_->failure(), HasSubstr("refused the pilot: UNAUTHENTICATED: credential "
                                              "replayed"));
    EXPECT_THAT(service_->status().reason(), HasSubstr("UNAUTHENTICATED"));
}

TEST_F(AgentTest, TreatsEveryFinalCodeAsFinalAndNoOtherCode) {
    using grpc::StatusCode;
    for (const StatusCode code :
         {StatusCode::UNAUTHENTICATED, StatusCode::PERMISSION_DENIED, StatusCode::NOT_FOUND,
          StatusCode::INVALID_ARGUMENT, StatusCode::FAILED_PRECONDITION}) {
        EXPECT_TRUE(is_final_refusal(code)) << code;
    }
    for (const StatusCode code :
         {StatusCode::OK, StatusCode::CANCELLED, StatusCode::UNAVAILABLE, StatusCode::INTERNAL,
          StatusCode::DEADLINE_EXCEEDED, StatusCode::RESOURCE_EXHAUSTED, StatusCode::UNKNOWN}) {
        EXPECT_FALSE(is_final_refusal(code)) << code;
    }
}

TEST_F(AgentTest, GivesUpAndStopsThePilotWithoutAnyCrm) {
    server_.reset();
    AgentOptions agent_options = options();
    agent_options.target = "unix:" + (temp_.path() / "nobody.sock").string();
    agent_options.give_up_after = milliseconds(500);
    start(agent_options);
    ASSERT_TRUE(pilot_gone());
    ASSERT_TRUE(agent_->failure());
    EXPECT_THAT(*agent_->failure(), HasSubstr("no CRM reachable at unix:"));
}

TEST_F(AgentTest, GivesUpWhenNoCredentialCanBeMinted) {
    AgentOptions agent_options = options();
    agent_options.credential = [](std::string_view) -> Result<std::string> {
        return Error{"MUNGE: cannot mint a credential: Failed to access socket"};
    };
    agent_options.give_up_after = milliseconds(500);
    start(agent_options);
    ASSERT_TRUE(pilot_gone());
    ASSERT_TRUE(agent_->failure());
    EXPECT_THAT(*agent_->failure(), HasSubstr("no CRM reachable"));
}

TEST_F(AgentTest, ShutdownFromTheCrmStopsThePilotAndReportsItGone) {
    start(options());
    ASSERT_TRUE(hello(1));
    v1::PilotCommand command;
    command.mutable_shutdown()->set_reason("cluster released");
    ASSERT_TRUE(crm().send(1, command));
    ASSERT_TRUE(pilot_gone());
    const auto gone = crm().wait_for(
        1, [](const auto& report) { return is_status(report, v1::PILOT_STATE_GONE); });
    ASSERT_TRUE(gone);
    EXPECT_EQ(gone->status().reason(), "SHUTDOWN: cluster released");
    EXPECT_TRUE(crm().wait_for(
        1, [](const auto& report) { return is_status(report, v1::PILOT_STATE_STOPPING); }));
    // The pilot half-closes once GONE is out; the agent then ends by itself.
    EXPECT_TRUE(crm().wait_for_end(1));
    const auto started = std::chrono::steady_clock::now();
    agent_->stop(kPatience);
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
    EXPECT_FALSE(agent_->failure());
}

TEST_F(AgentTest, ForwardsTheStopOfThePilotForAnyOtherReason) {
    start(options());
    ASSERT_TRUE(hello(1));
    service_->stop("SIGTERM");
    EXPECT_TRUE(crm().wait_for(
        1, [](const auto& report) { return is_status(report, v1::PILOT_STATE_GONE); }));
    agent_->stop(kPatience);
    EXPECT_FALSE(agent_->failure());
}

TEST_F(AgentTest, StopCancelsAnOpenStreamPromptly) {
    start(options());
    ASSERT_TRUE(hello(1));
    const auto started = std::chrono::steady_clock::now();
    agent_->stop(milliseconds(0));
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
    EXPECT_TRUE(crm().wait_for_end(1));
    EXPECT_EQ(service_->status().state(), v1::PILOT_STATE_NEW) << "the pilot itself goes on";
}

TEST_F(AgentTest, StopIsPromptWhileNoCrmIsReachable) {
    server_.reset();
    AgentOptions agent_options = options();
    agent_options.target = "unix:" + (temp_.path() / "nobody.sock").string();
    agent_options.first_retry = milliseconds(5'000);
    start(agent_options);
    std::this_thread::sleep_for(milliseconds(300));
    const auto started = std::chrono::steady_clock::now();
    agent_->stop(milliseconds(0));
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
}

}  // namespace
}  // namespace vcpilot::pilot
