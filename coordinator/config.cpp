#include "coordinator/config.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fmt/format.h>
#include <system_error>
#include <toml++/toml.h>
#include <type_traits>
#include <unordered_set>

#include "common/text.hpp"

namespace vcpilot {

namespace detail {

struct ConfigDocument {
    struct Table {
        const toml::table* table;
        std::string path;
    };

    std::string name;
    toml::table root;
    std::vector<Table> tables;  // tables[0] is the root
    std::unordered_set<const toml::node*> used;
};

}  // namespace detail

namespace {

using detail::ConfigDocument;

// A config file is a few kilobytes; anything far larger is the wrong file (or /dev/zero).
constexpr std::size_t kMaxConfigBytes = std::size_t{16} * 1024 * 1024;

// Keys that are not bare TOML keys are shown the way they would be written: site."a b".
std::string display_key(std::string_view key) {
    const bool bare = !key.empty() && key.find_first_not_of(
                                          "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                          "abcdefghijklmnopqrstuvwxyz"
                                          "0123456789_-") == std::string::npos;
    return bare ? std::string(key) : "\"" + single_line(key) + "\"";
}

std::string join_path(std::string_view parent, std::string_view key) {
    return parent.empty() ? display_key(key) : fmt::format("{}.{}", parent, display_key(key));
}

// "FILE:LINE: ", or "FILE: " when toml++ does not know the line (the root table).
std::string location(const ConfigDocument& document, const toml::source_region& source) {
    if (source.begin.line == 0) {
        return fmt::format("{}: ", single_line(document.name));
    }
    return fmt::format("{}:{}: ", single_line(document.name), source.begin.line);
}

// Where a table starts, to point at when one of its keys is missing. The top level has no
// line of its own.
std::string table_location(const ConfigDocument& document, const ConfigDocument::Table& table) {
    return table.path.empty() ? location(document, toml::source_region{})
                              : location(document, table.table->source());
}

const char* type_name(const toml::node& node) {
    switch (node.type()) {
        case toml::node_type::none:
            return "nothing";
        case toml::node_type::table:
            return "a table";
        case toml::node_type::array:
            return "an array";
        case toml::node_type::string:
            return "a string";
        case toml::node_type::integer:
            return "an integer";
        case toml::node_type::floating_point:
            return "a float";
        case toml::node_type::boolean:
            return "a boolean";
        case toml::node_type::date:
            return "a date";
        case toml::node_type::time:
            return "a time";
        case toml::node_type::date_time:
            return "a date-time";
    }
    return "an unknown type";
}

Error wrong_type(const ConfigDocument& document, const toml::node& node, std::string_view path,
                 std::string_view expected) {
    return Error{fmt::format("{}key '{}' must be {}, not {}", location(document, node.source()),
                             path, expected, type_name(node))};
}

template <ConfigValue T>
Result<T> convert(const ConfigDocument& document, const toml::node& node, const std::string& path) {
    if constexpr (std::is_same_v<T, std::string>) {
        if (const auto* text = node.as_string()) {
            return text->get();
        }
        return wrong_type(document, node, path, "a string");
    } else if constexpr (std::is_same_v<T, std::int64_t>) {
        if (const auto* number = node.as_integer()) {
            return number->get();
        }
        return wrong_type(document, node, path, "an integer");
    } else if constexpr (std::is_same_v<T, bool>) {
        if (const auto* flag = node.as_boolean()) {
            return flag->get();
        }
        return wrong_type(document, node, path, "a boolean");
    } else if constexpr (std::is_same_v<T, double>) {
        if (const auto* number = node.as_floating_point()) {
            return number->get();
        }
        if (const auto* number = node.as_integer()) {
            return static_cast<double>(number->get());
        }
        return wrong_type(document, node, path, "a number");
    } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
        const auto* array = node.as_array();
        if (array == nullptr) {
            return wrong_type(document, node, path, "an array of strings");
        }
        std::vector<std::string> strings;
        for (std::size_t i = 0; i < array->size(); ++i) {
            const auto* text = (*array)[i].as_string();
            if (text == nullptr) {
                return wrong_type(document, (*array)[i], fmt::format("{}[{}]", path, i),
                                  "a string");
            }
            strings.push_back(text->get());
        }
        return strings;
    } else {  // IpAddress, Cidr, InterfaceAddress
        const auto* text = node.as_string();
        if (text == nullptr) {
            return wrong_type(document, node, path, "a string");
        }
        auto parsed = T::parse(text->get());
        if (!parsed) {
            return Error{fmt::format("{}key '{}': {}", location(document, node.source()), path,
                                     parsed.error().message)};
        }
        return parsed;
    }
}

struct UnusedKey {
    std::string path;
    toml::source_position position;
};

void collect_unused(const ConfigDocument& document, const toml::table& table,
                    const std::string& path, std::vector<UnusedKey>& unused) {
    for (auto&& [key, node] : table) {
        const std::string key_path = join_path(path, key.str());
        if (!document.used.contains(&node)) {
            // Report the outermost unread key only: an unknown [sectoin] is one mistake.
            unused.push_back({key_path, key.source().begin});
        } else if (const auto* sub_table = node.as_table()) {
            collect_unused(document, *sub_table, key_path, unused);
        } else if (const auto* array = node.as_array()) {
            for (std::size_t i = 0; i < array->size(); ++i) {
                const auto* element = (*array)[i].as_table();
                if (element != nullptr && document.used.contains(element)) {
                    collect_unused(document, *element, fmt::format("{}[{}]", key_path, i), unused);
                }
            }
        }
    }
}

Result<std::string> read_file(const std::filesystem::path& path) {
    std::unique_ptr<std::FILE, decltype(&std::fclose)> file(std::fopen(path.c_str(), "rb"),
                                                            &std::fclose);
    if (file == nullptr) {
        return Error{fmt::format("cannot open config file {}: {}", quote(path.string(), 4096),
                                 std::generic_category().message(errno))};
    }
    std::string text;
    char buffer[65536];
    std::size_t count = 0;
    while ((count = std::fread(buffer, 1, sizeof buffer, file.get())) > 0) {
        text.append(buffer, count);
        if (text.size() > kMaxConfigBytes) {
            return Error{fmt::format("config file {} is larger than {} bytes",
                                     quote(path.string(), 4096), kMaxConfigBytes)};
        }
    }
    if (std::ferror(file.get()) != 0) {
        return Error{fmt::format("cannot read config file {}: {}", quote(path.string(), 4096),
                                 std::generic_category().message(errno))};
    }
    return text;
}

}  // namespace

