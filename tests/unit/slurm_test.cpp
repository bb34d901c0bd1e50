// The CRM's Slurm commands, against stand-ins for sbatch, squeue and scancel that log how they
// were called: the arguments, the user sbatch runs as, job ids, failures and time-outs.
#include "crm/slurm.hpp"

#include <pwd.h>
#include <unistd.h>

#include <fstream>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sstream>
#include <vector>

#include "tests/support/temp_dir.hpp"

namespace vcpilot::coordinator {
namespace {

using ::testing::HasSubstr;
using vcpilot::testing::TempDir;
using namespace std::chrono_literals;

std::string read(const std::filesystem::path& path) {
    std::ifstream in(path);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

// getpwuid_r, not getpwuid, whose result is shared by every thread.
std::string me() {
    std::vector<char> buffer(16384);
    passwd entry{};
    passwd* found = nullptr;
    if (::getpwuid_r(::geteuid(), &entry, buffer.data(), buffer.size(), &found) != 0 ||
        found == nullptr) {
        return "";
    }
    return found->pw_name;
}

// A bin directory of stand-ins; each appends "<user> <args>" to <name>.log in the directory and
// then runs `body` (default: nothing).
class FakeSlurm {
  public:
    void tool(const std::string& name, const std::string& body = "") const {
        const auto path =
            dir_.write(name, "#!/bin/sh\necho \"$(id -un) $*\" >> \"" +
                                 (dir_.path() / (name + ".log")).string() + "\"\n" + body + "\n");
        std::filesystem::permissions(
            path, std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                      std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                      std::filesystem::perms::others_exec);
    }
    std::string log(const std::string& name) const { return read(dir_.path() / (name + ".log")); }
    Slurm slurm(std::chrono::seconds timeout = 10s) const {
        SlurmOptions options;
        options.bin_dir = dir_.path();
        options.slurm_conf = "/etc/slurm/site-a.conf";
        options.timeout = timeout;
        return Slurm(options);
    }
    const TempDir& dir() const { return dir_; }

  private:
    TempDir dir_;
};

PilotJobRequest request() {
    PilotJobRequest r;
    r.cluster_id = "vc-0000abcd";
    r.owner = me();
    r.nodes = 3;
    r.time_limit_minutes = 62;
    return r;
}

TEST(PilotJob, AsksForTheSitesNodesAndJoinsTheClusterWithTheJobNamedAfterIt) {
    const auto args = pilot_job_arguments(request());
    for (const std::string expected :
         {"--parsable", "--job-name=vc-0000abcd", "--nodes=3", "--vc-cluster=vc-0000abcd",
          "--time=62", "--output=/dev/null"}) {
        EXPECT_NE(std::find(args.begin(), args.end(), expected), args.end()) << expected;
    }
    auto no_limit = request();
    no_limit.time_limit_minutes = 0;
    const auto without = pilot_job_arguments(no_limit);
    EXPECT_EQ(std::count_if(without.begin(), without.end(),
                            [](const std::string& a) { return a.starts_with("--time"); }),
              0);
}

TEST(PilotJob, JobIdsAreWhatSbatchParsablePrints) {
    EXPECT_EQ(parse_job_id("123\n").value(), "123");
    EXPECT_EQ(parse_job_id("77;site-a\n").value(), "77");
    for (const char* bad : {"", "\n", "abc\n", "12a\n", "-1\n", "123456789012345678901234\n"}) {
        EXPECT_FALSE(parse_job_id(bad)) << bad;
    }
}

TEST(Slurm, SubmitsAsTheOwnerWithTheSitesConfigurationAfterLookingForAJobAlready) {
    FakeSlurm fake;
    fake.tool("squeue");
    fake.tool("sbatch",
              "echo \"SLURM_CONF=$SLURM_CONF\" >> \"$(dirname \"$0\")/env.log\"; echo 4242");
    const auto job = fake.slurm().submit_pilot_job(request());
    ASSERT_TRUE(job) << job.error().message;
    EXPECT_EQ(*job, "4242");
    EXPECT_THAT(fake.log("squeue"), HasSubstr("--name=vc-0000abcd --user=" + me()));
    EXPECT_THAT(fake.log("sbatch"), HasSubstr(me() + " --parsable --job-name=vc-0000abcd"));
    EXPECT_EQ(read(fake.dir().path() / "env.log"), "SLURM_CONF=/etc/slurm/site-a.conf\n");
}

TEST(Slurm, AJobAlreadyQueuedForTheClusterIsNotSubmittedAgain) {
    FakeSlurm fake;
    fake.tool("squeue", "echo '  91'");
    fake.tool("sbatch", "echo 4242");
    const auto job = fake.slurm().submit_pilot_job(request());
    ASSERT_TRUE(job) << job.error().message;
    EXPECT_EQ(*job, "91");
    EXPECT_EQ(fake.log("sbatch"), "");
}

TEST(Slurm, ARefusedSubmissionIsOneLineWithSlurmsReason) {
    FakeSlurm fake;
    fake.tool("squeue");
    fake.tool("sbatch",
              "echo 'sbatch: error: Batch job submission failed: Requested node configuration "
              "is not available' >&2; exit 1");
    const auto job = fake.slurm().submit_pilot_job(request());
    ASSERT_FALSE(job);
    EXPECT_THAT(job.error().message, HasSubstr("Requested node configuration is not available"));
    EXPECT_EQ(job.error().message.find('\n'), std::string::npos) << job.error().message;
}

TEST(Slurm, ACommandThatHangsIsGivenUpAfterTheTimeout) {
    FakeSlurm fake;
    fake.tool("squeue", "exec sleep 30");
    const auto start = std::chrono::steady_clock::now();
    const auto job = fake.slurm(1s).submit_pilot_job(request());
    ASSERT_FALSE(job);
    EXPECT_THAT(job.error().message, HasSubstr("did not answer within 1 s"));
    EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

TEST(Slurm, AnUnknownOwnerIsRefusedBeforeSbatchRuns) {
    FakeSlurm fake;
    fake.tool("squeue");
    fake.tool("sbatch", "echo 1");
    auto r = request();
    r.owner = "no-such-user-vcpilot";
    const auto job = fake.slurm().submit_pilot_job(r);
    ASSERT_FALSE(job);
    EXPECT_THAT(job.error().message, HasSubstr("is not known"));
    EXPECT_EQ(fake.log("sbatch"), "");
}

TEST(Slurm, CancellingAJobThatEndedAlreadyIsNotAnError) {
    FakeSlurm fake;
    fake.tool(
        "scancel",
        "echo 'scancel: error: Kill job error on job id 5: Invalid job id specified' >&2; exit 1");
    EXPECT_TRUE(fake.slurm().cancel("5"));
    EXPECT_THAT(fake.log("scancel"), HasSubstr(" 5"));
    fake.tool("scancel", "echo 'scancel: error: Unable to contact slurm controller' >&2; exit 1");
    const auto failed = fake.slurm().cancel("6");
    ASSERT_FALSE(failed);
    EXPECT_THAT(failed.error().message, HasSubstr("Unable to contact slurm controller"));
}

}  // namespace
}  // namespace vcpilot::coordinator
