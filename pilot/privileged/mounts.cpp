#include "pilot/privileged/mounts.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/openat2.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "common/fd.hpp"
#include "common/image_mount.hpp"
#include "common/text.hpp"
#include "pilot/privileged/files.hpp"
#include "pilot/privileged/namespaces.hpp"

namespace vcpilot::pilot {

namespace fs = std::filesystem;

namespace {

// "/proc/thread-self/fd/N": lets mount(2) act on exactly the object the descriptor refers to,
// whatever happens to the path it was opened by.
std::string proc_path(const UniqueFd& fd) {
    return "/proc/thread-self/fd/" + std::to_string(fd.get());
}

// Opens `path` as an O_PATH directory without following any symlink on the way, so a user
// who owns part of the path cannot redirect it.
int open_dir_no_symlinks(const char* path) {
    open_how how{};
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    return static_cast<int>(::syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how));
}

// ---- plan checks -------------------------------------------------------------------------

Status check_normal_absolute(std::string_view field, const fs::path& path) {
    const std::string& text = path.native();
    if (text.empty() || !path.is_absolute()) {
        return Error{std::string(field) + ": " + quote(text) + " must be an absolute path"};
    }
    if (text.find('\0') != std::string::npos || path.lexically_normal() != path ||
        (text.size() > 1 && text.back() == '/')) {
        return Error{std::string(field) + ": " + quote(text) +
                     " must be a normalized path (no '.', '..', '//' or trailing '/')"};
    }
    return {};
}

// overlayfs splits its options at ',' and its layer lists at ':'; '\' escapes both. The run
// directory is ours, so refuse such characters instead of escaping them.
Status check_overlay_safe(std::string_view field, const fs::path& path) {
    for (char c : path.native()) {
        if (c == ',' || c == ':' || c == '\\' || static_cast<unsigned char>(c) <= 0x20 ||
            c == 0x7f) {
            return Error{std::string(field) + ": " + quote(path.native()) +
                         " must not contain ',', ':', '\\', spaces or control characters"};
        }
    }
    return {};
}

// The checks that need no filesystem access: setup repeats them, since it puts these values
// into mount options.
Status check_plan_shape(const JobMountPlan& plan) {
    if (auto ok = check_normal_absolute("run directory", plan.paths.root()); !ok) {
        return ok;
    }
    if (auto ok = check_overlay_safe("run directory", plan.paths.root()); !ok) {
        return ok;
    }
    if (auto ok = check_normal_absolute("home", plan.home); !ok) {
        return ok;
    }
    if (auto ok = check_host_label("hostname", plan.hostname); !ok) {
        return ok;
    }
    if (plan.tmp_size_bytes < kMinTmpSizeBytes) {
        return Error{"tmp_size_bytes: " + std::to_string(plan.tmp_size_bytes) +
                     " is below the minimum of " + std::to_string(kMinTmpSizeBytes) +
                     " (1 MiB); the size is in bytes"};
    }
    if (plan.image.has_value() != plan.image_mount.has_value()) {
        return Error{plan.image ? "image_mount: required when an image is given"
                                : "image: required when image_mount is given"};
    }
    if (plan.image) {
        if (auto ok = check_normal_absolute("image", *plan.image); !ok) {
            return ok;
        }
        if (auto ok = check_normal_absolute("image_mount", *plan.image_mount); !ok) {
            return ok;
        }
        if (auto ok = check_image_mount_point(*plan.image_mount); !ok) {
            return Error{"image_mount: " + ok.error().message};
        }
        // overlayfs refuses layers inside one another (ELOOP, "Too many levels of symbolic
        // links"): say why instead.
        if (is_within(*plan.image, *plan.image_mount) ||
            is_within(*plan.image_mount, *plan.image)) {
            return Error{"image: " + quote(plan.image->native(), 200) + " and image_mount " +
                         quote(plan.image_mount->native(), 200) +
                         " lie inside one another; the image cannot be layered over a directory "
                         "that holds it"};
        }
        // The union hides what is mounted below image_mount, the job's ~/.ssh among it.
        if (is_within(plan.home, *plan.image_mount) || is_within(*plan.image_mount, plan.home)) {
            return Error{"image_mount: " + quote(plan.image_mount->native(), 200) +
                         " must not hold or lie in the job user's home " +
                         quote(plan.home.native(), 200)};
        }
    }
    return {};
}

// The canonical form of `path`, which must exist and already be canonical.
Status check_canonical_existing(std::string_view field, const fs::path& path) {
    std::error_code ec;
    const fs::path canonical = fs::canonical(path, ec);
    if (ec) {
        return Error{std::string(field) + ": " + quote(path.native()) + ": " + ec.message()};
    }
    if (canonical != path) {
        return Error{std::string(field) + ": " + quote(path.native()) +
                     " must be given without symlinks; it resolves to " +
                     quote(canonical.native())};
    }
    return {};
}

bool starts_with_squashfs_magic(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    std::array<char, 4> magic{};
    return in.read(magic.data(), magic.size()) && std::string_view(magic.data(), 4) == "hsqs";
}

Status check_image(const fs::path& image, std::span<const fs::path> allowed_roots) {
    if (auto ok = check_canonical_existing("image", image); !ok) {
        return ok;
    }
    std::error_code ec;
    const fs::file_status status = fs::status(image, ec);
    if (ec) {
        return Error{"image: " + quote(image.native()) + ": " + ec.message()};
    }
    if (status.type() == fs::file_type::regular && starts_with_squashfs_magic(image)) {
        // A squashfs file would be parsed by the kernel as root, and the user can change it
        // under the loop device while mounted: not until that is contained.
        return Error{"image: " + quote(image.native()) +
                     " is a squashfs file; only directory images are supported for now "
                     "(unpack it with unsquashfs under an allowed image root)"};
    }
    if (status.type() != fs::file_type::directory) {
        return Error{"image: " + quote(image.native()) + " must be a directory"};
    }
    if (allowed_roots.empty()) {
        return Error{"image: images are not allowed on this node (no image roots configured)"};
    }
    std::string roots_text;
    for (const fs::path& root : allowed_roots) {
        const fs::path canonical_root = fs::canonical(root, ec);
        if (!ec && is_within(image, canonical_root)) {
            return {};
        }
        roots_text += (roots_text.empty() ? "" : ", ") + quote(root.native());
    }
    return Error{"image: " + quote(image.native()) + " is outside the allowed image roots (" +
                 roots_text + ")"};
}

Status check_image_mount(const fs::path& mount_point) {
    if (auto ok = check_canonical_existing("image_mount", mount_point); !ok) {
        return ok;
    }
    std::error_code ec;
    if (!fs::is_directory(mount_point, ec)) {
        return Error{"image_mount: " + quote(mount_point.native()) +
                     " must be an existing directory"};
    }
    return {};
}

// ---- host-side files ---------------------------------------------------------------------

// Creates `dir` if missing and gives it exactly `mode`, `uid` and `gid`. An existing symlink is
// refused rather than followed.
Status make_dir(const fs::path& dir, mode_t mode, uid_t uid, gid_t gid) {
    if (::mkdir(dir.c_str(), mode) != 0 && errno != EEXIST) {
        return sys_error("create directory " + dir.native(), errno);
    }
    UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
        return sys_error("open directory " + dir.native(), errno);
    }
    if (::fchown(fd.get(), uid, gid) != 0) {
        return sys_error("chown " + dir.native(), errno);
    }
    if (::fchmod(fd.get(), mode) != 0) {
        return sys_error("chmod " + dir.native(), errno);
    }
    return {};
}

