// vc-pilot: the per-job, per-node NodeManager of a vcpilot virtual cluster.
//
//   vc-pilot serve --job ID [--node NAME] [--launcher-pid PID]   serve the job's control socket
//                  [--cluster ID --crm ADDRESS [--munge-socket PATH] [--host NAME]
//                   [--underlay ADDR] [--crm-timeout SECONDS]]   ... and attach to the site's CRM
//                  [--job-nodes N --job-user U [--job-net CIDR] [--job-keys ca|exchange]
//                   [--job-prefix P] [--job-overlay vxlan|n2n]]
//                                         ... or make the job's own cluster vcj-ID there (Slurm)
//                  [--cluster ID --job-nodes N --job-user U]   ... or join cluster ID (Slurm)
//                  [--job-image DIR --job-image-mount DIR]     the job's image (Slurm)
//                  [--rank N]       this node's place in the job's node list (Slurm), 1-based
//   vc-pilot cleanup --job ID [--node NAME]                      remove all a job left behind
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <grpcpp/grpcpp.h>
#include <grpcpp/server_posix.h>
#include <spdlog/spdlog.h>
#include <thread>

#include "common/fd.hpp"
#include "common/grpc_runtime.hpp"
#include "common/log.hpp"
#include "common/naming.hpp"
#include "pilot/agent.hpp"
#include "pilot/privileged/namespaces.hpp"
#include "pilot/privileged/paths.hpp"
#include "pilot/service.hpp"

namespace vcpilot::pilot {
namespace {

namespace fs = std::filesystem;

constexpr int kMaxMessageBytes = 4 * 1024 * 1024;

struct CommonOptions {
    std::string job;
    std::string node;
    std::string run_base{kDefaultRunBase};
    std::string log_level = "info";
};

std::string this_host() {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) != 0) {
        return {};
    }
    return name;
}

struct ServeOptions {
    int launcher_pid = 0;
    std::vector<std::string> image_roots;
    int teardown_grace_ms = 3000;
    // The site coordinator to attach to; empty: none, the pilot is driven over its socket only.
    std::string crm;
    std::string cluster;
    std::string munge_socket;
    std::string host;
    std::string underlay;
    int crm_timeout_s = 60;
    // Started by Slurm for a job that asked for a cluster of its own (the SPANK plugin's
    // prolog): the job's node count and user; the cluster is "vcj-<job>".
    std::uint32_t job_nodes = 0;
    std::string job_user;
    std::string job_net;
    std::string job_keys;
    std::string job_prefix;
    std::string job_overlay;
    std::string job_image;
    std::string job_image_mount;
    std::string srun;  // the real srun for the job's srun relay; empty: found on PATH
    // This node's place in the job's node list (Slurm's order), 1-based; 0: unknown. The CRM
    // gives the pilot the node of that ordinal when it is free.
    std::uint32_t rank = 0;
};

// A Slurm job's srun relay: the real srun and vc-srun (next to this program). Without either,
// srun inside the job cannot reach Slurm, as before; said once in the pilot's log.
std::optional<SrunRelayOptions> srun_relay_options(const ServeOptions& options) {
    if (options.job_user.empty()) {
        return std::nullopt;  // not started by the SPANK plugin for a Slurm job
    }
    std::error_code ec;
    fs::path srun = options.srun;
    if (srun.empty()) {
        std::string path = "/usr/local/bin:/usr/bin:/bin";
        if (const char* env_path = std::getenv("PATH"); env_path != nullptr && *env_path != '\0') {
            path = std::string(env_path) + ":" + path;
        }
        for (std::size_t start = 0; start <= path.size();) {
            const std::size_t end = std::min(path.find(':', start), path.size());
            const fs::path candidate = fs::path(path.substr(start, end - start)) / "srun";
            if (candidate.is_absolute() && ::access(candidate.c_str(), X_OK) == 0) {
                srun = candidate;
                break;
            }
            start = end + 1;
        }
    }
    const fs::path shim = fs::read_symlink("/proc/self/exe", ec).parent_path() / "vc-srun";
    if (srun.empty() || ::access(shim.c_str(), X_OK) != 0) {
        spdlog::warn(
            "no srun relay for this job: {} not found; srun inside the job will not reach Slurm",
            srun.empty() ? std::string("srun") : shim.string());
        return std::nullopt;
    }
    SrunRelayOptions relay{.srun = fs::canonical(srun, ec), .shim = shim, .slurm_conf = {}};
    if (ec) {
        relay.srun = srun;
    }
    if (const char* conf = std::getenv("SLURM_CONF"); conf != nullptr) {
        relay.slurm_conf = conf;
    }
    return relay;
}

