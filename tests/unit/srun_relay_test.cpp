// srun inside a --vc job: vc-srun hands the command to the pilot's relay, which runs the real
// srun as the job's user outside the job's network. Here the "real srun" is a script that shows
// what it was given.
#include "pilot/srun_relay.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <gtest/gtest.h>
#include <string>
#include <thread>

#include "pilot/srun_args.hpp"
#include "pilot/srun_wire.hpp"
#include "tests/support/temp_dir.hpp"

namespace vcpilot::pilot {
namespace {

using vcpilot::testing::TempDir;

TEST(SrunWire, ARequestComesBackAsItWasSent) {
    const SrunRequest sent{"/home/u", {"srun", "-N2", "", "hostname"}, {"A=1", "EMPTY="}};
    auto received = decode_srun_request(encode_srun_request(sent));
    ASSERT_TRUE(received) << received.error().message;
    EXPECT_EQ(received->cwd, sent.cwd);
    EXPECT_EQ(received->argv, sent.argv);
    EXPECT_EQ(received->env, sent.env);
}

TEST(SrunWire, RefusesCutShortOrMalformedRequests) {
    const std::string whole = encode_srun_request({"/", {"srun", "x"}, {"A=1"}});
    EXPECT_FALSE(decode_srun_request(whole.substr(0, whole.size() - 1)));
    EXPECT_FALSE(decode_srun_request(whole + "extra"));
    EXPECT_FALSE(decode_srun_request(encode_srun_request({"/", {}, {}})));
    EXPECT_FALSE(decode_srun_request(encode_srun_request({"/", {"srun"}, {"NOEQUALS"}})));
    EXPECT_FALSE(
        decode_srun_request(std::string("/\0"
                                        "99999999999\0",
                                        14)));
}

TEST(SrunRelay, RefusesOptionsThatRunACommandOutsideTheJob) {
    for (const char* option : {"--prolog=/x", "--prolog", "--prol=/x", "--epilog=/x", "--ep"}) {
        EXPECT_FALSE(check_relayed_srun({"srun", "-N2", option, "hostname"})) << option;
    }
    EXPECT_TRUE(check_relayed_srun({"srun", "--profile=none", "-N2", "orted", "-mca", "x"}));
    EXPECT_FALSE(check_relayed_srun({"srun", "-n", "4", "--epilog=/x", "hostname"}));
}

TEST(SrunRelay, LeavesTheCommandsOwnArgumentsAlone) {
    EXPECT_TRUE(check_relayed_srun({"srun", "-N2", "train.py", "--epochs", "10"}));
    EXPECT_TRUE(check_relayed_srun({"srun", "-n", "4", "./a.out", "--prolog=x"}));
    EXPECT_TRUE(check_relayed_srun({"srun", "-l", "--", "--epilog"}));
    EXPECT_TRUE(check_relayed_srun({"srun", "--ntasks=2", "--exclusive", "env", "--ep"}));
}

TEST(SrunRelay, ReadsSrunsOptionsAsGetoptLongDoes) {
    // A long option srun requires a value for takes the next word; a prefix srun would take.
    EXPECT_FALSE(check_relayed_srun({"srun", "--ntasks", "4", "--prolog=/x", "hostname"}));
    EXPECT_FALSE(check_relayed_srun({"srun", "-lw", "n1", "--epi", "/x", "hostname"}));
    EXPECT_FALSE(check_relayed_srun({"srun", "--nodelist", "--prolog", "--epilog=/x", "a"}));
    // An ambiguous prefix is srun's to refuse: "--pro" could be --profile or --propagate.
    EXPECT_TRUE(check_relayed_srun({"srun", "--pro=x", "hostname"}));
    // Flags take no value, optional values only after '=': the command starts at "env".
    EXPECT_TRUE(check_relayed_srun({"srun", "--exclusive", "env", "--prolog=x"}));
    EXPECT_TRUE(check_relayed_srun({"srun", "-l", "env", "--prolog=x"}));
}

const NameMap kToSlurm = {
    {"vc-site1-1", "site1-node1"}, {"vc-site1-2", "site1-node2"}, {"vc-site1-3", "site1-node3"}};

TEST(SrunRelay, TurnsTheVirtualNodesSrunIsGivenIntoSlurmsNames) {
    using Argv = std::vector<std::string>;
    // Open MPI's plm_slurm and MPICH's hydra write their node lists these ways.
    EXPECT_EQ(
        srun_argv_in_slurm_names({"srun", "--nodelist=vc-site1-2,vc-site1-3", "orted"}, kToSlurm),
        (Argv{"srun", "--nodelist=site1-node[2-3]", "orted"}));
    EXPECT_EQ(
        srun_argv_in_slurm_names(
            {"srun", "-N", "2", "--nodelist", "vc-site1-[1-2]", "--input", "none", "proxy"},
            kToSlurm),
        (Argv{"srun", "-N", "2", "--nodelist", "site1-node[1-2]", "--input", "none", "proxy"}));
    EXPECT_EQ(srun_argv_in_slurm_names({"srun", "-w", "vc-site1-3", "-xvc-site1-1", "-lwvc-site1-2",
                                        "--exclud=vc-site1-2", "a"},
                                       kToSlurm),
              (Argv{"srun", "-w", "site1-node3", "-xsite1-node1", "-lwsite1-node2",
                    "--exclud=site1-node2", "a"}));
    // The command's arguments, unknown names and what is no host list stay as they are.
    EXPECT_EQ(srun_argv_in_slurm_names(
                  {"srun", "-w", "other,vc-site1-1", "prog", "-w", "vc-site1-2"}, kToSlurm),
              (Argv{"srun", "-w", "other,site1-node1", "prog", "-w", "vc-site1-2"}));
    EXPECT_EQ(srun_argv_in_slurm_names({"srun", "-w", "vc[1-", "a"}, kToSlurm),
              (Argv{"srun", "-w", "vc[1-", "a"}));
}

TEST(SrunRelay, DoesNotExpandAHugeNodeListAUserGives) {
    // The relay runs as root for up to 256 sruns at once: a job must not make it build a
    // million names per request. A list over kMaxRenamedHosts goes to srun as it is.
    const std::string huge = "vc-site1-[1-" + std::to_string(kMaxRenamedHosts + 1) + "]";
    EXPECT_FALSE(rename_hosts(huge, kToSlurm));
    EXPECT_EQ(srun_argv_in_slurm_names({"srun", "-w", huge, "a"}, kToSlurm),
              (std::vector<std::string>{"srun", "-w", huge, "a"}));
    EXPECT_TRUE(rename_hosts("vc-site1-[1-" + std::to_string(kMaxRenamedHosts) + "]", kToSlurm));
}

TEST(SrunRelay, TurnsTheSlurmNodeVariablesBackIntoSlurmsNames) {
    EXPECT_EQ(
        srun_env_in_slurm_names({"SLURM_JOB_NODELIST=vc-site1-[1-3]",
                                 "SLURM_NODELIST=vc-site1-[1-3]", "SLURM_TOPOLOGY_ADDR=vc-site1-2",
                                 "OTHER=vc-site1-1", "SLURM_STEP_NODELIST=vc-site1-[3,1]"},
                                kToSlurm),
        (std::vector<std::string>{"SLURM_JOB_NODELIST=site1-node[1-3]",
                                  "SLURM_NODELIST=site1-node[1-3]",
                                  "SLURM_TOPOLOGY_ADDR=site1-node2", "OTHER=vc-site1-1",
                                  "SLURM_STEP_NODELIST=site1-node[3,1]"}));
}

TEST(SrunRelay, RefusesALimitOfNoSessionsAndMakesNoSocket) {
    TempDir dir;
    auto relay = SrunRelay::start({.socket = dir.path() / "srun.sock",
                                   .srun = "/bin/true",
                                   .user = "nobody",
                                   .uid = 65534,
                                   .gid = 65534,
                                   .slurm_conf = {},
                                   .max_sessions = 0});
    ASSERT_FALSE(relay);
    EXPECT_EQ(relay.error().message, "srun relay: max_sessions must be at least 1");
    EXPECT_FALSE(std::filesystem::exists(dir.path() / "srun.sock"));
}

#ifdef VCPILOT_SRUN_SHIM
// The relay runs as root; vc-srun as the job's user (nobody here).
class SrunRelayRun : public ::testing::Test {
  protected:
    void SetUp() override {
        if (::geteuid() != 0) {
            GTEST_SKIP() << "needs root (the relay runs srun as the job's user)";
        }
        std::filesystem::permissions(dir_.path(), std::filesystem::perms(0755));
        std::filesystem::create_directories(dir_.path() / "job");
        std::filesystem::permissions(dir_.path() / "job", std::filesystem::perms(0755));
        fake_srun_ = dir_.write("fake-srun", R"SH(#!/bin/sh
echo "args $*"
echo "uid $(id -u) conf ${SLURM_CONF:-none} loader ${LD_LIBRARY_PATH:-none} keep ${KEEP:-none}"
echo "cwd $(pwd)"
echo "to stderr" >&2
case "$1" in
    wait) trap 'echo got TERM; exit 3' TERM; sleep 20 & wait ;;
esac
exit 7
)SH");
        ::chmod(fake_srun_.c_str(), 0755);
        start_relay(256);
    }

