#include "tests/support/temp_dir.hpp"

#include <stdlib.h>
#include <sys/stat.h>

#include <fstream>
#include <stdexcept>

#include "tests/support/cleanup.hpp"

namespace vcpilot::testing {

TempDir::TempDir(const TempDirOptions& options) : keep_(options.keep) {
    std::string name = (options.base / (options.prefix + "-XXXXXX")).string();
    if (::mkdtemp(name.data()) == nullptr) {
        throw std::runtime_error("cannot make a temporary directory " + name);
    }
    path_ = name;
    if (options.searchable) {
        ::chmod(path_.c_str(), 0755);
    }
    if (!keep_) {
        leftovers::add_dir(path_);
    }
}

TempDir::~TempDir() {
    if (!keep_) {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
        leftovers::forget_dir(path_);
    }
}

std::filesystem::path TempDir::write(std::string_view name, std::string_view contents) const {
    std::filesystem::path file = path_ / name;
    std::ofstream(file, std::ios::binary) << contents;
    return file;
}

}  // namespace vcpilot::testing