// The agent's options from the command line, checked.
Result<AgentOptions> agent_options(const ServeOptions& options, const JobPaths& paths) {
    AgentOptions agent;
    if (options.job_nodes > 0 && options.cluster.empty()) {
        v1::JobCluster job;
        job.set_user(options.job_user);
        job.set_nodes(options.job_nodes);
        job.set_block(options.job_net);
        job.set_key_mode(options.job_keys == "exchange" ? v1::KEY_MODE_EXCHANGE : v1::KEY_MODE_CA);
        job.set_name_prefix(options.job_prefix);
        job.set_overlay(options.job_overlay == "n2n" ? v1::OVERLAY_N2N : v1::OVERLAY_VXLAN);
        job.set_image(options.job_image);
        job.set_image_mount(options.job_image_mount);
        agent.job_cluster = std::move(job);
        agent.cluster_id = job_cluster_id(paths.job());
    } else {
        if (auto ok = check_job_id("--cluster", options.cluster); !ok) {
            return ok.error();
        }
        agent.cluster_id = options.cluster;
        if (options.job_nodes > 0) {
            v1::JoinCluster join;
            join.set_user(options.job_user);
            join.set_nodes(options.job_nodes);
            join.set_image(options.job_image);
            join.set_image_mount(options.job_image_mount);
            agent.join = std::move(join);
        }
    }
    agent.target = options.crm;
    agent.rank = options.rank;
    agent.job_id = paths.job();
    agent.host = options.host.empty() ? this_host() : options.host;
    if (auto ok = check_job_id("--host", agent.host); !ok) {
        return ok.error();
    }
    if (!options.underlay.empty()) {
        auto underlay = IpAddress::parse(options.underlay);
        if (!underlay) {
            return Error{"--underlay: " + underlay.error().message};
        }
        agent.underlay_address = underlay->to_string();
    }
    agent.credential = munge_credentials(options.munge_socket);
    agent.give_up_after = std::chrono::seconds(options.crm_timeout_s);
    return agent;
}

Result<JobPaths> job_paths(const CommonOptions& options) {
    return JobPaths::make(options.run_base, options.node.empty() ? this_host() : options.node,
                          options.job);
}

// The pid recorded in a job's state file, if that process is still a running vc-pilot.
std::optional<pid_t> live_pilot_of(const JobPaths& paths) {
    std::ifstream state(paths.state_file());
    std::string line;
    while (std::getline(state, line)) {
        if (line.rfind("pid=", 0) == 0) {
            pid_t pid = 0;  // as atol: 0 when no number follows
            (void)std::from_chars(line.data() + 4, line.data() + line.size(), pid);
            std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
            std::string name;
            if (pid > 0 && pid != ::getpid() && std::getline(comm, name) && name == "vc-pilot") {
                return pid;
            }
        }
    }
    return std::nullopt;
}

// A unix socket that only root may use: the file is 0600 in a root-owned directory, and every
// connection's peer credentials are checked again before gRPC sees it.
Result<UniqueFd> listen_on(const fs::path& path) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.string().size() >= sizeof address.sun_path) {
        return Error{"socket path " + path.string() + " is too long"};
    }
    std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) {
        return sys_error("socket");
    }
    ::unlink(path.c_str());
    const mode_t old_mask = ::umask(0077);
    const int bound = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address);
    ::umask(old_mask);  // cannot fail, and leaves errno alone
    if (bound != 0 || ::listen(fd.get(), 64) != 0) {
        return sys_error("listen on " + path.string());
    }
    return fd;
}

