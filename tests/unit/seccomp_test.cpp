// Every filter here is installed in a forked child, never in the test process. Children that try
// escapes first move into a private mount namespace, so that a filter which failed open could
// change nothing on the host; they report through their exit code and a pipe on stdout/stderr.
#include "pilot/privileged/seccomp.hpp"

#include <fcntl.h>
#include <linux/audit.h>
#include <linux/bpf.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "pilot/privileged/keys.hpp"
#include "tests/support/temp_dir.hpp"

namespace vcpilot::pilot {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using vcpilot::testing::TempDir;

constexpr int kApplyFailed = 250;
constexpr int kSetupFailed = 251;
constexpr int kExecFailed = 127;

// Leaves the child at once, through no exit handler or sanitizer hook. Deliberately not
// [[noreturn]]: ASan precedes calls to noreturn functions with __asan_handle_no_return, which
// makes a syscall (sigaltstack) that the syscall fence below would count against apply().
void exit_now(int code) {
    while (true) {
        ::syscall(SYS_exit_group, code);
    }
}

const EscapeFilter& escape_filter() {
    static const EscapeFilter filter = EscapeFilter::build(SeccompPolicy{}).value();
    return filter;
}

const EscapeFilter& no_filter() {
    static const EscapeFilter filter = EscapeFilter::build(SeccompPolicy{.enabled = false}).value();
    return filter;
}

bool make_mounts_private() {
    return ::unshare(CLONE_NEWNS) == 0 &&
           ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0;
}

struct ChildOutcome {
    int exit_code = -1;  // -1 when killed by a signal
    int signal = 0;
    std::string output;  // stdout and stderr
};

std::ostream& operator<<(std::ostream& out, const ChildOutcome& outcome) {
    return out << "exit " << outcome.exit_code << ", signal " << outcome.signal << ", output:\n"
               << outcome.output;
}

// Forks; the child runs `prepare` (returns false on failure), applies `filter`, then exits
// with what `body` returns.
template <typename Prepare, typename Body>
ChildOutcome run_child(const EscapeFilter& filter, Prepare prepare, Body body) {
    std::array<int, 2> pipe_fds{};
    if (::pipe2(pipe_fds.data(), O_CLOEXEC) != 0) {
        ADD_FAILURE() << "pipe2: " << std::generic_category().message(errno);
        return {};
    }
    const pid_t pid = ::fork();
    if (pid < 0) {
        ADD_FAILURE() << "fork: " << std::generic_category().message(errno);
        return {};
    }
    if (pid == 0) {
        ::dup2(pipe_fds[1], STDOUT_FILENO);
        ::dup2(pipe_fds[1], STDERR_FILENO);
        if (!prepare()) {
            exit_now(kSetupFailed);
        }
        if (filter.apply() != 0) {
            exit_now(kApplyFailed);
        }
        exit_now(body());
    }
    ::close(pipe_fds[1]);
    ChildOutcome outcome;
    char buffer[4096];
    ssize_t got = 0;
    while ((got = ::read(pipe_fds[0], buffer, sizeof buffer)) != 0) {
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            break;
        }
        outcome.output.append(buffer, static_cast<std::size_t>(got));
    }
    ::close(pipe_fds[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status)) {
        outcome.exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        outcome.signal = WTERMSIG(status);
    }
    return outcome;
}

template <typename Body>
ChildOutcome run_filtered(const EscapeFilter& filter, Body body) {
    return run_child(filter, make_mounts_private, body);
}

// The errno with which `call` fails in a child under `filter`, 0 when it succeeds.
template <typename Call>
int errno_under(const EscapeFilter& filter, Call call) {
    const ChildOutcome outcome = run_filtered(filter, [&] {
        errno = 0;
        const long rc = call();
        return rc == -1 ? errno : 0;
    });
    EXPECT_NE(outcome.exit_code, kApplyFailed) << "the filter could not be applied";
    EXPECT_NE(outcome.exit_code, kSetupFailed) << "the child could not make its mounts private";
    return outcome.exit_code;
}

