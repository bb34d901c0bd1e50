#include "pilot/srun_wire.hpp"

#include <charconv>

namespace vcpilot::pilot {

namespace {

void put(std::string& out, std::string_view field) {
    out.append(field);
    out.push_back('\0');
}

class Reader {
  public:
    explicit Reader(std::string_view bytes) : rest_(bytes) {}

    Result<std::string> field(const char* what) {
        const auto end = rest_.find('\0');
        if (end == std::string_view::npos) {
            return Error{std::string("srun request: ") + what + " is cut short"};
        }
        std::string value(rest_.substr(0, end));
        rest_.remove_prefix(end + 1);
        return value;
    }

    Result<std::size_t> count(const char* what) {
        auto text = field(what);
        if (!text) {
            return text.error();
        }
        std::size_t value = 0;
        const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
        if (ec != std::errc{} || end != text->data() + text->size() || text->empty() ||
            value > kMaxSrunRequestBytes / 2) {
            return Error{std::string("srun request: ") + what + " is not a count"};
        }
        return value;
    }

    Result<std::vector<std::string>> list(const char* what) {
        auto n = count(what);
        if (!n) {
            return n.error();
        }
        std::vector<std::string> values;
        for (std::size_t i = 0; i < *n; ++i) {
            auto value = field(what);
            if (!value) {
                return value.error();
            }
            values.push_back(std::move(*value));
        }
        return values;
    }

    bool done() const { return rest_.empty(); }

  private:
    std::string_view rest_;
};

}  // namespace

std::string encode_srun_request(const SrunRequest& request) {
    std::string out;
    put(out, request.cwd);
    put(out, std::to_string(request.argv.size()));
    for (const auto& arg : request.argv) {
        put(out, arg);
    }
    put(out, std::to_string(request.env.size()));
    for (const auto& variable : request.env) {
        put(out, variable);
    }
    return out;
}

Result<SrunRequest> decode_srun_request(std::string_view bytes) {
    if (bytes.size() > kMaxSrunRequestBytes) {
        return Error{"srun request: too long"};
    }
    Reader reader(bytes);
    SrunRequest request;
    auto cwd = reader.field("the working directory");
    if (!cwd) {
        return cwd.error();
    }
    request.cwd = std::move(*cwd);
    auto argv = reader.list("the arguments");
    if (!argv) {
        return argv.error();
    }
    request.argv = std::move(*argv);
    auto env = reader.list("the environment");
    if (!env) {
        return env.error();
    }
    request.env = std::move(*env);
    if (!reader.done()) {
        return Error{"srun request: bytes after the environment"};
    }
    if (request.argv.empty()) {
        return Error{"srun request: no arguments (not even argv[0])"};
    }
    for (const auto& variable : request.env) {
        if (variable.find('=') == std::string::npos) {
            return Error{"srun request: an environment entry without '='"};
        }
    }
    return request;
}

}  // namespace vcpilot::pilot
