#include "tests/support/test_munged.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#include "common/munge.hpp"

namespace vcpilot::testing {
namespace {

using namespace std::chrono_literals;

// Whether the munged on `socket` encodes a credential within `timeout`.
bool answers(const std::string& socket, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (!munge_encode("ping", socket)) {
        if (Clock::now() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(10ms);
    }
    return true;
}

// A MUNGE key in `dir`, both readable by user munge alone.
void make_key(const std::string& dir) {
    const std::string setup = "mungekey --create --keyfile=" + dir + "/munge.key && chown munge " +
                              dir + " " + dir + "/munge.key && chmod 0400 " + dir +
                              "/munge.key && chmod 0755 " + dir;  // munged wants it searchable
    if (std::system(setup.c_str()) != 0) {
        throw std::runtime_error("cannot make a MUNGE key in " + dir +
                                 " (are munge and its user installed? run as root)");
    }
}

}  // namespace

bool TestMunged::available() {
    return ::geteuid() == 0 &&
           std::system("command -v munged >/dev/null && id munge >/dev/null 2>&1") == 0;
}

TestMunged::TestMunged() : own_dir_(std::in_place), dir_(own_dir_->path()) {
    start();
}

TestMunged::TestMunged(const std::filesystem::path& dir) : dir_(dir) {
    std::filesystem::create_directories(dir_);
    start();
}

TestMunged::~TestMunged() {
    [[maybe_unused]] const auto stopped = process_.terminate(10s);
}

void TestMunged::start() {
    const std::string d = dir_.string();
    make_key(d);
    // In the foreground, as user munge; its stderr (it talks there too) in munged.out.
    const ExecSpec spec{{"setpriv", "--reuid=munge", "--regid=munge", "--init-groups", "--",
                         "munged", "--foreground", "--socket=" + d + "/munge.socket",
                         "--key-file=" + d + "/munge.key", "--pid-file=" + d + "/munged.pid",
                         "--log-file=" + d + "/munged.log", "--seed-file=" + d + "/munged.seed"},
                        dir_ / "munged.out"};
    if (auto started = process_.start(spec); !started) {
        throw std::runtime_error(started.error().message);
    }
    if (!answers(socket(), 10s)) {
        [[maybe_unused]] const auto stopped = process_.terminate(10s);
        throw std::runtime_error("munged did not start in " + d);
    }
}

std::string TestMunged::credential_as(uid_t uid, const std::string& payload) const {
    ChildProcess child("a credential minter as uid " + std::to_string(uid));
    auto channel = child.start_worker([&](LineChannel& out) {
        if (::setgid(uid) != 0 || ::setuid(uid) != 0) {
            return 1;
        }
        auto credential = munge_encode(payload, socket());
        return credential && out.send(*credential) ? 0 : 2;  // a credential is one line
    });
    if (!channel) {
        throw std::runtime_error(channel.error().message);
    }
    auto credential = channel->receive(Clock::now() + 10s);
    const auto status = child.wait_exit(10s);
    if (!credential || !status || !WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
        throw std::runtime_error("cannot mint a credential as uid " + std::to_string(uid));
    }
    return *credential;
}

}  // namespace vcpilot::testing
