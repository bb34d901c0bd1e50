// The job's OpenSSH server: one `sshd` per job per node, started by the pilot inside the job's
// network, mount and UTS namespaces, listening on the job address with the per-job host key and
// accepting public keys of the job user only.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "common/ip.hpp"
#include "common/result.hpp"
#include "pilot/namespaces.hpp"

namespace vcpilot::pilot {

enum class SshdLogLevel : std::uint8_t { info, verbose, debug };

// Every path is as seen inside the job (the pilot's run directory looks the same inside and
// out). Paths are absolute, normalized and made of [A-Za-z0-9/._+@-] only, so that nothing in
// them can mean something else to sshd's config parser (spaces, quotes, '#', '%' tokens,
// ${VAR} expansion).
struct SshdSpec {
    IpAddress listen;
    std::uint16_t port = 22;
    // The only user who may log in; root gets PermitRootLogin prohibit-password.
    std::string allow_user;
    std::filesystem::path host_key;
    std::filesystem::path host_certificate;  // optional; empty = none
    std::filesystem::path authorized_keys;
    std::filesystem::path trusted_user_ca_keys;  // optional; empty = none
    std::filesystem::path pid_file;
    SshdLogLevel log_level = SshdLogLevel::info;
    // Without PAM, sshd itself refuses accounts whose shadow password starts with '!' ("account
    // is locked"), which is how `useradd` leaves users without a password. With PAM, the host's
    // /etc/pam.d/sshd account and session stacks run instead (pam_limits, but also whatever
    // else the site put there). Authentication stays public-key only either way.
    bool use_pam = false;
};

// The sshd of a job: listening on the job address, port 22, for `user` only, with the job's
// host key and the job user's per-job authorized_keys; in certificate mode also with the host
// certificate and the cluster CA as TrustedUserCAKeys (JobPaths names every file).
SshdSpec job_sshd_spec(const JobPaths& paths, const IpAddress& listen, const std::string& user,
                       bool certificates);

// Checks every field; errors name it ("allow_user: ...").
Status check_sshd_spec(const SshdSpec& spec);

// A complete sshd_config (no Include, nothing from /etc/ssh/sshd_config): public keys only,
// no X11, no user environment, sftp built in, PAM only if asked for.
Result<std::string> render_sshd_config(const SshdSpec& spec);

// sshd refuses to start without its privilege separation directory (/run/sshd, root, not
// group- or world-writable). Creates it like Debian's init script does; checks an existing one.
Status ensure_sshd_privsep_dir();

struct SshdLaunch {
    // Root-only directory (created 0700 if missing) for sshd_config and sshd.log. sshd reads
    // the config after entering the job's mount namespace, so the directory must be at the
    // same path inside; JobPaths::sshd_dir() is.
    std::filesystem::path dir;
    // Runs in the child last, after setns and just before exec (the pilot passes its seccomp
    // filter's apply()). Must be async-signal-safe and must not throw; returns 0 or an errno.
    std::function<int()> before_exec;
    // READY means sshd listens on listen:port in the job's network namespace.
    std::chrono::milliseconds ready_timeout{5000};
    // stop(): SIGTERM, then SIGKILL after this long.
    std::chrono::milliseconds stop_timeout{2000};
    std::filesystem::path binary = "/usr/sbin/sshd";
};

// A running `sshd -D -e -f <dir>/sshd_config`, a child of the pilot. It dies with the pilot
// (PR_SET_PDEATHSIG), and the destructor stops it.
//
// PR_SET_PDEATHSIG fires when the *thread* that started the child exits, not the process:
// call start() from a thread that lives as long as the pilot (not from a pool thread that may
// be retired).
class Sshd {
  public:
    // Writes the config, starts sshd in the three namespaces and waits until it listens. On any
    // error sshd is not running, and the message ends with the tail of sshd's log if it has one.
    static Result<Sshd> start(const SshdSpec& spec, const NamespaceFiles& namespaces,
                              const SshdLaunch& launch);
    // start() in two halves, so that the caller can do other work while sshd starts up: spawn
    // writes the config and starts sshd without waiting; wait_until_listening waits (up to the
    // launch's ready_timeout from the spawn) and then returns at once. If sshd exits or is not
    // listening in time it is stopped, and the message ends with the tail of its log.
    static Result<Sshd> spawn(const SshdSpec& spec, const NamespaceFiles& namespaces,
                              const SshdLaunch& launch);
    Status wait_until_listening();

    Sshd(Sshd&& other) noexcept;
    Sshd& operator=(Sshd&& other) noexcept;
    Sshd(const Sshd&) = delete;
    Sshd& operator=(const Sshd&) = delete;
    ~Sshd();

    // The listening sshd's pid; -1 for a moved-from object.
    pid_t pid() const;
    const std::filesystem::path& log_file() const;

    // SIGTERM and no wait, for a caller that waits for the job's processes anyway; stop()
    // then only reaps.
    void request_stop();

    // SIGTERM, wait up to stop_timeout, SIGKILL; reaps the process. Idempotent. Sessions that
    // sshd already forked keep running: they are inside the job's namespaces, and teardown
    // ends everything there.
    Status stop();

  private:
    struct Process;
    explicit Sshd(std::unique_ptr<Process> process);
    std::unique_ptr<Process> process_;
};

}  // namespace vcpilot::pilot
