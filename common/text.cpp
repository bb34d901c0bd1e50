#include "common/text.hpp"

#include <fmt/format.h>

namespace vcpilot {

namespace {

void append_escaped(std::string& out, std::string_view text) {
    for (char c : text) {
        const auto byte = static_cast<unsigned char>(c);
        if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c == '\t') {
            out += "\\t";
        } else if (byte < 0x20 || byte == 0x7f) {
            out += fmt::format("\\x{:02x}", byte);
        } else {
            out += c;  // UTF-8 passes through: a Japanese site name should stay readable.
        }
    }
}

}  // namespace

std::string quote(std::string_view text, std::size_t max_length) {
    std::string out = "'";
    if (text.size() <= max_length) {
        append_escaped(out, text);
        out += '\'';
        return out;
    }
    std::size_t cut = max_length;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) {
        --cut;  // do not split a UTF-8 sequence
    }
    append_escaped(out, text.substr(0, cut));
    out += fmt::format("'... ({} bytes)", text.size());
    return out;
}

std::string single_line(std::string_view text) {
    std::string out;
    append_escaped(out, text);
    return out;
}

}  // namespace vcpilot