// Makes `link` a symlink to `target`, replacing whatever is there (a symlink made next to it,
// then renamed over it).
Status replace_with_symlink(const fs::path& link, const fs::path& target) {
    const fs::path temp = link.parent_path() / ("." + link.filename().native() + ".vcpilot-link");
    if (::unlink(temp.c_str()) != 0 && errno != ENOENT) {
        return sys_error("remove " + temp.native(), errno);
    }
    if (::symlink(target.c_str(), temp.c_str()) != 0) {
        return sys_error("create the symlink " + temp.native(), errno);
    }
    if (::rename(temp.c_str(), link.c_str()) != 0) {
        const int error = errno;
        ::unlink(temp.c_str());
        return sys_error("rename " + temp.native() + " to " + link.native(), error);
    }
    return {};
}

// Creates `dir` (and missing parents) if missing, world-traversable whatever the pilot's umask;
// an existing one is shared with other jobs and left as it is.
Status ensure_shared_dir(const fs::path& dir) {
    std::error_code ec;
    fs::create_directories(dir.parent_path(), ec);
    if (ec) {
        return Error{"create directory " + dir.parent_path().native() + ": " + ec.message()};
    }
    if (::mkdir(dir.c_str(), 0755) != 0) {
        if (errno == EEXIST) {
            return {};
        }
        return sys_error("create directory " + dir.native(), errno);
    }
    if (::chmod(dir.c_str(), 0755) != 0) {
        return sys_error("chmod " + dir.native(), errno);
    }
    return {};
}

