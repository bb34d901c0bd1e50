#include "common/sshwire.hpp"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/evp.h>

namespace vcpilot {

void put_u32(std::string& out, std::uint32_t value) {
    for (int shift = 24; shift >= 0; shift -= 8) {
        out += static_cast<char>((value >> shift) & 0xff);
    }
}

void put_u64(std::string& out, std::uint64_t value) {
    for (int shift = 56; shift >= 0; shift -= 8) {
        out += static_cast<char>((value >> shift) & 0xff);
    }
}

void put_string(std::string& out, std::string_view bytes) {
    put_u32(out, static_cast<std::uint32_t>(bytes.size()));
    out += bytes;
}

bool WireReader::take(std::size_t n) {
    if (!ok_ || rest_.size() < n) {
        ok_ = false;
        taken_ = {};
        return false;
    }
    taken_ = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return true;
}

std::uint32_t WireReader::u32() {
    if (!take(4)) {
        return 0;
    }
    std::uint32_t value = 0;
    for (const char byte : taken_) {
        value = (value << 8) | static_cast<std::uint8_t>(byte);
    }
    return value;
}

std::uint64_t WireReader::u64() {
    const std::uint64_t high = u32();
    return (high << 32) | u32();
}

std::string_view WireReader::string() {
    const std::uint32_t length = u32();
    return take(length) ? taken_ : std::string_view{};
}

std::string encode_base64(std::string_view bytes) {
    std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');  // + 1: EVP_EncodeBlock's NUL
    const int written = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                        reinterpret_cast<const unsigned char*>(bytes.data()),
                                        static_cast<int>(bytes.size()));
    out.resize(static_cast<std::size_t>(written));
    return out;
}

// EVP_DecodeBlock alone tolerates surrounding whitespace and counts padding as zero bytes, so
// its result is re-encoded and must reproduce the input exactly; that also refuses stray '='
// and non-zero padding bits.
Result<std::string> decode_base64_strict(std::string_view text) {
    if (text.empty() || text.size() % 4 != 0) {
        return Error{fmt::format("the key data is not base64 ({} characters, not a multiple of 4)",
                                 text.size())};
    }
    std::string out(text.size() / 4 * 3, '\0');
    const int decoded = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                        reinterpret_cast<const unsigned char*>(text.data()),
                                        static_cast<int>(text.size()));
    if (decoded < 0) {
        ERR_clear_error();
        return Error{"the key data is not valid base64"};
    }
    const std::size_t padding = text.ends_with("==") ? 2 : text.ends_with('=') ? 1 : 0;
    if (static_cast<std::size_t>(decoded) < padding) {
        return Error{"the key data is not valid base64"};
    }
    out.resize(static_cast<std::size_t>(decoded) - padding);
    if (encode_base64(out) != text) {
        return Error{"the key data is not canonical base64"};
    }
    return out;
}

}  // namespace vcpilot
