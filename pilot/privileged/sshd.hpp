// The job's OpenSSH server: an `sshd -i` per connection, started by the pilot inside the job's
// network, mount and UTS namespaces for connections to the job address, with the per-job host
// key, accepting public keys of the job user only.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/ip.hpp"
#include "common/result.hpp"
#include "pilot/privileged/namespaces.hpp"

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
    SshdLogLevel log_level = SshdLogLevel::info;
    // Without PAM, sshd itself refuses accounts whose shadow password starts with '!' ("account
    // is locked"), which is how `useradd` leaves users without a password. With PAM, the host's
    // /etc/pam.d/sshd account and session stacks run instead (pam_limits, but also whatever
    // else the site put there). Authentication stays public-key only either way.
    bool use_pam = false;
    // Set in every session (SetEnv): names of [A-Za-z0-9_] not starting with a digit, values
    // without blanks, quotes, backslashes or '#'.
    std::vector<std::pair<std::string, std::string>> environment{};
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
    // Runs in every session's child last, after setns and just before exec (the pilot passes
    // its seccomp filter's apply()). Must be async-signal-safe and must not throw; returns 0 or
    // an errno.
    std::function<int()> before_exec;
    // stop(): SIGTERM to every session, then SIGKILL after this long.
    std::chrono::milliseconds stop_timeout{2000};
    // Connections beyond this many live sessions are closed at once (and logged), as sshd's
    // MaxStartups would refuse them: nothing in the job can make the node fork without bound.
    std::size_t max_sessions = 1024;
    std::filesystem::path binary = "/usr/sbin/sshd";
};

// The job's sshd, started per connection. The pilot itself listens on listen:port inside the
// job's network namespace and hands every connection it accepts to a fresh `sshd -i` (inetd
// mode, the way systemd's ssh.socket runs it) in the job's network, mount and UTS namespaces.
// No sshd runs until somebody connects, so a job starts without paying for one (an sshd -D
// would exec once per connection anyway: it re-executes itself for every session).
//
// Every session is a child of the thread that accepts, which lives until stop(); a session
// gets SIGTERM when that thread ends (PR_SET_PDEATHSIG), so none outlives the pilot.
class Sshd {
  public:
    // Checks the spec and the files sshd will need, writes the config, binds listen:port in
    // the job's network namespace and starts accepting: when this returns, connections to it
    // get an sshd. On any error nothing listens or runs.
    static Result<Sshd> start(const SshdSpec& spec, const NamespaceFiles& namespaces,
                              const SshdLaunch& launch);

    Sshd(Sshd&& other) noexcept;
    Sshd& operator=(Sshd&& other) noexcept;
    Sshd(const Sshd&) = delete;
    Sshd& operator=(const Sshd&) = delete;
    ~Sshd();

    // Rewrites the config the next sessions read (host certificate or key mode changed); the
    // listener and the live sessions stay as they are.
    Status reconfigure(const SshdSpec& spec);

    // The sshd processes of the live sessions (not yet reaped).
    std::vector<pid_t> sessions() const;
    const std::filesystem::path& log_file() const;

    // Stops accepting and sends SIGTERM to every session, without waiting: for a caller that
    // waits for the job's processes anyway; stop() then only reaps.
    void request_stop();

    // Stops accepting, SIGTERM to every session, waits up to stop_timeout, SIGKILL, reaps.
    // Idempotent.
    Status stop();

  private:
    struct Listener;
    explicit Sshd(std::unique_ptr<Listener> listener);
    std::unique_ptr<Listener> listener_;
};

}  // namespace vcpilot::pilot