// ---- login records -----------------------------------------------------------------------

// sshd records every login with a terminal in utmp, wtmp and lastlog, and failed ones in btmp.
// These live outside /etc, so inside the job they are covered by per-job files: the host's never
// change, and `last` or `who` inside the job show the job's own logins.
constexpr std::array<const char*, 4> kLoginRecords = {"/var/log/wtmp", "/var/log/btmp",
                                                      "/var/log/lastlog", "/run/utmp"};

fs::path job_login_record(const JobPaths& paths, const char* host_file) {
    return paths.root() / "login-records" / fs::path(host_file).filename();
}

// An empty per-job copy of each login record the host has, with the host file's owner and mode
// (utmp-group programs keep working inside the job).
Status create_job_login_records(const JobPaths& paths) {
    if (auto ok = make_dir(paths.root() / "login-records", 0755, 0, 0); !ok) {
        return ok;
    }
    for (const char* host_file : kLoginRecords) {
        struct stat host {};
        if (::lstat(host_file, &host) != 0 || !S_ISREG(host.st_mode)) {
            continue;  // nothing to cover
        }
        const fs::path file = job_login_record(paths, host_file);
        UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!fd) {
            return sys_error("create " + file.native(), errno);
        }
        if (::fchown(fd.get(), host.st_uid, host.st_gid) != 0 ||
            ::fchmod(fd.get(), host.st_mode & 07777) != 0) {
            return sys_error("set owner and mode of " + file.native(), errno);
        }
    }
    return {};
}

// ---- inside the new namespace -------------------------------------------------------------

// mountinfo escapes ' ', '\t', '\n' and '\' as octal "\040" and so on.
std::string unescape_mountinfo(std::string_view field) {
    std::string out;
    for (std::size_t i = 0; i < field.size(); ++i) {
        if (field[i] == '\\' && i + 3 < field.size()) {
            const std::string_view digits = field.substr(i + 1, 3);
            if (std::all_of(digits.begin(), digits.end(),
                            [](char c) { return c >= '0' && c <= '7'; })) {
                out += static_cast<char>((digits[0] - '0') * 64 + (digits[1] - '0') * 8 +
                                         (digits[2] - '0'));
                i += 3;
                continue;
            }
        }
        out += field[i];
    }
    return out;
}

struct MountEntry {
    std::string mount_point;
    std::string fs_type;
};

