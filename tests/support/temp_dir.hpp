// TempDir: a fresh directory for a test or a benchmark, removed with everything in it when the
// TempDir goes (unless kept), and listed with the leftovers (cleanup.hpp) meanwhile, so that a
// stop signal removes it too.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace vcpilot::testing {

struct TempDirOptions {
    std::filesystem::path base = std::filesystem::temp_directory_path();
    std::string prefix = "vcpilot-test";  // the name is PREFIX-XXXXXX
    // Mode 0755 instead of mkdtemp's 0700: another user (munged runs as munge) reaches inside.
    bool searchable = false;
    bool keep = false;  // left in place at the end (its logs and stores, to look at)
};

class TempDir {
  public:
    // Throws std::runtime_error if the directory cannot be made.
    TempDir() : TempDir(TempDirOptions{}) {}
    explicit TempDir(const TempDirOptions& options);
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::filesystem::path& path() const { return path_; }

    // Writes `contents` to the file `name` inside; its path.
    std::filesystem::path write(std::string_view name, std::string_view contents) const;

  private:
    std::filesystem::path path_;
    bool keep_ = false;
};

}  // namespace vcpilot::testing
