// vc-crmd's side of the GRC (a site with a GRC only): one stream to the GRC, kept open by a
// thread of its own; what goes up it on connecting (node reports after each commit go up from
// after_batch, in crm.cpp), and the GRC's commands that come down it (assignments, views,
// releases, commands to run).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/text.hpp"
#include "crm/impl.hpp"

namespace vcpilot::coordinator {

// ---- the GRC's side ----

// Connected: the hello names every GRC cluster held here; every node of them is reported again
// (the GRC may have missed changes while the stream was down).
Status CrmServer::Impl::uplink_up(const Uplink& outbox, Effects& effects) {
    if (!outbox->open()) {
        return {};  // the stream ended already (its uplink_down came first): nothing is up
    }
    auto clusters = store.in_states({v1::CLUSTER_STATE_PENDING, v1::CLUSTER_STATE_READY,
                                     v1::CLUSTER_STATE_FAILED, v1::CLUSTER_STATE_RELEASING});
    if (!clusters) {
        return clusters.error();
    }
    v1::SiteReport hello;
    hello.mutable_hello()->set_site(options.site);
    hello.mutable_hello()->set_behind_nat(options.behind_nat);
    std::vector<v1::SiteReport> jobs;  // the pilot jobs of GRC clusters, told again
    for (const auto& cluster : *clusters) {
        if (!from_grc(cluster)) {
            continue;
        }
        hello.mutable_hello()->add_clusters(cluster.id);
        for (std::uint32_t ordinal = 1; ordinal <= cluster.node_count(); ++ordinal) {
            report(cluster.id, ordinal);
        }
        if (const SiteRecord* site = site_of(cluster, options.site);
            site != nullptr && !site->pilot_job.empty()) {
            jobs.push_back(pilot_job_report(cluster.id, site->pilot_job));
        }
    }
    uplink = outbox;
    effects.push_back([outbox, hello, jobs = std::move(jobs)] {
        outbox->send(hello);
        for (const auto& job : jobs) {
            outbox->send(job);
        }
    });
    spdlog::info("connected to the GRC; {} GRC cluster(s) held here",
                 hello.hello().clusters_size());
    return {};
}

void CrmServer::Impl::uplink_down(const Uplink& outbox, Effects& effects) {
    if (uplink != outbox) {
        return;
    }
    uplink.reset();
    // Commands relayed for the GRC have no one left to answer.
    for (auto it = commands.begin(); it != commands.end();) {
        if (it->second.pending.empty() || !it->second.deliver) {
            it = commands.erase(it);
        } else {
            ++it;
        }
    }
    (void)effects;
}

Status CrmServer::Impl::assign(const v1::SiteAssignment& assignment, Effects& effects) {
    if (assignment.site() != options.site) {
        return Error{fmt::format("assignment of cluster {} is for site {}, this is site {}",
                                 quote(assignment.cluster_id(), 80), quote(assignment.site(), 80),
                                 options.site)};
    }
    if (auto ok = store.adopt(assignment); !ok) {
        return Error{fmt::format("assignment of cluster {}: {}", quote(assignment.cluster_id(), 80),
                                 ok.error().message)};
    }
    dirty.insert(assignment.cluster_id());
    v1::SiteReport assigned;
    assigned.set_assigned(assignment.cluster_id());
    effects.push_back([outbox = uplink, assigned] {
        if (outbox) {
            outbox->send(assigned);
        }
    });
    auto found = store.find(assignment.cluster_id());
    if (!found || !*found) {
        return found ? Status{Error{"the assigned cluster vanished"}} : Status{found.error()};
    }
    return want_pilot_job(**found, effects);
}

Status CrmServer::Impl::view(const v1::SiteClusterView& view, Effects& effects) {
    auto found = store.find(view.cluster_id());
    if (!found) {
        return found.error();
    }
    if (!*found || !from_grc(**found) || (*found)->state == v1::CLUSTER_STATE_RELEASED ||
        (*found)->state == v1::CLUSTER_STATE_RELEASING) {
        return {};  // a view of a cluster that is over here: nothing to do
    }
    if (view.common().cluster_id() != view.cluster_id()) {
        return Error{fmt::format("the view of cluster {} names cluster {}",
                                 quote(view.cluster_id(), 80),
                                 quote(view.common().cluster_id(), 80))};
    }
    grc_views[view.cluster_id()] = view;
    dirty.insert(view.cluster_id());
    if (auto ok = send_views(**found, effects); !ok) {
        return ok;
    }
    return settle(**found);
}

Status CrmServer::Impl::release_from_grc(const std::string& id, Effects& effects) {
    auto found = store.find(id);
    if (!found) {
        return found.error();
    }
    if (!*found || (*found)->state == v1::CLUSTER_STATE_RELEASED || !from_grc(**found)) {
        v1::SiteReport released;
        released.set_released(id);
        effects.push_back([outbox = uplink, released] {
            if (outbox) {
                outbox->send(released);
            }
        });
        return {};
    }
    if ((*found)->state == v1::CLUSTER_STATE_RELEASING) {
        return {};
    }
    return begin_release(**found, "released by the GRC", effects);
}

Status CrmServer::Impl::run_from_grc(const v1::SiteCommandRequest& request, Effects& effects) {
    auto outbox = uplink;
    const std::uint64_t grc_request = request.request();
    auto answer = [outbox, grc_request](std::string node, std::string error) {
        v1::SiteReport failed;
        auto* out = failed.mutable_output();
        out->set_request(grc_request);
        out->mutable_output()->set_node(std::move(node));
        out->mutable_output()->mutable_output()->set_stderr(std::move(error));
        v1::SiteReport last;
        last.mutable_output()->set_request(grc_request);
        last.mutable_output()->set_last(true);
        return [outbox, failed, last] {
            if (outbox) {
                outbox->send(failed);
                outbox->send(last);
            }
        };
    };
    auto found = store.find(request.cluster_id());
    if (!found) {
        return found.error();
    }
    if (!*found || !from_grc(**found) || request.command().argv().empty()) {
        effects.push_back(
            answer(options.site, fmt::format("vcpilot: site {} cannot run it\n", options.site)));
        return {};
    }
    Command command;
    command.deliver = [outbox, grc_request](const v1::NodeOutput& output) {
        v1::SiteReport report;
        report.mutable_output()->set_request(grc_request);
        *report.mutable_output()->mutable_output() = output;
        if (outbox) {
            outbox->send(std::move(report));
        }
    };
    command.done = [outbox, grc_request] {
        v1::SiteReport report;
        report.mutable_output()->set_request(grc_request);
        report.mutable_output()->set_last(true);
        if (outbox) {
            outbox->send(std::move(report));
        }
    };
    if (auto ok = start_command(**found, request.command(), request.as_root(),
                                request.first_node_only(), std::move(command), effects);
        !ok) {
        effects.push_back(answer(options.site, "vcpilot: " + ok.error().message + "\n"));
    }
    return {};
}

namespace {

// What the uplink thread and one stream's reactor share; it outlives both.
struct UplinkCall {
    grpc::ClientContext context;
    bool done = false;  // under the CRM's uplink_mutex
    grpc::Status status;
    std::atomic<bool> heard_back{false};
};

// The CRM's end of Grc.Connect. Deletes itself when the stream is over.
class GrcUplink final : public grpc::ClientBidiReactor<v1::SiteReport, v1::SiteCommand> {
  public:
    GrcUplink(CrmServer::Impl& crm, v1::Grc::Stub& stub, std::shared_ptr<UplinkCall> call)
        : crm_(crm),
          call_(std::move(call)),
          outbox_(std::make_shared<Outbox<v1::SiteReport>>(
              [this](const v1::SiteReport* m) { StartWrite(m); }, [](const grpc::Status&) {})) {
        // Once the call is started, OnDone may run (the GRC refused the connection) and delete
        // this reactor before the constructor returns: nothing below StartCall may touch it.
        CrmServer::Impl* const crm_impl = &crm_;
        const auto outbox = outbox_;
        stub.async()->Connect(&call_->context, this);
        AddHold();  // the writer thread writes from outside the reactions
        StartRead(&in_);
        StartCall();
        crm_impl->post(
            {[crm_impl, outbox](Effects& effects) { return crm_impl->uplink_up(outbox, effects); },
             {}});
    }