std::vector<MountEntry> read_own_mounts() {
    std::vector<MountEntry> mounts;
    std::ifstream in("/proc/thread-self/mountinfo");  // the holder thread's, in the job's
    std::string line;
    while (std::getline(in, line)) {
        // id parent major:minor root mount-point options [optional...] - fstype source super
        std::vector<std::string_view> fields;
        std::string_view rest(line);
        while (!rest.empty()) {
            const std::size_t space = rest.find(' ');
            fields.push_back(rest.substr(0, space));
            rest = space == std::string_view::npos ? std::string_view() : rest.substr(space + 1);
        }
        const auto separator = std::find(fields.begin(), fields.end(), "-");
        if (fields.size() < 5 || separator == fields.end() || separator + 1 == fields.end()) {
            continue;
        }
        mounts.push_back({unescape_mountinfo(fields[4]), std::string(*(separator + 1))});
    }
    return mounts;
}

// A new mount namespace starts with a copy of every mount of the host, including namespace
// files bound by `ip netns` and the like; a copy keeps that namespace alive for as long
// as this job lives. Nothing inside the job needs them.
Status detach_namespace_files() {
    std::vector<MountEntry> mounts = read_own_mounts();
    for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) {
        if (it->fs_type != "nsfs") {
            continue;
        }
        // EINVAL/ENOENT: already gone with a mount above it.
        if (::umount2(it->mount_point.c_str(), MNT_DETACH) != 0 && errno != EINVAL &&
            errno != ENOENT) {
            return sys_error(
                "detach the namespace file copied from the host at " + quote(it->mount_point, 200),
                errno);
        }
    }
    return {};
}

Status mount_etc_overlay(const JobPaths& paths) {
    const std::string options = "lowerdir=/etc,upperdir=" + paths.etc_upper().native() +
                                ",workdir=" + paths.etc_work().native();
    if (::mount("overlay", "/etc", "overlay", 0, options.c_str()) != 0) {
        return sys_error("mount overlayfs on /etc (" + options + ")", errno);
    }
    return {};
}

