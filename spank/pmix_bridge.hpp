// srun --mpi=pmix in a --vc job. Slurm's PMIx server runs in slurmstepd and listens on the
// node's loopback (PMIX_SERVER_URI41="pmix-server.PID;tcp4://127.0.0.1:PORT"), which a task in
// the job's network namespace cannot reach: its 127.0.0.1 is the job's own. The bridge carries
// those connections across, and nothing else:
//
// - the connector, started by a task before it joins the job's namespaces, stays in the node's
//   network as the job's user; for every port it is sent on its channel it connects to
//   127.0.0.1:PORT there and sends the connected socket back;
// - the relay, started once the task knows the server's port (Slurm sets PMIX_* after
//   task_init_privileged), listens on 127.0.0.1:PORT in the job's network and joins each
//   connection it accepts to a socket from the connector.
//
// Both are children of the task and end with it (PR_SET_PDEATHSIG), or when their channel
// closes. They hold none of the task's descriptors, so srun sees the task's output end when
// the task's does. Of several tasks on one node, the first one's relay listens; the others
// find the port taken and leave it to that one.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string_view>

#include "common/fd.hpp"
#include "common/result.hpp"

namespace vcpilot::spank {

// The port of a PMIx server URI on the IPv4 loopback; none for anything else.
std::optional<std::uint16_t> pmix_loopback_port(std::string_view uri);

// Starts the connector on `channel` (one end of a socketpair) as uid/gid; returns its pid. It
// connects only to the ports on which `server` (the step's slurmstepd) listens on 127.0.0.1
// when it starts, read while it is still root: the job's user, who can reach the relay, can
// not make it reach any other service on the node's loopback (nor another job's server).
Result<pid_t> start_pmix_connector(UniqueFd channel, pid_t server, uid_t uid, gid_t gid);

// What the relay asks the connector at the other end of `channel`: a socket connected to
// 127.0.0.1:port in the node's network; -1 if refused or unreachable, -2 if the connector is
// gone.
int pmix_connector_socket(int channel, std::uint16_t port);

// Starts the relay for `port` in the caller's network namespace, with the connector at the
// other end of `channel`; returns once it listens. nullopt: the port is already taken here (the
// relay of another task of the step).
Result<std::optional<pid_t>> start_pmix_relay(std::uint16_t port, UniqueFd channel);

}  // namespace vcpilot::spank
