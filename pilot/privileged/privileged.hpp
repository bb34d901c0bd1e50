// The pilot's privileged core: every step of a job's node that needs root, and nothing else.
//
// What it may do, each in the file named after it:
//   namespaces  unshare the job's network, mount and UTS namespaces in a holder thread, set the
//               job's hostname, and end them (and kill what is left inside them) at teardown;
//   net         create the job's VXLAN link from the node's namespace directly inside the job's
//               (or move n2n's TAP device there), with its addresses, routes, FDB and
//               neighbour entries;
//   mounts      build the job's view of the filesystem inside the job's mount namespace (overlay
//               over /etc, private ~/.ssh and /tmp, an image layer);
//   seccomp     build the filter that keeps job processes inside their namespaces;
//   spawn       start a command as the job user, in the job's namespaces, under that filter;
//   keys        generate the job's SSH host and user keys and write them, 0600, under the run
//               directory or the user's private ~/.ssh;
//   sshd        run an `sshd -i` per connection to the job address;
//   files, paths, launcher
//               write files safely where the user may also write, know where a job's run
//               directory is, and start long-lived children from a thread that lives as long
//               as the pilot.
// It never changes the host's interfaces, routes, mount table or files, other than under the
// job's run directory (paths.hpp); every step leaves nothing behind when it fails.
//
// What it must never trust: anything that came over a socket or from the job user. The callers
// (service.cpp, agent.cpp, srun_relay.cpp, the folder above) parse and validate every request
// first (validate.hpp, view.hpp) and pass this core only checked plans: names that are
// hostnames, addresses inside the cluster's blocks, paths under allowed roots, keys that parse,
// a user looked up in this node's passwd database. Even so, the core opens what lies in
// directories the user can write without following links (O_NOFOLLOW, openat2 with
// RESOLVE_NO_SYMLINKS or /proc/thread-self/fd), and takes the user's uid and gids
// (setresgid/setresuid) before it runs anything of the user's.
//
// This is the narrow interface a later privilege split (bubblewrap's privileged_op) would put
// behind a socket: the rest of the pilot then runs unprivileged. It includes no protocol code.
#pragma once

#include "pilot/privileged/files.hpp"
#include "pilot/privileged/keys.hpp"
#include "pilot/privileged/launcher.hpp"
#include "pilot/privileged/mounts.hpp"
#include "pilot/privileged/namespaces.hpp"
#include "pilot/privileged/net.hpp"
#include "pilot/privileged/paths.hpp"
#include "pilot/privileged/seccomp.hpp"
#include "pilot/privileged/spawn.hpp"
#include "pilot/privileged/sshd.hpp"
