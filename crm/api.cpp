// vc-crmd's Crm service (see proto/vcpilot/v1/coordinator.proto): pilots' Attach streams and
// the cluster methods users call. Reactors authenticate and parse; everything else is posted to
// the writer thread.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/munge.hpp"
#include "coordinator/auth.hpp"
#include "coordinator/cluster_methods.hpp"
#include "crm/impl.hpp"

namespace vcpilot::coordinator {

// ---- the service ----

namespace {

class AttachReactor final : public grpc::ServerBidiReactor<v1::PilotReport, v1::PilotCommand> {
  public:
    AttachReactor(CrmServer::Impl& crm, grpc::CallbackServerContext* context)
        : crm_(crm),
          context_(context),
          outbox_(std::make_shared<Outbox<v1::PilotCommand>>(
              [this](const v1::PilotCommand* c) { StartWrite(c); },
              [this](const grpc::Status& s) { Finish(s); })),
          link_(std::make_shared<PilotLink>(outbox_)) {
        StartRead(&in_);
    }

    void OnReadDone(bool ok) override {
        if (!ok) {
            outbox_->finish(grpc::Status::OK);
            return;
        }
        if (!hello_seen_) {
            if (in_.report_case() != v1::PilotReport::kHello) {
                outbox_->finish({grpc::StatusCode::INVALID_ARGUMENT,
                                 "the first message of a pilot must be its hello"});
                return;
            }
            hello_seen_ = true;
            auto underlay = authenticate(in_.hello());
            if (!underlay) {
                spdlog::warn("pilot refused: {}", underlay.error().message);
                outbox_->finish({grpc::StatusCode::UNAUTHENTICATED, underlay.error().message});
                return;
            }
            auto link = link_;
            v1::PilotHello hello = in_.hello();
            crm_.post({[crm = &crm_, link, hello, address = *underlay](auto& effects) {
                           return crm->hello(link, hello, address, effects);
                       },
                       [link](const Status& status) {
                           if (!status) {
                               link->outbox->finish(
                                   {grpc::StatusCode::FAILED_PRECONDITION, status.error().message});
                           }
                       }});
        } else {
            auto link = link_;
            v1::PilotReport report = in_;
            crm_.post({[crm = &crm_, link, report](auto& effects) -> Status {
                           switch (report.report_case()) {
                               case v1::PilotReport::kKeys:
                                   return crm->keys(link, report.keys(), effects);
                               case v1::PilotReport::kStatus:
                                   return crm->pilot_status(link, report.status(), effects);
                               case v1::PilotReport::kOutput:
                                   crm->pilot_output(link, report.output(), effects);
                                   return {};
                               default:
                                   return Error{"a pilot report of an unknown kind"};
                           }
                       },
                       [link](const Status& status) {
                           if (!status) {
                               spdlog::warn("pilot {} (job {}): {}", link->host, link->job,
                                            status.error().message);
                               link->outbox->finish(
                                   {grpc::StatusCode::INVALID_ARGUMENT, status.error().message});
                           }
                       }});
        }
        StartRead(&in_);
    }

    void OnWriteDone(bool ok) override { outbox_->write_done(ok); }

    void OnDone() override {
        outbox_->gone();
        auto link = link_;
        // The link outlives this reactor in the writer's maps; its outbox pointer must not.
        crm_.post({[crm = &crm_, link](auto& effects) { return crm->closed(link, effects); }, {}});
        delete this;
    }