// Hands root's connections to gRPC; refuses everyone else's.
void accept_loop(int listen_fd, int stop_fd, grpc::Server* server) {
    pollfd fds[2] = {{listen_fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    for (;;) {
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            spdlog::error("poll on the control socket: {}", errno_text(errno));
            return;
        }
        if (fds[1].revents != 0) {
            return;
        }
        // gRPC expects a non-blocking socket and does not make it one.
        UniqueFd connection(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!connection) {
            continue;
        }
        ucred peer{};
        socklen_t size = sizeof peer;
        if (::getsockopt(connection.get(), SOL_SOCKET, SO_PEERCRED, &peer, &size) != 0 ||
            peer.uid != 0) {
            spdlog::warn(
                "refused a control connection from uid {} (pid {}): only root may "
                "drive the pilot",
                peer.uid, peer.pid);
            continue;
        }
        grpc::AddInsecureChannelFromFd(server, connection.release());  // gRPC's from here
    }
}

int serve(const CommonOptions& common, const ServeOptions& options) {
    auto paths = job_paths(common);
    if (!paths) {
        spdlog::error("{}", paths.error().message);
        return 2;
    }
    std::optional<AgentOptions> agent_settings;
    if (!options.crm.empty()) {
        auto settings = agent_options(options, *paths);
        if (!settings) {
            spdlog::error("{}", settings.error().message);
            return 2;
        }
        agent_settings = std::move(*settings);
    }

    if (auto pid = live_pilot_of(*paths)) {
        spdlog::error("a pilot for job {} is already running on {} (pid {})", paths->job(),
                      paths->node(), *pid);
        return 1;
    }
    if (fs::exists(paths->root())) {
        spdlog::warn("job {}: removing what an earlier pilot left in {}", paths->job(),
                     paths->root().string());
        if (auto ok = teardown_job(*paths, std::chrono::milliseconds(options.teardown_grace_ms),
                                   TeardownScope::everything);
            !ok) {
            spdlog::error("cannot remove the leftovers: {}", ok.error().message);
            return 1;
        }
    }
    std::error_code ec;
    fs::create_directories(paths->root(), ec);
    // 0711: the job user must reach its per-job ~/.ssh and job files below; the socket, keys and
    // state stay root's.
    if (ec || ::chmod(paths->root().c_str(), 0711) != 0) {
        spdlog::error("cannot create {}: {}", paths->root().string(),
                      ec ? ec.message() : errno_text(errno));
        return 1;
    }

    // Stop signals are taken synchronously on the main thread; every thread made from here on
    // inherits the blocked mask.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGHUP);
    ::pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    (void)::signal(SIGPIPE, SIG_IGN);
    const UniqueFd signal_fd(::signalfd(-1, &stop_signals, SFD_CLOEXEC));
    UniqueFd launcher_fd;
    if (options.launcher_pid > 0) {
        // glibc 2.36 declares pidfd_open without C linkage for C++; the raw call is the same.
        launcher_fd.reset(static_cast<int>(::syscall(SYS_pidfd_open, options.launcher_pid, 0)));
        if (!launcher_fd) {
            spdlog::error("cannot watch the launcher, pid {}: {}", options.launcher_pid,
                          errno_text(errno));
            return 1;
        }
    }

    PilotOptions pilot_options;
    for (const auto& root : options.image_roots) {
        pilot_options.limits.allowed_image_roots.emplace_back(root);
    }
    pilot_options.teardown_grace = std::chrono::milliseconds(options.teardown_grace_ms);
    pilot_options.srun_relay = srun_relay_options(options);
    PilotService service(*paths, pilot_options);

    auto listen_fd = listen_on(paths->socket());
    if (!listen_fd) {
        spdlog::error("{}", listen_fd.error().message);
        return 1;
    }
    grpc::ServerBuilder builder;
    builder.RegisterService(&service);
    builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    if (!server) {
        spdlog::error("cannot start the gRPC server");
        return 1;
    }
    int stop_pipe[2];
    if (::pipe2(stop_pipe, O_CLOEXEC) != 0) {
        spdlog::error("pipe: {}", errno_text(errno));
        return 1;
    }
    const UniqueFd stop_read(stop_pipe[0]);
    UniqueFd stop_write(stop_pipe[1]);
    std::thread acceptor(accept_loop, listen_fd->get(), stop_read.get(), server.get());
    spdlog::info("job {} on {}: listening on {}", paths->job(), paths->node(),
                 paths->socket().string());
    // Started once the socket serves: a command from the CRM and one over the socket meet the
    // same service, which serialises them.
    std::unique_ptr<CrmAgent> agent;
    if (agent_settings) {
        agent = std::make_unique<CrmAgent>(service, std::move(*agent_settings));
        agent->start();
    }

    // Stop signals, state changes (GONE ends the loop at once), the launcher's end.
    pollfd watched[3] = {{signal_fd.get(), POLLIN, 0},
                         {service.state_changed_fd(), POLLIN, 0},
                         {launcher_fd.get(), POLLIN, 0}};
    for (;;) {
        const auto state = service.status().state();
        if (state == v1::PILOT_STATE_GONE) {
            break;
        }
        if (::poll(watched, launcher_fd ? 3 : 2, 200) < 0 && errno != EINTR) {
            break;
        }
        if (watched[0].revents != 0) {
            signalfd_siginfo info{};
            if (::read(signal_fd.get(), &info, sizeof info) == sizeof info) {
                const std::string reason =
                    std::string("SIG") + sigabbrev_np(static_cast<int>(info.ssi_signo));
                spdlog::warn("job {}: {}: tearing down", paths->job(), reason);
                service.stop(reason);
            }
        }
        if (watched[1].revents != 0) {
            drain_eventfd(watched[1].fd);
        }
        if (launcher_fd && watched[2].revents != 0) {
            const std::string reason =
                "the launcher (pid " + std::to_string(options.launcher_pid) + ") ended";
            spdlog::warn("job {}: {}: tearing down", paths->job(), reason);
            service.stop(reason);
            launcher_fd.reset();
        }
        if (service.status().state() == v1::PILOT_STATE_FAILED &&
            service.wait_until_stopped(std::chrono::milliseconds(0))) {
            break;
        }
    }
    bool agent_gave_up = false;
    if (agent) {
        // Time for the last status (GONE) to reach the CRM before the stream is cancelled.
        agent->stop(std::chrono::seconds(2));
        agent_gave_up = agent->failure().has_value();
        agent.reset();
    }
    // Let the SHUTDOWN call that ended us get its answer.
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    stop_write.reset();  // the acceptor's signal to return
    acceptor.join();
    listen_fd->reset();  // no new connection while the server drains
    server->Wait();
    return service.status().state() == v1::PILOT_STATE_GONE && !agent_gave_up ? 0 : 1;
}

int cleanup(const CommonOptions& common, int grace_ms) {
    auto paths = job_paths(common);
    if (!paths) {
        spdlog::error("{}", paths.error().message);
        return 2;
    }
    if (auto pid = live_pilot_of(*paths)) {
        // A live pilot tears down best: ask it, then make sure.
        ::kill(*pid, SIGTERM);
        for (int i = 0; i < grace_ms / 10 && ::kill(*pid, 0) == 0; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        if (::kill(*pid, 0) == 0) {
            ::kill(*pid, SIGKILL);
        }
    }
    const bool existed = fs::exists(paths->root());
    if (auto ok =
            teardown_job(*paths, std::chrono::milliseconds(grace_ms), TeardownScope::everything);
        !ok) {
        spdlog::error("job {}: {}", paths->job(), ok.error().message);
        return 1;
    }
    std::printf("%s\n", existed ? ("job " + paths->job() + ": removed").c_str()
                                : ("job " + paths->job() + ": nothing to remove").c_str());
    return 0;
}

// main's body; main reports an exception that escapes it.
int run(int argc, char** argv) {
    vcpilot::tune_grpc_runtime();
    CLI::App app{"vc-pilot: builds and tears down one node of a job's virtual cluster"};
    app.require_subcommand(1);
    CommonOptions common;
    ServeOptions serve_options;
    int cleanup_grace_ms = 3000;
    const auto add_common = [&common](CLI::App* command) {
        command->add_option("--job", common.job, "the job (Slurm job id)")->required();
        command->add_option("--node", common.node, "this node's name (default: the hostname)");
        command->add_option("--run-dir", common.run_base, "base of the pilots' run directories")
            ->capture_default_str();
        command->add_option("--log-level", common.log_level, "trace, debug, info, warn, error")
            ->capture_default_str();
    };
    CLI::App* serve_command = app.add_subcommand("serve", "serve the job's control socket");
    add_common(serve_command);
    serve_command->add_option("--launcher-pid", serve_options.launcher_pid,
                              "tear down when this process ends");
    serve_command->add_option("--image-root", serve_options.image_roots,
                              "a directory below which SETUP may name images (repeatable)");
    serve_command
        ->add_option("--teardown-grace-ms", serve_options.teardown_grace_ms,
                     "how long job processes get between SIGTERM and SIGKILL")
        ->check(CLI::Range(0, 60000));
    CLI::Option* crm_option = serve_command->add_option(
        "--crm", serve_options.crm,
        "attach to the site's CRM at this gRPC address (unix:/path or host:port)");
    CLI::Option* cluster_option =
        serve_command->add_option("--cluster", serve_options.cluster, "the cluster this job joins");
    cluster_option->needs(crm_option);
    CLI::Option* job_nodes_option =
        serve_command
            ->add_option("--job-nodes", serve_options.job_nodes,
                         "the job's node count: with --cluster, the job joins that cluster; "
                         "else its own cluster vcj-JOB, made by the first of its pilots")
            ->check(CLI::Range(1, 1 << 20))
            ->needs(crm_option);
    serve_command->add_option("--job-user", serve_options.job_user, "the job's user (its owner)")
        ->needs(job_nodes_option);
    // A cluster joined has its own range, keys and names already.
    serve_command->add_option("--job-net", serve_options.job_net, "the job's --vc-net, a CIDR")
        ->needs(job_nodes_option)
        ->excludes(cluster_option);
    serve_command
        ->add_option("--job-keys", serve_options.job_keys, "the job's --vc-keys: ca or exchange")
        ->check(CLI::IsMember({"ca", "exchange"}))
        ->needs(job_nodes_option)
        ->excludes(cluster_option);
    serve_command
        ->add_option("--job-prefix", serve_options.job_prefix, "the job's --vc-hostname-prefix")
        ->needs(job_nodes_option)
        ->excludes(cluster_option);
    serve_command
        ->add_option("--job-overlay", serve_options.job_overlay,
                     "the job's --vc-overlay: vxlan or n2n (the CRM's supernode)")
        ->check(CLI::IsMember({"vxlan", "n2n"}))
        ->needs(job_nodes_option)
        ->excludes(cluster_option);
    CLI::Option* job_image_option =
        serve_command
            ->add_option(
                "--job-image", serve_options.job_image,
                "the job's --vc-image: a directory layered read-only over --job-image-mount")
            ->needs(job_nodes_option);
    serve_command
        ->add_option("--srun", serve_options.srun,
                     "the real srun, run for srun inside the job (default: srun on PATH)")
        ->needs(job_nodes_option);
    serve_command
        ->add_option("--job-image-mount", serve_options.job_image_mount,
                     "the node's directory that the job's image is layered over")
        ->needs(job_image_option);
    serve_command
        ->add_option("--rank", serve_options.rank,
                     "this node's place in the job's node list, 1-based: the CRM gives this "
                     "pilot node N of the cluster when it is free (0: the lowest free node)")
        ->check(CLI::Range(0, 1 << 20))
        ->needs(crm_option);
    serve_command
        ->add_option("--munge-socket", serve_options.munge_socket,
                     "munged's socket for the CRM credential (default: libmunge's)")
        ->needs(crm_option);
    serve_command
        ->add_option("--host", serve_options.host,
                     "this node's name as the site knows it (default: the hostname)")
        ->needs(crm_option);
    serve_command
        ->add_option("--underlay", serve_options.underlay,
                     "this node's overlay endpoint address (default: the CRM sees it)")
        ->needs(crm_option);
    serve_command
        ->add_option("--crm-timeout", serve_options.crm_timeout_s,
                     "tear down after this many seconds in a row without a CRM")
        ->check(CLI::Range(1, 86400))
        ->capture_default_str()
        ->needs(crm_option);
    CLI::App* cleanup_command =
        app.add_subcommand("cleanup", "remove every namespace, mount, process and file of a job");
    add_common(cleanup_command);
    cleanup_command->add_option("--teardown-grace-ms", cleanup_grace_ms)
        ->check(CLI::Range(0, 60000));
    CLI11_PARSE(app, argc, argv);
    if (serve_command->parsed() && !serve_options.crm.empty() && serve_options.cluster.empty() &&
        serve_options.job_nodes == 0) {
        (void)std::fprintf(stderr, "vc-pilot: --crm needs --cluster ID or --job-nodes N\n");
        return 2;
    }
    if (serve_options.job_nodes > 0 && serve_options.job_user.empty()) {
        (void)std::fprintf(stderr, "vc-pilot: --job-nodes needs --job-user\n");
        return 2;
    }
    if (!serve_options.job_image.empty() && serve_options.job_image_mount.empty()) {
        (void)std::fprintf(stderr, "vc-pilot: --job-image needs --job-image-mount\n");
        return 2;
    }

    auto level = vcpilot::parse_log_level(common.log_level);
    if (!level) {
        (void)std::fprintf(stderr, "vc-pilot: --log-level: %s\n", level.error().message.c_str());
        return 2;
    }
    if (auto ok = vcpilot::init_logging("vc-pilot", {*level, std::nullopt, true}); !ok) {
        (void)std::fprintf(stderr, "vc-pilot: %s\n", ok.error().message.c_str());
        return 1;
    }
    if (::geteuid() != 0) {
        spdlog::error("vc-pilot must run as root");
        return 1;
    }
    if (serve_command->parsed()) {
        return serve(common, serve_options);
    }
    return cleanup(common, cleanup_grace_ms);
}

}  // namespace
}  // namespace vcpilot::pilot

int main(int argc, char** argv) {
    try {
        return vcpilot::pilot::run(argc, argv);
    } catch (const std::exception& error) {
        (void)std::fprintf(stderr, "vc-pilot: %s\n", error.what());
        return 1;
    }
}