// ---- ConfigSection ----

ConfigSection::ConfigSection(std::shared_ptr<detail::ConfigDocument> document, std::size_t table)
    : document_(std::move(document)), table_(table) {}

const std::string& ConfigSection::path() const {
    return document_->tables[table_].path;
}

template <ConfigValue T>
Result<T> ConfigSection::get(std::string_view key) const {
    const auto& table = document_->tables[table_];
    const toml::node* node = table.table->get(key);
    if (node == nullptr) {
        return Error{fmt::format("{}missing required key '{}'", table_location(*document_, table),
                                 join_path(table.path, key))};
    }
    document_->used.insert(node);
    return convert<T>(*document_, *node, join_path(table.path, key));
}

template <ConfigValue T>
Result<T> ConfigSection::get_or(std::string_view key, T fallback) const {
    if (!has(key)) {
        return fallback;
    }
    return get<T>(key);
}

// The definitions above live here, so every supported type is instantiated here.
#define VCPILOT_CONFIG_VALUE(T)                                           \
    template Result<T> ConfigSection::get<T>(std::string_view key) const; \
    template Result<T> ConfigSection::get_or<T>(std::string_view key, T fallback) const;
VCPILOT_CONFIG_VALUE(std::string)
VCPILOT_CONFIG_VALUE(std::int64_t)
VCPILOT_CONFIG_VALUE(bool)
VCPILOT_CONFIG_VALUE(double)
VCPILOT_CONFIG_VALUE(std::vector<std::string>)
VCPILOT_CONFIG_VALUE(IpAddress)
VCPILOT_CONFIG_VALUE(Cidr)
VCPILOT_CONFIG_VALUE(InterfaceAddress)
#undef VCPILOT_CONFIG_VALUE

