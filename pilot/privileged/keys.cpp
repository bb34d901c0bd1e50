#include "pilot/privileged/keys.hpp"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <libssh/libssh.h>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include "common/fd.hpp"
#include "common/sshwire.hpp"
#include "common/text.hpp"

namespace vcpilot::pilot {

namespace fs = std::filesystem;

namespace {

std::string show(const fs::path& path) {
    return quote(path.string(), 256);
}

struct SshKeyFree {
    void operator()(ssh_key key) const { ssh_key_free(key); }
};
using SshKey = std::unique_ptr<std::remove_pointer_t<ssh_key>, SshKeyFree>;

struct SshStringFree {
    void operator()(char* text) const { ssh_string_free_char(text); }
};
using SshString = std::unique_ptr<char, SshStringFree>;

// For buffers that hold private key material: wiped before they go back to the allocator.
struct SshSecretFree {
    void operator()(char* text) const {
        explicit_bzero(text, ::strlen(text));
        ssh_string_free_char(text);
    }
};
using SshSecret = std::unique_ptr<char, SshSecretFree>;

bool is_printable_ascii(char c) {
    return c >= 0x20 && c <= 0x7e;
}

bool is_base64_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

// Standard base64 with padding, as OpenSSH writes it: a multiple of four characters, '=' only
// as the last one or two.
bool is_padded_base64(std::string_view text) {
    if (text.empty() || text.size() % 4 != 0) {
        return false;
    }
    std::size_t data = text.size();
    while (data > 0 && text.size() - data < 2 && text[data - 1] == '=') {
        --data;
    }
    return std::all_of(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(data),
                       is_base64_char);
}

// A file this module is creating in `dir_fd`. Until commit() it is removed again when the object
// goes away, but only if the name still refers to the inode we created: the directory may belong
// to the job user, who can rename entries in it, and we must not delete what they put there.
class NewFile {
  public:
    NewFile(int dir_fd, std::string name) : dir_fd_(dir_fd), name_(std::move(name)) {}
    ~NewFile() {
        if (fd_ && !committed_) {
            struct stat ours {};
            struct stat named {};
            if (::fstat(fd_.get(), &ours) == 0 &&
                ::fstatat(dir_fd_, name_.c_str(), &named, AT_SYMLINK_NOFOLLOW) == 0 &&
                ours.st_dev == named.st_dev && ours.st_ino == named.st_ino) {
                ::unlinkat(dir_fd_, name_.c_str(), 0);
            }
        }
    }
    NewFile(const NewFile&) = delete;
    NewFile& operator=(const NewFile&) = delete;