    void start_relay(std::size_t max_sessions) {
        relay_.reset();
        auto relay = SrunRelay::start({.socket = dir_.path() / "job" / "srun.sock",
                                       .srun = fake_srun_,
                                       .user = "nobody",
                                       .uid = 65534,
                                       .gid = 65534,
                                       .slurm_conf = "/etc/site/slurm.conf",
                                       .max_sessions = max_sessions});
        ASSERT_TRUE(relay) << relay.error().message;
        relay_ = std::move(*relay);
    }

    // Starts vc-srun as nobody with ARGS; its stdout and stderr go to files OUT and OUT.err.
    pid_t start_shim(const std::string& args, const std::string& out = "out") {
        const std::string command =
            "cd / && exec env -i VC_HOSTFILE=" + (dir_.path() / "job" / "hostfile").string() +
            " SLURM_CONF=/home/u/mine.conf LD_LIBRARY_PATH=/home/u/lib KEEP=kept"
            " setpriv --reuid=65534 --regid=65534 --clear-groups " VCPILOT_SRUN_SHIM " " +
            args + " >" + (dir_.path() / out).string() + " 2>" +
            (dir_.path() / (out == "out" ? "err" : out + ".err")).string();
        const pid_t pid = ::fork();
        if (pid == 0) {
            ::execl("/bin/sh", "sh", "-c", command.c_str(), nullptr);
            ::_exit(127);
        }
        return pid;
    }

