#include "pilot/privileged/keys.hpp"

#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <iterator>
#include <string>
#include <string_view>

#include "tests/support/temp_dir.hpp"
#include "tests/unit/expect_error.hpp"

namespace vcpilot::pilot {
namespace {

namespace fs = std::filesystem;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
using vcpilot::testing::TempDir;

// A key libssh generated once; its blob is 51 bytes, so the base64 has no padding.
constexpr std::string_view kKnownKey =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIARe3ELfwzGPy+7qsgI/8PVIyXn5rWl8MbwC4DZ4KYMM";
// A real 1024-bit RSA public key from ssh-keygen.
constexpr std::string_view kKnownRsaKey =
    "ssh-rsa "
    "AAAAB3NzaC1yc2EAAAADAQABAAAAgQD0ZhvLL+16BRahE02RYqTXq8M0Zg7MMl20LHdVVu3xpjZXuHXMhyV2q12"
    "ogQCJWO+mzGbyZ22sufYWVn8eDCNBYKezHD4M4crd/mNPi/"
    "yrGYJuATKG63Azno0djOzNjGp1wPndyTBzFnf2GTXT+V5+6d"
    "1ae+CGm2UU49+yTFnm7Q== rsa@example";

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// stdout of a shell command, and whether it exited 0.
std::pair<std::string, bool> run(const std::string& command) {
    FILE* pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) {
        return {"", false};
    }
    std::string out;
    char buffer[4096];
    std::size_t got = 0;
    while ((got = ::fread(buffer, 1, sizeof buffer, pipe)) > 0) {
        out.append(buffer, got);
    }
    const int status = ::pclose(pipe);
    return {out, WIFEXITED(status) && WEXITSTATUS(status) == 0};
}

// "type base64", without any comment.
std::string first_two_fields(std::string_view line) {
    const std::size_t first = line.find(' ');
    const std::size_t second = line.find_first_of(" \n", first + 1);
    return std::string(line.substr(0, second));
}

struct stat stat_of(const fs::path& path) {
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
    return st;
}

// ---- generate_ed25519_key ----

TEST(GenerateKey, WritesAPrivateKeyOnlyItsOwnerCanReadAndAPublicKeyBesideIt) {
    const TempDir dir;
    const fs::path key = dir.path() / "id_ed25519";
    auto line = generate_ed25519_key(key, 4242, 4343, "vcuser@node1");
    ASSERT_TRUE(line.ok()) << line.error().message;

    EXPECT_THAT(*line, StartsWith("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"));
    EXPECT_THAT(*line, EndsWith(" vcuser@node1"));

    const struct stat private_stat = stat_of(key);
    EXPECT_TRUE(S_ISREG(private_stat.st_mode));
    EXPECT_EQ(private_stat.st_mode & 07777, 0600U);
    EXPECT_EQ(private_stat.st_uid, 4242U);
    EXPECT_EQ(private_stat.st_gid, 4343U);

    const KeyFiles files = key_files(key);
    EXPECT_EQ(files.public_key, dir.path() / "id_ed25519.pub");
    const struct stat public_stat = stat_of(files.public_key);
    EXPECT_TRUE(S_ISREG(public_stat.st_mode));
    EXPECT_EQ(public_stat.st_mode & 07777, 0644U);
    EXPECT_EQ(public_stat.st_uid, 4242U);
    EXPECT_EQ(public_stat.st_gid, 4343U);

    EXPECT_EQ(read_file(files.public_key), *line + "\n");
    const std::string private_text = read_file(key);
    EXPECT_THAT(private_text, StartsWith("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
    EXPECT_THAT(private_text, EndsWith("-----END OPENSSH PRIVATE KEY-----\n"));
}

TEST(GenerateKey, OpenSshDerivesTheSamePublicKeyFromThePrivateFile) {
    const TempDir dir;
    const fs::path key = dir.path() / "ssh_host_ed25519_key";
    auto line = generate_ed25519_key(key, 0, 0, "host key of node1");
    ASSERT_TRUE(line.ok()) << line.error().message;

    const auto [derived, ok] = run("ssh-keygen -y -f '" + key.string() + "'");
    ASSERT_TRUE(ok) << "ssh-keygen -y refused the private key: " << derived;
    EXPECT_EQ(first_two_fields(derived), first_two_fields(*line));
}

TEST(GenerateKey, GivesAFreshKeyEachTime) {
    const TempDir dir;
    auto first = generate_ed25519_key(dir.path() / "a", 0, 0, "");
    auto second = generate_ed25519_key(dir.path() / "b", 0, 0, "");
    ASSERT_TRUE(first.ok() && second.ok());
    EXPECT_NE(*first, *second);
    EXPECT_EQ(first->find(' ', 12), std::string::npos) << "no comment was asked for: " << *first;
}

TEST(GenerateKey, NeverOverwritesAnExistingPrivateKeyFile) {
    const TempDir dir;
    const fs::path key = dir.write("id_ed25519", "keep me");
    const std::string message = error_of(generate_ed25519_key(key, 0, 0, "c"));
    EXPECT_THAT(message, HasSubstr("id_ed25519"));
    EXPECT_THAT(message, HasSubstr("File exists"));
    EXPECT_EQ(read_file(key), "keep me");
    EXPECT_FALSE(fs::exists(dir.path() / "id_ed25519.pub"));
}

TEST(GenerateKey, NeverOverwritesAnExistingPublicKeyFileAndLeavesNoPrivateKeyBehind) {
    const TempDir dir;
    const fs::path public_key = dir.write("id_ed25519.pub", "keep me");
    const std::string message = error_of(generate_ed25519_key(dir.path() / "id_ed25519", 0, 0, ""));
    EXPECT_THAT(message, HasSubstr("id_ed25519.pub"));
    EXPECT_EQ(read_file(public_key), "keep me");
    EXPECT_FALSE(fs::exists(fs::symlink_status(dir.path() / "id_ed25519")));
}

TEST(GenerateKey, NeverFollowsASymlinkPlantedWhereThePrivateKeyGoes) {
    const TempDir dir;
    const fs::path victim = dir.path() / "victim";
    const fs::path dangling = dir.path() / "not-yet-there";
    fs::create_symlink(victim, dir.path() / "id_ed25519");
    fs::create_symlink(dangling, dir.path() / "id_rsa");
    std::ofstream(victim) << "host file";

    error_of(generate_ed25519_key(dir.path() / "id_ed25519", 0, 0, ""));
    error_of(generate_ed25519_key(dir.path() / "id_rsa", 0, 0, ""));

    EXPECT_EQ(read_file(victim), "host file");
    EXPECT_FALSE(fs::exists(fs::symlink_status(dangling)));
    EXPECT_TRUE(fs::is_symlink(dir.path() / "id_ed25519"));
    EXPECT_FALSE(fs::exists(fs::symlink_status(dir.path() / "id_ed25519.pub")));
    EXPECT_FALSE(fs::exists(fs::symlink_status(dir.path() / "id_rsa.pub")));
}

TEST(GenerateKey, NeverFollowsASymlinkPlantedWhereThePublicKeyGoes) {
    const TempDir dir;
    const fs::path dangling = dir.path() / "not-yet-there";
    fs::create_symlink(dangling, dir.path() / "id_ed25519.pub");

    error_of(generate_ed25519_key(dir.path() / "id_ed25519", 0, 0, ""));

    EXPECT_FALSE(fs::exists(fs::symlink_status(dangling)));
    EXPECT_FALSE(fs::exists(fs::symlink_status(dir.path() / "id_ed25519")));
}

TEST(GenerateKey, FailsCleanlyWhenTheDirectoryIsMissing) {
    const TempDir dir;
    const std::string message =
        error_of(generate_ed25519_key(dir.path() / "missing" / "id_ed25519", 0, 0, ""));
    EXPECT_THAT(message, HasSubstr("missing"));
    EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(GenerateKey, RefusesACommentThatWouldBreakThePublicKeyLine) {
    const TempDir dir;
    error_of(generate_ed25519_key(dir.path() / "a", 0, 0, "two\nlines"));
    error_of(generate_ed25519_key(dir.path() / "b", 0, 0, std::string(kMaxKeyComment + 1, 'c')));
    EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(GenerateKey, RefusesAPathWithoutAFileName) {
    const TempDir dir;
    error_of(generate_ed25519_key(dir.path() / "", 0, 0, ""));
    EXPECT_TRUE(fs::is_empty(dir.path()));
}

// ---- check_public_key ----

TEST(CheckPublicKey, AcceptsAKeyThePilotGeneratedAndDropsTheComment) {
    const TempDir dir;
    auto line = generate_ed25519_key(dir.path() / "id", 0, 0, "vcuser@node1");
    ASSERT_TRUE(line.ok()) << line.error().message;
    auto checked = check_public_key("user_key", *line);
    ASSERT_TRUE(checked.ok()) << checked.error().message;
    EXPECT_EQ(*checked, first_two_fields(*line));
}

TEST(CheckPublicKey, AcceptsAKeyOpenSshGenerated) {
    const TempDir dir;
    const fs::path key = dir.path() / "id";
    const auto [out, ok] =
        run("ssh-keygen -q -t ed25519 -N '' -C 'someone@somewhere' -f '" + key.string() + "'");
    ASSERT_TRUE(ok) << out;
    std::string line = read_file(dir.path() / "id.pub");
    ASSERT_THAT(line, EndsWith("\n"));
    line.pop_back();
    auto checked = check_public_key("host_key", line);
    ASSERT_TRUE(checked.ok()) << checked.error().message;
    EXPECT_EQ(*checked, first_two_fields(line));
}

TEST(CheckPublicKey, AcceptsCommentsWithSpacesAndExtraSpacesBetweenFields) {
    EXPECT_EQ(check_public_key("k", kKnownKey).value(), kKnownKey);
    EXPECT_EQ(check_public_key("k", std::string(kKnownKey) + " a comment, with spaces").value(),
              kKnownKey);
    EXPECT_EQ(
        check_public_key("k", "ssh-ed25519   " + std::string(kKnownKey.substr(12)) + "  c").value(),
        kKnownKey);
    EXPECT_EQ(check_public_key("k", std::string(kKnownKey) + " ").value(), kKnownKey);
}

TEST(CheckPublicKey, RefusesAnEmptyLineNamingTheField) {
    const std::string message = error_of(check_public_key("peers[3].host_key", ""));
    EXPECT_THAT(message, StartsWith("peers[3].host_key: "));
    EXPECT_THAT(message, HasSubstr("empty"));
}

TEST(CheckPublicKey, RefusesKeyTypesThePilotsNeverGenerate) {
    // RSA is refused on purpose: pilots only make ed25519 keys, so an RSA key is a bug or an
    // attack, and libssh's RSA parser is code we need not expose.
    EXPECT_THAT(error_of(check_public_key("user_key", kKnownRsaKey)),
                HasSubstr("'ssh-rsa' is not accepted"));
    EXPECT_THAT(error_of(check_public_key("user_key", "ssh-ed25519-cert-v01@openssh.com " +
                                                          std::string(kKnownKey.substr(12)))),
                HasSubstr("not accepted"));
    EXPECT_THAT(error_of(check_public_key("user_key", "ecdsa-sha2-nistp256 AAAA")),
                HasSubstr("not accepted"));
    // The outer name says ed25519 but the blob holds an RSA key.
    const std::string rsa_data(kKnownRsaKey.substr(8, kKnownRsaKey.find(' ', 8) - 8));
    EXPECT_THAT(error_of(check_public_key("user_key", "ssh-ed25519 " + rsa_data)),
                HasSubstr("is not an ssh-ed25519 public key"));
    // An authorized_keys line with options is not a public key line.
    EXPECT_THAT(error_of(check_public_key("user_key", "command=\"sh\" " + std::string(kKnownKey))),
                HasSubstr("not accepted"));
}

TEST(CheckPublicKey, RefusesKeyDataThatIsNotBase64) {
    EXPECT_THAT(error_of(check_public_key("k", "ssh-ed25519 AAAAC3Nza$1lZDI1NTE5")),
                HasSubstr("not valid base64"));
    EXPECT_THAT(error_of(check_public_key("k", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5A")),
                HasSubstr("not valid base64"));
    EXPECT_THAT(error_of(check_public_key("k", "ssh-ed25519 AA=A")), HasSubstr("not valid base64"));
    EXPECT_THAT(error_of(check_public_key("k", "ssh-ed25519")), HasSubstr("no key data"));
    EXPECT_THAT(error_of(check_public_key("k", "ssh-ed25519 ")), HasSubstr("no key data"));
}

TEST(CheckPublicKey, RefusesATruncatedKey) {
    const std::string line(kKnownKey);
    // Cut to a length that is still valid base64, and to one that is not.
    EXPECT_THAT(error_of(check_public_key("k", line.substr(0, line.size() - 4))),
                HasSubstr("is not an ssh-ed25519 public key"));
    EXPECT_THAT(error_of(check_public_key("k", line.substr(0, line.size() - 1))),
                HasSubstr("not valid base64"));
    EXPECT_THAT(error_of(check_public_key("k", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5")),
                HasSubstr("is not an ssh-ed25519 public key"));
}

TEST(CheckPublicKey, RefusesBytesAfterTheKeyInTheBlob) {
    EXPECT_THAT(error_of(check_public_key("k", std::string(kKnownKey) + "AAAA")),
                HasSubstr("extra or non-canonical"));
}

TEST(CheckPublicKey, RefusesEmbeddedNewlinesAndOtherControlCharacters) {
    const std::string key(kKnownKey);
    EXPECT_THAT(error_of(check_public_key("k", key + "\n")), HasSubstr("one line"));
    EXPECT_THAT(error_of(check_public_key("k", key + " c\nssh-ed25519 AAAA")),
                HasSubstr("one line"));
    EXPECT_THAT(error_of(check_public_key("k", key + "\r")), HasSubstr("one line"));
    EXPECT_THAT(error_of(check_public_key("k", "ssh-ed25519\t" + key.substr(12))),
                HasSubstr("one line"));
    EXPECT_THAT(error_of(check_public_key("k", key + std::string(" nul\0byte", 9))),
                HasSubstr("one line"));
    EXPECT_THAT(error_of(check_public_key("k", key + " caf\xc3\xa9")), HasSubstr("ASCII"));
}

TEST(CheckPublicKey, RecognisesAPrivateKeyPastedByMistakeWithoutEchoingIt) {
    const TempDir dir;
    const fs::path key = dir.path() / "id";
    ASSERT_TRUE(generate_ed25519_key(key, 0, 0, "").ok());
    const std::string pem = read_file(key);
    // The secret half sits at the end of the body; none of it may appear in the message.
    const std::string body_tail = pem.substr(pem.size() - 80, 40);

    for (const std::string& pasted :
         {pem, pem.substr(0, pem.find('\n')), pem.substr(pem.find('\n') + 1, 70),
          "ssh-ed25519 " + pem.substr(pem.find('\n') + 1, 70)}) {
        const std::string message = error_of(check_public_key("user_key", pasted));
        EXPECT_THAT(message, HasSubstr("private key")) << pasted;
        EXPECT_THAT(message, Not(HasSubstr(body_tail)));
        EXPECT_THAT(message, Not(HasSubstr("b3BlbnNzaC1rZXktdjE")));
    }
}

TEST(CheckPublicKey, RefusesAnOversizeLineBeforeParsingIt) {
    const std::string huge = std::string(kKnownKey) + " " + std::string(kMaxPublicKeyLine, 'c');
    const std::string message = error_of(check_public_key("k", huge));
    EXPECT_THAT(message, HasSubstr("more than the limit"));
    EXPECT_LT(message.size(), 200U);
    // Just under the limit is fine.
    const std::string fits =
        std::string(kKnownKey) + " " + std::string(kMaxPublicKeyLine - kKnownKey.size() - 1, 'c');
    EXPECT_EQ(check_public_key("k", fits).value(), kKnownKey);
}

}  // namespace
}  // namespace vcpilot::pilot