    // Never follows a symlink and never opens an existing file: O_EXCL makes both an error.
    Status create(const fs::path& shown_as) {
        fd_.reset(::openat(dir_fd_, name_.c_str(),
                           O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!fd_) {
            const int error = errno;
            return Error{
                "cannot create " + show(shown_as) + ": " + errno_text(error) +
                    (error == EEXIST ? " (an existing file or symlink is never replaced)" : ""),
                error};
        }
        return {};
    }

    // Writes `content` and hands the file to uid:gid with `mode` (not synced: see keys.hpp).
    // NOLINTNEXTLINE(readability-make-member-function-const): it changes the file.
    Status fill(const fs::path& shown_as, std::string_view content, uid_t uid, gid_t gid,
                mode_t mode) {
        while (!content.empty()) {
            const ssize_t written = ::write(fd_.get(), content.data(), content.size());
            if (written < 0 && errno == EINTR) {
                continue;
            }
            if (written <= 0) {
                return sys_error("cannot write " + show(shown_as), written < 0 ? errno : EIO);
            }
            content.remove_prefix(static_cast<std::size_t>(written));
        }
        // fchown before fchmod: a change of owner may clear mode bits.
        if (::fchown(fd_.get(), uid, gid) != 0) {
            return sys_error("cannot give " + show(shown_as) + " to " + std::to_string(uid) + ":" +
                             std::to_string(gid));
        }
        if (::fchmod(fd_.get(), mode) != 0) {
            return sys_error("cannot set the mode of " + show(shown_as));
        }
        return {};
    }

    void commit() { committed_ = true; }

  private:
    int dir_fd_;
    std::string name_;
    UniqueFd fd_;
    bool committed_ = false;
};

Status check_comment(std::string_view comment) {
    if (comment.size() > kMaxKeyComment) {
        return Error{"key comment " + quote(comment) + " is longer than " +
                     std::to_string(kMaxKeyComment) + " bytes"};
    }
    if (!std::all_of(comment.begin(), comment.end(), is_printable_ascii)) {
        return Error{"key comment " + quote(comment) + " may hold only printable ASCII"};
    }
    return {};
}

// The checks every key or certificate line from the network passes before it is parsed: size,
// no private key, printable ASCII on one line, the expected type, then its base64 field.
Result<std::string_view> key_data_of(const std::string& prefix, std::string_view line,
                                     std::string_view expected_type, std::string_view what) {
    if (line.size() > kMaxPublicKeyLine) {
        return Error{prefix + std::string(what) + " is " + std::to_string(line.size()) +
                     " bytes, more than the limit of " + std::to_string(kMaxPublicKeyLine)};
    }
    if (line.empty()) {
        return Error{prefix + std::string(what) + " is empty"};
    }
    // Checked before anything that could echo the input: a private key must not reach a log.
    // "b3BlbnNzaC1rZXktdjE" is "openssh-key-v1", the body of an OpenSSH private key file.
    if (line.find("PRIVATE KEY") != std::string_view::npos ||
        line.find("b3BlbnNzaC1rZXktdjE") != std::string_view::npos) {
        return Error{prefix + "this is a private key, not a " + std::string(what) +
                     "; give the one-line contents of the .pub file (private keys never leave "
                     "their node)"};
    }
    if (const auto bad = std::find_if_not(line.begin(), line.end(), is_printable_ascii);
        bad != line.end()) {
        return Error{prefix + std::string(what) + " must be one line of printable ASCII; byte " +
                     std::to_string(bad - line.begin()) + " is " +
                     quote(std::string_view(&*bad, 1))};
    }
    const std::string_view type = line.substr(0, line.find(' '));
    if (type != expected_type) {
        return Error{prefix + std::string(what) + " type " + quote(type, 40) +
                     " is not accepted; only " + std::string(expected_type) +
                     " is (the pilots use ed25519 keys only)"};
    }
    std::string_view rest = line.substr(type.size());
    rest.remove_prefix(std::min(rest.find_first_not_of(' '), rest.size()));
    const std::string_view data = rest.substr(0, rest.find(' '));
    if (data.empty()) {
        return Error{prefix + std::string(what) + " has no key data; expected '" +
                     std::string(expected_type) + " <base64> [comment]'"};
    }
    if (!is_padded_base64(data)) {
        return Error{prefix + "key data " + quote(data) + " is not valid base64"};
    }
    return data;
}

// The raw 32 bytes of an ed25519 public key line; nothing for anything else.
std::optional<std::string> ed25519_key_bytes(std::string_view line) {
    auto data = key_data_of({}, line, kKeyType, "public key");
    if (!data) {
        return std::nullopt;
    }
    const auto blob = decode_base64_strict(*data);
    if (!blob) {
        return std::nullopt;
    }
    WireReader reader(*blob);
    const std::string_view type = reader.string();
    const std::string_view key = reader.string();
    if (!reader.at_end() || type != kKeyType || key.size() != 32) {
        return std::nullopt;
    }
    return std::string(key);
}

}  // namespace

KeyFiles key_files(const fs::path& private_key) {
    fs::path public_key = private_key;
    public_key += ".pub";
    return KeyFiles{private_key, public_key};
}

Result<std::string> generate_ed25519_key(const fs::path& private_key, uid_t uid, gid_t gid,
                                         std::string_view comment) {
    if (auto ok = check_comment(comment); !ok) {
        return ok.error();
    }
    const KeyFiles files = key_files(private_key);
    const std::string private_name = private_key.filename().string();
    if (private_name.empty() || private_name == "." || private_name == "..") {
        return Error{"key file " + show(private_key) + " does not name a file"};
    }
    const std::string public_name = files.public_key.filename().string();

    ssh_key generated = nullptr;
    if (ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &generated) != SSH_OK) {
        return Error{"libssh could not generate an ed25519 key for " + show(private_key)};
    }
    const SshKey key(generated);