Status bind_job_ssh_dir(const JobMountPlan& plan) {
    const fs::path user_ssh = plan.home / ".ssh";
    UniqueFd home(::open(plan.home.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!home) {
        if (errno == ENOENT) {
            return {};  // no home on this node: nothing to cover
        }
        return sys_error("open the home directory " + quote(plan.home.native(), 200), errno);
    }
    // Follows a symlinked ~/.ssh (common where it points to shared storage), but only to a
    // directory the job user owns: covering anything else could hand the user a directory
    // whose contents others trust.
    UniqueFd target(::openat(home.get(), ".ssh", O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!target) {
        if (errno == ENOENT) {
            return {};  // never create anything in the host's home
        }
        return sys_error("open " + quote(user_ssh.native(), 200), errno);
    }
    struct stat st {};
    if (::fstat(target.get(), &st) != 0) {
        return sys_error("stat " + quote(user_ssh.native(), 200), errno);
    }
    if (st.st_uid != plan.uid) {
        return Error{"bind the per-job ssh directory over " + quote(user_ssh.native(), 200) +
                     ": it belongs to uid " + std::to_string(st.st_uid) +
                     ", not to the job user (uid " + std::to_string(plan.uid) + "); refusing"};
    }
    UniqueFd source(open_dir_no_symlinks(plan.paths.user_ssh_dir().c_str()));
    if (!source) {
        return sys_error("open the per-job ssh directory " + plan.paths.user_ssh_dir().native(),
                         errno);
    }
    if (::mount(proc_path(source).c_str(), proc_path(target).c_str(), nullptr, MS_BIND, nullptr) !=
        0) {
        return sys_error(
            "bind " + plan.paths.user_ssh_dir().native() + " over " + quote(user_ssh.native(), 200),
            errno);
    }
    return {};
}

Status mount_private_tmp(std::uint64_t size_bytes) {
    const std::string options = "size=" + std::to_string(size_bytes) + ",mode=1777";
    if (::mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
        return sys_error("mount a tmpfs on /tmp (" + options + ")", errno);
    }
    return {};
}

// /sys/class/net and /sys/devices/virtual/net as the job's network namespace has them. The
// node's sysfs was mounted in another network namespace and shows that one's interfaces (the
// machine's own, with their MTUs and addresses) to whatever reads /sys: hwloc, MPI libraries
// choosing an interface, ip's helpers. The rest of /sys (cgroups, CPU topology) stays the
// node's. Runs in the job's network namespace, after the private /tmp is mounted.
Status mount_job_sysfs_net() {
    char scratch[] = "/tmp/.vcpilot-sysfs-XXXXXX";
    if (::mkdtemp(scratch) == nullptr) {
        return sys_error("make a directory for the job's sysfs in /tmp", errno);
    }
    Status status;
    if (::mount("sysfs", scratch, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, nullptr) !=
        0) {
        status = sys_error("mount a sysfs of the job's network namespace", errno);
    } else {
        for (const char* part : {"class/net", "devices/virtual/net"}) {
            const std::string source = std::string(scratch) + "/" + part;
            const std::string target = std::string("/sys/") + part;
            if (::mount(source.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
                status = sys_error("bind the job's " + target + " over the node's", errno);
                break;
            }
        }
        ::umount2(scratch, MNT_DETACH);
    }
    ::rmdir(scratch);
    return status;
}

// The image, opened before the job's mounts change what its path leads to, and checked to be
// the directory the job user was found allowed to read.
Result<UniqueFd> open_image(const fs::path& image,
                            const std::optional<DirectoryIdentity>& expected) {
    UniqueFd source(open_dir_no_symlinks(image.c_str()));
    if (!source) {
        return sys_error("open the image " + quote(image.native(), 200), errno);
    }
    struct stat st {};
    if (::fstat(source.get(), &st) != 0) {
        return sys_error("stat the image " + quote(image.native(), 200), errno);
    }
    if (expected && !(*expected == DirectoryIdentity{st.st_dev, st.st_ino})) {
        return Error{"image: " + quote(image.native(), 200) +
                     " is not the directory that was checked (it was replaced meanwhile)"};
    }
    return source;
}

// The image as the lower layer of a read-only union at image_mount: its files over the host's
// directory there, which shows through wherever the image has nothing of the same name. No
// upper layer, so nothing in the job can write to either; nosuid and nodev, since the image is
// usually the user's. overlayfs takes its layers by path: /proc/thread-self/fd/N names exactly the
// directories opened, whatever their paths lead to by now.
Status union_image(const UniqueFd& image, const fs::path& image_path, const fs::path& mount_point) {
    UniqueFd host(open_dir_no_symlinks(mount_point.c_str()));
    if (!host) {
        return sys_error("open image_mount " + quote(mount_point.native(), 200), errno);
    }
    const std::string options = "lowerdir=" + proc_path(image) + ":" + proc_path(host);
    if (::mount("vc-image", proc_path(host).c_str(), "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV,
                options.c_str()) != 0) {
        return sys_error("layer the image " + quote(image_path.native(), 200) + " over " +
                             quote(mount_point.native(), 200) + " (overlayfs)",
                         errno);
    }
    return {};
}

Status cover_login_records(const JobPaths& paths) {
    for (const char* host_file : kLoginRecords) {
        UniqueFd source(
            ::open(job_login_record(paths, host_file).c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
        if (!source) {
            continue;  // the host had no such file at SETUP
        }
        UniqueFd target(::open(host_file, O_PATH | O_NOFOLLOW | O_CLOEXEC));
        struct stat st {};
        if (!target || ::fstat(target.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
            continue;
        }
        if (::mount(proc_path(source).c_str(), proc_path(target).c_str(), nullptr, MS_BIND,
                    nullptr) != 0) {
            return sys_error(std::string("cover the host's ") + host_file + " with the job's",
                             errno);
        }
    }
    return {};
}

// What the child of open_image_as_user found.
struct ReadCheck {
    int step = 0;  // 0: done; 1: taking the user's ids; 2: opening; 3: access
    int error = 0;
    dev_t device = 0;
    ino_t inode = 0;
};

// In the forked child: async-signal-safe calls only, then _exit.
[[noreturn]] void check_read_in_child(int report_fd, const char* image, const gid_t* groups,
                                      std::size_t group_count, uid_t uid, gid_t gid) {
    ReadCheck check;
    if (::setgroups(group_count, groups) != 0 || ::setresgid(gid, gid, gid) != 0 ||
        ::setresuid(uid, uid, uid) != 0) {
        check = {1, errno, 0, 0};
    } else {
        const int fd = open_dir_no_symlinks(image);
        struct stat st {};
        // The fstat counts as opening: it reads what was just opened.
        if (fd < 0 || ::fstat(fd, &st) != 0) {
            check = {2, errno, 0, 0};
        } else if (::faccessat(fd, ".", R_OK | X_OK, AT_EACCESS) != 0) {
            check = {3, errno, 0, 0};
        } else {
            check = {0, 0, st.st_dev, st.st_ino};
        }
    }
    const ssize_t written = ::write(report_fd, &check, sizeof check);
    ::_exit(written == static_cast<ssize_t>(sizeof check) ? 0 : 1);
}

}  // namespace

Result<DirectoryIdentity> open_image_as_user(const fs::path& image, const std::string& user,
                                             uid_t uid, gid_t gid) {
    const std::string what = "image: " + quote(image.native(), 200);
    int count = 64;
    std::vector<gid_t> groups(static_cast<std::size_t>(count));
    if (::getgrouplist(user.c_str(), gid, groups.data(), &count) < 0) {
        groups.resize(static_cast<std::size_t>(count));
        if (::getgrouplist(user.c_str(), gid, groups.data(), &count) < 0) {
            return Error{what + ": cannot list the groups of " + quote(user)};
        }
    }
    groups.resize(static_cast<std::size_t>(count));
    // O_PATH descriptors need no permission, and root's access checks pass everything: only a
    // process that is the user, groups included, sees what the user may see.
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
        return sys_error(what + ": pipe", errno);
    }
    UniqueFd report_read(pipe_fds[0]);
    UniqueFd report_write(pipe_fds[1]);
    const pid_t child = ::fork();
    if (child < 0) {
        return sys_error(what + ": fork", errno);
    }
    if (child == 0) {
        check_read_in_child(report_write.get(), image.c_str(), groups.data(), groups.size(), uid,
                            gid);
    }
    report_write = UniqueFd();
    ReadCheck check;
    ssize_t got = 0;
    do {
        got = ::read(report_read.get(), &check, sizeof check);
    } while (got < 0 && errno == EINTR);
    int wait_status = 0;
    while (::waitpid(child, &wait_status, 0) < 0) {
        if (errno != EINTR) {
            return sys_error(what + ": wait for the checking process", errno);
        }
    }
    if (got != static_cast<ssize_t>(sizeof check)) {
        return Error{what + ": the process checking it as " + quote(user) + " failed"};
    }
    if (check.step == 1) {
        return Error{what + ": cannot take the identity of " + quote(user) +
                         " to check it: " + errno_text(check.error),
                     check.error};
    }
    if (check.step != 0) {
        return Error{what + " is not readable by " + quote(user) + " (" + errno_text(check.error) +
                         "): a job may only use a directory its user can read and enter",
                     check.error};
    }
    return DirectoryIdentity{check.device, check.inode};
}

Status check_job_mount_plan(const JobMountPlan& plan,
                            std::span<const std::filesystem::path> allowed_image_roots) {
    if (auto ok = check_plan_shape(plan); !ok) {
        return ok;
    }
    if (plan.image) {
        if (auto ok = check_image(*plan.image, allowed_image_roots); !ok) {
            return ok;
        }
        if (auto ok = check_image_mount(*plan.image_mount); !ok) {
            return ok;
        }
    }
    return {};
}

Status prepare_job_mounts(const JobMountPlan& plan,
                          std::span<const std::filesystem::path> allowed_image_roots) {
    if (auto ok = check_job_mount_plan(plan, allowed_image_roots); !ok) {
        return ok;
    }
    const JobPaths& paths = plan.paths;
    // The job user reaches the per-job ssh directory through the run directory (sshd reads
    // authorized_keys as the user, ssh reads IdentityFile), so every level is traversable;
    // the job directory itself is not listable.
    for (const fs::path& dir :
         {paths.root().parent_path().parent_path(), paths.root().parent_path()}) {
        if (auto ok = ensure_shared_dir(dir); !ok) {
            return ok;
        }
    }
    const std::pair<fs::path, mode_t> root_dirs[] = {
        {paths.root(), 0711},
        {paths.etc_upper().parent_path(), 0755},
        {paths.etc_upper(), 0755},
        {paths.etc_work(), 0755},
    };
    for (const auto& [dir, mode] : root_dirs) {
        if (auto ok = make_dir(dir, mode, 0, 0); !ok) {
            return ok;
        }
    }
    if (auto ok = make_dir(paths.user_ssh_dir(), 0700, plan.uid, plan.gid); !ok) {
        return ok;
    }
    if (auto ok = make_dir(paths.job_files_dir(), 0755, 0, 0); !ok) {
        return ok;
    }
    if (auto ok = create_job_login_records(paths); !ok) {
        return ok;
    }
    if (auto ok = replace_file(paths.etc_upper() / "hostname", plan.hostname + "\n", 0644, 0, 0);
        !ok) {
        return ok;
    }
    if (!plan.ssh_client_config.empty()) {
        for (const fs::path& dir :
             {paths.etc_upper() / "ssh", paths.etc_upper() / "ssh" / "ssh_config.d"}) {
            if (auto ok = make_dir(dir, 0755, 0, 0); !ok) {
                return ok;
            }
        }
        if (auto ok = replace_file(paths.etc_upper() / "ssh" / "ssh_config.d" / "vcpilot.conf",
                                   plan.ssh_client_config, 0644, 0, 0);
            !ok) {
            return ok;
        }
    }
    return replace_with_symlink(paths.etc_upper() / "hosts", paths.hosts_file());
}

namespace {

// Both are the host's root-owned binaries (the pilot found them), not paths a user controls.
Status bind_srun_shim(const JobMountPlan::SrunShim& shim) {
    const std::string what = "bind " + shim.shim.native() + " over " + shim.srun.native();
    if (::mount(shim.shim.c_str(), shim.srun.c_str(), nullptr, MS_BIND, nullptr) != 0) {
        return sys_error(what, errno);
    }
    if (::mount(nullptr, shim.srun.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) !=
        0) {
        return sys_error(what + " read-only", errno);
    }
    return {};
}

}  // namespace

Status setup_job_mounts(const JobMountPlan& plan) {
    if (auto ok = check_plan_shape(plan); !ok) {
        return ok;
    }
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) {
        return sys_error("make / a recursive slave mount", errno);
    }
    UniqueFd image;
    if (plan.image) {
        auto opened = open_image(*plan.image, plan.image_identity);
        if (!opened) {
            return opened.error();
        }
        image = std::move(*opened);
    }
    if (auto ok = detach_namespace_files(); !ok) {
        return ok;
    }
    if (auto ok = mount_etc_overlay(plan.paths); !ok) {
        return ok;
    }
    if (auto ok = bind_job_ssh_dir(plan); !ok) {
        return ok;
    }
    if (auto ok = mount_private_tmp(plan.tmp_size_bytes); !ok) {
        return ok;
    }
    if (auto ok = mount_job_sysfs_net(); !ok) {
        return ok;
    }
    if (auto ok = cover_login_records(plan.paths); !ok) {
        return ok;
    }
    if (plan.image) {
        if (auto ok = union_image(image, *plan.image, *plan.image_mount); !ok) {
            return ok;
        }
    }
    if (plan.srun_shim) {
        if (auto ok = bind_srun_shim(*plan.srun_shim); !ok) {
            return ok;
        }
    }
    return {};
}

}  // namespace vcpilot::pilot
