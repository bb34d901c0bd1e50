#include "pilot/service.hpp"

#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <fstream>
#include <spdlog/spdlog.h>
#include <sstream>
#include <thread>

#include "common/process.hpp"
#include "common/text.hpp"

namespace vcpilot::pilot {

namespace fs = std::filesystem;

namespace {

// What a process of the job that Slurm did not start (RUN, EXEC, an ssh session) is told: where
// it is (VC_*), and where MPI launchers find the cluster's nodes without a Slurm allocation to
// read: Open MPI's mpirun takes the hostfile (with slots) and MPICH's mpiexec the node list, so
// that `mpirun -np 8 prog` spreads over the cluster as it would over a Slurm job's nodes.
std::vector<std::pair<std::string, std::string>> session_variables(const JobPaths& paths,
                                                                   const SetupPlan& plan) {
    const std::string hostfile = (paths.job_files_dir() / "hostfile").string();
    const std::string nodelist = (paths.job_files_dir() / "nodelist").string();
    return {{"VC_CLUSTER_ID", plan.cluster_id},
            {"VC_NODE_NAME", plan.node_name},
            {"VC_ADDRESS", plan.address.address().to_string()},
            {"VC_HOSTFILE", hostfile},
            {"VC_NODELIST", nodelist},
            {"OMPI_MCA_orte_default_hostfile", hostfile},
            {"HYDRA_HOST_FILE", nodelist}};
}

std::uint64_t now_unix_ms() {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
}

const char* state_name(v1::PilotState state) {
    switch (state) {
        case v1::PILOT_STATE_NEW:
            return "NEW";
        case v1::PILOT_STATE_CONFIGURED:
            return "CONFIGURED";
        case v1::PILOT_STATE_KEYED:
            return "KEYED";
        case v1::PILOT_STATE_READY:
            return "READY";
        case v1::PILOT_STATE_STOPPING:
            return "STOPPING";
        case v1::PILOT_STATE_GONE:
            return "GONE";
        case v1::PILOT_STATE_FAILED:
            return "FAILED";
        default:
            return "UNSPECIFIED";
    }
}

// The node's own underlay address: its first global IPv4 address.
Result<IpAddress> node_underlay_address() {
    ifaddrs* list = nullptr;
    if (::getifaddrs(&list) != 0) {
        return sys_error("getifaddrs");
    }
    std::optional<IpAddress> found;
    for (ifaddrs* entry = list; entry != nullptr && !found; entry = entry->ifa_next) {
        if (entry->ifa_addr == nullptr || entry->ifa_addr->sa_family != AF_INET) {
            continue;
        }
        const auto* in = reinterpret_cast<const sockaddr_in*>(entry->ifa_addr);
        std::array<std::uint8_t, 4> bytes{};
        std::memcpy(bytes.data(), &in->sin_addr, 4);
        if (bytes[0] != 127) {
            found = IpAddress::from_v4_bytes(bytes);
        }
    }
    ::freeifaddrs(list);
    if (!found) {
        return Error{"the node has no IPv4 underlay address; give vxlan.local_address"};
    }
    return *found;
}

grpc::Status invalid(const Error& error) {
    return {grpc::StatusCode::INVALID_ARGUMENT, error.message};
}

grpc::Status wrong_state(const char* command, v1::PilotState state) {
    return {grpc::StatusCode::FAILED_PRECONDITION,
            std::string(command) + " is not possible in state " + state_name(state)};
}

// The start of the job's /etc/hosts; the cluster's nodes follow.
std::string hosts_header() {
    return "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
}

}  // namespace

PilotService::PilotService(JobPaths paths, PilotOptions options)
    : paths_(std::move(paths)),
      options_(std::move(options)),
      state_changed_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    status_.set_job_id(paths_.job());
    set_state(v1::PILOT_STATE_NEW);
}

PilotService::~PilotService() {
    stop("pilot exiting");
}

