// The CRM's hands on its site's Slurm: the pilot job that holds a cluster's nodes at this site
// (PILOT_SOURCE_SLURM) is submitted, found again and cancelled with Slurm's own commands, run
// with a deadline and without a shell. sbatch runs as the cluster's owner (the job is theirs,
// and Slurm's limits and accounting apply to it); squeue and scancel run as root.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace vcpilot::coordinator {

struct SlurmOptions {
    std::filesystem::path bin_dir = "/usr/bin";  // where sbatch, squeue and scancel are
    std::string slurm_conf;                      // SLURM_CONF for them; empty: Slurm's default
    std::chrono::seconds timeout{30};            // for each command
};

// One cluster's share of a site, as its pilot job asks Slurm for it.
struct PilotJobRequest {
    std::string cluster_id;  // also the job's name: how it is found again after a restart
    std::string owner;       // user name; the job runs as them
    std::uint32_t nodes = 0;
    std::uint32_t time_limit_minutes = 0;  // 0: the partition's default
};

// The job sbatch is asked to run: its batch step joins the cluster like every task of a
// --vc-cluster job does, and holds the allocation until the job is cancelled.
std::vector<std::string> pilot_job_arguments(const PilotJobRequest& request);

// Slurm's job id of a line sbatch --parsable printed ("123" or "123;cluster").
Result<std::string> parse_job_id(std::string_view sbatch_output);

class Slurm {
  public:
    explicit Slurm(SlurmOptions options);

    // The owner's queued or running job named after the cluster, if there is one.
    Result<std::optional<std::string>> find_pilot_job(const PilotJobRequest& request) const;
    // Submits the pilot job unless find_pilot_job finds one; returns its id.
    Result<std::string> submit_pilot_job(const PilotJobRequest& request) const;
    // Cancels a job; a job that has ended already is not an error.
    Status cancel(const std::string& job) const;

  private:
    struct Identity {
        uid_t uid = 0;
        gid_t gid = 0;
        std::vector<gid_t> groups;
        std::string name;
        std::string home;
    };
    struct Output {
        int status = 0;
        std::string out, err;
    };
    static Result<Identity> identity_of(const std::string& user);
    Result<Output> run(const std::string& tool, const std::vector<std::string>& args,
                       const std::optional<Identity>& as) const;

    SlurmOptions options_;
};

}  // namespace vcpilot::coordinator