// Runs argv[0] (a path) in a child under `filter`.
ChildOutcome exec_under(const EscapeFilter& filter, std::vector<std::string> args) {
    std::vector<char*> argv;
    argv.reserve(args.size() + 1);
    for (std::string& arg : args) {
        argv.push_back(arg.data());
    }
    argv.push_back(nullptr);
    return run_filtered(filter, [&] {
        ::execv(argv[0], argv.data());
        return kExecFailed;
    });
}

// A child clone()d without a stack keeps running here, like after fork(); it leaves at once.
long clone_with(unsigned long flags) {
    const long rc = ::syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (rc == 0) {
        exit_now(0);
    }
    if (rc > 0) {
        ::waitpid(static_cast<pid_t>(rc), nullptr, 0);
        return 0;
    }
    return rc;
}

// ---- building ----

TEST(EscapeFilter, BuildsABpfProgramWhenEnabledAndNothingWhenDisabled) {
    auto enabled = EscapeFilter::build(SeccompPolicy{});
    ASSERT_TRUE(enabled.ok()) << enabled.error().message;
    EXPECT_TRUE(enabled->enabled());
    EXPECT_GT(enabled->size(), 10U);
    EXPECT_LE(enabled->size(), static_cast<std::size_t>(BPF_MAXINSNS));

    auto disabled = EscapeFilter::build(SeccompPolicy{.enabled = false});
    ASSERT_TRUE(disabled.ok()) << disabled.error().message;
    EXPECT_FALSE(disabled->enabled());
    EXPECT_EQ(disabled->size(), 0U);
}

TEST(EscapeFilter, ApplyIsANoOpWhenDisabled) {
    // Running unshare(CLONE_NEWUSER) proves no filter was installed.
    EXPECT_EQ(errno_under(no_filter(), [] { return ::unshare(CLONE_NEWUSER); }), 0);
}

// ---- what the filter refuses ----

struct RefusedCall {
    const char* name;
    long (*call)();
};

// NOLINTNEXTLINE(readability-identifier-naming): the name GoogleTest looks for.
void PrintTo(const RefusedCall& refused, std::ostream* out) {
    *out << refused.name;
}

class EscapeFilterRefuses : public ::testing::TestWithParam<RefusedCall> {};

TEST_P(EscapeFilterRefuses, WithEpermUnderTheFilterAndNotWithoutIt) {
    EXPECT_EQ(errno_under(escape_filter(), GetParam().call), EPERM);
    // Without the filter the same call succeeds or fails for another reason (a bad argument,
    // a feature missing from the kernel), so the EPERM above is the filter's.
    EXPECT_NE(errno_under(no_filter(), GetParam().call), EPERM);
}

// Joining one's own network namespace is harmless without the filter; with it, it must fail.
long setns_to_own_net() {
    const int fd = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    return fd < 0 ? -1 : ::setns(fd, CLONE_NEWNET);
}

