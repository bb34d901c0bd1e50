#include "pilot/privileged/mounts.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <memory>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "pilot/privileged/files.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/unit/expect_error.hpp"

namespace vcpilot::pilot {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using vcpilot::testing::TempDir;

constexpr uid_t kJobUid = 4242;
constexpr gid_t kJobGid = 4343;
constexpr std::uint64_t kTmpSize = 64 << 20;

std::string read_text(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

void write_text(const fs::path& file, std::string_view text) {
    std::ofstream(file, std::ios::binary) << text;
}

// The file system type of the topmost mount at `mount_point` in a mountinfo text.
std::string fs_type_at(const std::string& mountinfo, const std::string& mount_point) {
    std::istringstream lines(mountinfo);
    std::string type;
    for (std::string line; std::getline(lines, line);) {
        std::istringstream fields(line);
        std::string id, parent, device, root, point, field;
        fields >> id >> parent >> device >> root >> point;
        while (fields >> field && field != "-") {
        }
        if (point == mount_point) {
            fields >> type;
        }
    }
    return type;
}

#define SKIP_UNLESS_ROOT()                                                          \
    do {                                                                            \
        if (::geteuid() != 0) {                                                     \
            GTEST_SKIP() << "needs root (mount namespaces, chown to the job user)"; \
        }                                                                           \
    } while (0)

// A scratch directory outside /tmp (the job gets its own /tmp, which would hide anything
// under the host's), with the layout a pilot uses: <dir>/run/<node>/<job>, <dir>/home.
class Scratch {
  public:
    Scratch() {
        // /run as the pilot uses; /var/tmp without root.
        std::string name = "/run/vcpilot-mounts-test-XXXXXX";
        if (::mkdtemp(name.data()) == nullptr) {
            name = "/var/tmp/vcpilot-mounts-test-XXXXXX";
            if (::mkdtemp(name.data()) == nullptr) {
                throw std::runtime_error("mkdtemp failed");
            }
        }
        dir_ = name;
        fs::create_directories(home());
    }
    ~Scratch() {
        std::error_code ignored;
        fs::remove_all(dir_, ignored);
        if (!mount_dir_.empty()) {
            fs::remove_all(mount_dir_, ignored);
        }
    }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;

    const fs::path& dir() const { return dir_; }
    // A directory an image may be layered over: image_mount may not lie in /run, /var or /tmp,
    // so it is made under /mnt, on first use. Empty when that cannot be done (not root).
    const fs::path& mount_dir() {
        if (mount_dir_.empty()) {
            std::string name = "/mnt/vcpilot-mounts-test-XXXXXX";
            if (::mkdtemp(name.data()) != nullptr) {
                mount_dir_ = name;
            }
        }
        return mount_dir_;
    }
    fs::path home() const { return dir_ / "home"; }
    JobPaths paths() const { return JobPaths::make(dir_ / "run", "node1", "job1").value(); }

    JobMountPlan plan() const {
        return JobMountPlan{paths(),  kJobUid, kJobGid, home(), "node1", {},
                            kTmpSize, {},      {},      {},     {}};
    }

  private:
    fs::path dir_;
    fs::path mount_dir_;
};

// ---- the plan's checks (no privileges needed) ---------------------------------------------

TEST(JobMountPlan, AcceptsAPlainPlan) {
    Scratch scratch;
    EXPECT_TRUE(check_job_mount_plan(scratch.plan(), {}).ok());
}

TEST(JobMountPlan, RefusesATmpBelowOneMebibyteBecauseZeroMeansUnlimited) {
    Scratch scratch;
    JobMountPlan plan = scratch.plan();
    plan.tmp_size_bytes = 0;
    EXPECT_THAT(error_of(check_job_mount_plan(plan, {})), HasSubstr("tmp_size_bytes"));
    plan.tmp_size_bytes = 512;  // MiB meant, bytes given
    EXPECT_THAT(error_of(check_job_mount_plan(plan, {})), HasSubstr("tmp_size_bytes"));
}

TEST(JobMountPlan, RefusesARelativeOrUnnormalizedHome) {
    Scratch scratch;
    JobMountPlan plan = scratch.plan();
    plan.home = "home/user";
    EXPECT_THAT(error_of(check_job_mount_plan(plan, {})), HasSubstr("home: "));
    plan.home = "/home/../root";
    EXPECT_THAT(error_of(check_job_mount_plan(plan, {})), HasSubstr("home: "));
}

TEST(JobMountPlan, RefusesAnInvalidHostname) {
    Scratch scratch;
    JobMountPlan plan = scratch.plan();
    plan.hostname = "Node_1";
    EXPECT_THAT(error_of(check_job_mount_plan(plan, {})), HasSubstr("hostname"));
    plan.hostname = "node1\nevil";
    EXPECT_THAT(error_of(check_job_mount_plan(plan, {})), HasSubstr("hostname"));
}

TEST(JobMountPlan, RefusesARunDirectoryThatWouldBreakOverlayOptions) {
    TempDir temp;
    const JobPaths paths = JobPaths::make(temp.path() / "a,b", "node1", "job1").value();
    const JobMountPlan plan{paths,    kJobUid, kJobGid, "/home/u", "node1", {},
                            kTmpSize, {},      {},      {},        {}};
    EXPECT_THAT(error_of(check_job_mount_plan(plan, {})), HasSubstr("run directory"));
}

class ImagePlan : public ::testing::Test {
  protected:
    void SetUp() override {
        if (scratch_.mount_dir().empty()) {
            GTEST_SKIP() << "needs a directory under /mnt (root)";
        }
        mount_point_ = scratch_.mount_dir() / "image";
        fs::create_directories(roots_[0] / "img" / "bin");
        fs::create_directories(scratch_.dir() / "images-evil" / "img");
        fs::create_directories(scratch_.dir() / "other" / "img");
        fs::create_directories(mount_point_);
    }
    JobMountPlan plan_with(const fs::path& image) const {
        JobMountPlan plan = scratch_.plan();
        plan.image = image;
        plan.image_mount = mount_point_;
        return plan;
    }
    Status check(const fs::path& image) const {
        return check_job_mount_plan(plan_with(image), roots_);
    }

    Scratch scratch_;
    std::vector<fs::path> roots_{scratch_.dir() / "images"};
    fs::path mount_point_;
};

TEST_F(ImagePlan, AcceptsADirectoryInsideAnAllowedRoot) {
    EXPECT_TRUE(check(roots_[0] / "img").ok());
}

TEST_F(ImagePlan, RefusesAnImageOutsideTheAllowedRoots) {
    EXPECT_THAT(error_of(check(scratch_.dir() / "other" / "img")), HasSubstr("image: "));
    EXPECT_THAT(error_of(check(scratch_.dir() / "other" / "img")),
                HasSubstr("outside the allowed image roots"));
}

TEST_F(ImagePlan, ComparesRootsByPathComponentNotByStringPrefix) {
    EXPECT_THAT(error_of(check(scratch_.dir() / "images-evil" / "img")),
                HasSubstr("outside the allowed image roots"));
}

TEST_F(ImagePlan, RefusesEveryImageWhenNoRootIsConfigured) {
    EXPECT_THAT(error_of(check_job_mount_plan(plan_with(roots_[0] / "img"), {})),
                HasSubstr("image: images are not allowed on this node"));
}

TEST_F(ImagePlan, RefusesAPathThatLeavesTheRootWithDotDot) {
    EXPECT_THAT(error_of(check(roots_[0] / ".." / "other" / "img")), HasSubstr("image: "));
}

TEST_F(ImagePlan, RefusesASymlinkEvenOneThatStaysInsideTheRoot) {
    fs::create_directory_symlink(scratch_.dir() / "other" / "img", roots_[0] / "escape");
    EXPECT_THAT(error_of(check(roots_[0] / "escape")), HasSubstr("without symlinks"));
    fs::create_directory_symlink(roots_[0] / "img", roots_[0] / "alias");
    EXPECT_THAT(error_of(check(roots_[0] / "alias")), HasSubstr("without symlinks"));
}

TEST_F(ImagePlan, RefusesAMissingImage) {
    EXPECT_THAT(error_of(check(roots_[0] / "missing")), HasSubstr("image: "));
}

TEST_F(ImagePlan, RefusesASquashfsFileClearly) {
    write_text(roots_[0] / "img.sqfs", std::string("hsqs") + std::string(60, '\0'));
    EXPECT_THAT(error_of(check(roots_[0] / "img.sqfs")), HasSubstr("squashfs"));
}

TEST_F(ImagePlan, RefusesAPlainFile) {
    write_text(roots_[0] / "img.tar", "not a directory");
    EXPECT_THAT(error_of(check(roots_[0] / "img.tar")), HasSubstr("must be a directory"));
}

TEST_F(ImagePlan, NeedsImageAndImageMountTogether) {
    JobMountPlan plan = plan_with(roots_[0] / "img");
    plan.image_mount.reset();
    EXPECT_THAT(error_of(check_job_mount_plan(plan, roots_)), HasSubstr("image_mount: required"));
    plan = plan_with(roots_[0] / "img");
    plan.image.reset();
    EXPECT_THAT(error_of(check_job_mount_plan(plan, roots_)), HasSubstr("image: required"));
}

TEST_F(ImagePlan, RefusesAnImageMountThatIsMissingRootOrUnderTmp) {
    JobMountPlan plan = plan_with(roots_[0] / "img");
    plan.image_mount = scratch_.mount_dir() / "missing";
    EXPECT_THAT(error_of(check_job_mount_plan(plan, roots_)), HasSubstr("image_mount: "));
    plan.image_mount = "/";
    EXPECT_THAT(error_of(check_job_mount_plan(plan, roots_)), HasSubstr("image_mount: "));
    plan.image_mount = "/tmp/image";
    EXPECT_THAT(error_of(check_job_mount_plan(plan, roots_)), HasSubstr("job's own /tmp"));
}

TEST_F(ImagePlan, RefusesAnImageMountWhereTheJobsRootProcessesLook) {
    // The job's sshd runs as root in the job's view; an image is usually the user's files.
    JobMountPlan plan = plan_with(roots_[0] / "img");
    for (const char* reserved : {"/usr", "/usr/local", "/etc/ssh", "/lib", "/run", "/var/lib",
                                 "/sbin", "/root", "/proc/sys", "/sys", "/dev"}) {
        plan.image_mount = reserved;
        EXPECT_THAT(error_of(check_job_mount_plan(plan, roots_)),
                    HasSubstr("image_mount: '" + std::string(reserved) + "' is "))
            << reserved;
    }
    // The union would hide what is mounted below it, the job's ~/.ssh among it.
    plan.home = mount_point_ / "home";
    plan.image_mount = mount_point_;
    EXPECT_THAT(error_of(check_job_mount_plan(plan, roots_)), HasSubstr("job user's home"));
}

TEST_F(ImagePlan, RefusesAnImageInsideItsMountPointOrTheOtherWayRound) {
    // overlayfs would refuse these with ELOOP; the plan says why.
    fs::create_directories(mount_point_ / "images" / "img");
    std::vector<fs::path> roots{mount_point_ / "images"};
    EXPECT_THAT(error_of(check_job_mount_plan(plan_with(mount_point_ / "images" / "img"), roots)),
                HasSubstr("lie inside one another"));
}

// ---- prepare (host side) -----------------------------------------------------------------

TEST(PrepareJobMounts, CreatesTheLayersAndAPerJobSshDirectoryForTheUser) {
    SKIP_UNLESS_ROOT();
    Scratch scratch;
    ASSERT_TRUE(prepare_job_mounts(scratch.plan(), {}).ok());
    const JobPaths paths = scratch.paths();
    struct stat st {};
    for (const fs::path& dir : {paths.etc_upper(), paths.etc_work()}) {
        ASSERT_EQ(::lstat(dir.c_str(), &st), 0) << dir;
        EXPECT_TRUE(S_ISDIR(st.st_mode));
        EXPECT_EQ(st.st_mode & 07777, 0755u) << dir;
        EXPECT_EQ(st.st_uid, 0u);
    }
    ASSERT_EQ(::lstat(paths.user_ssh_dir().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u);
    EXPECT_EQ(st.st_uid, kJobUid);
    EXPECT_EQ(st.st_gid, kJobGid);
    // The job user must be able to reach its ssh directory through the run directory.
    ASSERT_EQ(::lstat(paths.root().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0111, 0111u);
}

TEST(PrepareJobMounts, WritesTheHostnameIntoTheUpperLayer) {
    SKIP_UNLESS_ROOT();
    Scratch scratch;
    ASSERT_TRUE(prepare_job_mounts(scratch.plan(), {}).ok());
    EXPECT_EQ(read_text(scratch.paths().etc_upper() / "hostname"), "node1\n");
    EXPECT_EQ(fs::status(scratch.paths().etc_upper() / "hostname").permissions(), fs::perms(0644));
}

TEST(PrepareJobMounts, CanBeCalledAgain) {
    SKIP_UNLESS_ROOT();
    Scratch scratch;
    ASSERT_TRUE(prepare_job_mounts(scratch.plan(), {}).ok());
    EXPECT_TRUE(prepare_job_mounts(scratch.plan(), {}).ok());
}

TEST(PrepareJobMounts, ChangesNothingOnBadInput) {
    Scratch scratch;
    JobMountPlan plan = scratch.plan();
    plan.hostname = "-bad";
    EXPECT_THAT(error_of(prepare_job_mounts(plan, {})), HasSubstr("hostname"));
    EXPECT_FALSE(fs::exists(scratch.dir() / "run"));
}

// ---- setup (inside a new mount namespace) --------------------------------------------------

// A child in a fresh mount namespace that has run setup_job_mounts and stays until the object
// dies; the test looks at its view through /proc/<pid>/root and /proc/<pid>/mountinfo.
class JobView {
  public:
    explicit JobView(const JobMountPlan& plan) {
        int report[2], release[2];
        if (::pipe2(report, O_CLOEXEC) != 0 || ::pipe2(release, O_CLOEXEC) != 0) {
            throw std::runtime_error("pipe");
        }
        pid_ = ::fork();
        if (pid_ < 0) {
            throw std::runtime_error("fork");
        }
        if (pid_ == 0) {
            ::close(report[0]);
            ::close(release[1]);
            std::string message = "ok";
            if (::unshare(CLONE_NEWNS) != 0) {
                message = "unshare: " + std::generic_category().message(errno);
            } else if (Status status = setup_job_mounts(plan); !status) {
                message = status.error().message;
            }
            [[maybe_unused]] ssize_t n = ::write(report[1], message.data(), message.size());
            ::close(report[1]);
            char byte = 0;
            [[maybe_unused]] ssize_t m = ::read(release[0], &byte, 1);
            ::_exit(0);
        }
        ::close(report[1]);
        ::close(release[0]);
        release_ = release[1];
        std::array<char, 4096> buffer{};
        ssize_t n = 0;
        while ((n = ::read(report[0], buffer.data(), buffer.size())) > 0) {
            message_.append(buffer.data(), static_cast<std::size_t>(n));
        }
        ::close(report[0]);
    }
    ~JobView() { finish(); }
    JobView(const JobView&) = delete;
    JobView& operator=(const JobView&) = delete;

    // "ok" or setup's error.
    const std::string& message() const { return message_; }
    pid_t pid() const { return pid_; }
    fs::path inside(const fs::path& path) const {
        return fs::path("/proc/" + std::to_string(pid_) + "/root" + path.string());
    }
    std::string mountinfo() const {
        return read_text("/proc/" + std::to_string(pid_) + "/mountinfo");
    }
    void finish() {
        if (release_ >= 0) {
            ::close(release_);
            release_ = -1;
            int status = 0;
            ::waitpid(pid_, &status, 0);
        }
    }

  private:
    pid_t pid_ = -1;
    int release_ = -1;
    std::string message_;
};

class SetupJobMounts : public ::testing::Test {
  protected:
    void SetUp() override {
        if (::geteuid() != 0) {
            GTEST_SKIP() << "needs root (mount namespaces)";
        }
        ASSERT_TRUE(prepare_job_mounts(plan_, {}).ok());
    }
    void make_host_ssh_dir() {
        fs::create_directories(scratch_.home() / ".ssh");
        write_text(scratch_.home() / ".ssh" / "host-key", "the user's own key");
        ASSERT_EQ(::chown((scratch_.home() / ".ssh").c_str(), kJobUid, kJobGid), 0);
        write_text(scratch_.paths().user_ssh_dir() / "job-key", "the per-job key");
    }

    Scratch scratch_;
    JobMountPlan plan_ = scratch_.plan();
};

TEST_F(SetupJobMounts, ShowsTheUpperLayerInsideAndLeavesTheHostsEtcAlone) {
    const std::string host_hosts = read_text("/etc/hosts");
    const std::string host_hostname = read_text("/etc/hostname");
    write_text(scratch_.paths().etc_upper() / "hosts", "10.20.0.1 node1\n");
    JobView view(plan_);
    ASSERT_EQ(view.message(), "ok");
    EXPECT_EQ(read_text(view.inside("/etc/hosts")), "10.20.0.1 node1\n");
    EXPECT_EQ(read_text(view.inside("/etc/hostname")), "node1\n");
    // Lower-layer files still show through.
    EXPECT_EQ(read_text(view.inside("/etc/passwd")), read_text("/etc/passwd"));
    EXPECT_EQ(read_text("/etc/hosts"), host_hosts);
    EXPECT_EQ(read_text("/etc/hostname"), host_hostname);
    EXPECT_EQ(fs_type_at(view.mountinfo(), "/etc"), "overlay");
}

TEST_F(SetupJobMounts, GivesThePrivateTmpItsSizeAndModes) {
    JobView view(plan_);
    ASSERT_EQ(view.message(), "ok");
    struct statfs fs_info {};
    ASSERT_EQ(::statfs(view.inside("/tmp").c_str(), &fs_info), 0);
    EXPECT_EQ(fs_info.f_type, TMPFS_MAGIC);
    EXPECT_EQ(static_cast<std::uint64_t>(fs_info.f_blocks) * fs_info.f_bsize, kTmpSize);
    EXPECT_EQ(fs_type_at(view.mountinfo(), "/tmp"), "tmpfs");
    EXPECT_TRUE(fs_info.f_flags & ST_NOSUID);
    EXPECT_TRUE(fs_info.f_flags & ST_NODEV);
    struct stat st {};
    ASSERT_EQ(::stat(view.inside("/tmp").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 01777u);
    // Private: a file made inside is not on the host's /tmp.
    const std::string name = "vcpilot-mounts-test-" + std::to_string(view.pid());
    write_text(view.inside("/tmp") / name, "inside");
    EXPECT_TRUE(fs::exists(view.inside("/tmp") / name));
    EXPECT_FALSE(fs::exists(fs::path("/tmp") / name));
}

TEST_F(SetupJobMounts, CoversTheUsersSshDirectoryOnlyInside) {
    make_host_ssh_dir();
    JobView view(plan_);
    ASSERT_EQ(view.message(), "ok");
    const fs::path ssh = scratch_.home() / ".ssh";
    EXPECT_EQ(read_text(view.inside(ssh / "job-key")), "the per-job key");
    EXPECT_FALSE(fs::exists(view.inside(ssh / "host-key")));
    EXPECT_EQ(read_text(ssh / "host-key"), "the user's own key");
    EXPECT_FALSE(fs::exists(ssh / "job-key"));
}

TEST_F(SetupJobMounts, CreatesNothingInAHomeWithoutSshDirectory) {
    JobView view(plan_);
    ASSERT_EQ(view.message(), "ok");
    EXPECT_FALSE(fs::exists(view.inside(scratch_.home() / ".ssh")));
    EXPECT_TRUE(fs::is_empty(scratch_.home()));
}

TEST_F(SetupJobMounts, FollowsASymlinkedSshDirectoryThatTheUserOwns) {
    fs::create_directories(scratch_.dir() / "shared" / "ssh");
    ASSERT_EQ(::chown((scratch_.dir() / "shared" / "ssh").c_str(), kJobUid, kJobGid), 0);
    fs::create_directory_symlink(scratch_.dir() / "shared" / "ssh", scratch_.home() / ".ssh");
    write_text(scratch_.paths().user_ssh_dir() / "job-key", "the per-job key");
    JobView view(plan_);
    ASSERT_EQ(view.message(), "ok");
    // The bind covers the symlink's target. (Read through the target: /proc/<pid>/root does
    // not resolve absolute symlinks in the child's view.)
    EXPECT_EQ(read_text(view.inside(scratch_.dir() / "shared" / "ssh" / "job-key")),
              "the per-job key");
    EXPECT_FALSE(fs::exists(scratch_.dir() / "shared" / "ssh" / "job-key"));
}

TEST_F(SetupJobMounts, RefusesToCoverADirectoryTheUserDoesNotOwn) {
    // ~/.ssh -> a root-owned directory: covering it would give the user a directory that
    // others trust.
    fs::create_directories(scratch_.dir() / "root-owned");
    fs::create_directory_symlink(scratch_.dir() / "root-owned", scratch_.home() / ".ssh");
    JobView view(plan_);
    EXPECT_THAT(view.message(), HasSubstr("belongs to uid 0, not to the job user"));
}

TEST_F(SetupJobMounts, GivesTheJobItsOwnLoginRecords) {
    // sshd writes these for every terminal session; the host's must not change.
    JobView view(plan_);
    ASSERT_EQ(view.message(), "ok");
    int covered = 0;
    for (const char* host_file : {"/var/log/wtmp", "/var/log/btmp", "/var/log/lastlog"}) {
        struct stat host {};
        if (::stat(host_file, &host) != 0) {
            continue;
        }
        const fs::path job_file =
            scratch_.paths().root() / "login-records" / fs::path(host_file).filename();
        struct stat job {};
        struct stat inside {};
        ASSERT_EQ(::stat(job_file.c_str(), &job), 0) << job_file;
        ASSERT_EQ(::stat(view.inside(host_file).c_str(), &inside), 0) << host_file;
        EXPECT_EQ(inside.st_ino, job.st_ino) << host_file;
        EXPECT_EQ(job.st_uid, host.st_uid);
        EXPECT_EQ(job.st_gid, host.st_gid);
        EXPECT_EQ(job.st_mode, host.st_mode);
        EXPECT_EQ(job.st_size, 0);
        ++covered;
    }
    if (covered == 0) {
        GTEST_SKIP() << "this host keeps no login records";
    }
}

TEST_F(SetupJobMounts, LayersTheImageReadOnlyOverTheHostsDirectory) {
    ASSERT_FALSE(scratch_.mount_dir().empty());
    const fs::path image = scratch_.dir() / "images" / "img";
    const fs::path mount_point = scratch_.mount_dir() / "image";
    fs::create_directories(image / "bin");
    fs::create_directories(mount_point / "data");
    write_text(image / "release", "image 1.0\n");
    write_text(image / "bin" / "tool", "the image's tool\n");
    write_text(mount_point / "release", "host 0.9\n");
    write_text(mount_point / "data" / "host-only", "the host's file\n");
    plan_.image = image;
    plan_.image_mount = mount_point;
    ASSERT_TRUE(check_job_mount_plan(plan_, std::vector<fs::path>{image.parent_path()}).ok());
    JobView view(plan_);
    ASSERT_EQ(view.message(), "ok");
    // The image's files win; the host's show through where the image has none.
    EXPECT_EQ(read_text(view.inside(mount_point / "release")), "image 1.0\n");
    EXPECT_EQ(read_text(view.inside(mount_point / "bin" / "tool")), "the image's tool\n");
    EXPECT_EQ(read_text(view.inside(mount_point / "data" / "host-only")), "the host's file\n");
    EXPECT_EQ(fs_type_at(view.mountinfo(), mount_point.string()), "overlay");
    for (const fs::path& target : {mount_point / "new", mount_point / "data" / "new"}) {
        const int fd = ::open(view.inside(target).c_str(), O_WRONLY | O_CREAT, 0644);
        EXPECT_EQ(fd, -1) << target;
        EXPECT_EQ(errno, EROFS) << target;
    }
    struct statvfs flags {};
    ASSERT_EQ(::statvfs(view.inside(mount_point).c_str(), &flags), 0);
    EXPECT_NE(flags.f_flag & ST_NOSUID, 0U);
    EXPECT_NE(flags.f_flag & ST_NODEV, 0U);
    // The host's directory is untouched.
    EXPECT_EQ(read_text(mount_point / "release"), "host 0.9\n");
    EXPECT_FALSE(fs::exists(mount_point / "bin"));
    EXPECT_EQ(fs_type_at(read_text("/proc/self/mountinfo"), mount_point.string()), "");
}

TEST_F(SetupJobMounts, RefusesAnImageReplacedBySymlinkAfterPrepare) {
    ASSERT_FALSE(scratch_.mount_dir().empty());
    const fs::path image = scratch_.dir() / "images" / "img";
    const fs::path mount_point = scratch_.mount_dir() / "image";
    fs::create_directories(scratch_.dir() / "images");
    fs::create_directories(mount_point);
    fs::create_directory_symlink("/root", image);
    plan_.image = image;
    plan_.image_mount = mount_point;
    JobView view(plan_);
    EXPECT_THAT(view.message(), HasSubstr("open the image"));
}

TEST_F(SetupJobMounts, RefusesAnImageThatIsNotTheDirectoryTheUserWasCheckedFor) {
    ASSERT_FALSE(scratch_.mount_dir().empty());
    const fs::path image = scratch_.dir() / "images" / "img";
    const fs::path mount_point = scratch_.mount_dir() / "image";
    fs::create_directories(image);
    fs::create_directories(mount_point);
    struct stat st {};
    ASSERT_EQ(::stat(image.c_str(), &st), 0);
    plan_.image = image;
    plan_.image_mount = mount_point;
    plan_.image_identity = DirectoryIdentity{st.st_dev, st.st_ino + 1};  // swapped meanwhile
    JobView refused(plan_);
    EXPECT_THAT(refused.message(), HasSubstr("is not the directory that was checked"));
    plan_.image_identity = DirectoryIdentity{st.st_dev, st.st_ino};
    JobView view(plan_);
    EXPECT_EQ(view.message(), "ok");
}

TEST_F(SetupJobMounts, DetachesNamespaceFilesCopiedFromTheHost) {
    // Another job's persisted network namespace, as a pilot leaves it on the host.
    const fs::path ns_dir = scratch_.dir() / "other-job-ns";
    fs::create_directories(ns_dir);
    ASSERT_EQ(::mount(ns_dir.c_str(), ns_dir.c_str(), nullptr, MS_BIND, nullptr), 0);
    ASSERT_EQ(::mount(nullptr, ns_dir.c_str(), nullptr, MS_PRIVATE, nullptr), 0);
    write_text(ns_dir / "net", "");
    ASSERT_EQ(::mount("/proc/self/ns/net", (ns_dir / "net").c_str(), nullptr, MS_BIND, nullptr), 0);
    {
        JobView view(plan_);
        EXPECT_EQ(view.message(), "ok");
        // (Only ours is checked: other namespace files may come and go on a shared machine.)
        EXPECT_EQ(fs_type_at(read_text("/proc/self/mountinfo"), (ns_dir / "net").string()), "nsfs");
        EXPECT_EQ(fs_type_at(view.mountinfo(), (ns_dir / "net").string()), "");
    }
    EXPECT_EQ(::umount2((ns_dir / "net").c_str(), MNT_DETACH), 0);
    EXPECT_EQ(::umount2(ns_dir.c_str(), MNT_DETACH), 0);
}

TEST_F(SetupJobMounts, LeavesTheHostsMountTableAsItWas) {
    make_host_ssh_dir();
    // The mounts setup touches, as the host sees them (other mounts may come and go on a
    // shared machine).
    const auto relevant = [&] {
        std::vector<std::string> lines;
        std::istringstream mountinfo(read_text("/proc/self/mountinfo"));
        for (std::string line; std::getline(mountinfo, line);) {
            if (line.find(" /etc ") != std::string::npos ||
                line.find(" /tmp ") != std::string::npos ||
                line.find(scratch_.dir().string()) != std::string::npos) {
                lines.push_back(line);
            }
        }
        return lines;
    };
    const std::vector<std::string> before = relevant();
    JobView view(plan_);
    ASSERT_EQ(view.message(), "ok");
    EXPECT_EQ(relevant(), before);
    EXPECT_NE(fs_type_at(view.mountinfo(), "/etc"),
              fs_type_at(read_text("/proc/self/mountinfo"), "/etc"));
}

TEST_F(SetupJobMounts, NamesTheFailingStep) {
    fs::remove_all(scratch_.paths().etc_work());
    JobView view(plan_);
    EXPECT_THAT(view.message(), HasSubstr("mount overlayfs on /etc"));
}

// ---- files the pilot changes while the job runs -----------------------------------------

// A job mount namespace persisted as a file, the way the pilot keeps it: a bind mount of
// /proc/<pid>/ns/mnt in a private bind-mounted directory. Removed again on destruction.
class PersistedNamespace {
  public:
    PersistedNamespace(const JobMountPlan& plan, const fs::path& dir) : dir_(dir) {
        fs::create_directories(dir_);
        mount_or_throw(dir_.c_str(), dir_.c_str(), MS_BIND);
        dir_mounted_ = true;
        mount_or_throw(nullptr, dir_.c_str(), MS_PRIVATE);
        write_text(file(), "");
        JobView view(plan);
        message_ = view.message();
        if (message_ == "ok") {
            const std::string source = "/proc/" + std::to_string(view.pid()) + "/ns/mnt";
            mount_or_throw(source.c_str(), file().c_str(), MS_BIND);
            file_mounted_ = true;
        }
    }  // the child exits here; only the file keeps the namespace alive
    ~PersistedNamespace() {
        if (file_mounted_) {
            ::umount2(file().c_str(), MNT_DETACH);
        }
        if (dir_mounted_) {
            ::umount2(dir_.c_str(), MNT_DETACH);
        }
    }
    PersistedNamespace(const PersistedNamespace&) = delete;
    PersistedNamespace& operator=(const PersistedNamespace&) = delete;

    fs::path file() const { return dir_ / "mnt"; }
    const std::string& message() const { return message_; }

    // Reads a file as the namespace sees it (a forked child enters it).
    std::string read(const fs::path& path) const {
        int pipe_fds[2];
        if (::pipe(pipe_fds) != 0) {
            throw std::runtime_error("pipe");
        }
        const pid_t child = ::fork();
        if (child == 0) {
            ::close(pipe_fds[0]);
            const int ns = ::open(file().c_str(), O_RDONLY);
            if (ns < 0 || ::setns(ns, CLONE_NEWNS) != 0) {
                ::_exit(2);
            }
            const std::string text = read_text(path);
            [[maybe_unused]] ssize_t n = ::write(pipe_fds[1], text.data(), text.size());
            ::_exit(0);
        }
        ::close(pipe_fds[1]);
        std::string text;
        std::array<char, 4096> buffer{};
        ssize_t n = 0;
        while ((n = ::read(pipe_fds[0], buffer.data(), buffer.size())) > 0) {
            text.append(buffer.data(), static_cast<std::size_t>(n));
        }
        ::close(pipe_fds[0]);
        int status = 0;
        ::waitpid(child, &status, 0);
        return text;
    }

  private:
    static void mount_or_throw(const char* source, const char* target, unsigned long flags) {
        if (::mount(source, target, nullptr, flags, nullptr) != 0) {
            throw std::runtime_error(std::string("mount ") + target + ": " +
                                     std::generic_category().message(errno));
        }
    }

    fs::path dir_;
    bool dir_mounted_ = false;
    bool file_mounted_ = false;
    std::string message_;
};

class JobEtcFiles : public SetupJobMounts {
  protected:
    void SetUp() override {
        plan_.ssh_client_config = "Host *\n    CheckHostIP no\n";
        SetupJobMounts::SetUp();
        if (IsSkipped()) {
            return;
        }
        namespace_ = std::make_unique<PersistedNamespace>(plan_, scratch_.dir() / "ns");
        ASSERT_EQ(namespace_->message(), "ok");
    }
    void TearDown() override { namespace_.reset(); }

    std::unique_ptr<PersistedNamespace> namespace_;
};

TEST_F(JobEtcFiles, EtcHostsFollowsTheFileThePilotReplacesFromTheHostSide) {
    const std::string host_text = read_text("/etc/hosts");
    const fs::path hosts = scratch_.paths().hosts_file();
    ASSERT_TRUE(replace_file(hosts, "10.20.0.1 node1\n", 0644, 0, 0).ok());
    EXPECT_EQ(namespace_->read("/etc/hosts"), "10.20.0.1 node1\n");
    // Once looked up inside, a change is still seen: the cluster grows, or a node is replaced.
    ASSERT_TRUE(replace_file(hosts, "10.20.0.1 node1\n10.20.0.2 node2\n", 0644, 0, 0).ok());
    EXPECT_EQ(namespace_->read("/etc/hosts"), "10.20.0.1 node1\n10.20.0.2 node2\n");
    EXPECT_EQ(read_text("/etc/hosts"), host_text);
    EXPECT_EQ(fs::read_symlink(scratch_.paths().etc_upper() / "hosts"), hosts);
}

TEST_F(JobEtcFiles, ShowsTheSshClientConfigurationOnlyInside) {
    const fs::path conf = "/etc/ssh/ssh_config.d/vcpilot.conf";
    EXPECT_EQ(namespace_->read(conf), "Host *\n    CheckHostIP no\n");
    EXPECT_FALSE(fs::exists(conf));
    EXPECT_EQ(fs::status(scratch_.paths().etc_upper() / "ssh" / "ssh_config.d" / "vcpilot.conf")
                  .permissions(),
              fs::perms(0644));
}

TEST(PrepareJobMounts, IsSafeToRepeatWithTheHostsSymlinkInPlace) {
    Scratch scratch;
    JobMountPlan plan = scratch.plan();
    plan.ssh_client_config = "Host *\n";
    ASSERT_TRUE(prepare_job_mounts(plan, {}).ok());
    ASSERT_TRUE(prepare_job_mounts(plan, {}).ok());
    EXPECT_EQ(fs::read_symlink(scratch.paths().etc_upper() / "hosts"),
              scratch.paths().hosts_file());
    EXPECT_EQ(fs::status(scratch.paths().job_files_dir()).permissions(), fs::perms(0755));
}

// ---- the image as the job user may see it (root: the check takes the user's ids) ----------

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;

class ImageAsUser : public ::testing::Test {
  protected:
    void SetUp() override {
        SKIP_UNLESS_ROOT();
        fs::create_directories(image_);
        write_text(image_ / "marker", "from the image\n");
        for (const fs::path& dir : {scratch_.dir(), image_.parent_path(), image_}) {
            ASSERT_EQ(::chmod(dir.c_str(), 0755), 0) << dir;
        }
    }
    Result<DirectoryIdentity> check() const {
        return open_image_as_user(image_, "nobody", kNobody, kNogroup);
    }

    Scratch scratch_;
    fs::path image_ = scratch_.dir() / "images" / "img";
};

TEST_F(ImageAsUser, AcceptsADirectoryTheUserCanReadAndEnterAndSaysWhichItIs) {
    auto opened = check();
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    struct stat st {};
    ASSERT_EQ(::stat(image_.c_str(), &st), 0);
    EXPECT_EQ(*opened, (DirectoryIdentity{st.st_dev, st.st_ino}));
}

TEST_F(ImageAsUser, RefusesADirectoryTheUserCannotListOrEnter) {
    for (const mode_t mode : {0700, 0711, 0744}) {
        ASSERT_EQ(::chmod(image_.c_str(), mode), 0);
        EXPECT_THAT(error_of(check()), HasSubstr("is not readable by 'nobody' (Permission denied)"))
            << std::oct << mode;
    }
}

TEST_F(ImageAsUser, RefusesADirectoryBehindOneTheUserCannotEnter) {
    ASSERT_EQ(::chmod(image_.parent_path().c_str(), 0700), 0);
    EXPECT_THAT(error_of(check()), HasSubstr("is not readable by 'nobody'"));
}

TEST_F(ImageAsUser, GoesByTheUsersGroupsNotRoots) {
    ASSERT_EQ(::chmod(image_.c_str(), 0750), 0);
    ASSERT_EQ(::chown(image_.c_str(), 0, kNogroup), 0);
    EXPECT_TRUE(check().ok());
    ASSERT_EQ(::chown(image_.c_str(), 0, 0), 0);  // root's group, which the pilot has
    EXPECT_THAT(error_of(check()), HasSubstr("is not readable by 'nobody'"));
}

TEST_F(ImageAsUser, RefusesAMissingDirectoryOrASymlink) {
    EXPECT_THAT(error_of(open_image_as_user(image_ / "missing", "nobody", kNobody, kNogroup)),
                HasSubstr("No such file or directory"));
    fs::create_directory_symlink(image_, scratch_.dir() / "link");
    EXPECT_THAT(error_of(open_image_as_user(scratch_.dir() / "link", "nobody", kNobody, kNogroup)),
                HasSubstr("is not readable by 'nobody'"));
}
}  // namespace
}  // namespace vcpilot::pilot
