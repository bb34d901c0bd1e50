// Where a pilot keeps what it makes for one job on one node. Everything of the job lives under
// one directory, so that teardown and `vc-pilot cleanup` find all of it from the job id alone,
// even after the pilot was killed.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace vcpilot::pilot {

inline constexpr std::string_view kDefaultRunBase = "/run/vcpilot";

// A Slurm job id or a cluster id: [A-Za-z0-9_.-], 1..64 characters, not "." or "..".
Status check_job_id(std::string_view field, std::string_view id);
// A hostname label (RFC 1123): [a-z0-9-], 1..63, no leading or trailing '-'; lower case only,
// so that a name and its /etc/hosts entry never differ by case.
Status check_host_label(std::string_view field, std::string_view name);

class JobPaths {
  public:
    // <base>/<node>/<job>; `node` is the underlay node's name (several testbed nodes share
    // one filesystem), `job` the job id.
    static Result<JobPaths> make(const std::filesystem::path& base, std::string_view node,
                                 std::string_view job);

    const std::filesystem::path& root() const { return root_; }
    std::filesystem::path socket() const { return root_ / "pilot.sock"; }
    std::filesystem::path state_file() const { return root_ / "state.json"; }
    // The holder of the job's namespaces: its thread id and the namespaces' inode numbers, so
    // that teardown finds every process inside them even after the pilot and the holder are gone.
    std::filesystem::path namespaces_file() const { return root_ / "namespaces"; }
    // Upper and work directories of the overlay mounted over /etc inside the job.
    std::filesystem::path etc_upper() const { return root_ / "etc" / "upper"; }
    std::filesystem::path etc_work() const { return root_ / "etc" / "work"; }
    // The job user's per-job ~/.ssh (keys, authorized_keys, known_hosts), owned by the user.
    std::filesystem::path user_ssh_dir() const { return root_ / "home-ssh"; }
    // sshd's host key, config and log, root-only.
    std::filesystem::path sshd_dir() const { return root_ / "sshd"; }
    std::filesystem::path host_key() const { return sshd_dir() / "ssh_host_ed25519_key"; }
    // Certificate mode: the host key's certificate, where sshd and ssh-keygen look for it, and
    // the cluster CA that sshd trusts for users.
    std::filesystem::path host_certificate() const {
        return sshd_dir() / "ssh_host_ed25519_key-cert.pub";
    }
    std::filesystem::path trusted_user_ca_keys() const {
        return sshd_dir() / "trusted_user_ca_keys";
    }
    // The job user's per-job key and, in certificate mode, its certificate, which ssh loads by
    // itself from next to the key.
    std::filesystem::path user_key() const { return user_ssh_dir() / "id_ed25519"; }
    std::filesystem::path user_certificate() const {
        return user_ssh_dir() / "id_ed25519-cert.pub";
    }
    // Files the job reads: hostfile, node list, hosts.
    std::filesystem::path job_files_dir() const { return root_ / "job"; }
    // The job's /etc/hosts, which is a symlink to this file (prepare_job_mounts).
    std::filesystem::path hosts_file() const { return job_files_dir() / "hosts"; }

    const std::string& node() const { return node_; }
    const std::string& job() const { return job_; }

  private:
    JobPaths(std::filesystem::path root, std::string node, std::string job)
        : root_(std::move(root)), node_(std::move(node)), job_(std::move(job)) {}

    std::filesystem::path root_;
    std::string node_;
    std::string job_;
};

}  // namespace vcpilot::pilot