void PilotService::set_state(v1::PilotState state, const std::string& reason) {
    {
        std::lock_guard lock(status_mutex_);
        status_.set_state(state);
        status_.set_reason(reason);
        status_.set_changed_unix_ms(now_unix_ms());
        ++version_;
        recent_changes_.push_back({version_, status_});
        if (recent_changes_.size() > kKeptChanges) {
            recent_changes_.pop_front();
        }
        if (state != v1::PILOT_STATE_GONE) {
            write_state_file();
        }
    }
    spdlog::info("job {}: {}{}{}", paths_.job(), state_name(state), reason.empty() ? "" : ": ",
                 reason);
    changed_.notify_all();
    if (state_changed_) {
        notify_eventfd(state_changed_.get());
    }
}

void PilotService::write_state_file() const {
    // Read by `vc-pilot cleanup` and by a restarted pilot: who owned this job, and how far it got.
    std::ostringstream text;
    // The SPANK plugin reads it too: a task joins the job's namespaces once state is READY.
    text << "state=" << state_name(status_.state()) << "\npid=" << ::getpid()
         << "\njob=" << paths_.job() << "\ncluster=" << status_.cluster_id()
         << "\nnode_name=" << status_.node_name() << "\naddress=" << status_.address()
         << "\nreason=" << single_line(status_.reason()) << "\n";
    if (auto ok = replace_file(paths_.state_file(), text.str(), 0600, 0, 0); !ok) {
        spdlog::warn("cannot write the state file: {}", ok.error().message);
    }
}

v1::PilotStatus PilotService::status() const {
    std::lock_guard lock(status_mutex_);
    return status_;
}

StatusChange PilotService::current_status() const {
    std::lock_guard lock(status_mutex_);
    return {version_, status_};
}

std::vector<StatusChange> PilotService::changes_after(std::uint64_t version,
                                                      std::chrono::milliseconds timeout) const {
    std::unique_lock lock(status_mutex_);
    changed_.wait_for(lock, timeout, [&] { return version_ > version; });
    std::vector<StatusChange> changes;
    for (const StatusChange& change : recent_changes_) {
        if (change.version > version) {
            changes.push_back(change);
        }
    }
    return changes;
}

void PilotService::release_holder() {
    namespaces_.reset();  // the namespaces go with the holder, once nothing else is inside
}

// n2n's edge configures its TAP device itself (ifconfig, in the namespace it runs in) and
// then only moves frames: once edge is done with the device it is moved into the job's
// namespace, where the pilot gives it the job's address. edge keeps the device's file
// descriptor, wherever the device is. The key goes in edge's environment, which only root and
// edge's user can read.
//
// "Done" is edge's own "Ready" line, not the device being up: after its ifconfig brings the
// device up, edge still reads the device's MAC by name, and a device moved away by then leaves
// edge with MAC 00:00:00:00:00:00, which drops every unicast frame to this node (seen in CI:
// one node in eight unreachable).
namespace {
bool edge_said_ready(const std::string& log) {
    std::ifstream in(log);
    std::string line;
    while (std::getline(in, line)) {
        if (line.ends_with("] Ready")) {
            return true;
        }
    }
    return false;
}
}  // namespace

