// vc-bcast: pipelined ring broadcast of a file to every node of a virtual cluster.
#include <malloc.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdio>
#include <exception>
#include <fmt/format.h>
#include <fstream>
#include <iostream>
#include <set>

#include "bcast/receiver.hpp"
#include "bcast/sender.hpp"
#include "common/grpc_runtime.hpp"
#include "common/log.hpp"
#include "common/text.hpp"

namespace bcast = vcpilot::bcast;

namespace {

// A mistake on the command line: main prints "vc-bcast: MESSAGE" and exits with 2. A throw, not
// exit(), which is not thread-safe.
struct UsageError {
    std::string message;
};

[[noreturn]] void usage_error(const std::string& message) {
    throw UsageError{message};
}

// 4194304, 4096K, 4M, 4MiB, 1G
std::uint64_t parse_size(const std::string& option, const std::string& text) {
    std::uint64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    std::string unit(end, text.data() + text.size());
    if (ec != std::errc{} || end == text.data()) {
        usage_error(fmt::format("{}: {} is not a size (say 4M, 64MiB or a byte count)", option,
                                vcpilot::quote(text)));
    }
    if (unit.ends_with("iB")) {
        unit.resize(unit.size() - 2);
    }
    const std::uint64_t scale = unit.empty()                 ? 1
                                : unit == "K" || unit == "k" ? 1ull << 10
                                : unit == "M"                ? 1ull << 20
                                : unit == "G"                ? 1ull << 30
                                                             : 0;
    if (scale == 0) {
        usage_error(
            fmt::format("{}: unknown unit in {} (K, M or G)", option, vcpilot::quote(text)));
    }
    return value * scale;
}

std::chrono::milliseconds parse_seconds(const std::string& option, double seconds) {
    if (!(seconds > 0) || seconds > 86400) {
        usage_error(fmt::format("{}: give seconds between 0 and 86400", option));
    }
    return std::chrono::milliseconds(static_cast<long>(seconds * 1000));
}

bool plain_name(const std::string& name) {
    if (name.empty() || name.size() > 253 || name.front() == '-') {
        return false;
    }
    for (const char c : name) {
        if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '.' && c != '-' && c != '_') {
            return false;
        }
    }
    return true;
}

std::vector<std::string> nodes_from(const std::string& list) {
    std::vector<std::string> nodes;
    std::string name;
    for (const char c : list + ",") {
        if (c == ',' || c == '\n' || c == ' ') {
            if (!name.empty()) {
                nodes.push_back(name);
            }
            name.clear();
        } else {
            name += c;
        }
    }
    return nodes;
}

// Pieces (256 KiB) and chunks (MiBs) come and go all the time: from the heap, reused, not
// mapped and unmapped each time (a page fault per page; glibc's own threshold only rises after
// such a block was freed once). mallopt races only with other threads: called before any starts.
void tune_malloc() {
    ::mallopt(M_MMAP_THRESHOLD, 64 << 20);   // NOLINT(concurrency-mt-unsafe): no other thread yet
    ::mallopt(M_TRIM_THRESHOLD, 256 << 20);  // NOLINT(concurrency-mt-unsafe): no other thread yet
}