  private:
    // The MUNGE credential must be root's, bound to this very hello; over TCP, the peer must be
    // the host it claims to be. Returns the pilot's underlay address.
    Result<std::string> authenticate(const v1::PilotHello& hello) {
        for (auto [field, value] :
             {std::pair{"cluster_id", &hello.cluster_id()}, std::pair{"host", &hello.host()},
              std::pair{"job_id", &hello.job_id()}}) {
            if (value->empty() || value->size() > 255 ||
                value->find_first_of(std::string_view("\n\0", 2)) != std::string::npos) {
                return Error{fmt::format("hello: {} is empty, too long or not one line", field)};
            }
        }
        auto identity = munge_decode(hello.munge_credential(), crm_.options.munge_socket);
        if (!identity) {
            return identity.error();
        }
        if (identity->uid != 0) {
            return Error{
                fmt::format("the pilot's MUNGE credential is of uid {}, not root", identity->uid)};
        }
        const std::string expected = fmt::format("vcpilot-attach\n{}\n{}\n{}", hello.cluster_id(),
                                                 hello.host(), hello.job_id());
        if (identity->payload != expected) {
            return Error{"the MUNGE credential was made for another attachment"};
        }
        auto peer = peer_address(context_->peer());
        if (!peer) {
            if (hello.underlay_address().empty()) {
                return Error{"hello: underlay_address is needed on a local socket"};
            }
            auto given = IpAddress::parse(hello.underlay_address());
            if (!given) {
                return Error{"hello: underlay_address: " + given.error().message};
            }
            return given->to_string();
        }
        if (crm_.options.check_pilot_address) {
            if (auto ok = host_has_address(hello.host(), *peer); !ok) {
                return ok.error();
            }
        }
        if (!hello.underlay_address().empty()) {
            auto given = IpAddress::parse(hello.underlay_address());
            if (!given) {
                return Error{"hello: underlay_address: " + given.error().message};
            }
            return given->to_string();
        }
        return peer->to_string();
    }

    CrmServer::Impl& crm_;
    grpc::CallbackServerContext* context_;
    std::shared_ptr<Outbox<v1::PilotCommand>> outbox_;
    std::shared_ptr<PilotLink> link_;
    v1::PilotReport in_;
    bool hello_seen_ = false;
};

class CrmService final : public v1::Crm::CallbackService {
  public:
    explicit CrmService(CrmServer::Impl& crm) : crm_(crm) {}

    grpc::ServerBidiReactor<v1::PilotReport, v1::PilotCommand>* Attach(
        grpc::CallbackServerContext* context) override {
        return new AttachReactor(crm_, context);
    }

    grpc::ServerUnaryReactor* CreateCluster(grpc::CallbackServerContext* context,
                                            const v1::CreateClusterRequest* request,
                                            v1::Cluster* response) override {
        auto* reactor = context->DefaultReactor();
        auto caller = caller_of(context, "CreateCluster");
        if (!caller) {
            reactor->Finish({grpc::StatusCode::UNAUTHENTICATED, caller.error().message});
            return reactor;
        }
        auto spec = crm_.check_create(*request, *caller);
        if (!spec) {
            reactor->Finish({grpc::StatusCode::INVALID_ARGUMENT, spec.error().message});
            return reactor;
        }
        crm_.post({[crm = &crm_, spec = *spec, response](Effects& effects) -> Status {
                       auto created = crm->create(spec, effects);
                       if (!created) {
                           return created.error();
                       }
                       crm->dirty.insert(created->id);
                       auto described = describe_cluster(crm->store, *created, true);
                       if (!described) {
                           return described.error();
                       }
                       *response = std::move(*described);
                       return {};
                   },
                   [reactor](const Status& status) {
                       reactor->Finish(to_grpc(grpc::StatusCode::FAILED_PRECONDITION, status));
                   }});
        return reactor;
    }

    grpc::ServerUnaryReactor* ListClusters(grpc::CallbackServerContext* context,
                                           const v1::ListClustersRequest* request,
                                           v1::ListClustersResponse* response) override {
        return list_clusters(crm_, context, caller_of(context, "ListClusters"), *request, response);
    }

    grpc::ServerUnaryReactor* GetCluster(grpc::CallbackServerContext* context,
                                         const v1::ClusterRef* request,
                                         v1::Cluster* response) override {
        return get_cluster(crm_, context, caller_of(context, "GetCluster"), request->id(),
                           response);
    }

