// The seccomp filter that keeps job processes (RUN/EXEC commands, the per-job sshd and every
// ssh session under it) inside the job's namespaces: the calls that enter, create or rearrange
// namespaces and mounts fail with EPERM, everything else is allowed.
//
// The pilot is multi-threaded (gRPC), so the filter is installed in a child between fork and
// exec, where only async-signal-safe code may run. The BPF program is therefore built once, in
// the parent, with libseccomp; the child only hands it to the kernel.
//
// What fails with EPERM, on x86_64 and on its i386 compat ABI alike:
//   setns; unshare and clone with any of CLONE_NEWNS, NEWNET, NEWUSER, NEWUTS, NEWIPC, NEWPID,
//   NEWCGROUP (and NEWTIME for unshare: in clone's flags that bit is part of the exit signal);
//   mount, umount2 (and i386 umount), pivot_root, the new mount API (open_tree, move_mount,
//   fsopen, fsconfig, fsmount, fspick, mount_setattr); open_by_handle_at (reaches files hidden
//   by the job's mounts); bpf; kexec_load, kexec_file_load, init_module, finit_module,
//   delete_module.
// clone3 fails with ENOSYS: its flags live in memory seccomp cannot read, and on ENOSYS glibc
// (fork, pthread_create, posix_spawn) falls back to clone, whose flags the filter does see.
// Syscalls of any other ABI (x32) fail with EPERM, so no ABI goes around the rules.
//
// Allowed on purpose:
//   chroot    - sshd's privilege-separated child chroots itself (to /run/sshd), and sshd runs
//               under this filter. chroot needs CAP_SYS_CHROOT and does not leave a namespace.
//   ptrace    - debuggers and strace on the job's own processes. The kernel's ptrace access
//               check (same uid, and Yama where enabled) is the boundary, and seccomp could not
//               replace it anyway: /proc/<pid>/mem, /proc/<pid>/root and pidfd_getfd are guarded
//               by the same check and are reached by ordinary open() or other calls.
//   keyctl, add_key, request_key - Kerberos/AFS keyrings; these are the user's own keys.
//   perf_event_open - MPI profilers.
//   seccomp, prctl - sshd installs its own sandbox filter under this one; filters nest.
// Consequences: mount of FUSE file systems (fusermount) fails inside a job, as do container
// tools that need user namespaces.
#pragma once

#include <linux/filter.h>

#include <cstddef>
#include <utility>
#include <vector>

#include "common/result.hpp"

namespace vcpilot::pilot {

struct SeccompPolicy {
    bool enabled = true;
};

class EscapeFilter {
  public:
    // Builds the BPF program for `policy` (an empty one when disabled). Not async-signal-safe:
    // call it in the parent, before fork.
    static Result<EscapeFilter> build(const SeccompPolicy& policy);

    // Installs the filter on the calling thread, which must be the only thread (a freshly forked
    // child). Returns 0 or an errno value; a no-op returning 0 when the policy was disabled.
    // Async-signal-safe: one seccomp(2) call, no allocation, no locks.
    //
    // Call it in the child after entering the job's namespaces (setns is refused from then on)
    // and before dropping root: without CAP_SYS_ADMIN the kernel requires no_new_privs, which
    // this deliberately does not set so that set-uid and file-capability programs keep working
    // inside the job. Without the capability apply() returns EACCES.
    int apply() const noexcept;

    bool enabled() const noexcept { return !program_.empty(); }
    // Number of BPF instructions (0 when disabled).
    std::size_t size() const noexcept { return program_.size(); }

  private:
    explicit EscapeFilter(std::vector<sock_filter> program) : program_(std::move(program)) {}

    std::vector<sock_filter> program_;
};

}  // namespace vcpilot::pilot
