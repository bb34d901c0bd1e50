// The job's union-mounted view of the node's filesystem: an overlay over /etc whose upper
// layer holds the cluster's files, a per-job ~/.ssh, a private size-limited /tmp and an
// optional image layered read-only over one directory. All of it lives in the job's own mount
// namespace; the host's files and mount table are never changed (the only host-side writes are
// under the job's run directory).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "pilot/privileged/paths.hpp"

namespace vcpilot::pilot {

// Which directory a path led to, once: device and inode.
struct DirectoryIdentity {
    dev_t device = 0;
    ino_t inode = 0;
    bool operator==(const DirectoryIdentity&) const = default;
};

struct JobMountPlan {
    JobPaths paths;
    // The job user: owner of the per-job ~/.ssh.
    uid_t uid = 0;
    gid_t gid = 0;
    // The user's home as the host's passwd has it. Nothing is ever created in it.
    std::filesystem::path home;
    // The virtual node's name, written to /etc/hostname in the upper layer.
    std::string hostname;
    // The ssh client's configuration for the job, /etc/ssh/ssh_config.d/vcpilot.conf in the
    // upper layer. Empty: none.
    std::string ssh_client_config;
    // Size of the private /tmp. At least 1 MiB: tmpfs takes size=0 as "unlimited", and a
    // smaller value is almost certainly a unit mistake.
    std::uint64_t tmp_size_bytes = 0;
    // A directory under one of the allowed image roots, given as its canonical path (no
    // symlinks, "." or ".."), layered read-only over image_mount, which must be an existing
    // directory. Both or neither.
    std::optional<std::filesystem::path> image;
    std::optional<std::filesystem::path> image_mount;
    // The image as the job user opened it (open_image_as_user): the directory layered must be
    // that one, not whatever the path leads to by then. None: not checked (root's own SETUP).
    std::optional<DirectoryIdentity> image_identity;
    // Slurm jobs: vc-srun bound over the real srun, so that srun inside the job goes through
    // the pilot's relay (srun_relay.hpp). Both root-owned files of the host.
    struct SrunShim {
        std::filesystem::path shim;
        std::filesystem::path srun;
    };
    std::optional<SrunShim> srun_shim;
};

inline constexpr std::uint64_t kMinTmpSizeBytes = std::uint64_t{1} << 20;

// Whether the job user may read the image: a child process with the user's uid, gid and
// supplementary groups opens it without following symlinks (so every directory on the way must
// be searchable by the user) and checks that the user may list and enter it. The pilot is root:
// without this a user could have a directory they cannot read shown to their job. Returns the
// directory the user opened.
Result<DirectoryIdentity> open_image_as_user(const std::filesystem::path& image,
                                             const std::string& user, uid_t uid, gid_t gid);

// Checks the plan without touching anything; errors name the field ("image: ...").
Status check_job_mount_plan(const JobMountPlan& plan,
                            std::span<const std::filesystem::path> allowed_image_roots);

// Host side, before the namespace exists: checks the plan, creates the /etc upper and work
// directories (root, 0755), the per-job ~/.ssh (the job user's, 0700), the directory of the
// files the job reads (root, 0755) and empty per-job login records, and writes the /etc files
// known at SETUP (hostname, the ssh client configuration) into the upper layer. /etc/hosts there
// is a symlink to paths.hosts_file(), which the pilot replaces from the host side whenever the
// cluster changes: a file changed in the upper layer of a mounted overlay is not reliably seen
// through it, while the symlink's target is an ordinary file. The job directory becomes 0711:
// the job user must reach its ssh directory through it. Safe to call again.
Status prepare_job_mounts(const JobMountPlan& plan,
                          std::span<const std::filesystem::path> allowed_image_roots);

// Inside the job's fresh mount namespace, in the single-threaded child that created it and
// before anything of the job runs there:
//   1. / becomes a recursive slave: nothing mounted here propagates back to the host, while
//      the host's later mounts (autofs homes, NFS) still appear in the job;
//   2. namespace files copied from the host's mount table (`ip netns` ones, say) are
//      detached, so this job never keeps another namespace alive;
//   3. overlayfs on /etc (lower: the host's /etc);
//   4. the per-job ~/.ssh bound over the user's ~/.ssh if that exists (it is never created);
//      a symlinked ~/.ssh is followed but must end at a directory the job user owns;
//   5. a tmpfs on /tmp (size, mode 1777, nosuid, nodev);
//   6. per-job login records (made by prepare) over the host's wtmp, btmp, lastlog and utmp,
//      which sshd writes for every terminal session;
//   7. a read-only overlayfs (also nosuid, nodev) at image_mount whose lower layers are the
//      image over the host's directory there; the image is opened before anything is mounted
//      (an image below /tmp is the host's, not the job's), and must be the directory in
//      image_identity when that is given;
//   8. vc-srun bound read-only over srun, when srun_shim is given.
// Paths that a user could swap for a symlink are opened once and mounted through their file
// descriptor. Errors name the step and the errno.
Status setup_job_mounts(const JobMountPlan& plan);

}  // namespace vcpilot::pilot
