// The SSH wire encoding (RFC 4251 section 5) and base64 as OpenSSH writes key and certificate
// lines: what the CA that signs certificates and the pilot that checks them both speak.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace vcpilot {

void put_u32(std::string& out, std::uint32_t value);
void put_u64(std::string& out, std::uint64_t value);
void put_string(std::string& out, std::string_view bytes);

// Reads a blob. Any read past the end fails and every later read fails too, so a parser may
// check ok() once after a group of reads.
class WireReader {
  public:
    explicit WireReader(std::string_view blob) : rest_(blob) {}

    std::uint32_t u32();
    std::uint64_t u64();
    std::string_view string();

    bool ok() const noexcept { return ok_; }
    bool at_end() const noexcept { return ok_ && rest_.empty(); }
    std::size_t remaining() const noexcept { return rest_.size(); }

  private:
    bool take(std::size_t n);

    std::string_view rest_;
    std::string_view taken_;
    bool ok_ = true;
};

std::string encode_base64(std::string_view bytes);
// Strict base64: padded, nothing but the alphabet, and canonical (the one spelling of those
// bytes), so that one blob has exactly one text form. The error says which rule failed.
Result<std::string> decode_base64_strict(std::string_view text);

}  // namespace vcpilot
