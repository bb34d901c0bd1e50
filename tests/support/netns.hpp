// Test helper: scratch network namespaces for tests of the pilot's netlink code (root only).
//
// What it creates: new, empty network namespaces that exist only as file descriptors of the
// test process (Netns; nothing is named, mounted or bind-mounted under /run/netns), short-lived
// threads that enter them (in_netns, NetnsAnchor), and, in the TwoNodesOnVeth fixture, one veth
// pair made inside one of those namespaces with its peer moved straight into another.
//
// It cleans up on every path: each object undoes what it made in its destructor, so an ASSERT,
// a GTEST_SKIP or an exception leaves nothing behind. Closing the last Netns fd frees the
// namespace, and the kernel removes every link inside it with it; a NetnsAnchor's destructor
// releases and joins its thread.
//
// It only ever creates namespaces and links of its own and never touches the root namespace's
// interfaces: no namespace is joined to the machine's own network, and in_netns runs nothing at
// all (it throws) if its thread could not enter the test namespace, so a command meant for a
// test namespace can never run in the machine's own. shell() itself enters nothing: anything
// that changes network state must be run through in_netns.
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <future>
#include <gtest/gtest.h>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

namespace vcpilot::testing {

// A new, empty network namespace, alive while this object (or anything else) holds it.
class Netns {
  public:
    // std::nullopt if this process may not make network namespaces.
    static std::optional<Netns> create() {
        int fd = -1;
        std::thread([&fd] {
            if (unshare(CLONE_NEWNET) == 0) {
                fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
            }
        }).join();
        if (fd < 0) {
            return std::nullopt;
        }
        return Netns(fd);
    }

    Netns(Netns&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    Netns& operator=(Netns&& other) noexcept {
        std::swap(fd_, other.fd_);
        return *this;
    }
    Netns(const Netns&) = delete;
    Netns& operator=(const Netns&) = delete;
    ~Netns() {
        if (fd_ >= 0) {
            close(fd_);
        }
    }

    int fd() const { return fd_; }

  private:
    explicit Netns(int fd) : fd_(fd) {}
    int fd_;
};

// Runs `work` on a thread inside `ns` (child processes it starts are inside too). Throws, and
// runs nothing, if the thread could not enter: a command meant for a test namespace must never
// run in the machine's own.
template <typename Work>
auto in_netns(const Netns& ns, Work work) -> decltype(work()) {
    std::optional<decltype(work())> result;
    bool entered = false;
    std::thread([&] {
        if (setns(ns.fd(), CLONE_NEWNET) != 0) {
            return;
        }
        entered = true;
        result.emplace(work());
    }).join();
    if (!entered) {
        throw std::runtime_error("could not enter a test network namespace");
    }
    return std::move(*result);
}

// A thread parked inside a namespace; its thread id names that namespace to `ip ... netns`,
// which takes a pid but not a namespace file. tid() is -1 if the thread could not enter.
class NetnsAnchor {
  public:
    explicit NetnsAnchor(const Netns& ns) {
        std::promise<pid_t> entered;
        std::future<pid_t> tid = entered.get_future();
        thread_ = std::thread([fd = ns.fd(), entered = std::move(entered),
                               release = release_.get_future()]() mutable {
            entered.set_value(setns(fd, CLONE_NEWNET) == 0 ? gettid() : -1);
            release.wait();
        });
        tid_ = tid.get();
    }
    NetnsAnchor(const NetnsAnchor&) = delete;
    NetnsAnchor& operator=(const NetnsAnchor&) = delete;
    ~NetnsAnchor() {
        release_.set_value();
        thread_.join();
    }

    pid_t tid() const { return tid_; }

  private:
    std::promise<void> release_;
    std::thread thread_;
    pid_t tid_ = -1;
};

// Exit status of a shell command (-1 if it did not exit normally); its output, stderr included,
// is discarded unless `output` is given. Runs in the caller's namespace: wrap it in in_netns.
inline int shell(const std::string& command, std::string* output = nullptr) {
    FILE* pipe = popen((command + " 2>&1").c_str(), "r");
    if (pipe == nullptr) {
        return -1;
    }
    std::string text;
    char buffer[512];
    while (fgets(buffer, sizeof buffer, pipe) != nullptr) {
        text += buffer;
    }
    const int status = pclose(pipe);
    if (output != nullptr) {
        *output = text;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Two nodes joined by a veth pair, named u on both sides (172.30.0.1/24 on node 1, .2/24 on node
// 2, MTU 1500, up, lo up too), and one empty job namespace per node. Skips the test when not root
// or when namespaces cannot be made here. A fixture deriving from it calls
// TwoNodesOnVeth::SetUp() first and returns if IsSkipped() || HasFatalFailure().
class TwoNodesOnVeth : public ::testing::Test {
  protected:
    void SetUp() override {
        if (geteuid() != 0) {
            GTEST_SKIP() << "needs root to create network namespaces";
        }
        for (auto* slot : {&node1_, &node2_, &job1_, &job2_}) {
            *slot = Netns::create();
            if (!*slot) {
                GTEST_SKIP() << "cannot create network namespaces here";
            }
        }
        const NetnsAnchor node2_anchor(*node2_);
        ASSERT_GT(node2_anchor.tid(), 0);
        std::string output;
        ASSERT_EQ(in_netns(*node1_,
                           [&] {
                               return shell("ip link add u type veth peer name u netns " +
                                                std::to_string(node2_anchor.tid()) +
                                                " && ip addr add 172.30.0.1/24 dev u && "
                                                "ip link set u up && ip link set lo up",
                                            &output);
                           }),
                  0)
            << output;
        ASSERT_EQ(in_netns(*node2_,
                           [&] {
                               return shell(
                                   "ip addr add 172.30.0.2/24 dev u && ip link set u up && "
                                   "ip link set lo up",
                                   &output);
                           }),
                  0)
            << output;
    }

    std::optional<Netns> node1_, node2_, job1_, job2_;
};

}  // namespace vcpilot::testing