    char* private_text = nullptr;
    if (ssh_pki_export_privkey_base64(key.get(), nullptr, nullptr, nullptr, &private_text) !=
            SSH_OK ||
        private_text == nullptr) {
        if (private_text != nullptr) {
            SshSecretFree{}(private_text);
        }
        return Error{"libssh could not export the private key for " + show(private_key)};
    }
    // The OpenSSH armour ("-----BEGIN OPENSSH PRIVATE KEY-----" ... newline), despite the name.
    const SshSecret private_pem(private_text);

    char* public_text = nullptr;
    if (ssh_pki_export_pubkey_base64(key.get(), &public_text) != SSH_OK || public_text == nullptr) {
        if (public_text != nullptr) {
            ssh_string_free_char(public_text);
        }
        return Error{"libssh could not export the public key for " + show(private_key)};
    }
    const SshString public_base64(public_text);

    std::string public_line = std::string(kKeyType) + " " + public_base64.get();
    if (!comment.empty()) {
        public_line += " ";
        public_line += comment;
    }

    const fs::path dir = private_key.has_parent_path() ? private_key.parent_path() : ".";
    const UniqueFd directory(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (directory.get() < 0) {
        return sys_error("cannot open directory " + show(dir) + " for key " + show(private_key));
    }

    // Both names are claimed before anything is written, so a refused .pub costs no key file.
    NewFile private_file(directory.get(), private_name);
    NewFile public_file(directory.get(), public_name);
    if (auto ok = private_file.create(files.private_key); !ok) {
        return ok.error();
    }
    if (auto ok = public_file.create(files.public_key); !ok) {
        return ok.error();
    }
    if (auto ok = private_file.fill(files.private_key, private_pem.get(), uid, gid, 0600); !ok) {
        return ok.error();
    }
    if (auto ok = public_file.fill(files.public_key, public_line + "\n", uid, gid, 0644); !ok) {
        return ok.error();
    }
    private_file.commit();
    public_file.commit();
    return public_line;
}

Result<std::string> check_public_key(std::string_view field, std::string_view line) {
    const std::string prefix = std::string(field) + ": ";
    auto data = key_data_of(prefix, line, kKeyType, "public key");
    if (!data) {
        return data.error();
    }
    const std::string data_text(*data);
    ssh_key imported = nullptr;
    if (ssh_pki_import_pubkey_base64(data_text.c_str(), SSH_KEYTYPE_ED25519, &imported) != SSH_OK ||
        imported == nullptr) {
        ssh_key_free(imported);
        return Error{prefix + "key data " + quote(data_text) + " is not an " +
                     std::string(kKeyType) + " public key (truncated or corrupted?)"};
    }
    const SshKey key(imported);
    if (ssh_key_type(key.get()) != SSH_KEYTYPE_ED25519 || ssh_key_is_private(key.get()) != 0) {
        return Error{prefix + "key data " + quote(data_text) + " is not an " +
                     std::string(kKeyType) + " public key"};
    }
    // libssh reads the key from the front of the blob; the same key written back must give the
    // same text, which rules out trailing bytes and non-canonical encodings.
    char* exported = nullptr;
    if (ssh_pki_export_pubkey_base64(key.get(), &exported) != SSH_OK || exported == nullptr) {
        if (exported != nullptr) {
            ssh_string_free_char(exported);
        }
        return Error{prefix + "libssh could not re-export key " + quote(data_text)};
    }
    const SshString canonical(exported);
    if (data_text != canonical.get()) {
        return Error{prefix + "key data " + quote(data_text) +
                     " holds extra or non-canonical bytes after the ed25519 key"};
    }
    return std::string(kKeyType) + " " + data_text;
}

Result<std::string> check_certificate(std::string_view field, std::string_view line,
                                      const CertificateExpectation& expected) {
    const std::string prefix = std::string(field) + ": ";
    auto data = key_data_of(prefix, line, kCertificateType, "certificate");
    if (!data) {
        return data.error();
    }
    const auto blob = decode_base64_strict(*data);
    if (!blob) {
        return Error{prefix + "certificate data " + quote(*data) + " is not valid base64"};
    }
    const auto malformed = [&](std::string_view what) {
        return Error{prefix + "not a well-formed " + std::string(kCertificateType) +
                     " certificate (" + std::string(what) + ")"};
    };
    WireReader reader(*blob);
    const std::string_view type = reader.string();
    const std::string_view nonce = reader.string();
    const std::string_view key = reader.string();
    const std::uint64_t serial = reader.u64();
    const std::uint32_t role = reader.u32();
    const std::string_view key_id = reader.string();
    const std::string_view principals = reader.string();
    const std::uint64_t valid_after = reader.u64();
    const std::uint64_t valid_before = reader.u64();
    [[maybe_unused]] const std::string_view options = reader.string();
    [[maybe_unused]] const std::string_view extensions = reader.string();
    [[maybe_unused]] const std::string_view reserved = reader.string();
    const std::string_view signature_key = reader.string();
    const std::string_view signature = reader.string();
    static_cast<void>(serial);
    static_cast<void>(key_id);
    if (!reader.ok()) {
        return malformed("truncated");
    }
    if (!reader.at_end()) {
        return malformed("bytes after the signature");
    }
    if (type != kCertificateType) {
        return malformed("its blob says it is a " + quote(type, 40));
    }
    // OpenSSH writes a 32-byte nonce; it only has to be there, and be of sane size.
    if (nonce.empty() || nonce.size() > 256) {
        return malformed("nonce of " + std::to_string(nonce.size()) + " bytes");
    }
    if (key.size() != 32) {
        return malformed("certified key of " + std::to_string(key.size()) + " bytes, not 32");
    }
    if (signature.empty()) {
        return malformed("no signature");
    }
    if (role != static_cast<std::uint32_t>(CertificateRole::user) &&
        role != static_cast<std::uint32_t>(CertificateRole::host)) {
        return malformed("unknown certificate type " + std::to_string(role));
    }

    const auto role_name = [](std::uint32_t value) {
        return value == static_cast<std::uint32_t>(CertificateRole::host) ? "a host" : "a user";
    };
    if (role != static_cast<std::uint32_t>(expected.role)) {
        return Error{prefix + "this is " + role_name(role) + " certificate; " +
                     role_name(static_cast<std::uint32_t>(expected.role)) +
                     " certificate is needed here"};
    }
    auto own_key = ed25519_key_bytes(expected.certified_key);
    if (!own_key || key != *own_key) {
        return Error{prefix + "certifies another key than this node's " +
                     (expected.role == CertificateRole::host ? "host key" : "user key") +
                     " (signed for another node or an earlier pilot?)"};
    }
    WireReader signer(signature_key);
    const std::string_view signer_type = signer.string();
    const std::string_view signer_key = signer.string();
    if (!signer.at_end() || signer_type != kKeyType) {
        return malformed("the signing key is not an ed25519 key");
    }
    auto ca_key = ed25519_key_bytes(expected.ca_key);
    if (!ca_key || signer_key != *ca_key) {
        return Error{prefix + "was not signed by the cluster's CA (ca_key)"};
    }
    bool has_principal = false;
    WireReader names(principals);
    while (names.ok() && !names.at_end()) {
        const std::string_view name = names.string();
        has_principal = has_principal || (names.ok() && name == expected.principal);
    }
    if (!names.ok()) {
        return malformed("truncated list of principals");
    }
    if (!has_principal) {
        return Error{prefix + "is not valid for " + quote(expected.principal) +
                     " (not among its principals)"};
    }
    const auto now = static_cast<std::uint64_t>(std::max<std::int64_t>(expected.now_unix, 0));
    if (valid_before <= valid_after) {
        return malformed("its validity interval is empty");
    }
    if (valid_before <= now) {
        return Error{prefix + "expired at " + std::to_string(valid_before) +
                     " (seconds since the epoch; now is " + std::to_string(now) + ")"};
    }
    return std::string(kCertificateType) + " " + std::string(*data);
}

}  // namespace vcpilot::pilot