    int wait_status(pid_t pid) {
        int status = 0;
        ::waitpid(pid, &status, 0);
        return status;
    }

    // Until the fake srun started by start_shim("wait", OUT) has started and set its trap.
    void await_waiting(const std::string& out = "out") {
        for (int i = 0; i < 200 && read(out).find("cwd") == std::string::npos; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }

    std::string read(const std::string& name) {
        std::string text;
        if (FILE* f = std::fopen((dir_.path() / name).c_str(), "r")) {
            std::array<char, 4096> buffer{};
            std::size_t n = 0;
            while ((n = std::fread(buffer.data(), 1, buffer.size(), f)) > 0) {
                text.append(buffer.data(), n);
            }
            (void)std::fclose(f);
        }
        return text;
    }

    TempDir dir_;
    std::filesystem::path fake_srun_;
    std::unique_ptr<SrunRelay> relay_;
};

TEST_F(SrunRelayRun, RunsSrunAsTheJobUserWithItsArgumentsAndStreamsAndReturnsItsStatus) {
    const int status = wait_status(start_shim("-N2 'two words' hostname"));
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 7);
    const std::string out = read("out");
    EXPECT_NE(out.find("args -N2 two words hostname\n"), std::string::npos) << out;
    // Slurm's configuration, not the job's; no loader variables; the rest of the environment.
    EXPECT_NE(out.find("uid 65534 conf /etc/site/slurm.conf loader none keep kept\n"),
              std::string::npos)
        << out;
    EXPECT_NE(out.find("cwd /\n"), std::string::npos) << out;
    EXPECT_EQ(read("err"), "to stderr\n");
}

TEST_F(SrunRelayRun, GivesSrunSlurmsNamesForTheVirtualNodesItWasGiven) {
    relay_->set_slurm_names(kToSlurm);
    const pid_t shim = start_shim("-w vc-site1-[2-3] -N2 hostname");
    const int status = wait_status(shim);
    ASSERT_TRUE(WIFEXITED(status));
    const std::string out = read("out");
    EXPECT_NE(out.find("args -w site1-node[2-3] -N2 hostname\n"), std::string::npos) << out;
}

TEST_F(SrunRelayRun, RefusesProlog) {
    const int status = wait_status(start_shim("--prolog=/bin/true hostname"));
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 1);
    EXPECT_EQ(read("out"), "");
    EXPECT_NE(read("err").find("--prolog is not available inside a --vc job"), std::string::npos);
}

TEST_F(SrunRelayRun, PassesSignalsOnToSrun) {
    const pid_t sh = start_shim("wait");
    await_waiting();
    // sh exec'd env, which exec'd setpriv, which exec'd vc-srun: same pid.
    ::kill(sh, SIGTERM);
    const int status = wait_status(sh);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 3);
    EXPECT_NE(read("out").find("got TERM"), std::string::npos) << read("out");
}

TEST_F(SrunRelayRun, KeepsNothingOfAnSrunThatEnded) {
    // A batch script may run thousands of steps, one after the other.
    for (int i = 0; i < 20; ++i) {
        const int status = wait_status(start_shim("hostname"));
        ASSERT_TRUE(WIFEXITED(status));
        ASSERT_EQ(WEXITSTATUS(status), 7);
    }
    // The last session marks itself ended just after answering.
    for (int i = 0; i < 100 && relay_->sessions() > 1; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_LE(relay_->sessions(), 1U);
}

TEST_F(SrunRelayRun, AnSrunBeyondTheLimitWaitsForOneToEnd) {
    start_relay(1);
    const pid_t first = start_shim("wait");
    await_waiting();
    const pid_t second = start_shim("hostname", "second");
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_EQ(read("second"), "") << "ran while the only session was taken";
    int status = 0;
    EXPECT_EQ(::waitpid(second, &status, WNOHANG), 0);
    ::kill(first, SIGTERM);
    status = wait_status(first);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 3);
    status = wait_status(second);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 7);
    EXPECT_NE(read("second").find("args hostname"), std::string::npos) << read("second");
}

TEST_F(SrunRelayRun, RefusesOtherUsers) {
    // vc-srun as root: the relay serves the job's user only, and vc-srun says the pilot went.
    const std::string command = "VC_HOSTFILE=" + (dir_.path() / "job" / "hostfile").string() +
                                " " VCPILOT_SRUN_SHIM " hostname 2>" +
                                (dir_.path() / "err").string();
    const int status = std::system(command.c_str());
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 1);
    EXPECT_NE(read("err").find("vc-srun:"), std::string::npos);
}
#endif

}  // namespace
}  // namespace vcpilot::pilot
