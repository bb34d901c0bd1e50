#include "pilot/privileged/seccomp.hpp"

#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <type_traits>

#include "common/fd.hpp"

namespace vcpilot::pilot {

namespace {

// libseccomp returns negative errno values.
Error seccomp_error(const std::string& what, int rc) {
    return sys_error("seccomp filter: " + what, -rc);
}

struct ContextRelease {
    void operator()(void* context) const { seccomp_release(context); }
};
using Context = std::unique_ptr<std::remove_pointer_t<scmp_filter_ctx>, ContextRelease>;

// Namespace flags that unshare(2) and clone(2) must not get. CLONE_NEWTIME (0x80) is only
// checked for unshare: in clone's first argument the low byte is the exit signal, where
// that bit has another meaning (and the kernel refuses the flag there anyway).
constexpr std::uint64_t kCloneNamespaceFlags[] = {
    CLONE_NEWNS,  CLONE_NEWNET, CLONE_NEWUSER,   CLONE_NEWUTS,
    CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWCGROUP,
};
constexpr std::uint64_t kUnshareOnlyNamespaceFlags[] = {CLONE_NEWTIME};

// Calls that fail with EPERM whatever their arguments. `umount` exists only on i386 and
// `kexec_file_load` only on x86_64; libseccomp resolves each name per ABI, and where a call
// does not exist its rule can never match.
constexpr int kRefusedSyscalls[] = {
    SCMP_SYS(setns),
    SCMP_SYS(mount),
    SCMP_SYS(umount2),
    SCMP_SYS(umount),
    SCMP_SYS(pivot_root),
    SCMP_SYS(open_tree),
    SCMP_SYS(move_mount),
    SCMP_SYS(fsopen),
    SCMP_SYS(fsconfig),
    SCMP_SYS(fsmount),
    SCMP_SYS(fspick),
    SCMP_SYS(mount_setattr),
    SCMP_SYS(open_by_handle_at),
    SCMP_SYS(bpf),
    SCMP_SYS(kexec_load),
    SCMP_SYS(kexec_file_load),
    SCMP_SYS(init_module),
    SCMP_SYS(finit_module),
    SCMP_SYS(delete_module),
};

std::string syscall_name(int syscall) {
    char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, syscall);
    std::string text = name != nullptr ? name : std::to_string(syscall);
    ::free(name);
    return text;
}

Status add_rules(scmp_filter_ctx context) {
    const uint32_t refuse = SCMP_ACT_ERRNO(EPERM);
    for (const int syscall : kRefusedSyscalls) {
        if (const int rc = seccomp_rule_add(context, refuse, syscall, 0); rc != 0) {
            return seccomp_error("refuse " + syscall_name(syscall), rc);
        }
    }
    for (const std::uint64_t flag : kCloneNamespaceFlags) {
        for (const int syscall : {SCMP_SYS(unshare), SCMP_SYS(clone)}) {
            // x86_64 clone(flags, stack, parent_tid, child_tid, tls) and i386
            // clone(flags, stack, parent_tid, tls, child_tid) both take the flags first.
            if (const int rc = seccomp_rule_add(context, refuse, syscall, 1,
                                                SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
                rc != 0) {
                return seccomp_error("refuse " + syscall_name(syscall) + " with namespace flags",
                                     rc);
            }
        }
    }
    for (const std::uint64_t flag : kUnshareOnlyNamespaceFlags) {
        if (const int rc = seccomp_rule_add(context, refuse, SCMP_SYS(unshare), 1,
                                            SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
            rc != 0) {
            return seccomp_error("refuse unshare with namespace flags", rc);
        }
    }
    if (const int rc = seccomp_rule_add(context, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
        rc != 0) {
        return seccomp_error("refuse clone3", rc);
    }
    return {};
}

// libseccomp 2.5 exports only to a file descriptor; a memfd keeps it in memory.
Result<std::vector<sock_filter>> export_program(scmp_filter_ctx context) {
    const UniqueFd memory(::memfd_create("vcpilot-seccomp", MFD_CLOEXEC));
    if (memory.get() < 0) {
        return sys_error("seccomp filter: memfd_create");
    }
    if (const int rc = seccomp_export_bpf(context, memory.get()); rc != 0) {
        return seccomp_error("export BPF", rc);
    }
    struct stat st {};
    if (::fstat(memory.get(), &st) != 0) {
        return sys_error("seccomp filter: fstat of the exported BPF");
    }
    const auto bytes = static_cast<std::size_t>(st.st_size);
    if (bytes == 0 || bytes % sizeof(sock_filter) != 0 ||
        bytes / sizeof(sock_filter) > BPF_MAXINSNS) {
        return Error{"seccomp filter: libseccomp exported " + std::to_string(bytes) +
                     " bytes, not a BPF program of 1 to " + std::to_string(BPF_MAXINSNS) +
                     " instructions"};
    }
    std::vector<sock_filter> program(bytes / sizeof(sock_filter));
    auto* out = reinterpret_cast<char*>(program.data());
    std::size_t done = 0;
    while (done < bytes) {
        const ssize_t got =
            ::pread(memory.get(), out + done, bytes - done, static_cast<off_t>(done));
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            return sys_error("seccomp filter: reading the exported BPF", got < 0 ? errno : EIO);
        }
        done += static_cast<std::size_t>(got);
    }
    return program;
}

}  // namespace

Result<EscapeFilter> EscapeFilter::build(const SeccompPolicy& policy) {
    if (!policy.enabled) {
        return EscapeFilter({});
    }
    const Context context(seccomp_init(SCMP_ACT_ALLOW));
    if (!context) {
        return Error{"seccomp filter: libseccomp could not create a filter"};
    }
    // The i386 ABI (int 0x80, 32-bit programs) gets the same rules; anything else, x32 in
    // particular, is refused outright rather than left unchecked.
    if (const int rc = seccomp_arch_add(context.get(), SCMP_ARCH_X86); rc != 0 && rc != -EEXIST) {
        return seccomp_error("add the i386 ABI", rc);
    }
    if (const int rc =
            seccomp_attr_set(context.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_ERRNO(EPERM));
        rc != 0) {
        return seccomp_error("set the action for other ABIs", rc);
    }
    if (auto ok = add_rules(context.get()); !ok) {
        return ok.error();
    }
    auto program = export_program(context.get());
    if (!program) {
        return program.error();
    }
    return EscapeFilter(std::move(*program));
}

int EscapeFilter::apply() const noexcept {
    if (program_.empty()) {
        return 0;
    }
    // The kernel copies the program and never writes to it; the cast only satisfies the type.
    sock_fprog prog{};
    prog.len = static_cast<unsigned short>(program_.size());
    prog.filter = const_cast<sock_filter*>(program_.data());
    if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0U, &prog) != 0) {
        return errno;
    }
    return 0;
}

}  // namespace vcpilot::pilot