INSTANTIATE_TEST_SUITE_P(
    NamespaceAndMountCalls, EscapeFilterRefuses,
    ::testing::Values(
        RefusedCall{"unshare_newuser", []() -> long { return ::unshare(CLONE_NEWUSER); }},
        RefusedCall{"unshare_newnet", []() -> long { return ::unshare(CLONE_NEWNET); }},
        RefusedCall{"unshare_newns", []() -> long { return ::unshare(CLONE_NEWNS); }},
        RefusedCall{"unshare_newuts", []() -> long { return ::unshare(CLONE_NEWUTS); }},
        RefusedCall{"unshare_newipc", []() -> long { return ::unshare(CLONE_NEWIPC); }},
        RefusedCall{"unshare_newpid", []() -> long { return ::unshare(CLONE_NEWPID); }},
        RefusedCall{"unshare_newcgroup", []() -> long { return ::unshare(CLONE_NEWCGROUP); }},
        RefusedCall{"unshare_newtime", []() -> long { return ::unshare(CLONE_NEWTIME); }},
        RefusedCall{"unshare_files_and_newuser",
                    []() -> long { return ::unshare(CLONE_FILES | CLONE_NEWUSER); }},
        RefusedCall{"clone_newnet", [] { return clone_with(CLONE_NEWNET); }},
        RefusedCall{"clone_newuser", [] { return clone_with(CLONE_NEWUSER); }},
        RefusedCall{"clone_newns", [] { return clone_with(CLONE_NEWNS); }},
        RefusedCall{"clone_newpid", [] { return clone_with(CLONE_NEWPID); }},
        RefusedCall{"setns", setns_to_own_net},
        RefusedCall{"mount", []() -> long { return ::mount("none", "/mnt", "tmpfs", 0, nullptr); }},
        RefusedCall{"umount2", []() -> long { return ::umount2("/nonexistent-vcpilot-test", 0); }},
        RefusedCall{"pivot_root",
                    [] { return ::syscall(SYS_pivot_root, "/nonexistent-a", "/nonexistent-b"); }},
        RefusedCall{"open_tree", [] { return ::syscall(SYS_open_tree, AT_FDCWD, "/", 0); }},
        RefusedCall{"move_mount", [] { return ::syscall(SYS_move_mount, -1, "", -1, "", 0); }},
        RefusedCall{"fsopen", [] { return ::syscall(SYS_fsopen, "tmpfs", 0); }},
        RefusedCall{"fsconfig", [] { return ::syscall(SYS_fsconfig, -1, 0, nullptr, nullptr, 0); }},
        RefusedCall{"fsmount", [] { return ::syscall(SYS_fsmount, -1, 0, 0); }},
        RefusedCall{"fspick", [] { return ::syscall(SYS_fspick, AT_FDCWD, "/", 0); }},
        RefusedCall{"mount_setattr",
                    [] { return ::syscall(SYS_mount_setattr, -1, "", 0, nullptr, 0); }},
        RefusedCall{"open_by_handle_at",
                    [] { return ::syscall(SYS_open_by_handle_at, -1, nullptr, 0); }},
        RefusedCall{"bpf", [] { return ::syscall(SYS_bpf, BPF_MAP_CREATE, nullptr, 0); }},
        // More segments than the kernel accepts: never loads anything, filter or not.
        RefusedCall{"kexec_load", [] { return ::syscall(SYS_kexec_load, 0, 1000, nullptr, 0); }},
        RefusedCall{"kexec_file_load",
                    [] { return ::syscall(SYS_kexec_file_load, -1, -1, 0, "", 0); }},
        RefusedCall{"init_module", [] { return ::syscall(SYS_init_module, nullptr, 0, ""); }},
        RefusedCall{"finit_module", [] { return ::syscall(SYS_finit_module, -1, "", 0); }},
        RefusedCall{"delete_module",
                    [] { return ::syscall(SYS_delete_module, "vcpilot_no_such_module", 0); }}),
    [](const ::testing::TestParamInfo<RefusedCall>& param_info) {
        return std::string(param_info.param.name);
    });

TEST(EscapeFilter, MakesClone3UnavailableSoGlibcFallsBackToClone) {
    // clone3's flags are in memory seccomp cannot read; ENOSYS sends glibc to clone().
    EXPECT_EQ(errno_under(escape_filter(),
                          [] {
                              std::array<std::uint64_t, 11> args{};  // struct clone_args
                              args[4] = SIGCHLD;                     // exit_signal
                              return ::syscall(SYS_clone3, args.data(), sizeof args);
                          }),
              ENOSYS);
}

// ---- what keeps working ----

void* thread_body(void* arg) {
    *static_cast<int*>(arg) = 42;
    return nullptr;
}

