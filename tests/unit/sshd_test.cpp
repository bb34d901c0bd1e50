#include "pilot/privileged/sshd.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "tests/support/temp_dir.hpp"
#include "tests/unit/expect_error.hpp"

namespace vcpilot::pilot {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using vcpilot::testing::TempDir;

const fs::path kSshd = "/usr/sbin/sshd";
const fs::path kSshKeygen = "/usr/bin/ssh-keygen";

SshdSpec job_spec() {
    const fs::path dir = "/run/vcpilot/node1/job1";
    return SshdSpec{
        .listen = IpAddress::parse("10.20.0.1").value(),
        .port = 22,
        .allow_user = "vcuser",
        .host_key = dir / "sshd" / "ssh_host_ed25519_key",
        .host_certificate = {},
        .authorized_keys = dir / "home-ssh" / "authorized_keys",
        .trusted_user_ca_keys = {},
    };
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream stream(text);
    for (std::string line; std::getline(stream, line);) {
        lines.push_back(line);
    }
    return lines;
}

std::string read_text(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

// ---- the config ----------------------------------------------------------------------------

TEST(RenderSshdConfig, WritesEverySettingTheJobNeeds) {
    const auto config = render_sshd_config(job_spec());
    ASSERT_TRUE(config.ok()) << config.error().message;
    EXPECT_THAT(lines_of(*config),
                ::testing::IsSupersetOf({
                    "Port 22",
                    "ListenAddress 10.20.0.1",
                    "AddressFamily inet",
                    "HostKey /run/vcpilot/node1/job1/sshd/ssh_host_ed25519_key",
                    "PidFile none",
                    "LogLevel INFO",
                    "AllowUsers vcuser",
                    "PermitRootLogin no",
                    "AuthenticationMethods publickey",
                    "PubkeyAuthentication yes",
                    "AuthorizedKeysFile /run/vcpilot/node1/job1/home-ssh/authorized_keys",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitUserEnvironment no",
                    "X11Forwarding no",
                    "Subsystem sftp internal-sftp",
                }));
}

TEST(RenderSshdConfig, AcceptsNoClientEnvironmentAndIncludesNothing) {
    const std::string config = render_sshd_config(job_spec()).value();
    EXPECT_THAT(config, Not(HasSubstr("AcceptEnv")));
    EXPECT_THAT(config, Not(HasSubstr("Include")));
    EXPECT_THAT(config, Not(HasSubstr("HostCertificate")));
    EXPECT_THAT(config, Not(HasSubstr("TrustedUserCAKeys")));
}

TEST(RenderSshdConfig, LetsRootInWithKeysOnly) {
    SshdSpec spec = job_spec();
    spec.allow_user = "root";
    EXPECT_THAT(lines_of(render_sshd_config(spec).value()),
                ::testing::Contains("PermitRootLogin prohibit-password"));
}

TEST(RenderSshdConfig, AddsTheHostCertificateAndUserCaWhenGiven) {
    SshdSpec spec = job_spec();
    spec.host_certificate = "/run/vcpilot/node1/job1/sshd/ssh_host_ed25519_key-cert.pub";
    spec.trusted_user_ca_keys = "/run/vcpilot/node1/job1/sshd/user_ca.pub";
    spec.log_level = SshdLogLevel::verbose;
    EXPECT_THAT(lines_of(render_sshd_config(spec).value()),
                ::testing::IsSupersetOf({
                    "HostCertificate /run/vcpilot/node1/job1/sshd/ssh_host_ed25519_key-cert.pub",
                    "TrustedUserCAKeys /run/vcpilot/node1/job1/sshd/user_ca.pub",
                    "LogLevel VERBOSE",
                }));
}

TEST(RenderSshdConfig, SetsTheSessionsEnvironment) {
    SshdSpec spec = job_spec();
    spec.environment = {{"VC_NODE_NAME", "vc-site1-2"}, {"HYDRA_HOST_FILE", "/run/x/nodelist"}};
    EXPECT_THAT(
        lines_of(render_sshd_config(spec).value()),
        ::testing::Contains("SetEnv VC_NODE_NAME=vc-site1-2 HYDRA_HOST_FILE=/run/x/nodelist"));
    EXPECT_THAT(render_sshd_config(job_spec()).value(), Not(HasSubstr("SetEnv")));
}

TEST(RenderSshdConfig, RefusesAnEnvironmentThatWouldChangeTheConfig) {
    for (const auto& [name, value] :
         std::vector<std::pair<std::string, std::string>>{{"A", "two words"},
                                                          {"A", "x\nAllowUsers root"},
                                                          {"A", "\"q\""},
                                                          {"A", "x#y"},
                                                          {"1A", "x"},
                                                          {"A-B", "x"},
                                                          {"", "x"},
                                                          {"A=B", "x"}}) {
        SshdSpec spec = job_spec();
        spec.environment = {{name, value}};
        auto config = render_sshd_config(spec);
        ASSERT_FALSE(config) << name << "=" << value;
        EXPECT_THAT(config.error().message, HasSubstr("cannot be set in sshd_config"));
    }
}

TEST(RenderSshdConfig, ListensOnAnIpv6Address) {
    SshdSpec spec = job_spec();
    spec.listen = IpAddress::parse("fd00:20::1").value();
    spec.port = 2222;
    EXPECT_THAT(
        lines_of(render_sshd_config(spec).value()),
        ::testing::IsSupersetOf({"ListenAddress fd00:20::1", "AddressFamily inet6", "Port 2222"}));
}

TEST(RenderSshdConfig, UsesPamOnlyWhenAskedTo) {
    SshdSpec spec = job_spec();
    spec.use_pam = true;
    const auto lines = lines_of(render_sshd_config(spec).value());
    EXPECT_THAT(lines, ::testing::Contains("UsePAM yes"));
    // PAM must not become a way to log in with a password.
    EXPECT_THAT(lines, ::testing::IsSupersetOf({"AuthenticationMethods publickey",
                                                "KbdInteractiveAuthentication no",
                                                "PasswordAuthentication no"}));
}

TEST(RenderSshdConfig, RefusesUserNamesThatCouldAddLinesOrPatterns) {
    for (const std::string& bad :
         std::vector<std::string>{"", "vcuser\nPermitRootLogin yes", "vc user", "*", "vc?", "!root",
                                  "user@host", "a,b", "-oops", std::string(33, 'a')}) {
        SshdSpec spec = job_spec();
        spec.allow_user = bad;
        EXPECT_THAT(error_of(render_sshd_config(spec)), HasSubstr("allow_user: ")) << bad;
    }
}

TEST(RenderSshdConfig, RefusesPathsThatSshdWouldReadDifferently) {
    for (const std::string& bad : std::vector<std::string>{
             "relative/key", "/run/key\nPasswordAuthentication yes", "/run/my key", "/run/%u/key",
             "/run/${HOME}/key", "/run/key#1", "/run/\"key\"", "/run/../etc/key", "/run/key/"}) {
        SshdSpec spec = job_spec();
        spec.host_key = bad;
        EXPECT_THAT(error_of(render_sshd_config(spec)), HasSubstr("host_key: ")) << bad;
    }
}

TEST(RenderSshdConfig, NamesEveryPathField) {
    SshdSpec spec = job_spec();
    spec.authorized_keys = "";
    EXPECT_THAT(error_of(render_sshd_config(spec)), HasSubstr("authorized_keys: required"));
    spec = job_spec();
    spec.host_certificate = "cert";
    EXPECT_THAT(error_of(render_sshd_config(spec)), HasSubstr("host_certificate: "));
    spec = job_spec();
    spec.trusted_user_ca_keys = "/a b";
    EXPECT_THAT(error_of(render_sshd_config(spec)), HasSubstr("trusted_user_ca_keys: "));
}

TEST(RenderSshdConfig, RefusesPortZero) {
    SshdSpec spec = job_spec();
    spec.port = 0;
    EXPECT_THAT(error_of(render_sshd_config(spec)), HasSubstr("port: "));
}

// ---- sshd itself -------------------------------------------------------------------------

int run(const std::string& command) {
    // NOLINTNEXTLINE(concurrency-mt-unsafe): the tests start no threads of their own here.
    const int status = std::system(command.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Host key, authorized_keys and a place for the config, in a temp dir.
class SshdFiles {
  public:
    SshdFiles() {
        if (run(kSshKeygen.string() + " -q -t ed25519 -N '' -C test-host -f " +
                host_key().string()) != 0) {
            throw std::runtime_error("ssh-keygen failed");
        }
        temp_.write("authorized_keys", "");
    }
    fs::path host_key() const { return temp_.path() / "host_key"; }
    const fs::path& dir() const { return temp_.path(); }

    SshdSpec spec(const std::string& listen = "127.0.0.1") const {
        return SshdSpec{
            .listen = IpAddress::parse(listen).value(),
            .port = 22,
            .allow_user = "vcuser",
            .host_key = host_key(),
            .host_certificate = {},
            .authorized_keys = dir() / "authorized_keys",
            .trusted_user_ca_keys = {},
        };
    }

  private:
    TempDir temp_;
};

class SshdBinary : public ::testing::Test {
  protected:
    void SetUp() override {
        if (::geteuid() != 0) {
            GTEST_SKIP() << "needs root (sshd's privilege separation directory, namespaces)";
        }
        if (!fs::exists(kSshd) || !fs::exists(kSshKeygen)) {
            GTEST_SKIP() << "OpenSSH server or ssh-keygen not installed";
        }
        ASSERT_TRUE(ensure_sshd_privsep_dir().ok());
        files_ = std::make_unique<SshdFiles>();
    }
    std::unique_ptr<SshdFiles> files_;
};

TEST_F(SshdBinary, AcceptsTheRenderedConfig) {
    const fs::path config = files_->dir() / "sshd_config";
    std::ofstream(config) << render_sshd_config(files_->spec()).value();
    EXPECT_EQ(run(kSshd.string() + " -t -f " + config.string()), 0) << read_text(config);
}

TEST_F(SshdBinary, AcceptsTheRenderedConfigWithCertificateUserCaAndPam) {
    const fs::path ca = files_->dir() / "ca";
    ASSERT_EQ(run(kSshKeygen.string() + " -q -t ed25519 -N '' -C test-ca -f " + ca.string()), 0);
    ASSERT_EQ(run(kSshKeygen.string() + " -q -s " + ca.string() + " -I node1 -h -n node1 " +
                  files_->host_key().string() + ".pub"),
              0);
    SshdSpec spec = files_->spec();
    spec.host_certificate = files_->host_key().string() + "-cert.pub";
    spec.trusted_user_ca_keys = ca.string() + ".pub";
    spec.allow_user = "root";
    spec.use_pam = true;
    const fs::path config = files_->dir() / "sshd_config";
    std::ofstream(config) << render_sshd_config(spec).value();
    EXPECT_EQ(run(kSshd.string() + " -t -f " + config.string()), 0) << read_text(config);
}

// Fresh network, mount and UTS namespaces with loopback up, persisted as files in a private
// bind-mounted directory (as the pilot keeps a job's); removed on destruction.
class TestNamespaces {
  public:
    explicit TestNamespaces(const fs::path& dir) : dir_(dir / "ns") {
        fs::create_directories(dir_);
        check(::mount(dir_.c_str(), dir_.c_str(), nullptr, MS_BIND, nullptr), "bind ns dir");
        dir_mounted_ = true;
        check(::mount(nullptr, dir_.c_str(), nullptr, MS_PRIVATE, nullptr), "make ns dir private");
        int ready[2], release[2];
        check(::pipe(ready), "pipe");
        check(::pipe(release), "pipe");
        const pid_t child = ::fork();
        if (child == 0) {
            ::close(ready[0]);
            ::close(release[1]);
            char ok = bring_up_loopback_in_new_namespaces() ? 'y' : 'n';
            [[maybe_unused]] ssize_t n = ::write(ready[1], &ok, 1);
            [[maybe_unused]] ssize_t m = ::read(release[0], &ok, 1);
            ::_exit(0);
        }
        ::close(ready[1]);
        ::close(release[0]);
        char ok = 'n';
        [[maybe_unused]] ssize_t n = ::read(ready[0], &ok, 1);
        ::close(ready[0]);
        if (ok == 'y') {
            for (const char* kind : {"net", "mnt", "uts"}) {
                const std::ofstream touch(dir_ / kind);
                const std::string source = "/proc/" + std::to_string(child) + "/ns/" + kind;
                if (::mount(source.c_str(), (dir_ / kind).c_str(), nullptr, MS_BIND, nullptr) ==
                    0) {
                    mounted_.push_back(dir_ / kind);
                }
            }
        }
        ::close(release[1]);
        int status = 0;
        ::waitpid(child, &status, 0);
        if (mounted_.size() != 3) {
            throw std::runtime_error("could not create test namespaces");
        }
    }
    ~TestNamespaces() {
        for (const fs::path& file : mounted_) {
            ::umount2(file.c_str(), MNT_DETACH);
        }
        if (dir_mounted_) {
            ::umount2(dir_.c_str(), MNT_DETACH);
        }
    }
    TestNamespaces(const TestNamespaces&) = delete;
    TestNamespaces& operator=(const TestNamespaces&) = delete;

    NamespaceFiles files() const { return {dir_ / "net", dir_ / "mnt", dir_ / "uts"}; }

    // A TCP connection to 127.0.0.1:port made inside the namespace; -1 if refused.
    int connect(std::uint16_t port) const {
        int fd = -1;
        std::thread([&] {
            const int ns = ::open((dir_ / "net").c_str(), O_RDONLY | O_CLOEXEC);
            if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) {
                return;  // this thread only: its network namespace dies with it
            }
            ::close(ns);
            fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            const timeval timeout{5, 0};  // a test fails rather than hangs
            ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
            sockaddr_in address{};
            address.sin_family = AF_INET;
            address.sin_port = htons(port);
            address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
                ::close(fd);
                fd = -1;
            }
        }).join();
        return fd;
    }

    // The first line the server on 127.0.0.1:port sends ("" if none, or nothing listens).
    std::string banner(std::uint16_t port) const {
        const int fd = connect(port);
        if (fd < 0) {
            return {};
        }
        std::array<char, 256> buffer{};
        const ssize_t n = ::read(fd, buffer.data(), buffer.size());
        ::close(fd);
        const std::string line(buffer.data(), n > 0 ? static_cast<std::size_t>(n) : 0);
        return line.substr(0, line.find('\r'));
    }

  private:
    static void check(int result, const char* what) {
        if (result != 0) {
            throw std::runtime_error(std::string(what) + ": " +
                                     std::generic_category().message(errno));
        }
    }
    static bool bring_up_loopback_in_new_namespaces() {
        if (::unshare(CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWUTS) != 0) {
            return false;
        }
        const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ifreq request{};
        std::strcpy(request.ifr_name, "lo");
        if (fd < 0 || ::ioctl(fd, SIOCGIFFLAGS, &request) != 0) {
            return false;
        }
        request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP);
        return ::ioctl(fd, SIOCSIFFLAGS, &request) == 0 && ::sethostname("node1", 5) == 0;
    }

    fs::path dir_;
    bool dir_mounted_ = false;
    std::vector<fs::path> mounted_;
};

// The session sshd started for a connection (waits up to 2 s for it to appear).
pid_t session_of(const Sshd& sshd, std::size_t count = 1) {
    for (int i = 0; i < 200; ++i) {
        const auto sessions = sshd.sessions();
        if (sessions.size() >= count) {
            return sessions.back();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -1;
}

class SshdProcess : public SshdBinary {
  protected:
    void SetUp() override {
        SshdBinary::SetUp();
        if (IsSkipped()) {
            return;
        }
        namespaces_ = std::make_unique<TestNamespaces>(files_->dir());
        launch_.dir = files_->dir() / "sshd";
    }
    void TearDown() override {
        for (const int fd : held_) {
            ::close(fd);
        }
        namespaces_.reset();
    }

    // Connects to port 22 and keeps the connection open (until the test ends); returns the
    // sshd that serves it, -1 if none came.
    pid_t hold_session(const Sshd& sshd) {
        const int fd = namespaces_->connect(22);
        if (fd < 0) {
            return -1;
        }
        held_.push_back(fd);
        return session_of(sshd, held_.size());
    }

    std::unique_ptr<TestNamespaces> namespaces_;
    SshdLaunch launch_;
    std::vector<int> held_;
};

ino_t inode_of(const fs::path& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

bool gone(pid_t pid) {
    return pid > 0 && ::kill(pid, 0) != 0;
}

TEST_F(SshdProcess, ServesEveryConnectionInsideTheJobNamespacesOnceStartReturns) {
    auto sshd = Sshd::start(files_->spec(), namespaces_->files(), launch_);
    ASSERT_TRUE(sshd.ok()) << sshd.error().message;
    EXPECT_TRUE(sshd->sessions().empty());  // no sshd until somebody connects
    const pid_t session = hold_session(*sshd);
    ASSERT_GT(session, 0);
    const fs::path proc = "/proc/" + std::to_string(session);
    const NamespaceFiles files = namespaces_->files();
    EXPECT_EQ(inode_of(proc / "ns" / "net"), inode_of(files.net));
    EXPECT_EQ(inode_of(proc / "ns" / "mnt"), inode_of(files.mnt));
    EXPECT_EQ(inode_of(proc / "ns" / "uts"), inode_of(files.uts));
    EXPECT_THAT(namespaces_->banner(22), HasSubstr("SSH-2.0-OpenSSH"));  // a second at once
    EXPECT_TRUE(sshd->stop().ok());
    EXPECT_TRUE(sshd->stop().ok());  // idempotent
    EXPECT_TRUE(gone(session));
    EXPECT_EQ(namespaces_->banner(22), "");
}

TEST_F(SshdProcess, ReapsSessionsThatEnded) {
    auto sshd = Sshd::start(files_->spec(), namespaces_->files(), launch_);
    ASSERT_TRUE(sshd.ok()) << sshd.error().message;
    for (int i = 0; i < 3; ++i) {
        EXPECT_THAT(namespaces_->banner(22), HasSubstr("SSH-2.0-OpenSSH"));
    }
    bool reaped = false;
    for (int i = 0; i < 300 && !reaped; ++i) {
        reaped = sshd->sessions().empty();
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_TRUE(reaped);
}

TEST_F(SshdProcess, KeepsItsConfigAndLogInARootOnlyDirectory) {
    auto sshd = Sshd::start(files_->spec(), namespaces_->files(), launch_);
    ASSERT_TRUE(sshd.ok()) << sshd.error().message;
    EXPECT_EQ(fs::status(launch_.dir).permissions(), fs::perms(0700));
    EXPECT_EQ(fs::status(launch_.dir / "sshd_config").permissions(), fs::perms(0600));
    EXPECT_EQ(fs::status(launch_.dir / "sshd.log").permissions(), fs::perms(0600));
    EXPECT_EQ(sshd->log_file(), launch_.dir / "sshd.log");
    EXPECT_EQ(read_text(launch_.dir / "sshd_config"), render_sshd_config(files_->spec()).value());
}

TEST_F(SshdProcess, ReconfigureRewritesTheConfigForTheNextSessions) {
    auto sshd = Sshd::start(files_->spec(), namespaces_->files(), launch_);
    ASSERT_TRUE(sshd.ok()) << sshd.error().message;
    SshdSpec spec = files_->spec();
    spec.log_level = SshdLogLevel::verbose;
    ASSERT_TRUE(sshd->reconfigure(spec).ok());
    EXPECT_EQ(read_text(launch_.dir / "sshd_config"), render_sshd_config(spec).value());
    EXPECT_THAT(namespaces_->banner(22), HasSubstr("SSH-2.0-OpenSSH"));
    spec.host_key = files_->dir() / "missing_key";
    EXPECT_THAT(error_of(sshd->reconfigure(spec)), HasSubstr("missing_key"));
    EXPECT_THAT(namespaces_->banner(22), HasSubstr("SSH-2.0-OpenSSH"));  // the old one stays
}

TEST_F(SshdProcess, InheritsNeitherEnvironmentNorDescriptorsNorBlockedSignals) {
    // sshd overwrites its environment block with its process title, so a wrapper records what
    // it was given.
    const fs::path seen = files_->dir() / "environment";
    const fs::path wrapper = files_->dir() / "sshd-wrapper";
    std::ofstream(wrapper) << "#!/bin/sh\nenv > " << seen.string() << "\nexec " << kSshd.string()
                           << " \"$@\"\n";
    fs::permissions(wrapper, fs::perms(0700));
    launch_.binary = wrapper;

    ::setenv("VCPILOT_SECRET", "pilot-only", 1);  // NOLINT(concurrency-mt-unsafe): no threads
    const fs::path leaked = files_->dir() / "leaked";
    const int leaked_fd = ::open(leaked.c_str(), O_WRONLY | O_CREAT, 0600);  // no O_CLOEXEC
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR2);
    ::pthread_sigmask(SIG_BLOCK, &block, &old);
    // The listening thread starts here, with this thread's mask and environment.
    auto sshd = Sshd::start(files_->spec(), namespaces_->files(), launch_);
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    ASSERT_TRUE(sshd.ok()) << sshd.error().message;
    const pid_t session = hold_session(*sshd);
    ASSERT_GT(session, 0);
    for (int i = 0; i < 200 && !fs::exists(seen); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the exec into sshd
    ::close(leaked_fd);
    ::unsetenv("VCPILOT_SECRET");  // NOLINT(concurrency-mt-unsafe): no threads

    EXPECT_THAT(lines_of(read_text(seen)),
                ::testing::IsSupersetOf({"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}));
    EXPECT_THAT(read_text(seen), Not(HasSubstr("VCPILOT_SECRET")));
    const fs::path proc = "/proc/" + std::to_string(session);
    for (const auto& entry : fs::directory_iterator(proc / "fd")) {
        std::error_code ec;
        EXPECT_NE(fs::read_symlink(entry.path(), ec), leaked) << entry.path();
    }
    std::string blocked;
    std::istringstream status(read_text(proc / "status"));
    for (std::string line; std::getline(status, line);) {
        if (line.rfind("SigBlk:", 0) == 0) {
            blocked = line.substr(7);
        }
    }
    ASSERT_FALSE(blocked.empty());
    const unsigned long long mask = std::stoull(blocked, nullptr, 16);
    EXPECT_EQ(mask & (1ULL << (SIGUSR2 - 1)), 0u) << blocked;
}

TEST_F(SshdProcess, LogsEvenWhenThePilotRunsWithoutStdin) {
    // A daemon started with stdin closed gets descriptor 0 for the next file it opens: here
    // sshd's log, which must not become a session's stdin.
    const int saved_stdin = ::dup(STDIN_FILENO);
    ::close(STDIN_FILENO);
    auto sshd = Sshd::start(files_->spec(), namespaces_->files(), launch_);
    ::dup2(saved_stdin, STDIN_FILENO);
    ::close(saved_stdin);
    ASSERT_TRUE(sshd.ok()) << sshd.error().message;
    EXPECT_THAT(namespaces_->banner(22), HasSubstr("SSH-2.0-OpenSSH"))
        << read_text(sshd->log_file());
    EXPECT_THAT(read_text(sshd->log_file()),
                HasSubstr("listening on 127.0.0.1 port 22; an sshd -i for every connection"));
}

TEST_F(SshdProcess, SessionsEndWithTheListener) {
    // PR_SET_PDEATHSIG: a session whose listening thread is gone (the pilot died) gets SIGTERM.
    auto sshd = Sshd::start(files_->spec(), namespaces_->files(), launch_);
    ASSERT_TRUE(sshd.ok()) << sshd.error().message;
    const pid_t session = hold_session(*sshd);
    ASSERT_GT(session, 0);
    sshd->request_stop();
    bool ended = false;
    for (int i = 0; i < 200 && !ended; ++i) {
        std::ifstream stat("/proc/" + std::to_string(session) + "/stat");
        std::string pid, comm, state;
        stat >> pid >> comm >> state;
        ended = !stat || state == "Z";
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_TRUE(ended);
    EXPECT_TRUE(sshd->stop().ok());
    EXPECT_TRUE(gone(session));
}

TEST_F(SshdProcess, RefusesAMissingHostKeyAtStart) {
    SshdSpec spec = files_->spec();
    spec.host_key = files_->dir() / "missing_key";
    const std::string message = error_of(Sshd::start(spec, namespaces_->files(), launch_));
    EXPECT_THAT(message, HasSubstr("host_key"));
    EXPECT_THAT(message, HasSubstr("missing_key"));
    EXPECT_EQ(namespaces_->banner(22), "");
}

TEST_F(SshdProcess, FailsAtOnceOnAnAddressTheJobDoesNotHave) {
    auto sshd = Sshd::start(files_->spec("10.99.0.1"), namespaces_->files(), launch_);
    EXPECT_THAT(error_of(sshd), HasSubstr("listen on 10.99.0.1 port 22"));
    EXPECT_THAT(error_of(sshd), HasSubstr("Cannot assign requested address"));
}

TEST_F(SshdProcess, LogsAFailingBeforeExecHookAndClosesTheConnection) {
    launch_.before_exec = [] { return EPERM; };
    auto sshd = Sshd::start(files_->spec(), namespaces_->files(), launch_);
    ASSERT_TRUE(sshd.ok()) << sshd.error().message;
    EXPECT_EQ(namespaces_->banner(22), "");
    const std::string log = read_text(sshd->log_file());
    EXPECT_THAT(log, HasSubstr("no sshd for a connection: the before-exec hook (seccomp)"));
    EXPECT_THAT(log, HasSubstr(std::generic_category().message(EPERM)));
    EXPECT_TRUE(sshd->sessions().empty());
}

TEST_F(SshdProcess, RunsTheBeforeExecHookInTheChild) {
    static int hook_fd = -1;
    int pipe_fds[2];
    ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK), 0);
    hook_fd = pipe_fds[1];
    launch_.before_exec = [] {
        // System calls only (the child shares the pilot's memory until it execs): it says who
        // it is through the pipe.
        const pid_t self = ::getpid();
        return ::write(hook_fd, &self, sizeof self) == sizeof self ? 0 : errno;
    };
    auto sshd = Sshd::start(files_->spec(), namespaces_->files(), launch_);
    ASSERT_TRUE(sshd.ok()) << sshd.error().message;
    EXPECT_THAT(namespaces_->banner(22), HasSubstr("SSH-2.0-OpenSSH"));
    ::close(pipe_fds[1]);
    pid_t ran_in = 0;
    EXPECT_EQ(::read(pipe_fds[0], &ran_in, sizeof ran_in), static_cast<ssize_t>(sizeof ran_in));
    EXPECT_GT(ran_in, 0);
    EXPECT_NE(ran_in, ::getpid());
    ::close(pipe_fds[0]);
}

TEST_F(SshdProcess, ListensOnIpv6) {
    SshdSpec spec = files_->spec("::1");
    auto sshd = Sshd::start(spec, namespaces_->files(), launch_);
    ASSERT_TRUE(sshd.ok()) << sshd.error().message;
    EXPECT_TRUE(sshd->stop().ok());
}

TEST_F(SshdProcess, ClosesConnectionsBeyondTheSessionLimit) {
    launch_.max_sessions = 1;
    auto sshd = Sshd::start(files_->spec(), namespaces_->files(), launch_);
    ASSERT_TRUE(sshd.ok()) << sshd.error().message;
    ASSERT_GT(hold_session(*sshd), 0);
    EXPECT_EQ(namespaces_->banner(22), "");
    EXPECT_THAT(read_text(sshd->log_file()),
                HasSubstr("refused a connection: 1 sessions are open already"));
}

TEST_F(SshdProcess, StopKillsASessionThatIgnoresSigterm) {
    // A stand-in for sshd that ignores SIGTERM (and so PR_SET_PDEATHSIG's SIGTERM too).
    const fs::path stubborn = files_->dir() / "stubborn-sshd";
    std::ofstream(stubborn) << "#!/bin/sh\ntrap '' TERM\nsleep 30 & wait $!; sleep 30\n";
    fs::permissions(stubborn, fs::perms(0700));
    launch_.binary = stubborn;
    launch_.stop_timeout = std::chrono::milliseconds(200);
    auto sshd = Sshd::start(files_->spec(), namespaces_->files(), launch_);
    ASSERT_TRUE(sshd.ok()) << sshd.error().message;
    const pid_t session = hold_session(*sshd);
    ASSERT_GT(session, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the trap is set
    const auto started = std::chrono::steady_clock::now();
    EXPECT_TRUE(sshd->stop().ok());
    EXPECT_GE(std::chrono::steady_clock::now() - started, std::chrono::milliseconds(200));
    EXPECT_TRUE(gone(session));
}

TEST_F(SshdProcess, RefusesMissingNamespaceFiles) {
    NamespaceFiles files = namespaces_->files();
    files.net = files_->dir() / "no-such-netns";
    EXPECT_THAT(error_of(Sshd::start(files_->spec(), files, launch_)), HasSubstr("no-such-netns"));
}

TEST_F(SshdProcess, StopsWhenDestroyed) {
    pid_t session = -1;
    {
        auto sshd = Sshd::start(files_->spec(), namespaces_->files(), launch_);
        ASSERT_TRUE(sshd.ok()) << sshd.error().message;
        session = hold_session(*sshd);
        ASSERT_GT(session, 0);
        Sshd moved = std::move(*sshd);
        EXPECT_TRUE(sshd->sessions().empty());
        EXPECT_EQ(moved.sessions(), std::vector<pid_t>{session});
    }
    EXPECT_EQ(namespaces_->banner(22), "");
    EXPECT_TRUE(gone(session));
}

}  // namespace
}  // namespace vcpilot::pilot
