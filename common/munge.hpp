// MUNGE credentials: how a site's daemons know which local user (or which root on which node of
// the site) is calling. A credential is minted by the caller's munged, can be decoded only by a
// munged holding the same site key, and only once (munged refuses a replay).
//
// The payload binds a credential to what it authorises ("vcpilot-attach\n<cluster>\n<host>…"),
// so a credential captured from one request cannot be spent on another.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "common/result.hpp"

namespace vcpilot {

struct MungeIdentity {
    uid_t uid = 0;
    gid_t gid = 0;
    std::string payload;
};

// Largest credential accepted for decoding; real ones for our payloads are a few hundred bytes.
inline constexpr std::size_t kMaxMungeCredential = 4096;

// `socket` is munged's socket; empty = libmunge's default.
Result<std::string> munge_encode(std::string_view payload, const std::string& socket = {});
Result<MungeIdentity> munge_decode(std::string_view credential, const std::string& socket = {});

}  // namespace vcpilot