// main's body; main reports a UsageError or an exception that escapes it.
int run(int argc, char** argv) {
    vcpilot::tune_grpc_runtime();
    tune_malloc();
    CLI::App app{
        "vc-bcast: send a file to every node of a virtual cluster along a pipelined ring.\n"
        "Each node receives a piece from its predecessor, writes it and forwards it at\n"
        "the same time; a node that dies or stalls is bypassed; every chunk and the whole\n"
        "file are checked with SHA-256 on every node."};
    app.require_subcommand(1);
    app.fallthrough();  // --log-level after the subcommand too
    std::string log_level = "warn";
    app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
        ->capture_default_str();

    bcast::SendOptions send;
    std::string nodes, chunk_size = "4M", memory = "64M";
    double stall_timeout = 15, join_timeout = 30;
    bool no_launch = false, quiet = false;
    std::string secret_file, port_file;
    auto* send_cmd = app.add_subcommand("send", "send FILE to DEST on every node");
    send_cmd->add_option("FILE", send.file, "the file to send")->required();
    send_cmd->add_option("DEST", send.dest, "where it goes on every node (absolute path)")
        ->required();
    send_cmd->add_option("--nodes", nodes,
                         "the nodes, in ring order, separated by commas (default: the lines of "
                         "the file $VC_NODELIST)");
    send_cmd->add_flag("--no-launch", no_launch,
                       "do not start the receivers over ssh; wait for them to join (tests)");
    send_cmd->add_option("--program", send.program, "vc-bcast's path on the nodes (default: ours)");
    send_cmd->add_option("--ssh-option", send.ssh_options, "an extra `ssh -o` option (repeatable)");
    send_cmd->add_option("--listen", send.listen, "address of the control service")
        ->capture_default_str();
    send_cmd->add_option("--advertise", send.advertise,
                         "address the nodes reach this one at (default: our address towards the "
                         "first node)");
    send_cmd->add_option("--secret-file", secret_file, "with --no-launch: write the secret there");
    send_cmd->add_option("--port-file", port_file, "write the control port there once listening");
    send_cmd->add_option("--chunk-size", chunk_size, "bytes per chunk")->capture_default_str();
    send_cmd->add_option("--memory", memory, "at most this much of the file in memory per node")
        ->capture_default_str();
    send_cmd
        ->add_option("--stall-timeout", stall_timeout,
                     "seconds a node may take no data before it is bypassed")
        ->capture_default_str();
    send_cmd->add_option("--join-timeout", join_timeout, "seconds for every node to join")
        ->capture_default_str();
    send_cmd->add_flag("--quiet", quiet, "no progress lines");

    bcast::ReceiveOptions receive;
    bool secret_stdin = false;
    std::string receive_secret_file, receive_memory = "64M";
    double receive_stall = 15;
    std::int64_t corrupt_chunk = -1;
    auto* receive_cmd =
        app.add_subcommand("receive", "be one node of a broadcast (started by send)");
    receive_cmd->add_option("DEST", receive.dest, "where the file goes")->required();
    receive_cmd->add_option("--sender", receive.sender, "the sender's control service, HOST:PORT")
        ->required();
    receive_cmd->add_option("--name", receive.name, "this node's name")->required();
    receive_cmd->add_flag("--secret-stdin", secret_stdin, "read the transfer's secret from stdin");
    receive_cmd->add_option("--secret-file", receive_secret_file, "read it from this file");
    receive_cmd->add_option("--listen", receive.listen_host,
                            "address for the ring (default: the one that reaches the sender)");
    receive_cmd->add_option("--memory", receive_memory, "at most this much of the file in memory")
        ->capture_default_str();
    receive_cmd
        ->add_option("--stall-timeout", receive_stall,
                     "seconds the successor may take no data before it is reported")
        ->capture_default_str();
    receive_cmd->add_option("--test-corrupt-chunk", corrupt_chunk)->group("");

    CLI11_PARSE(app, argc, argv);
    auto level = vcpilot::parse_log_level(log_level);
    if (!level) {
        usage_error("--log-level: " + level.error().message);
    }
    (void)vcpilot::init_logging("vc-bcast", vcpilot::LogOptions{*level, std::nullopt, true});

    if (send_cmd->parsed()) {
        if (!send.dest.is_absolute()) {
            usage_error(fmt::format("DEST {} must be an absolute path",
                                    vcpilot::quote(send.dest.native())));
        }
        if (nodes.empty()) {
            const char* list = std::getenv("VC_NODELIST");
            if (list == nullptr || *list == '\0') {
                usage_error("no nodes: give --nodes, or run in a virtual cluster ($VC_NODELIST)");
            }
            std::ifstream in(list);
            if (!in) {
                usage_error(fmt::format("$VC_NODELIST {}: cannot read it", vcpilot::quote(list)));
            }
            nodes.assign(std::istreambuf_iterator<char>(in), {});
        }
        send.nodes = nodes_from(nodes);
        std::set<std::string> seen;
        for (const auto& node : send.nodes) {
            if (!plain_name(node)) {
                usage_error(fmt::format("node name {} is not a host name", vcpilot::quote(node)));
            }
            if (!seen.insert(node).second) {
                usage_error(fmt::format("node {} is listed twice", node));
            }
        }
        if (send.nodes.empty()) {
            usage_error("the node list is empty");
        }
        const std::uint64_t chunk = parse_size("--chunk-size", chunk_size);
        if (chunk < (64u << 10) || chunk > (64u << 20)) {
            usage_error("--chunk-size: give 64K to 64M");
        }
        send.chunk_size = static_cast<std::uint32_t>(chunk);
        send.memory_bytes = parse_size("--memory", memory);
        if (send.memory_bytes < 2 * chunk) {
            usage_error("--memory: give at least two chunks");
        }
        send.stall_timeout = parse_seconds("--stall-timeout", stall_timeout);
        send.join_timeout = parse_seconds("--join-timeout", join_timeout);
        send.launch = !no_launch;
        send.progress = !quiet;
        if (!secret_file.empty()) {
            send.secret_file = secret_file;
        }
        if (!port_file.empty()) {
            send.port_file = port_file;
        }
        if (send.program.empty()) {
            std::error_code ec;
            send.program = std::filesystem::read_symlink("/proc/self/exe", ec).native();
        }
        return bcast::run_sender(send);
    }

    if (secret_stdin == !receive_secret_file.empty()) {
        usage_error("give the secret with exactly one of --secret-stdin and --secret-file");
    }
    std::string hex;
    if (secret_stdin) {
        std::getline(std::cin, hex);
    } else {
        std::ifstream in(receive_secret_file);
        if (!in || !std::getline(in, hex)) {
            usage_error(fmt::format("--secret-file {}: cannot read it",
                                    vcpilot::quote(receive_secret_file)));
        }
    }
    auto secret = bcast::Secret::from_hex(hex);
    if (!secret) {
        usage_error(secret.error().message);
    }
    receive.secret = *secret;
    if (!plain_name(receive.name)) {
        usage_error(fmt::format("--name {} is not a host name", vcpilot::quote(receive.name)));
    }
    receive.memory_bytes = parse_size("--memory", receive_memory);
    receive.stall_timeout = parse_seconds("--stall-timeout", receive_stall);
    if (corrupt_chunk >= 0) {
        receive.corrupt_chunk = static_cast<std::uint64_t>(corrupt_chunk);
    }
    return bcast::run_receiver(receive);
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const UsageError& error) {
        (void)std::fprintf(stderr, "vc-bcast: %s\n", error.message.c_str());
        return 2;
    } catch (const std::exception& error) {
        (void)std::fprintf(stderr, "vc-bcast: %s\n", error.what());
        return 1;
    }
}
