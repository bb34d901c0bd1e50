// The record a pilot keeps of its job's namespaces (<run dir>/namespaces): the pid of the
// process that holds them and their inode numbers. The pilot writes it and reads it back to
// tear down after a crash; the SPANK plugin reads it to put tasks into the namespaces.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>

#include "common/result.hpp"

namespace vcpilot {

struct RecordedNamespaces {
    pid_t holder = -1;
    ino_t net = 0;
    ino_t mnt = 0;
};

// Writes the record atomically (a temporary file renamed over it).
Status write_namespaces_record(const std::filesystem::path& file, const RecordedNamespaces& record);
// The record, if the file exists and names at least one namespace.
std::optional<RecordedNamespaces> read_namespaces_record(const std::filesystem::path& file);

}  // namespace vcpilot