Status PilotService::start_n2n_overlay(const SetupPlan& plan, int job_netns_fd) {
    const N2nPlan& n2n = *plan.n2n;
    const std::string tap = ("vcn" + paths_.job()).substr(0, 15);
    const std::string netmask = [&] {
        const std::uint32_t bits =
            plan.address.prefix() == 0 ? 0 : ~std::uint32_t{0} << (32 - plan.address.prefix());
        return fmt::format("{}.{}.{}.{}", bits >> 24, (bits >> 16) & 255, (bits >> 8) & 255,
                           bits & 255);
    }();
    fs::path edge = options_.n2n_edge;
    if (edge.empty()) {
        edge = kFixedN2nEdge;
        if (::access(edge.c_str(), X_OK) != 0) {
            edge = kDebianN2nEdge;
            spdlog::warn(
                "job {}: {} is not installed, using {}, which may swap two peers' sockets "
                "(scripts/build-n2n-edge.sh builds the fixed one)",
                paths_.job(), kFixedN2nEdge, kDebianN2nEdge);
        }
    }
    std::vector<std::string> argv = {
        edge.string(), "-d", tap, "-a", plan.address.address().to_string(), "-s", netmask, "-c",
        n2n.community, "-l", fmt::format("{}:{}", n2n.supernode.to_string(), n2n.supernode_port),
        "-m", to_string(plan.mac), "-M", std::to_string(n2n.mtu),
        // Frames between edges that cannot reach each other
        // directly go through the supernode.
        "-r"};
    const std::string key_env = "N2N_KEY=" + n2n.key;
    const std::string log = (paths_.job_files_dir().parent_path() / "n2n-edge.log").string();
    auto spawned = launcher_.call([&]() -> Result<pid_t> {
        std::vector<char*> args;
        args.reserve(argv.size() + 1);
        for (auto& arg : argv) {
            args.push_back(arg.data());
        }
        args.push_back(nullptr);
        const char* env[] = {key_env.c_str(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin", nullptr};
        const pid_t pid = ::fork();
        if (pid < 0) {
            return sys_error("fork");
        }
        if (pid == 0) {
            sigset_t none;
            sigemptyset(&none);
            // NOLINTNEXTLINE(concurrency-mt-unsafe): the forked child has this one thread only
            ::sigprocmask(SIG_SETMASK, &none, nullptr);
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
            const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            if (null < 0 || out < 0 || ::dup2(null, 0) < 0 || ::dup2(out, 1) < 0 ||
                ::dup2(out, 2) < 0) {
                ::_exit(127);
            }
            ::execve(args[0], args.data(), const_cast<char* const*>(env));
            ::_exit(127);
        }
        return pid;
    });
    if (!spawned) {
        return spawned.error();
    }
    edge_ = *spawned;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
        int status = 0;
        if (::waitpid(edge_, &status, WNOHANG) == edge_) {
            edge_ = -1;
            return Error{fmt::format(
                "{} exited ({}) before it was ready (its device {}); see {}", edge.string(),
                WIFEXITED(status) ? "status " + std::to_string(WEXITSTATUS(status))
                                  : "signal " + std::to_string(WTERMSIG(status)),
                tap, log)};
        }
        if (edge_said_ready(log)) {
            auto up = link_is_up(tap);
            if (!up) {
                return up.error();
            }
            if (!*up) {
                return Error{
                    fmt::format("edge said Ready but its device {} is not up; see {}", tap, log)};
            }
            break;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            return Error{fmt::format("edge did not say Ready within 10 s (its device {}); see {}",
                                     tap, log)};
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const OverlaySpec spec{plan.vni, plan.udp_port, plan.address.address(), plan.address, plan.mac,
                           n2n.mtu,  plan.gateway};
    return adopt_overlay_link(job_netns_fd, tap, spec);
}

void PilotService::stop_edge() {
    if (edge_ <= 0) {
        return;
    }
    ::kill(edge_, SIGTERM);
    if (!wait_for_exit(std::span(&edge_, 1),
                       std::chrono::steady_clock::now() + std::chrono::seconds(1))) {
        ::kill(edge_, SIGKILL);
    }
    while (::waitpid(edge_, nullptr, 0) < 0 && errno == EINTR) {
    }
    edge_ = -1;
}

grpc::Status PilotService::fail_setup(const std::string& reason) {
    // Nothing half-built may stay: remove what SETUP made, keep the control socket and state.
    stop_edge();
    if (auto ok = teardown_job(paths_, options_.teardown_grace, TeardownScope::keep_control); !ok) {
        spdlog::error("cleaning up after a failed SETUP: {}", ok.error().message);
    }
    release_holder();
    set_state(v1::PILOT_STATE_FAILED, reason);
    return {grpc::StatusCode::INTERNAL, reason};
}

grpc::Status PilotService::Setup(grpc::ServerContext*, const v1::SetupRequest* request,
                                 v1::PilotStatus* response) {
    std::lock_guard operation(operation_mutex_);
    if (const auto state = status().state(); state != v1::PILOT_STATE_NEW) {
        return wrong_state("SETUP", state);
    }
    auto plan = validate_setup(*request, options_.limits);
    if (!plan) {
        return invalid(plan.error());
    }
    Result<IpAddress> underlay =
        plan->local_underlay ? Result<IpAddress>(*plan->local_underlay) : node_underlay_address();
    if (!underlay) {
        return invalid(underlay.error());
    }
    std::uint32_t mtu = plan->n2n ? plan->n2n->mtu : plan->mtu;
    if (mtu == 0) {
        auto underlay_mtu_value = underlay_mtu(*underlay);
        if (!underlay_mtu_value) {
            return invalid(Error{"vxlan.local_address: " + underlay_mtu_value.error().message});
        }
        // Room for the outer IPv4, UDP and VXLAN headers; the job still needs IPv4's minimum.
        if (*underlay_mtu_value < 576 + 50) {
            return invalid(Error{"vxlan.local_address: the underlay's MTU of " +
                                 std::to_string(*underlay_mtu_value) +
                                 " leaves less than 576 bytes for the job; give vxlan.mtu"});
        }
        mtu = *underlay_mtu_value - 50;
    }
    auto filter = EscapeFilter::build(SeccompPolicy{plan->seccomp});
    if (!filter) {
        return {grpc::StatusCode::INTERNAL, filter.error().message};
    }
    {
        std::lock_guard lock(status_mutex_);
        status_.set_cluster_id(plan->cluster_id);
        status_.set_node_name(plan->node_name);
        status_.set_address(plan->address.to_string());
    }

    JobMountPlan mounts{.paths = paths_,
                        .uid = plan->user.uid,
                        .gid = plan->user.gid,
                        .home = plan->user.home,
                        .hostname = plan->node_name,
                        .ssh_client_config = {},
                        .tmp_size_bytes = plan->tmp_size_bytes,
                        .image = plan->image,
                        .image_mount = plan->image_mount,
                        .image_identity = {},
                        .srun_shim = {}};
    if (options_.srun_relay) {
        mounts.srun_shim =
            JobMountPlan::SrunShim{options_.srun_relay->shim, options_.srun_relay->srun};
    }
    // The client configuration works whether or not the user has a ~/.ssh on the host.
    mounts.ssh_client_config = "# written by vc-pilot for job " + paths_.job() +
                               "\nHost *\n    IdentityFile " + paths_.user_key().string() +
                               "\n    UserKnownHostsFile " +
                               (paths_.user_ssh_dir() / "known_hosts").string() +
                               "\n    StrictHostKeyChecking yes\n    CheckHostIP no\n";
    if (auto ok = prepare_job_mounts(mounts, options_.limits.allowed_image_roots); !ok) {
        return fail_setup("preparing the job's mounts: " + ok.error().message);
    }
    // The other nodes are added with the cluster's view.
    if (auto ok = replace_file(
            paths_.hosts_file(),
            hosts_header() + plan->address.address().to_string() + "\t" + plan->node_name + "\n",
            0644, 0, 0);
        !ok) {
        return fail_setup("writing the job's hosts file: " + ok.error().message);
    }
    if (mounts.image) {
        auto opened =
            open_image_as_user(*mounts.image, plan->user.name, plan->user.uid, plan->user.gid);
        if (!opened) {
            return fail_setup(opened.error().message);
        }
        mounts.image_identity = *opened;
    }
    std::error_code ec;
    fs::create_directories(paths_.sshd_dir(), ec);
    if (ec || ::chmod(paths_.sshd_dir().c_str(), 0700) != 0) {
        return fail_setup("creating " + paths_.sshd_dir().string());
    }
    const std::string comment = plan->node_name + "." + plan->cluster_id;
    auto host_key = generate_ed25519_key(paths_.host_key(), 0, 0, "host " + comment);
    if (!host_key) {
        return fail_setup("generating the host key: " + host_key.error().message);
    }
    auto user_key = generate_ed25519_key(paths_.user_key(), plan->user.uid, plan->user.gid,
                                         plan->user.name + "@" + comment);
    if (!user_key) {
        return fail_setup("generating the user key: " + user_key.error().message);
    }
    auto namespaces = JobNamespaces::create(paths_, plan->node_name,
                                            [&mounts] { return setup_job_mounts(mounts); });
    if (!namespaces) {
        return fail_setup("creating the job's namespaces: " + namespaces.error().message);
    }
    namespaces_ = std::move(*namespaces);
    auto netns = open_namespace(namespaces_->files().net);
    if (!netns) {
        return fail_setup(netns.error().message);
    }
    if (plan->n2n) {
        if (auto ok = start_n2n_overlay(*plan, netns->get()); !ok) {
            return fail_setup("creating the n2n overlay: " + ok.error().message);
        }
    } else {
        const OverlaySpec overlay{plan->vni, plan->udp_port, *underlay, plan->address, plan->mac,
                                  mtu,       plan->gateway};
        if (auto ok = create_overlay(netns->get(), overlay); !ok) {
            return fail_setup("creating the overlay link: " + ok.error().message);
        }
    }

    plan_ = std::move(*plan);
    underlay_ = *underlay;
    host_key_ = *host_key;
    user_key_ = *user_key;
    filter_ = std::move(*filter);
    set_state(v1::PILOT_STATE_CONFIGURED);
    *response = status();
    return grpc::Status::OK;
}

grpc::Status PilotService::GetKeys(grpc::ServerContext*, const v1::GetKeysRequest*,
                                   v1::GetKeysResponse* response) {
    std::lock_guard operation(operation_mutex_);
    const auto state = status().state();
    if (state != v1::PILOT_STATE_CONFIGURED && state != v1::PILOT_STATE_KEYED &&
        state != v1::PILOT_STATE_READY) {
        return wrong_state("GET_KEYS", state);
    }
    response->set_host_key(host_key_);
    response->set_user_key(user_key_);
    response->set_underlay_address(underlay_.to_string());
    response->set_mac(to_string(plan_->mac));
    response->set_address(plan_->address.address().to_string());
    response->set_node_name(plan_->node_name);
    return grpc::Status::OK;
}

namespace {

// Removes a file the other key mode wrote; one that is not there is fine.
Status remove_file(const fs::path& path) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        return sys_error("remove " + path.string());
    }
    return {};
}

}  // namespace

Status PilotService::write_certificate_files(const ClusterPlan& cluster) {
    if (!cluster.certificates) {
        for (const fs::path& stale : {paths_.user_certificate(), paths_.host_certificate(),
                                      paths_.trusted_user_ca_keys()}) {
            if (auto ok = remove_file(stale); !ok) {
                return ok;
            }
        }
        return {};
    }
    const CertificateTrust& trust = *cluster.certificates;
    const auto& user = plan_->user;
    // ssh finds the user's certificate next to the key; sshd is told where the others are.
    for (const auto& step : {
             replace_file(paths_.user_certificate(), trust.user_certificate + "\n", 0644, user.uid,
                          user.gid),
             replace_file(paths_.host_certificate(), trust.host_certificate + "\n", 0644, 0, 0),
             replace_file(paths_.trusted_user_ca_keys(), trust.ca_key + "\n", 0644, 0, 0),
         }) {
        if (!step) {
            return step;
        }
    }
    return {};
}

Status PilotService::write_cluster_files(const ClusterPlan& cluster) {
    const auto& user = plan_->user;
    std::string hosts = hosts_header();
    std::string known_hosts, authorized_keys, hostfile, nodelist;
    std::vector<std::pair<std::string, std::string>> slurm_nodes;
    for (const auto& node : cluster.nodes) {
        if (!node.host.empty()) {
            slurm_nodes.emplace_back(node.host, node.name);
        }
        const std::string address = node.address.to_string();
        hosts += address + "\t" + node.name + "\n";
        if (!cluster.certificates) {
            known_hosts += node.name + "," + address + " " + node.host_key + "\n";
            authorized_keys += node.user_key + "\n";
        }
        hostfile += node.name + " slots=" + std::to_string(node.slots) + "\n";
        nodelist += node.name + "\n";
    }
    if (cluster.certificates) {
        // One line trusts every host the CA certified. The job's ~/.ssh is its own (a per-job
        // directory mounted over the user's), so '*' reaches no host outside the cluster.
        known_hosts = "@cert-authority * " + cluster.certificates->ca_key + "\n";
    }
    const fs::path ssh_dir = paths_.user_ssh_dir();
    // /etc/hosts in the job leads to hosts_file() (prepare_job_mounts), so every file here is
    // written from the host side.
    for (const auto& step : {
             replace_file(paths_.hosts_file(), hosts, 0644, 0, 0),
             replace_file(ssh_dir / "known_hosts", known_hosts, 0644, user.uid, user.gid),
             replace_file(ssh_dir / "authorized_keys", authorized_keys, 0600, user.uid, user.gid),
             replace_file(paths_.job_files_dir() / "hostfile", hostfile, 0644, 0, 0),
             replace_file(paths_.job_files_dir() / "nodelist", nodelist, 0644, 0, 0),
             replace_file(paths_.job_files_dir() / "slurm_nodes", format_node_names(slurm_nodes),
                          0644, 0, 0),
         }) {
        if (!step) {
            return step;
        }
    }
    return {};
}

Status PilotService::start_sshd(bool certificates) {
    SshdSpec spec = job_sshd_spec(paths_, plan_->address.address(), plan_->user.name, certificates);
    spec.environment = session_variables(paths_, *plan_);
    if (sshd_) {
        // Every session's sshd reads the config and the files it names when it starts: a new
        // key mode takes effect with the next connection.
        return sshd_->reconfigure(spec);
    }
    SshdLaunch launch;
    launch.dir = paths_.sshd_dir();
    const EscapeFilter* filter = &*filter_;
    launch.before_exec = [filter] { return filter->apply(); };
    auto sshd = Sshd::start(spec, namespaces_->files(), launch);
    if (!sshd) {
        return sshd.error();
    }
    sshd_ = std::move(*sshd);
    return {};
}

grpc::Status PilotService::SetKeys(grpc::ServerContext*, const v1::SetKeysRequest* request,
                                   v1::PilotStatus* response) {
    std::lock_guard operation(operation_mutex_);
    const auto state = status().state();
    if (state != v1::PILOT_STATE_CONFIGURED && state != v1::PILOT_STATE_KEYED &&
        state != v1::PILOT_STATE_READY) {
        return wrong_state("SET_KEYS", state);
    }
    auto cluster = validate_set_keys(*request, *plan_, OwnKeys{host_key_, user_key_});
    if (!cluster) {
        return invalid(cluster.error());
    }
    if (auto ok = write_certificate_files(*cluster); !ok) {
        return {grpc::StatusCode::INTERNAL, "writing the certificates: " + ok.error().message};
    }
    if (auto ok = start_sshd(cluster->certificates.has_value()); !ok) {
        const std::string reason = "starting sshd: " + ok.error().message;
        set_state(v1::PILOT_STATE_FAILED, reason);
        return {grpc::StatusCode::INTERNAL, reason};
    }
    if (auto ok = write_cluster_files(*cluster); !ok) {
        return {grpc::StatusCode::INTERNAL, "writing the cluster's files: " + ok.error().message};
    }
    std::vector<OverlayPeer> peers;
    for (const auto& node : cluster->nodes) {
        if (node.name != plan_->node_name) {
            peers.push_back({node.underlay, node.address, node.mac});
        }
    }
    auto netns = open_namespace(namespaces_->files().net);
    if (!netns) {
        return {grpc::StatusCode::INTERNAL, netns.error().message};
    }
    // n2n finds its peers through the supernode: nothing to tell it.
    if (auto ok = plan_->n2n ? Status{} : set_overlay_peers(netns->get(), peers); !ok) {
        return {grpc::StatusCode::INTERNAL, "setting the overlay's peers: " + ok.error().message};
    }
    if (auto ok = set_onlink_routes(netns->get(), cluster->onlink_blocks); !ok) {
        return {grpc::StatusCode::INTERNAL,
                "routing the other sites' blocks: " + ok.error().message};
    }
    if (state == v1::PILOT_STATE_CONFIGURED) {
        set_state(v1::PILOT_STATE_KEYED);
    }
    if (options_.srun_relay && !srun_relay_) {
        auto relay = SrunRelay::start({.socket = paths_.job_files_dir() / "srun.sock",
                                       .srun = options_.srun_relay->srun,
                                       .user = plan_->user.name,
                                       .uid = plan_->user.uid,
                                       .gid = plan_->user.gid,
                                       .slurm_conf = options_.srun_relay->slurm_conf});
        if (!relay) {
            const std::string reason = "starting the srun relay: " + relay.error().message;
            set_state(v1::PILOT_STATE_FAILED, reason);
            return {grpc::StatusCode::INTERNAL, reason};
        }
        srun_relay_ = std::move(*relay);
    }
    if (srun_relay_) {
        NameMap to_slurm;
        for (const auto& node : cluster->nodes) {
            if (!node.host.empty()) {
                to_slurm.emplace(node.name, node.host);
            }
        }
        srun_relay_->set_slurm_names(std::move(to_slurm));
    }
    if (state != v1::PILOT_STATE_READY) {
        set_state(v1::PILOT_STATE_READY);
    }
    *response = status();
    return grpc::Status::OK;
}

grpc::Status PilotService::run_command(const v1::RunRequest& request, bool as_root,
                                       const RunOutputSink& sink) {
    const char* command_name = as_root ? "EXEC" : "RUN";
    std::optional<SetupPlan> plan_copy;
    NamespaceFiles files;
    {
        // Commands do not hold the operation lock while they run: several may run at once, and
        // SHUTDOWN must be able to stop them.
        std::lock_guard operation(operation_mutex_);
        if (const auto state = status().state(); state != v1::PILOT_STATE_READY) {
            return wrong_state(command_name, state);
        }
        plan_copy = plan_;
        files = namespaces_->files();
    }
    const SetupPlan& plan = *plan_copy;
    UserIdentity user = plan.user;
    if (as_root) {
        auto root = lookup_user("root");
        user = root ? *root : UserIdentity{"root", 0, 0, "/root"};
    }
    JobCommand command;
    command.argv.assign(request.argv().begin(), request.argv().end());
    command.env = {
        {"PATH", "/usr/local/bin:/usr/bin:/bin"},
        {"HOME", user.home.string()},
        {"USER", user.name},
        {"LOGNAME", user.name},
        {"SHELL", "/bin/sh"},
    };
    for (auto& [name, value] : session_variables(paths_, plan)) {
        command.env[name] = std::move(value);
    }
    if (as_root) {
        command.env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    }
    for (const auto& [name, value] : request.env()) {
        command.env[name] = value;
    }
    if (auto ok = check_job_command(command.argv, command.env); !ok) {
        return invalid(ok.error());
    }
    command.cwd = request.cwd().empty() ? user.home : fs::path(request.cwd());
    command.stdin_data = request.stdin();
    auto namespaces = JobNamespaceFds::open(files);
    if (!namespaces) {
        return {grpc::StatusCode::INTERNAL, namespaces.error().message};
    }
    const auto output_sink = [&](OutputStream stream, std::string_view data) {
        v1::RunOutput output;
        if (stream == OutputStream::out) {
            output.set_stdout(std::string(data));
        } else {
            output.set_stderr(std::string(data));
        }
        return sink(output);
    };
    auto exit_status = run_job_command(command, user, *namespaces, *filter_, output_sink);
    if (!exit_status) {
        return invalid(exit_status.error());
    }
    v1::RunOutput last;
    last.set_exit_status(*exit_status);
    sink(last);
    return grpc::Status::OK;
}

namespace {

// The RPCs' sink: the stream to the caller, while the caller is still there.
RunOutputSink rpc_sink(grpc::ServerContext* context, grpc::ServerWriter<v1::RunOutput>* writer) {
    return [context, writer](const v1::RunOutput& output) {
        return !context->IsCancelled() && writer->Write(output);
    };
}

}  // namespace

grpc::Status PilotService::Run(grpc::ServerContext* context, const v1::RunRequest* request,
                               grpc::ServerWriter<v1::RunOutput>* writer) {
    return run_command(*request, false, rpc_sink(context, writer));
}

grpc::Status PilotService::Exec(grpc::ServerContext* context, const v1::RunRequest* request,
                                grpc::ServerWriter<v1::RunOutput>* writer) {
    return run_command(*request, true, rpc_sink(context, writer));
}

void PilotService::stop(const std::string& reason) {
    std::lock_guard operation(operation_mutex_);
    if (stopped_) {
        return;
    }
    stopped_ = true;
    set_state(v1::PILOT_STATE_STOPPING, reason);
    srun_relay_.reset();  // its sruns get SIGTERM and cancel their steps
    if (sshd_) {
        sshd_->request_stop();  // teardown waits for it with everything else in the job
    }
    stop_edge();
    const auto teardown = teardown_job(paths_, options_.teardown_grace, TeardownScope::everything);
    if (sshd_) {
        if (auto ok = sshd_->stop(); !ok) {
            spdlog::warn("stopping sshd: {}", ok.error().message);
        }
        sshd_.reset();
    }
    release_holder();
    if (!teardown) {
        set_state(v1::PILOT_STATE_FAILED, "teardown: " + teardown.error().message);
        return;
    }
    set_state(v1::PILOT_STATE_GONE, reason);
}

grpc::Status PilotService::Shutdown(grpc::ServerContext*, const v1::ShutdownRequest* request,
                                    v1::PilotStatus* response) {
    if (request->reason().size() > 1024) {
        return invalid(Error{"reason: longer than 1024 bytes"});
    }
    stop(request->reason().empty() ? "SHUTDOWN" : "SHUTDOWN: " + request->reason());
    *response = status();
    return grpc::Status::OK;
}

grpc::Status PilotService::GetStatus(grpc::ServerContext*, const v1::GetStatusRequest*,
                                     v1::PilotStatus* response) {
    *response = status();
    return grpc::Status::OK;
}

bool PilotService::wait_until_stopped(std::chrono::milliseconds timeout) const {
    std::unique_lock lock(status_mutex_);
    return changed_.wait_for(lock, timeout, [&] {
        return status_.state() == v1::PILOT_STATE_GONE ||
               (stopped_ && status_.state() == v1::PILOT_STATE_FAILED);
    });
}

grpc::Status PilotService::Watch(grpc::ServerContext* context, const v1::WatchRequest*,
                                 grpc::ServerWriter<v1::PilotStatus>* writer) {
    std::unique_lock lock(status_mutex_);
    // First the state as it is now, then every change after it, each one (two changes in a
    // row, KEYED and READY say, must not reach the watcher as just the second).
    std::vector<v1::PilotStatus> pending{status_};
    std::uint64_t sent_version = version_;
    for (;;) {
        for (const StatusChange& change : recent_changes_) {
            if (change.version > sent_version) {
                pending.push_back(change.status);
                sent_version = change.version;
            }
        }
        if (!pending.empty()) {
            lock.unlock();
            for (const v1::PilotStatus& next : pending) {
                if (!writer->Write(next) || next.state() == v1::PILOT_STATE_GONE) {
                    return grpc::Status::OK;
                }
            }
            pending.clear();
            lock.lock();
            continue;  // changes made while writing
        }
        // Woken by every change; the timeout only lets us notice a client that went away.
        changed_.wait_for(lock, std::chrono::milliseconds(200));
        if (context->IsCancelled()) {
            return grpc::Status::CANCELLED;
        }
    }
}

}  // namespace vcpilot::pilot
