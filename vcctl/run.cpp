// vcctl run, exec and bcast: commands on a cluster's nodes, through its coordinator (the RUN
// and EXEC of the design).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fmt/format.h>
#include <vector>

#include "common/text.hpp"
#include "vcctl/command.hpp"

namespace vcpilot::vcctl {

namespace {

// Runs `argv` on the first node (or with every_node on each node) and relays its output; returns
// the worst exit status.
int run_command(const Global& global, const std::string& id, const std::vector<std::string>& argv,
                bool every_node) {
    auto client = connect(global);
    auto context = context_for(client, every_node ? "Exec" : "Run", std::nullopt);
    v1::ClusterCommandRequest request;
    request.set_id(id);
    for (const auto& arg : argv) {
        request.mutable_command()->add_argv(arg);
    }
    auto reader = client.call([&](auto& stub) {
        return every_node ? stub.Exec(context.get(), request) : stub.Run(context.get(), request);
    });
    v1::NodeOutput output;
    int worst = 0;
    while (reader->Read(&output)) {
        const auto& out = output.output();
        const std::string prefix = every_node ? output.node() + ": " : "";
        if (out.has_stdout()) {
            if (prefix.empty()) {
                (void)std::fwrite(out.stdout().data(), 1, out.stdout().size(), stdout);
            } else {
                fmt::print("{}{}", prefix, out.stdout());
            }
            (void)std::fflush(stdout);
        } else if (out.has_stderr()) {
            (void)std::fprintf(stderr, "%s%.*s", prefix.c_str(),
                               static_cast<int>(out.stderr().size()), out.stderr().data());
        } else if (out.has_exit_status()) {
            if (every_node && out.exit_status() != 0) {
                (void)std::fprintf(stderr, "%sexit status %d\n", prefix.c_str(), out.exit_status());
            }
            worst = std::max(worst, out.exit_status());
        }
    }
    check(reader->Finish(), client);
    return worst;
}

struct RunOptions {
    std::string id;
    std::vector<std::string> command;
};

Command add_command(CLI::App& app, const char* name, const char* help, const Global& global,
                    bool every_node) {
    auto* command = app.add_subcommand(name, help);
    auto options = std::make_shared<RunOptions>();
    command->add_option("ID", options->id, "cluster id")->required();
    command->add_option("command", options->command, "the command, after --")->required();
    return {command, [&global, options, every_node] {
                return run_command(global, options->id, options->command, every_node);
            }};
}

struct BcastOptions {
    std::string id, file, dest, program;
    std::vector<std::string> options;
};

int bcast(const Global& global, BcastOptions options) {
    if (options.program.empty()) {
        std::error_code ec;
        const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
        const auto sibling = self.parent_path() / "vc-bcast";
        options.program = !ec && std::filesystem::exists(sibling) ? sibling.string() : "vc-bcast";
    }
    if (!std::filesystem::path(options.dest).is_absolute()) {
        fail(fmt::format("DEST {} must be an absolute path", quote(options.dest)), 2);
    }
    std::vector<std::string> argv_send = {options.program, "send"};
    argv_send.insert(argv_send.end(), options.options.begin(), options.options.end());
    argv_send.push_back("--");
    argv_send.push_back(std::filesystem::absolute(options.file).string());
    argv_send.push_back(options.dest);
    return run_command(global, options.id, argv_send, false);
}

}  // namespace

Command add_run(CLI::App& app, const Global& global) {
    return add_command(app, "run", "run a command on the first node, as the owner", global, false);
}

Command add_exec(CLI::App& app, const Global& global) {
    return add_command(app, "exec", "run a command on every node, as root (root only)", global,
                       true);
}

Command add_bcast(CLI::App& app, const Global& global) {
    auto* command = app.add_subcommand(
        "bcast",
        "send a file to every node of a cluster (vc-bcast's pipelined ring, run as the "
        "owner from the first node, which must be able to read FILE)");
    auto options = std::make_shared<BcastOptions>();
    command->add_option("ID", options->id, "cluster id")->required();
    command->add_option("FILE", options->file, "the file (a path the first node can read)")
        ->required();
    command->add_option("DEST", options->dest, "where it goes on every node (absolute path)")
        ->required();
    command->add_option("--program", options->program,
                        "vc-bcast's path on the nodes (default: the one next to vcctl)");
    command->add_option("--bcast-option", options->options,
                        "an option for `vc-bcast send`, such as --chunk-size=8M (repeatable)");
    return {command, [&global, options] { return bcast(global, *options); }};
}

}  // namespace vcpilot::vcctl
