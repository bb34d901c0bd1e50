// TestMunged: a private munged with its own key and socket in a directory of its own, run as
// user munge and stopped (by its pid) when the TestMunged goes; nothing is shared with a munged
// of the host, if any. Credentials from its socket are what the coordinators under test check.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>

#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

namespace vcpilot::testing {

class TestMunged {
  public:
    // Whether this machine can run one (munged installed, a munge user, running as root).
    static bool available();

    // Starts one in a TempDir of its own; throws std::runtime_error if it does not answer
    // within 10 s.
    TestMunged();
    // The same in `dir` (made if missing; user munge must be able to reach it, see
    // TempDirOptions::searchable), which the caller removes.
    explicit TestMunged(const std::filesystem::path& dir);
    ~TestMunged();
    TestMunged(const TestMunged&) = delete;
    TestMunged& operator=(const TestMunged&) = delete;

    std::string socket() const { return (dir_ / "munge.socket").string(); }

    // A credential for `payload` minted by `uid` (a child process that becomes that user).
    std::string credential_as(uid_t uid, const std::string& payload) const;

  private:
    void start();

    std::optional<TempDir> own_dir_;
    std::filesystem::path dir_;
    ChildProcess process_{"munged"};
};

}  // namespace vcpilot::testing