TEST(EscapeFilter, LeavesEverydayWorkAlone) {
    const TempDir dir;
    const std::string file = (dir.path() / "data").string();
    const EscapeFilter& filter = escape_filter();
    const ChildOutcome outcome = run_filtered(filter, [&] {
        int failures = 0;
        auto check = [&](bool ok, const char* what) {
            if (!ok) {
                ::dprintf(STDOUT_FILENO, "%s failed: %s\n", what,
                          std::generic_category().message(errno).c_str());
                ++failures;
            }
        };
        const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        check(fd >= 0, "open");
        check(::write(fd, "abc", 3) == 3, "write");
        char back[3] = {};
        check(::pread(fd, back, 3, 0) == 3 && std::memcmp(back, "abc", 3) == 0, "read");
        ::close(fd);

        const pid_t child = ::fork();  // clone(SIGCHLD | ...): no namespace flags
        if (child == 0) {
            exit_now(7);
        }
        int status = 0;
        check(child > 0 && ::waitpid(child, &status, 0) == child && WIFEXITED(status) &&
                  WEXITSTATUS(status) == 7,
              "fork");

        // glibc tries clone3 first, gets ENOSYS and uses clone.
        int value = 0;
        pthread_t thread{};
        check(::pthread_create(&thread, nullptr, thread_body, &value) == 0 &&
                  ::pthread_join(thread, nullptr) == 0 && value == 42,
              "pthread_create");

        check(::unshare(0) == 0, "unshare(0)");
        check(::unshare(CLONE_FILES | CLONE_FS | CLONE_SYSVSEM) == 0,
              "unshare(CLONE_FILES|CLONE_FS|CLONE_SYSVSEM)");
        // sshd's privilege-separated child chroots itself.
        check(::chroot("/") == 0, "chroot");
        // Debuggers and strace on the job's own processes.
        const pid_t traced = ::fork();
        if (traced == 0) {
            exit_now(::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr) == 0 ? 0 : 1);
        }
        check(traced > 0 && ::waitpid(traced, &status, 0) == traced && WIFEXITED(status) &&
                  WEXITSTATUS(status) == 0,
              "ptrace(PTRACE_TRACEME)");
        // sshd installs its own sandbox filter on top of this one.
        check(filter.apply() == 0, "a second, nested filter");
        return failures;
    });
    EXPECT_EQ(outcome.exit_code, 0) << outcome;
    EXPECT_EQ(outcome.output, "");
}

TEST(EscapeFilter, LetsProgramsBeExecutedAndStartTheirOwnChildren) {
    EXPECT_EQ(exec_under(escape_filter(), {"/bin/true"}).exit_code, 0);
    const ChildOutcome shell = exec_under(
        escape_filter(),
        {"/bin/sh", "-c", "echo hi | cat; x=$(printf ok); sleep 0.01 & wait; echo \"$x\""});
    EXPECT_EQ(shell.exit_code, 0) << shell;
    EXPECT_EQ(shell.output, "hi\nok\n");
}

// ---- the acceptance commands ----

// The acceptance test runs `nsenter -t 1 -n`; pid 1 of a build machine may refuse even root
// (it does here), so the target outside the job is the test process itself.
std::string pid_outside_the_job() {
    return std::to_string(::getpid());
}

TEST(EscapeFilter, StopsUserNamespaceTricksFromInsideTheJob) {
    for (const std::vector<std::string>& command : {
             std::vector<std::string>{"/usr/bin/unshare", "-Urn", "true"},
             std::vector<std::string>{"/usr/bin/unshare", "-Urm", "true"},
             std::vector<std::string>{"/usr/bin/unshare", "-r", "/bin/mount", "-t", "tmpfs", "none",
                                      "/mnt"},
             std::vector<std::string>{"/usr/bin/nsenter", "-t", pid_outside_the_job(), "-n",
                                      "true"},
             std::vector<std::string>{"/bin/mount", "-t", "tmpfs", "none", "/mnt"},
         }) {
        const ChildOutcome outcome = exec_under(escape_filter(), command);
        EXPECT_NE(outcome.exit_code, 0) << command[0] << " " << command[1] << ": " << outcome;
        EXPECT_NE(outcome.exit_code, kExecFailed) << outcome;
        // EPERM, as util-linux words it.
        EXPECT_THAT(outcome.output, ::testing::AnyOf(HasSubstr("Operation not permitted"),
                                                     HasSubstr("permission denied")))
            << command[0] << " " << command[1];
    }
}

TEST(EscapeFilter, DisabledPolicyAllowsWhatTheFilterStops) {
    for (const std::vector<std::string>& command : {
             std::vector<std::string>{"/usr/bin/unshare", "-Urn", "true"},
             std::vector<std::string>{"/usr/bin/unshare", "-Urm", "true"},
             std::vector<std::string>{"/usr/bin/nsenter", "-t", pid_outside_the_job(), "-n",
                                      "true"},
         }) {
        const ChildOutcome outcome = exec_under(no_filter(), command);
        EXPECT_EQ(outcome.exit_code, 0) << command[0] << " " << command[1] << ": " << outcome;
    }
}

// ---- other ABIs ----

