#include "pilot/srun_args.hpp"

#include <algorithm>
#include <array>
#include <functional>
#include <iterator>
#include <optional>
#include <string_view>

namespace vcpilot::pilot {

namespace {

// srun's short options that take a value (Slurm 22.05).
constexpr std::string_view kShortWithValue = "ABbCcDdeFGiJLMmNnopqrSTtWwx";

// srun's long options that require a value (Slurm 22.05, srun --help). Sorted.
constexpr std::string_view kLongWithValue[] = {"accel-bind",
                                               "account",
                                               "acctg-freq",
                                               "bb",
                                               "bbf",
                                               "bcast-exclude",
                                               "begin",
                                               "chdir",
                                               "cluster-constraint",
                                               "clusters",
                                               "comment",
                                               "constraint",
                                               "container",
                                               "core-spec",
                                               "cores-per-socket",
                                               "cpu-bind",
                                               "cpu-freq",
                                               "cpus-per-gpu",
                                               "cpus-per-task",
                                               "deadline",
                                               "delay-boot",
                                               "dependency",
                                               "distribution",
                                               "epilog",
                                               "error",
                                               "exclude",
                                               "export",
                                               "extra-node-info",
                                               "gid",
                                               "gpu-bind",
                                               "gpu-freq",
                                               "gpus",
                                               "gpus-per-node",
                                               "gpus-per-socket",
                                               "gpus-per-task",
                                               "gres",
                                               "gres-flags",
                                               "het-group",
                                               "hint",
                                               "input",
                                               "job-name",
                                               "jobid",
                                               "licenses",
                                               "mail-type",
                                               "mail-user",
                                               "mcs-label",
                                               "mem",
                                               "mem-bind",
                                               "mem-per-cpu",
                                               "mem-per-gpu",
                                               "mincpus",
                                               "mpi",
                                               "network",
                                               "nodefile",
                                               "nodelist",
                                               "nodes",
                                               "ntasks",
                                               "ntasks-per-core",
                                               "ntasks-per-gpu",
                                               "ntasks-per-node",
                                               "ntasks-per-socket",
                                               "open-mode",
                                               "output",
                                               "partition",
                                               "power",
                                               "prolog",
                                               "qos",
                                               "relative",
                                               "reservation",
                                               "signal",
                                               "slurmd-debug",
                                               "sockets-per-node",
                                               "switches",
                                               "task-epilog",
                                               "task-prolog",
                                               "thread-spec",
                                               "threads",
                                               "threads-per-core",
                                               "time",
                                               "time-min",
                                               "tmp",
                                               "uid",
                                               "wait",
                                               "wckey"};

// The long options the relay reads (beyond whether they take a value): a prefix that is
// unambiguous among srun's options is the option.
constexpr std::array<std::string_view, 4> kWatched = {"epilog", "exclude", "nodelist", "prolog"};

// Long options that share first letters with a watched one, so that a prefix is only taken
// when srun would take it: "--ex" could be --exclude, --exact, --exclusive or --export.
constexpr std::array<std::string_view, 12> kOthers = {
    "exact",   "exclusive", "export",       "extra-node-info", "nodes",     "nodefile",
    "profile", "propagate", "preserve-env", "priority",        "partition", "power"};

// The watched option `word` (without "--" and "=value") names, if exactly one.
std::optional<std::string_view> watched_option(std::string_view name) {
    std::optional<std::string_view> found;
    for (const std::string_view option : kWatched) {
        if (option == name) {
            return option;
        }
        if (option.starts_with(name)) {
            if (found) {
                return std::nullopt;
            }
            found = option;
        }
    }
    if (found && std::any_of(kOthers.begin(), kOthers.end(),
                             [&](std::string_view other) { return other.starts_with(name); })) {
        return std::nullopt;
    }
    return found;
}

static_assert(std::is_sorted(std::begin(kLongWithValue), std::end(kLongWithValue)));

bool requires_value(std::string_view name) {
    if (auto watched = watched_option(name)) {
        name = *watched;
    }
    return std::binary_search(std::begin(kLongWithValue), std::end(kLongWithValue), name);
}

// One option srun reads: its long name when the relay watches it ("nodelist"; the short ones
// are given theirs), and where its value is (or none).
struct Option {
    std::string_view name;
    std::string* value = nullptr;
    std::string shown;  // as the user wrote it, for errors
};

using Visit = std::function<bool(Option&)>;

constexpr std::size_t kNotAttached = std::string::npos;

// Calls `visit` with `option` and its value: argv[i] from `attached` on when the value is in the
// same word (written back, perhaps rewritten), else (kNotAttached) the next word when
// `takes_next` (then consumed: i moves on). Returns whether to go on.
bool visit_with_value(std::vector<std::string>& argv, std::size_t& i, std::size_t attached,
                      bool takes_next, Option& option, const Visit& visit) {
    if (attached != kNotAttached) {
        std::string& word = argv[i];
        std::string value = word.substr(attached);
        option.value = &value;
        const bool go_on = visit(option);
        word.resize(attached);
        word += value;
        option.value = nullptr;  // `value` ends here
        return go_on;
    }
    const bool next = takes_next && i + 1 < argv.size();
    option.value = next ? &argv[i + 1] : nullptr;
    const bool go_on = visit(option);
    i += next ? 1 : 0;
    return go_on;
}

// Calls `visit` for each option before srun's command; stops early when it returns false.
void for_each_option(std::vector<std::string>& argv, const Visit& visit) {
    for (std::size_t i = 1; i < argv.size(); ++i) {
        const std::string& word = argv[i];
        if (word == "--" || word.size() < 2 || word[0] != '-') {
            return;
        }
        if (word[1] == '-') {
            const std::size_t equals = word.find('=');
            const std::string_view name = std::string_view(word).substr(2, equals - 2);
            Option option{.name = watched_option(name).value_or(std::string_view()),
                          .shown = "--" + std::string(name)};
            const bool takes_next = equals == std::string::npos && requires_value(name);
            const std::size_t attached = equals == std::string::npos ? kNotAttached : equals + 1;
            if (!visit_with_value(argv, i, attached, takes_next, option, visit)) {
                return;
            }
            continue;
        }
        // A cluster of short options: flags, then perhaps one that takes a value.
        for (std::size_t c = 1; c < word.size(); ++c) {
            if (kShortWithValue.find(word[c]) == std::string_view::npos) {
                continue;
            }
            Option option{.name = word[c] == 'w'   ? "nodelist"
                                  : word[c] == 'x' ? "exclude"
                                                   : "",
                          .shown = std::string("-") + word[c]};
            const std::size_t attached = c + 1 < word.size() ? c + 1 : kNotAttached;
            if (!visit_with_value(argv, i, attached, true, option, visit)) {
                return;
            }
            break;
        }
    }
}

}  // namespace

Status check_relayed_srun(const std::vector<std::string>& argv) {
    std::vector<std::string> words = argv;
    Status verdict;
    for_each_option(words, [&](Option& option) {
        if (option.name == "prolog" || option.name == "epilog") {
            verdict = Error{"srun " + option.shown +
                            " is not available inside a --vc job (it would run a command outside "
                            "the virtual cluster)"};
            return false;
        }
        return true;
    });
    return verdict;
}

std::vector<std::string> srun_argv_in_slurm_names(const std::vector<std::string>& argv,
                                                  const NameMap& to_slurm) {
    std::vector<std::string> out = argv;
    if (to_slurm.empty()) {
        return out;
    }
    for_each_option(out, [&](Option& option) {
        if ((option.name == "nodelist" || option.name == "exclude") && option.value != nullptr) {
            if (auto renamed = rename_hosts(*option.value, to_slurm)) {
                *option.value = std::move(*renamed);
            }
        }
        return true;
    });
    return out;
}

std::vector<std::string> srun_env_in_slurm_names(const std::vector<std::string>& env,
                                                 const NameMap& to_slurm) {
    std::vector<std::string> out = env;
    if (to_slurm.empty()) {
        return out;
    }
    for (std::string& variable : out) {
        const std::size_t equals = variable.find('=');
        const std::string_view name = std::string_view(variable).substr(0, equals);
        if (equals == std::string::npos ||
            std::find(kSlurmNodeVariables.begin(), kSlurmNodeVariables.end(), name) ==
                kSlurmNodeVariables.end()) {
            continue;
        }
        if (auto renamed = rename_hosts(std::string_view(variable).substr(equals + 1), to_slurm)) {
            variable = std::string(name) + "=" + *renamed;
        }
    }
    return out;
}

}  // namespace vcpilot::pilot
