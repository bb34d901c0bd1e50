// Reading TOML configuration files strictly.
//
// Every read of a key marks it as used, and ConfigFile::finish() reports the keys nobody read:
// a misspelt setting is an error naming the key and the file, never silently ignored. Errors
// are single lines starting with "FILE:LINE:" so editors can jump to them.
//
//     auto file = ConfigFile::load("/etc/vcpilot/crmd.toml");
//     if (!file) { ...file.error().message... }
//     auto site = file->root().section("site");
//     auto name = site->get<std::string>("name");
//     auto block = site->get<Cidr>("cidr");
//     auto port = site->get_or<std::int64_t>("port", 7400);
//     auto unknown = file->finish();
//
// Not thread-safe: one thread reads a file, usually once at start-up.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip.hpp"
#include "common/result.hpp"

namespace vcpilot {

namespace detail {
struct ConfigDocument;
}

// The C++ types a key can be read as. Addresses are TOML strings parsed with the strict
// parsers of common/ip.hpp; a float key also accepts an integer ("timeout = 5").
template <typename T>
concept ConfigValue = std::same_as<T, std::string> || std::same_as<T, std::int64_t> ||
    std::same_as<T, bool> || std::same_as<T, double> || std::same_as<T, std::vector<std::string>> ||
    std::same_as<T, IpAddress> || std::same_as<T, Cidr> || std::same_as<T, InterfaceAddress>;

// One table of a config file: the top level, a [section], or one [[entry]] of an array.
// Copies are cheap and share the file, which stays alive as long as any section of it does.
// The readers are const but record which keys were used, in the shared file.
class ConfigSection {
  public:
    // A key that must be present; missing or of the wrong type is an error.
    template <ConfigValue T>
    Result<T> get(std::string_view key) const;
    // `fallback` when the key is absent; a present key of the wrong type is still an error.
    template <ConfigValue T>
    Result<T> get_or(std::string_view key, T fallback) const;

    bool has(std::string_view key) const;
    // A sub-table that must be present: [site] or site = { ... }.
    Result<ConfigSection> section(std::string_view key) const;
    // An array of tables that must be present: [[site.nodes]].
    Result<std::vector<ConfigSection>> sections(std::string_view key) const;

    // Where this table is, as used in messages: "" (top level), "site", "site.nodes[2]".
    const std::string& path() const;

  private:
    friend class ConfigFile;

    ConfigSection(std::shared_ptr<detail::ConfigDocument> document, std::size_t table);

    std::shared_ptr<detail::ConfigDocument> document_;
    std::size_t table_;  // an index into the document's tables keeps toml++ out of this header
};

class ConfigFile {
  public:
    // Parse errors read "FILE:LINE:COLUMN: what is wrong".
    static Result<ConfigFile> load(const std::filesystem::path& path);
    // `name` stands for the file name in messages.
    static Result<ConfigFile> parse_string(std::string_view text, std::string_view name);

    ConfigSection root() const;
    const std::string& name() const;

    // An error naming every key that was never read, in file order:
    // "FILE:LINE: unknown key 'site.nmae'", then "; also unknown: 'x' (line 9)" for the others.
    Status finish() const;

  private:
    explicit ConfigFile(std::shared_ptr<detail::ConfigDocument> document);

    std::shared_ptr<detail::ConfigDocument> document_;
};

}  // namespace vcpilot
