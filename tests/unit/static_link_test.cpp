// The programs that start once per job on every node link every library but glibc statically
// (CMakeLists.txt, VCPILOT_STATIC_LIBS): loading libstdc++.so and a dozen others was a quarter
// of a pilot's CPU. A dependency added later as a shared object would quietly bring that back.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <memory>
#include <string>

namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// What `ldd program` prints: the shared objects the program loads at start.
std::string shared_objects_of(const std::string& program) {
    const std::string command = "ldd '" + program + "' 2>&1";
    std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(command.c_str(), "r"), ::pclose);
    std::string text;
    std::array<char, 512> buffer{};
    while (pipe && std::fgets(buffer.data(), buffer.size(), pipe.get()) != nullptr) {
        text += buffer.data();
    }
    return text;
}

TEST(PerJobPrograms, LoadNoSharedObjectButGlibcAndKerberos) {
    if (!VCPILOT_STATIC_LIBS) {
        GTEST_SKIP() << "configured with -DVCPILOT_STATIC_LIBS=OFF";
    }
    for (const std::string program : {VCPILOT_PILOT_BINARY, VCPILOT_SRUN_SHIM}) {
        const std::string objects = shared_objects_of(program);
        ASSERT_THAT(objects, HasSubstr("libc.so.6")) << program;
        for (const char* library :
             {"libstdc++", "libgcc_s", "libspdlog", "libfmt", "libcrypto", "libssl", "libmunge",
              "libnl-", "libseccomp", "libssh", "libz.so", "libgrpc", "libprotobuf", "libabsl"}) {
            EXPECT_THAT(objects, Not(HasSubstr(library))) << program << ":\n" << objects;
        }
    }
}

}  // namespace
