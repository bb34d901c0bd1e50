#include "common/error.hpp"

#include <string.h>

namespace vcpilot {

std::string errno_text(int errnum) {
    // strerrordesc_np returns the same text as strerror for a known errno, from a table, never
    // from a buffer another thread may be writing; it returns NULL for an unknown one.
    if (const char* text = ::strerrordesc_np(errnum); text != nullptr) {
        return text;
    }
    return "errno " + std::to_string(errnum);
}

Error sys_error(std::string_view what, int errnum) {
    std::string message(what);
    message += ": ";
    message += errno_text(errnum);
    return Error{std::move(message), errnum};
}

}  // namespace vcpilot
