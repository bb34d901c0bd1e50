// Error: what every vcpilot function that can fail reports (through Result<T> and Status, see
// result.hpp), and the one place errno becomes text. A system call's failure keeps its errno
// next to the message, so a caller that must tell ENOENT from EACCES tests error.code instead of
// reading the text or asking the code that failed for its last errno.
#pragma once

#include <cerrno>
#include <string>
#include <string_view>

namespace vcpilot {

struct Error {
    std::string message;  // one line, says what failed and why
    int code = 0;         // the errno behind it; 0 when it is not a system error
};

// The C library's text for errno value `errnum` ("No such file or directory"), safe from any
// thread (strerror shares one buffer between threads); "errno N" for a value it does not know.
std::string errno_text(int errnum);

// The error of a failed system call: {"what: <errno text>", errnum}. The default reads errno when
// the call's arguments are evaluated: pass a saved value when anything that may set errno (a
// close, a log line) runs between the failure and this call.
Error sys_error(std::string_view what, int errnum = errno);

}  // namespace vcpilot