    void OnReadDone(bool ok) override {
        if (!ok) {
            outbox_->finish(grpc::Status::OK);  // nothing more is written
            RemoveHold();
            return;
        }
        call_->heard_back = true;
        v1::SiteCommand command = std::move(in_);
        crm_.post({[crm = &crm_, command](Effects& effects) -> Status {
                       switch (command.command_case()) {
                           case v1::SiteCommand::kAssign:
                               return crm->assign(command.assign(), effects);
                           case v1::SiteCommand::kView:
                               return crm->view(command.view(), effects);
                           case v1::SiteCommand::kRelease:
                               return crm->release_from_grc(command.release(), effects);
                           case v1::SiteCommand::kRun:
                               return crm->run_from_grc(command.run(), effects);
                           default:
                               return Error{"a GRC command of an unknown kind"};
                       }
                   },
                   [](const Status& status) {
                       if (!status) {
                           spdlog::warn("GRC: {}", status.error().message);
                       }
                   }});
        StartRead(&in_);
    }

    void OnWriteDone(bool ok) override { outbox_->write_done(ok); }

    void OnDone(const grpc::Status& status) override {
        outbox_->gone();
        crm_.post({[crm = &crm_, outbox = outbox_](Effects& effects) -> Status {
                       crm->uplink_down(outbox, effects);
                       return {};
                   },
                   {}});
        CrmServer::Impl& crm = crm_;
        std::shared_ptr<UplinkCall> call = std::move(call_);
        delete this;
        // Under the lock to the end: once run_uplink sees `done` it may return, and the CRM be
        // destroyed (on stop), with its mutex and condition variable. It also holds the last
        // reference to the call, so that the call's context goes with the uplink's thread.
        std::lock_guard lock(crm.uplink_mutex);
        call->status = status;
        call->done = true;
        call.reset();
        crm.uplink_changed.notify_all();
    }