    grpc::ServerUnaryReactor* ReleaseCluster(grpc::CallbackServerContext* context,
                                             const v1::ClusterRef* request,
                                             v1::Cluster* response) override {
        return lookup_cluster(
            crm_, context, caller_of(context, "ReleaseCluster"), request->id(),
            [this, response](ClusterRecord& cluster, Effects& effects) -> Status {
                if (from_grc(cluster)) {
                    return Error{fmt::format(
                        "cluster {} spans sites and belongs to the GRC: release it there "
                        "(vcctl --grc ... release {})",
                        cluster.id, cluster.id)};
                }
                if (cluster.state != v1::CLUSTER_STATE_RELEASED &&
                    cluster.state != v1::CLUSTER_STATE_RELEASING) {
                    if (auto ok = crm_.begin_release(cluster, "released by its owner", effects);
                        !ok) {
                        return ok;
                    }
                }
                return describe_current(crm_.store, cluster.id, response);
            });
    }

    grpc::ServerWriteReactor<v1::Cluster>* WatchCluster(grpc::CallbackServerContext* context,
                                                        const v1::ClusterRef* request) override {
        return watch_cluster(crm_, caller_of(context, "WatchCluster"), request->id());
    }

    grpc::ServerWriteReactor<v1::NodeOutput>* Run(
        grpc::CallbackServerContext* context, const v1::ClusterCommandRequest* request) override {
        return command(context, "Run", *request, false);
    }

    grpc::ServerWriteReactor<v1::NodeOutput>* Exec(
        grpc::CallbackServerContext* context, const v1::ClusterCommandRequest* request) override {
        return command(context, "Exec", *request, true);
    }

  private:
    Result<Caller> caller_of(grpc::CallbackServerContext* context, std::string_view method) {
        return munge_caller(*context, method, crm_.options.munge_socket);
    }

    grpc::ServerWriteReactor<v1::NodeOutput>* command(grpc::CallbackServerContext* context,
                                                      std::string_view method,
                                                      const v1::ClusterCommandRequest& request,
                                                      bool every_node) {
        auto* reactor = new WriterReactor<v1::NodeOutput>();
        auto link = reactor->link();
        auto caller = caller_of(context, method);
        if (!caller) {
            link->outbox->finish({grpc::StatusCode::UNAUTHENTICATED, caller.error().message});
            return reactor;
        }
        if (request.command().argv().empty()) {
            link->outbox->finish({grpc::StatusCode::INVALID_ARGUMENT, "command: argv is empty"});
            return reactor;
        }
        if (every_node && !caller->is_root()) {
            // EXEC runs as root on every node: only root may ask for it.
            link->outbox->finish({grpc::StatusCode::PERMISSION_DENIED,
                                  "only root may EXEC on a cluster's nodes; use run"});
            return reactor;
        }
        crm_.post({[this, link, request, caller = *caller, every_node](auto& effects) -> Status {
                       auto cluster = crm_.owned_cluster(request.id(), caller);
                       if (!cluster) {
                           return cluster.error();
                       }
                       if (cluster->state != v1::CLUSTER_STATE_READY) {
                           return Error{fmt::format("cluster {} is {}, not READY", cluster->id,
                                                    v1::ClusterState_Name(cluster->state))};
                       }
                       CrmServer::Impl::Command command;
                       command.deliver = [link](const v1::NodeOutput& output) {
                           link->outbox->send(output);
                       };
                       command.done = [link] { link->outbox->finish(grpc::Status::OK); };
                       return crm_.start_command(*cluster, request.command(), every_node,
                                                 !every_node, std::move(command), effects);
                   },
                   [link](const Status& status) {
                       if (!status) {
                           link->outbox->finish(
                               {grpc::StatusCode::FAILED_PRECONDITION, status.error().message});
                       }
                   }});
        return reactor;
    }

    CrmServer::Impl& crm_;
};

}  // namespace

std::unique_ptr<grpc::Service> make_crm_service(CrmServer::Impl& crm) {
    return std::make_unique<CrmService>(crm);
}

}  // namespace vcpilot::coordinator
