// The cluster methods that the CRM and the GRC answer alike (ListClusters, GetCluster,
// WatchCluster, and the lookup of a caller's cluster under ReleaseCluster), given the caller as
// each coordinator authenticates it (MUNGE at the CRM, a TLS certificate at the GRC).
//
// `Core` is the coordinator's writer-side state: post(Work), store, owned_cluster(id, caller)
// and watchers. Everything the bodies do runs on its writer thread.
#pragma once

#include <grpcpp/grpcpp.h>
#include <memory>
#include <string>

#include "common/result.hpp"
#include "coordinator/auth.hpp"
#include "coordinator/cluster_view.hpp"
#include "coordinator/writer.hpp"
#include "vcpilot/v1/coordinator.pb.h"

namespace vcpilot::coordinator {

template <typename Core>
grpc::ServerUnaryReactor* list_clusters(Core& core, grpc::CallbackServerContext* context,
                                        const Result<Caller>& caller,
                                        const v1::ListClustersRequest& request,
                                        v1::ListClustersResponse* response) {
    auto* reactor = context->DefaultReactor();
    if (!caller) {
        reactor->Finish({grpc::StatusCode::UNAUTHENTICATED, caller.error().message});
        return reactor;
    }
    if (request.all() && !caller->is_root()) {
        reactor->Finish(
            {grpc::StatusCode::PERMISSION_DENIED, "only root may list every user's clusters"});
        return reactor;
    }
    core.post({[core = &core, response, all = request.all(), caller = *caller](Effects&) -> Status {
                   auto clusters = core->store.list(all ? "" : caller.name, false);
                   if (!clusters) {
                       return clusters.error();
                   }
                   for (const auto& cluster : *clusters) {
                       auto described = describe_cluster(core->store, cluster, false);
                       if (!described) {
                           return described.error();
                       }
                       *response->add_clusters() = std::move(*described);
                   }
                   return {};
               },
               [reactor](const Status& status) {
                   reactor->Finish(to_grpc(grpc::StatusCode::INTERNAL, status));
               }});
    return reactor;
}

// Runs body(cluster, effects) on the caller's cluster `id`. Someone else's cluster is answered
// NOT_FOUND exactly like a missing one; a failing body, FAILED_PRECONDITION.
template <typename Core, typename Body>
grpc::ServerUnaryReactor* lookup_cluster(Core& core, grpc::CallbackServerContext* context,
                                         const Result<Caller>& caller, const std::string& id,
                                         Body body) {
    auto* reactor = context->DefaultReactor();
    if (!caller) {
        reactor->Finish({grpc::StatusCode::UNAUTHENTICATED, caller.error().message});
        return reactor;
    }
    auto not_found = std::make_shared<bool>(false);
    core.post({[core = &core, id, caller = *caller, body, not_found](Effects& effects) -> Status {
                   auto cluster = core->owned_cluster(id, caller);
                   if (!cluster) {
                       *not_found = true;
                       return cluster.error();
                   }
                   return body(*cluster, effects);
               },
               [reactor, not_found](const Status& status) {
                   reactor->Finish(to_grpc(*not_found ? grpc::StatusCode::NOT_FOUND
                                                      : grpc::StatusCode::FAILED_PRECONDITION,
                                           status));
               }});
    return reactor;
}

template <typename Core>
grpc::ServerUnaryReactor* get_cluster(Core& core, grpc::CallbackServerContext* context,
                                      const Result<Caller>& caller, const std::string& id,
                                      v1::Cluster* response) {
    return lookup_cluster(core, context, caller, id,
                          [core = &core, response](ClusterRecord& cluster, Effects&) -> Status {
                              auto described = describe_cluster(core->store, cluster, true);
                              if (!described) {
                                  return described.error();
                              }
                              *response = std::move(*described);
                              return {};
                          });
}

// The cluster as it is now, without its nodes (ReleaseCluster's answer).
inline Status describe_current(ClusterStore& store, const std::string& id, v1::Cluster* response) {
    auto again = store.find(id);
    if (!again || !*again) {
        return again ? Status{Error{"the cluster vanished"}} : Status{again.error()};
    }
    auto described = describe_cluster(store, **again, false);
    if (!described) {
        return described.error();
    }
    *response = std::move(*described);
    return {};
}

template <typename Core>
grpc::ServerWriteReactor<v1::Cluster>* watch_cluster(Core& core, const Result<Caller>& caller,
                                                     const std::string& id) {
    auto* reactor = new WriterReactor<v1::Cluster>();
    auto link = reactor->link();
    if (!caller) {
        link->outbox->finish({grpc::StatusCode::UNAUTHENTICATED, caller.error().message});
        return reactor;
    }
    core.post({[core = &core, link, id, caller = *caller](Effects&) -> Status {
                   auto cluster = core->owned_cluster(id, caller);
                   if (!cluster) {
                       return cluster.error();
                   }
                   return core->watchers.add(core->store, *cluster, link);
               },
               [link](const Status& status) {
                   if (!status) {
                       link->outbox->finish({grpc::StatusCode::NOT_FOUND, status.error().message});
                   }
               }});
    return reactor;
}

}  // namespace vcpilot::coordinator
