// The job's way to Slurm. A task of a --vc job sees only lo and the overlay, so an `srun` run
// inside the job (a batch script's steps, Open MPI's Slurm launcher starting its orted) cannot
// reach slurmctld or slurmd, nor could slurmstepd connect back to it. Inside the job, `srun` is
// vc-srun (bound over the real one in the job's mount namespace): it hands its arguments,
// environment, working directory and standard streams over a unix socket to this relay, which
// runs the real srun as the job's user in the node's own network namespace, passes signals on
// and returns srun's exit status. The step srun starts is a step of the job like any other:
// its tasks join the job's virtual nodes (SPANK task_init_privileged).
//
// What runs outside is srun alone, as the job's user, with Slurm's own configuration: the
// loader variables (LD_*), SLURM_CONF, SLURM_PROLOG and SLURM_EPILOG of the request are
// dropped, and --prolog/--epilog (commands srun would run right here) are refused. Inside the
// job, Slurm's node lists name virtual nodes; the nodes srun is given (-w, -x, SLURM_*NODELIST)
// are turned back into Slurm's names (srun_args.hpp).
//
// Each srun has a thread of the relay while it runs, and no longer. At most `max_sessions` run
// at once; the next vc-srun waits in connect() until one ends, as a full listen queue makes it.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <filesystem>
#include <list>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.hpp"
#include "common/node_names.hpp"
#include "common/result.hpp"
#include "pilot/privileged/files.hpp"

namespace vcpilot::pilot {

struct SrunRelaySpec {
    std::filesystem::path socket;  // made here, owned by the job user, mode 0600
    std::filesystem::path srun;    // the real srun
    std::string user;
    uid_t uid = 0;
    gid_t gid = 0;
    std::string slurm_conf;          // SLURM_CONF for srun; empty: srun's default
    std::size_t max_sessions = 256;  // sruns relayed at once
};

class SrunRelay {
  public:
    static Result<std::unique_ptr<SrunRelay>> start(SrunRelaySpec spec);
    // Stops accepting, sends SIGTERM to every srun still running and waits for them (srun
    // cancels its step on SIGTERM), then removes the socket.
    ~SrunRelay();
    SrunRelay(const SrunRelay&) = delete;
    SrunRelay& operator=(const SrunRelay&) = delete;

    // The job's nodes' Slurm names by their virtual names: srun's -w/--nodelist and
    // -x/--exclude, and the Slurm node variables of its environment, name virtual nodes inside
    // the job and are turned back for the real srun (srun_args.hpp). Takes effect with the next
    // srun.
    void set_slurm_names(NameMap to_slurm);

    // Sessions whose thread has not been joined yet: the running ones, and any that ended
    // since the relay last looked.
    std::size_t sessions() const;

  private:
    struct Session {
        std::thread thread;
        bool ended = false;
    };

    SrunRelay(SrunRelaySpec spec, UniqueFd listener, UniqueFd stop_read, UniqueFd stop_write,
              UniqueFd ended, std::vector<gid_t> groups);
    void accept_loop();
    // Joins the sessions that have ended; returns how many are left.
    std::size_t join_ended();
    std::shared_ptr<const NameMap> slurm_names() const;
    void serve(UniqueFd connection);

    SrunRelaySpec spec_;
    UniqueFd listener_;
    UniqueFd stop_read_;
    UniqueFd stop_write_;
    UniqueFd ended_;  // an eventfd: a session has ended
    std::vector<gid_t> groups_;
    std::atomic<bool> stopping_{false};
    mutable std::mutex mutex_;
    std::set<pid_t> running_;
    std::list<Session> sessions_;
    std::shared_ptr<const NameMap> slurm_names_ = std::make_shared<const NameMap>();
    std::thread acceptor_;
};

}  // namespace vcpilot::pilot