  private:
    CrmServer::Impl& crm_;
    std::shared_ptr<UplinkCall> call_;
    std::shared_ptr<Outbox<v1::SiteReport>> outbox_;
    v1::SiteCommand in_;
};

}  // namespace

// Keeps one stream to the GRC open: on a break, waits (0.2 s, doubling up to 5 s; back to
// 0.2 s after a stream that worked) and connects again, until the CRM stops.
void CrmServer::Impl::run_uplink() {
    const auto& grc = *options.grc;
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = grc.tls_ca;
    tls.pem_cert_chain = grc.tls_cert;
    tls.pem_private_key = grc.tls_key;
    grpc::ChannelArguments arguments;
    arguments.SetMaxReceiveMessageSize(kMaxCoordinatorMessage);
    arguments.SetMaxSendMessageSize(kMaxCoordinatorMessage);
    auto channel = grpc::CreateCustomChannel(grc.target, grpc::SslCredentials(tls), arguments);
    auto stub = v1::Grc::NewStub(channel);
    auto backoff = std::chrono::milliseconds(200);
    std::string last_error;
    std::unique_lock lock(uplink_mutex);
    while (!uplink_stopping) {
        auto call = std::make_shared<UplinkCall>();
        lock.unlock();
        new GrcUplink(*this, *stub, call);
        lock.lock();
        uplink_changed.wait(lock, [&] { return uplink_stopping || call->done; });
        if (!call->done) {
            lock.unlock();
            call->context.TryCancel();
            lock.lock();
            uplink_changed.wait(lock, [&] { return call->done; });
            return;
        }
        if (call->heard_back) {
            backoff = std::chrono::milliseconds(200);
        }
        const std::string error = call->status.error_message();
        if (error != last_error) {
            spdlog::warn("the stream to the GRC at {} ended: {}; connecting again", grc.target,
                         error.empty() ? "no reason given" : error);
            last_error = error;
        }
        if (uplink_changed.wait_for(lock, backoff, [this] { return uplink_stopping; })) {
            return;
        }
        backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
    }
}

}  // namespace vcpilot::coordinator
