#include "common/job_record.hpp"

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <string>

namespace vcpilot {

Status write_namespaces_record(const std::filesystem::path& file,
                               const RecordedNamespaces& record) {
    const std::filesystem::path tmp = file.string() + ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        out << "holder " << record.holder << "\nnet " << record.net << "\nmnt " << record.mnt
            << "\n";
        if (!out.flush()) {
            return Error{"write " + tmp.string()};
        }
    }
    if (std::rename(tmp.c_str(), file.c_str()) != 0) {
        return sys_error("rename " + tmp.string());
    }
    return {};
}

std::optional<RecordedNamespaces> read_namespaces_record(const std::filesystem::path& file) {
    std::ifstream in(file);
    RecordedNamespaces recorded;
    std::string key;
    unsigned long long value = 0;
    while (in >> key >> value) {
        if (key == "holder") {
            recorded.holder = static_cast<pid_t>(value);
        } else if (key == "net") {
            recorded.net = static_cast<ino_t>(value);
        } else if (key == "mnt") {
            recorded.mnt = static_cast<ino_t>(value);
        }
    }
    if (recorded.net == 0 && recorded.mnt == 0) {
        return std::nullopt;
    }
    return recorded;
}

}  // namespace vcpilot