bool ConfigSection::has(std::string_view key) const {
    return document_->tables[table_].table->contains(key);
}

// These two append to document_->tables, so they copy their own entry instead of referring to it.
Result<ConfigSection> ConfigSection::section(std::string_view key) const {
    const auto table = document_->tables[table_];
    const std::string key_path = join_path(table.path, key);
    const toml::node* node = table.table->get(key);
    if (node == nullptr) {
        return Error{fmt::format("{}missing required section '{}'",
                                 table_location(*document_, table), key_path)};
    }
    document_->used.insert(node);
    const auto* sub_table = node->as_table();
    if (sub_table == nullptr) {
        return wrong_type(*document_, *node, key_path, "a table");
    }
    document_->tables.push_back({sub_table, key_path});
    return ConfigSection(document_, document_->tables.size() - 1);
}

Result<std::vector<ConfigSection>> ConfigSection::sections(std::string_view key) const {
    const auto table = document_->tables[table_];
    const std::string key_path = join_path(table.path, key);
    const toml::node* node = table.table->get(key);
    if (node == nullptr) {
        return Error{fmt::format("{}missing required section '{}'",
                                 table_location(*document_, table), key_path)};
    }
    document_->used.insert(node);
    const auto* array = node->as_array();
    if (array == nullptr) {
        return wrong_type(*document_, *node, key_path, "an array of tables");
    }
    std::vector<ConfigSection> result;
    for (std::size_t i = 0; i < array->size(); ++i) {
        const std::string element_path = fmt::format("{}[{}]", key_path, i);
        const auto* element = (*array)[i].as_table();
        if (element == nullptr) {
            return wrong_type(*document_, (*array)[i], element_path, "a table");
        }
        document_->used.insert(element);
        document_->tables.push_back({element, element_path});
        result.push_back(ConfigSection(document_, document_->tables.size() - 1));
    }
    return result;
}

// ---- ConfigFile ----

ConfigFile::ConfigFile(std::shared_ptr<detail::ConfigDocument> document)
    : document_(std::move(document)) {}

Result<ConfigFile> ConfigFile::load(const std::filesystem::path& path) {
    auto text = read_file(path);
    if (!text) {
        return text.error();
    }
    return parse_string(*text, path.string());
}

Result<ConfigFile> ConfigFile::parse_string(std::string_view text, std::string_view name) {
    auto document = std::make_shared<ConfigDocument>();
    document->name = name;
    try {
        document->root = toml::parse(text, name);
    } catch (const toml::parse_error& error) {
        const toml::source_position& where = error.source().begin;
        return Error{fmt::format("{}:{}:{}: {}", single_line(name), where.line, where.column,
                                 single_line(error.description()))};
    }
    document->tables.push_back({&document->root, ""});
    return ConfigFile(std::move(document));
}

ConfigSection ConfigFile::root() const {
    return ConfigSection(document_, 0);
}

const std::string& ConfigFile::name() const {
    return document_->name;
}

Status ConfigFile::finish() const {
    std::vector<UnusedKey> unused;
    collect_unused(*document_, document_->root, "", unused);
    if (unused.empty()) {
        return {};
    }
    // toml++ keeps keys sorted by name; the reader wants them in the order of the file.
    std::stable_sort(unused.begin(), unused.end(), [](const auto& a, const auto& b) {
        return std::pair(a.position.line, a.position.column) <
               std::pair(b.position.line, b.position.column);
    });
    std::string message = fmt::format("{}:{}: unknown key '{}'", single_line(document_->name),
                                      unused[0].position.line, unused[0].path);
    for (std::size_t i = 1; i < unused.size(); ++i) {
        message += fmt::format("{} '{}' (line {})", i == 1 ? "; also unknown:" : ",",
                               unused[i].path, unused[i].position.line);
    }
    return Error{std::move(message)};
}

}  // namespace vcpilot
