#include "bench/coordinator_scale/coordinators.hpp"

#include "coordinator/daemon.hpp"
#include "coordinator/ipam.hpp"
#include "coordinator/lease_store.hpp"

namespace vcpilot::coordinator::scale_bench {
namespace {

using namespace std::chrono_literals;

// Serves as the daemons do (serve_on) and says which port was chosen for HOST:0.
std::unique_ptr<grpc::Server> serve(const std::string& listen,
                                    std::shared_ptr<grpc::ServerCredentials> credentials,
                                    grpc::Service* service, int* port) {
    std::vector<int> ports;
    auto server = must(serve_on({listen}, {std::move(credentials)}, service, &ports), "serving");
    *port = ports.at(0);
    return server;
}

void shut_down(std::unique_ptr<grpc::Server>& server) {
    if (server) {
        server->Shutdown(std::chrono::system_clock::now() + 1s);
        server.reset();
    }
}

CrmOptions crm_options(const std::string& site, const std::string& munge_socket) {
    CrmOptions options;
    options.site = site;
    options.munge_socket = munge_socket;
    return options;
}

}  // namespace

void CrmEngine::stop() {
    shut_down(server);
    crm.reset();  // stops the writer and the uplink
}

void GrcEngine::stop() {
    shut_down(server);
    grc.reset();
}

CrmEngine start_crm(const std::filesystem::path& dir, CrmOptions options) {
    CrmEngine engine;
    engine.site = options.site;
    engine.target = "unix:" + (dir / ("crm-" + options.site + ".sock")).string();
    auto store = must(LeaseStore::open(dir / ("crm-" + options.site + ".db")), "CRM store");
    engine.crm = must(CrmServer::start(std::move(options), ClusterStore(std::move(store))),
                      "starting a CRM");
    int port = 0;
    engine.server =
        serve(engine.target, grpc::InsecureServerCredentials(), engine.crm->service(), &port);
    return engine;
}

std::unique_ptr<GrcEngine> start_grc(const std::filesystem::path& dir, const testing::TestPki& pki,
                                     const std::vector<std::string>& sites) {
    GrcOptions options{
        .sites = {sites.begin(), sites.end()},
        .pool = must(AddressPool::create({must(Cidr::parse("10.96.0.0/12"), "")}), "GRC pool")};
    options.vni_first = 100000;
    options.vni_last = 199999;
    auto engine = std::make_unique<GrcEngine>();
    auto store = must(LeaseStore::open(dir / "grc.db"), "GRC store");
    engine->grc = must(GrcServer::start(std::move(options), ClusterStore(std::move(store))),
                       "starting the GRC");
    int port = 0;
    engine->server =
        serve("127.0.0.1:0", pki.grc_server_credentials(), engine->grc->service(), &port);
    engine->target = fmt::format("127.0.0.1:{}", port);
    return engine;
}

CrmOptions site_crm_options(const std::string& site, const std::string& munge_socket,
                            const GrcEngine& grc, const testing::TestPki& pki) {
    CrmOptions options = crm_options(site, munge_socket);
    const auto& [cert, key] = pki.crm(site);
    options.grc = GrcUplinkOptions{grc.target, pki.ca(), cert, key};
    return options;
}

CrmOptions standalone_crm_options(const std::string& site, const std::string& munge_socket) {
    CrmOptions options = crm_options(site, munge_socket);
    options.pool = must(AddressPool::create({must(Cidr::parse("10.64.0.0/16"), "")}), "CRM pool");
    options.vni_first = 1000;
    options.vni_last = 1999;
    return options;
}

ClusterClient alice_at(const GrcEngine& grc, const testing::TestPki& pki) {
    const auto& [cert, key] = pki.user("alice");
    return must(ClusterClient::grc({grc.target, pki.ca(), cert, key}), "GRC client");
}

ClusterClient root_at(const CrmEngine& crm, const std::string& munge_socket) {
    return must(ClusterClient::crm({crm.target, munge_socket}), "CRM client");
}

// ---- calls ----

v1::CreateClusterRequest request_for(
    const std::vector<std::pair<std::string, std::uint32_t>>& sites, v1::KeyMode mode) {
    v1::CreateClusterRequest request;
    for (const auto& [name, nodes] : sites) {
        auto* site = request.add_sites();
        site->set_site(name);
        site->set_nodes(nodes);
    }
    request.set_key_mode(mode);
    return request;
}

grpc::Status create(const ClusterClient& client, const v1::CreateClusterRequest& request,
                    v1::Cluster* cluster, std::unique_ptr<grpc::ClientContext> context) {
    if (!context) {
        context = must(client.context("CreateCluster", 120s), "credential");
    }
    return client.call(
        [&](auto& stub) { return stub.CreateCluster(context.get(), request, cluster); });
}

grpc::Status get(const ClusterClient& client, const std::string& id, v1::Cluster* cluster) {
    v1::ClusterRef ref;
    ref.set_id(id);
    auto context = must(client.context("GetCluster", 30s), "credential");
    return client.call([&](auto& stub) { return stub.GetCluster(context.get(), ref, cluster); });
}

grpc::Status release(const ClusterClient& client, const std::string& id) {
    v1::ClusterRef ref;
    ref.set_id(id);
    v1::Cluster cluster;
    auto context = must(client.context("ReleaseCluster", 60s), "credential");
    return client.call(
        [&](auto& stub) { return stub.ReleaseCluster(context.get(), ref, &cluster); });
}

grpc::Status list(const ClusterClient& client, v1::ListClustersResponse* response) {
    v1::ListClustersRequest request;
    auto context = must(client.context("ListClusters", 30s), "credential");
    return client.call(
        [&](auto& stub) { return stub.ListClusters(context.get(), request, response); });
}

std::optional<Clock::time_point> poll_state(const ClusterClient& client, const std::string& id,
                                            v1::ClusterState state, Clock::time_point deadline,
                                            std::chrono::milliseconds interval) {
    while (Clock::now() < deadline) {
        v1::Cluster cluster;
        if (get(client, id, &cluster).ok() && cluster.state() == state) {
            return Clock::now();
        }
        std::this_thread::sleep_for(interval);
    }
    return std::nullopt;
}

// ---- Watch ----

Watch::Watch(const ClusterClient& client, const std::string& id, std::chrono::milliseconds timeout)
    : context_(must(client.context("WatchCluster", timeout), "credential")) {
    v1::ClusterRef ref;
    ref.set_id(id);
    reader_ = client.call([&](auto& stub) { return stub.WatchCluster(context_.get(), ref); });
    thread_ = std::thread([this] { read(); });
}

Watch::~Watch() {
    context_->TryCancel();
    thread_.join();
}

std::optional<Clock::time_point> Watch::wait_for(v1::ClusterState state,
                                                 Clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    changed_.wait_until(lock, deadline, [&] { return ended_ || seen_.contains(state); });
    auto found = seen_.find(state);
    return found == seen_.end() ? std::nullopt : std::optional{found->second};
}

std::size_t Watch::messages() const {
    std::lock_guard lock(mutex_);
    return messages_;
}

std::uint64_t Watch::bytes() const {
    std::lock_guard lock(mutex_);
    return bytes_;
}

std::vector<Watch::Point> Watch::timeline() const {
    std::lock_guard lock(mutex_);
    return timeline_;
}

void Watch::read() {
    v1::Cluster cluster;
    while (reader_->Read(&cluster)) {
        const auto now = Clock::now();
        Point point{now};
        for (const auto& node : cluster.nodes()) {
            point.attached += node.host().empty() ? 0 : 1;
            point.configured +=
                node.state() >= v1::PILOT_STATE_CONFIGURED && node.state() <= v1::PILOT_STATE_READY
                    ? 1
                    : 0;
            point.ready += node.state() == v1::PILOT_STATE_READY ? 1 : 0;
        }
        std::lock_guard lock(mutex_);
        ++messages_;
        bytes_ += cluster.ByteSizeLong();
        seen_.emplace(cluster.state(), now);
        timeline_.push_back(point);
        changed_.notify_all();
    }
    reader_->Finish();
    std::lock_guard lock(mutex_);
    ended_ = true;
    changed_.notify_all();
}

}  // namespace vcpilot::coordinator::scale_bench