// A syscall through the i386 entry point (int $0x80), as a 32-bit program would make it.
long i386_syscall(long number, long arg0 = 0, long arg1 = 0, long arg2 = 0) {
    long result = number;
    asm volatile("int $0x80"
                 : "+a"(result)
                 : "b"(arg0), "c"(arg1), "d"(arg2)
                 : "memory", "cc", "r8", "r9", "r10", "r11");
    return result;
}

constexpr long kI386Getpid = 20;
constexpr long kI386Mount = 21;
constexpr long kI386Umount = 22;
constexpr long kI386Unshare = 310;
constexpr long kI386Setns = 346;
constexpr long kI386Clone3 = 435;

// Whether int $0x80 works here: with IA32 emulation off the kernel answers it with SIGSEGV, so
// the probe runs in a child of its own.
bool kernel_has_i386_entry() {
    const pid_t child = ::fork();
    if (child == 0) {
        ::_exit(i386_syscall(kI386Getpid) == ::getpid() ? 0 : 1);
    }
    int status = 0;
    if (child < 0 || ::waitpid(child, &status, 0) != child) {
        return false;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

TEST(EscapeFilter, AppliesTheSameRulesToI386Syscalls) {
    if (!kernel_has_i386_entry()) {
        GTEST_SKIP() << "this kernel has no i386 syscall entry (IA32 emulation off)";
    }
    const ChildOutcome outcome = run_filtered(escape_filter(), [] {
        int failures = 0;
        auto expect = [&](const char* what, long got, long want) {
            if (got != want) {
                ::dprintf(STDOUT_FILENO, "%s: got %ld, want %ld\n", what, got, want);
                ++failures;
            }
        };
        expect("getpid", i386_syscall(kI386Getpid), ::getpid());
        expect("unshare(CLONE_NEWNET)", i386_syscall(kI386Unshare, CLONE_NEWNET), -EPERM);
        expect("unshare(CLONE_NEWUSER)", i386_syscall(kI386Unshare, CLONE_NEWUSER), -EPERM);
        expect("setns", i386_syscall(kI386Setns, -1, 0), -EPERM);
        expect("mount", i386_syscall(kI386Mount), -EPERM);
        expect("umount", i386_syscall(kI386Umount), -EPERM);
        expect("clone3", i386_syscall(kI386Clone3), -ENOSYS);
        return failures;
    });
    EXPECT_EQ(outcome.exit_code, 0) << outcome;
}

TEST(EscapeFilter, RefusesSyscallsOfTheX32Abi) {
    constexpr long kX32SyscallBit = 0x40000000;
    EXPECT_EQ(errno_under(escape_filter(),
                          [] { return ::syscall(kX32SyscallBit | SYS_unshare, CLONE_NEWNET); }),
              EPERM);
    EXPECT_EQ(errno_under(escape_filter(), [] { return ::syscall(kX32SyscallBit | SYS_getpid); }),
              EPERM);
}

// ---- apply() between fork and exec ----

static_assert(noexcept(std::declval<const EscapeFilter&>().apply()));

// Kills the process on any syscall but seccomp and exit_group.
std::vector<sock_filter> only_seccomp_and_exit() {
    return {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_seccomp, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_exit_group, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
}

// Runs `body` in a child that may make no syscall but seccomp and exit_group.
template <typename Body>
ChildOutcome run_syscall_fenced(Body body) {
    std::vector<sock_filter> fence = only_seccomp_and_exit();
    sock_fprog program{static_cast<unsigned short>(fence.size()), fence.data()};
    return run_child(
        no_filter(),
        [&] { return ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0U, &program) == 0; }, body);
}

TEST(EscapeFilter, ApplyMakesOneSeccompSyscallAndNothingElse) {
    // No mmap or brk (allocation), no futex (locks), no write (logging): any of these would
    // kill the child with SIGSYS.
    const EscapeFilter& filter = escape_filter();  // built here, in the parent
    const ChildOutcome applied = run_syscall_fenced([&] { return filter.apply(); });
    EXPECT_EQ(applied.signal, 0) << "apply() made a syscall other than seccomp";
    EXPECT_EQ(applied.exit_code, 0);

    // The fence itself works: a getpid is fatal.
    const ChildOutcome fenced = run_syscall_fenced([] { return static_cast<int>(::getpid()); });
    EXPECT_EQ(fenced.signal, SIGSYS);
}

TEST(EscapeFilter, NeedsRootBecauseItDoesNotSetNoNewPrivs) {
    const EscapeFilter& filter = escape_filter();
    const ChildOutcome outcome = run_child(
        no_filter(), [] { return ::setuid(65534) == 0; }, [&] { return filter.apply(); });
    EXPECT_EQ(outcome.exit_code, EACCES) << outcome;
}

// ---- sshd under the filter ----

bool bring_loopback_up() {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    ifreq request{};
    std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
    const bool ok = ::ioctl(fd, SIOCGIFFLAGS, &request) == 0 &&
                    (request.ifr_flags |= IFF_UP, ::ioctl(fd, SIOCSIFFLAGS, &request) == 0);
    ::close(fd);
    return ok;
}

TEST(EscapeFilter, SshdServesLoginsUnderTheFilterAndTheSessionStaysInside) {
    if (!fs::exists("/usr/sbin/sshd") || !fs::exists("/usr/bin/ssh")) {
        GTEST_SKIP() << "OpenSSH is not installed";
    }
    const TempDir dir;
    const fs::path host_key = dir.path() / "ssh_host_ed25519_key";
    const fs::path user_key = dir.path() / "id_ed25519";
    auto host_public = generate_ed25519_key(host_key, 0, 0, "host");
    auto user_public = generate_ed25519_key(user_key, 0, 0, "root@test");
    ASSERT_TRUE(host_public.ok() && user_public.ok());
    auto authorized = check_public_key("user_key", *user_public);
    auto known = check_public_key("host_key", *host_public);
    ASSERT_TRUE(authorized.ok() && known.ok());
    dir.write("authorized_keys", *authorized + "\n");
    dir.write("known_hosts", "127.0.0.1 " + *known + "\n");
    const std::string d = dir.path().string();
    dir.write("sshd_config",
              "ListenAddress 127.0.0.1:22\n"
              "HostKey " +
                  host_key.string() +
                  "\n"
                  "AuthorizedKeysFile " +
                  d +
                  "/authorized_keys\n"
                  "PidFile " +
                  d +
                  "/sshd.pid\n"
                  "UsePAM no\nStrictModes no\nPasswordAuthentication no\n"
                  "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
                  "LogLevel ERROR\n");
    const std::string ssh =
        "timeout 20 ssh -F /dev/null -i " + user_key.string() +
        " -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=" + d +
        "/known_hosts -o ConnectTimeout=5 root@127.0.0.1";
    const std::string script =
        "/usr/sbin/sshd -D -e -f " + d +
        "/sshd_config & sshd=$!\n"
        "i=0; until " +
        ssh +
        " true 2>/dev/null; do\n"
        "  i=$((i+1)); [ $i -lt 50 ] || break; sleep 0.1\n"
        "done\n" +
        ssh +
        " 'echo logged-in; unshare -Urn true 2>/dev/null; echo unshare-rc=$?'\n"
        "kill $sshd; wait $sshd 2>/dev/null; exit 0\n";

    // Its own network namespace (only lo) and a private /run with sshd's privsep directory.
    auto prepare = [] {
        return make_mounts_private() && ::unshare(CLONE_NEWNET) == 0 && bring_loopback_up() &&
               ::mount("tmpfs", "/run", "tmpfs", 0, "mode=0755") == 0 &&
               ::mkdir("/run/sshd", 0755) == 0;
    };
    std::string shell = "/bin/sh";
    std::string dash_c = "-c";
    std::string command = script;
    char* argv[] = {shell.data(), dash_c.data(), command.data(), nullptr};
    const ChildOutcome outcome = run_child(escape_filter(), prepare, [&] {
        ::execv(argv[0], argv);
        return kExecFailed;
    });
    EXPECT_EQ(outcome.exit_code, 0) << outcome;
    EXPECT_THAT(outcome.output, HasSubstr("logged-in\n"));
    EXPECT_THAT(outcome.output, HasSubstr("unshare-rc=1\n"));
}

}  // namespace
}  // namespace vcpilot::pilot
