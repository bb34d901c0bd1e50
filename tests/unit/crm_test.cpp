// The CRM as its clients see it: a real vc-crmd engine behind a real gRPC server on a unix
// socket, a private munged, vcctl's client code and simulated pilots.
#include "crm/crm.hpp"

#include <algorithm>
#include <fmt/format.h>
#include <fstream>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <set>

#include "common/munge.hpp"
#include "common/underlays.hpp"
#include "coordinator/auth.hpp"
#include "coordinator/sshcert.hpp"
#include "literals.hpp"
#include "tests/support/sim_pilot.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_munged.hpp"
#include "vcctl/client.hpp"

namespace vcpilot::coordinator {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using vcpilot::testing::TempDir;
using vcpilot::testing::TestMunged;
using namespace std::chrono_literals;

constexpr uid_t kNobody = 65534;

// A simulated pilot on host node<i>, its MUNGE credential minted and its keys made.
SimPilotSpec pilot_spec(const std::string& cluster, const std::string& job, std::size_t i,
                        const std::string& underlay, const std::string& munge_socket) {
    SimPilotSpec spec;
    spec.cluster = cluster;
    spec.job = job;
    spec.host = "node" + std::to_string(i);
    spec.underlay = underlay;
    mint_credential(spec, munge_socket).value();
    spec.host_key = SshCa::generate().value().public_key_line("host");
    spec.user_key = SshCa::generate().value().public_key_line("user");
    return spec;
}

class CrmTest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!TestMunged::available()) {
            GTEST_SKIP() << "needs root and munged (scripts/install-deps.sh installs it)";
        }
        munged_ = std::make_unique<TestMunged>();
        start();
    }
    void TearDown() override { stop(); }

    void start() {
        CrmOptions options;
        options.site = "a";
        options.pool = pool_of({cidr("10.20.0.0/24")});
        options.vni_first = 100;
        options.vni_last = 199;
        options.munge_socket = munged_->socket();
        options.release_timeout = release_timeout_;
        options.reattach_grace = reattach_grace_;
        options.slurm = slurm_;
        auto store = LeaseStore::open(dir_.path() / "state.db").value();
        crm_ = CrmServer::start(std::move(options), ClusterStore(std::move(store))).value();
        grpc::ServerBuilder builder;
        builder.AddListeningPort(target(), grpc::InsecureServerCredentials());
        builder.RegisterService(crm_->service());
        builder.SetMaxReceiveMessageSize(4 * 1024 * 1024);
        server_ = builder.BuildAndStart();
        ASSERT_TRUE(server_);
    }
    void stop() {
        if (server_) {
            server_->Shutdown(std::chrono::system_clock::now() + 1s);
            server_.reset();
        }
        crm_.reset();
    }

    std::string target() const { return "unix:" + (dir_.path() / "crm.sock").string(); }
    CrmClient client() const { return CrmClient::connect({target(), munged_->socket()}).value(); }

    v1::Cluster create(std::uint32_t nodes, v1::KeyMode mode = v1::KEY_MODE_CA) {
        v1::CreateClusterRequest request;
        auto* site = request.add_sites();
        site->set_site("a");
        site->set_nodes(nodes);
        request.set_key_mode(mode);
        auto c = client();
        v1::Cluster cluster;
        auto context = c.context("CreateCluster").value();
        const auto status = c.stub().CreateCluster(context.get(), request, &cluster);
        EXPECT_TRUE(status.ok()) << status.error_message();
        return cluster;
    }

    grpc::Status get(const std::string& id, v1::Cluster* cluster) {
        auto c = client();
        v1::ClusterRef ref;
        ref.set_id(id);
        auto context = c.context("GetCluster").value();
        return c.stub().GetCluster(context.get(), ref, cluster);
    }

    grpc::Status release(const std::string& id, v1::Cluster* cluster) {
        auto c = client();
        v1::ClusterRef ref;
        ref.set_id(id);
        auto context = c.context("ReleaseCluster").value();
        return c.stub().ReleaseCluster(context.get(), ref, cluster);
    }

    // Waits (bounded) until the cluster is in `state`.
    v1::Cluster wait_for(const std::string& id, v1::ClusterState state) {
        v1::Cluster cluster;
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        while (std::chrono::steady_clock::now() < deadline) {
            if (get(id, &cluster).ok() && cluster.state() == state) {
                break;
            }
            std::this_thread::sleep_for(5ms);
        }
        return cluster;
    }

    std::vector<SimPilotSpec> pilots(const std::string& cluster, std::size_t count,
                                     std::size_t first = 1) {
        std::vector<SimPilotSpec> specs;
        for (std::size_t i = first; i < first + count; ++i) {
            specs.push_back(pilot_spec(cluster, SimPilotSpec{}.job, i,
                                       "172.16.1." + std::to_string(10 + i), munged_->socket()));
        }
        return specs;
    }

    std::unique_ptr<SimPilotFleet> fleet(std::vector<SimPilotSpec> specs) {
        auto out = std::make_unique<SimPilotFleet>(separate_channels(target(), specs.size()),
                                                   std::move(specs));
        out->start();
        return out;
    }

    // Starts the pilots one after another, each once the one before has its SETUP (a node):
    // they attach in exactly this order.
    std::vector<std::unique_ptr<SimPilotFleet>> attach_one_by_one(std::vector<SimPilotSpec> specs) {
        std::vector<std::unique_ptr<SimPilotFleet>> fleets;
        for (auto& spec : specs) {
            const std::string host = spec.host;
            fleets.push_back(fleet({std::move(spec)}));
            const auto deadline = std::chrono::steady_clock::now() + 10s;
            while (!fleets.back()->outcome(0).got_setup &&
                   std::chrono::steady_clock::now() < deadline) {
                std::this_thread::sleep_for(2ms);
            }
            EXPECT_TRUE(fleets.back()->outcome(0).got_setup) << host;
        }
        return fleets;
    }

    // Gives pilot i rank i + 1 (Slurm's order), then lets them attach last first, one by one:
    // fleets[i] holds the pilot of rank specs.size() - i.
    std::vector<std::unique_ptr<SimPilotFleet>> attach_ranked_in_reverse(
        std::vector<SimPilotSpec> specs) {
        for (std::size_t i = 0; i < specs.size(); ++i) {
            specs[i].rank = static_cast<std::uint32_t>(i + 1);
        }
        std::reverse(specs.begin(), specs.end());
        return attach_one_by_one(std::move(specs));
    }

    std::chrono::milliseconds release_timeout_ = 5s;
    std::chrono::milliseconds reattach_grace_ = 60s;
    std::optional<SlurmOptions> slurm_;
    TempDir dir_;
    std::unique_ptr<TestMunged> munged_;
    std::unique_ptr<CrmServer> crm_;
    std::unique_ptr<grpc::Server> server_;
};

TEST_F(CrmTest, PilotsGetSetupThenTheViewAndTheClusterBecomesReady) {
    const auto cluster = create(3);
    EXPECT_EQ(cluster.state(), v1::CLUSTER_STATE_PENDING);
    EXPECT_EQ(cluster.vni(), 100U);
    auto pilot_fleet = fleet(pilots(cluster.id(), 3));
    ASSERT_EQ(pilot_fleet->wait_ready(3, 10s), 3U);
    const auto ready = wait_for(cluster.id(), v1::CLUSTER_STATE_READY);
    ASSERT_EQ(ready.state(), v1::CLUSTER_STATE_READY);
    ASSERT_EQ(ready.nodes_size(), 3);
    EXPECT_EQ(ready.sites(0).ready(), 3U);

    // Ordinals go in the order pilots attach; find node 1's pilot.
    std::set<std::string> names;
    std::size_t one = 0;
    for (std::size_t i = 0; i < 3; ++i) {
        names.insert(pilot_fleet->outcome(i).setup.node_name());
        if (pilot_fleet->outcome(i).setup.node_name() == "vc-a-1") {
            one = i;
        }
    }
    EXPECT_THAT(names, ::testing::ElementsAre("vc-a-1", "vc-a-2", "vc-a-3"));
    const auto first = pilot_fleet->outcome(one);
    EXPECT_EQ(first.setup.address(), "10.20.0.1/29");  // 3 nodes need a /29
    EXPECT_EQ(first.setup.vxlan().vni(), 100U);
    EXPECT_EQ(first.setup.vxlan().local_address(), "172.16.1." + std::to_string(11 + one));
    EXPECT_EQ(first.setup.user(), "root");
    // The view: one site, underlays packed in ordinal order, a CA and this node's certificates.
    ASSERT_EQ(first.view.sites_size(), 1);
    EXPECT_EQ(first.view.sites(0).block(), "10.20.0.0/29");
    const auto underlays = unpack_underlays(first.view.sites(0));
    ASSERT_TRUE(underlays) << underlays.error().message;
    ASSERT_EQ(underlays->size(), 3U);
    EXPECT_EQ((*underlays)[0].to_string(), first.setup.vxlan().local_address());  // node 1
    EXPECT_EQ(first.view.sites(0).host_keys_size(), 0);
    EXPECT_THAT(first.view.ca_key(), HasSubstr("ssh-ed25519 "));
    EXPECT_THAT(first.view.host_certificate(), HasSubstr("ssh-ed25519-cert-v01@openssh.com "));
    EXPECT_NE(first.view.host_certificate(),
              pilot_fleet->outcome((one + 1) % 3).view.host_certificate());
    EXPECT_EQ(first.view.ca_key(), pilot_fleet->outcome((one + 2) % 3).view.ca_key());
}

// Slurm's pilots say where their node is in the job's node list: the n-th node is node n,
// whatever order the pilots attach in, and the site's underlays follow the ordinals.
TEST_F(CrmTest, PilotsWithARankGetTheNodeOfThatOrdinalWhateverTheOrderTheyAttachIn) {
    const auto cluster = create(4);
    auto fleets = attach_ranked_in_reverse(pilots(cluster.id(), 4));
    for (std::size_t i = 0; i < fleets.size(); ++i) {
        ASSERT_EQ(fleets[i]->wait_ready(1, 10s), 1U);
        const auto outcome = fleets[i]->outcome(0);
        const std::size_t rank = fleets.size() - i;
        EXPECT_EQ(outcome.setup.node_name(), fmt::format("vc-a-{}", rank));
        EXPECT_EQ(outcome.setup.address(), fmt::format("10.20.0.{}/29", rank));
    }
    // node1 ... node4 have underlays 172.16.1.11 ... .14: one run of 4.
    const auto view = fleets[0]->outcome(0).view;
    ASSERT_EQ(view.sites_size(), 1);
    const auto& site = view.sites(0);
    EXPECT_THAT(site.underlay_runs(), ::testing::ElementsAre(4U));
    const auto underlays = unpack_underlays(site);
    ASSERT_TRUE(underlays) << underlays.error().message;
    EXPECT_EQ((*underlays)[0].to_string(), "172.16.1.11");
    // The Slurm nodes in ordinal order: inside the job, node n of Slurm's list is vc-a-n.
    EXPECT_EQ(site.hosts(), "node[1-4]");
}

TEST_F(CrmTest, ARankOutOfRangeOrAlreadyHeldGetsTheLowestFreeNode) {
    const auto cluster = create(3);
    auto specs = pilots(cluster.id(), 3);
    specs[0].rank = 2;  // node 2
    specs[1].rank = 2;  // held: node 1, the lowest free
    specs[2].rank = 9;  // no such node: node 3, the lowest free
    auto fleets = attach_one_by_one(std::move(specs));
    const std::vector<std::string> expected = {"vc-a-2", "vc-a-1", "vc-a-3"};
    for (std::size_t i = 0; i < fleets.size(); ++i) {
        ASSERT_EQ(fleets[i]->wait_ready(1, 10s), 1U);
        EXPECT_EQ(fleets[i]->outcome(0).setup.node_name(), expected[i]);
    }
    // node1 holds vc-a-2, node2 vc-a-1: the view's hosts follow the ordinals, not the ranks.
    EXPECT_EQ(fleets[2]->outcome(0).view.sites(0).hosts(), "node[2,1,3]");
    EXPECT_EQ(wait_for(cluster.id(), v1::CLUSTER_STATE_READY).state(), v1::CLUSTER_STATE_READY);
}

TEST_F(CrmTest, ExchangeModeSendsEveryKeyAndNoCa) {
    const auto cluster = create(2, v1::KEY_MODE_EXCHANGE);
    auto specs = pilots(cluster.id(), 2);
    const std::string second_host_key = specs[1].host_key;
    auto pilot_fleet = fleet(std::move(specs));
    ASSERT_EQ(pilot_fleet->wait_ready(2, 10s), 2U);
    const auto view = pilot_fleet->outcome(0).view;
    EXPECT_TRUE(view.ca_key().empty());
    EXPECT_TRUE(view.host_certificate().empty());
    ASSERT_EQ(view.sites(0).host_keys_size(), 2);
    // In ordinal order, which follows the order the pilots attached in.
    EXPECT_THAT(view.sites(0).host_keys(), ::testing::Contains(second_host_key));
    EXPECT_EQ(view.sites(0).user_keys_size(), 2);
}

TEST_F(CrmTest, ReleaseStopsThePilotsAndFreesTheBlock) {
    const auto cluster = create(2);
    auto pilot_fleet = fleet(pilots(cluster.id(), 2));
    ASSERT_EQ(pilot_fleet->wait_ready(2, 10s), 2U);
    v1::Cluster released;
    ASSERT_TRUE(release(cluster.id(), &released).ok());
    ASSERT_TRUE(pilot_fleet->wait_done(10s));
    EXPECT_TRUE(pilot_fleet->outcome(0).got_shutdown);
    EXPECT_TRUE(pilot_fleet->outcome(1).got_shutdown);
    EXPECT_EQ(wait_for(cluster.id(), v1::CLUSTER_STATE_RELEASED).state(),
              v1::CLUSTER_STATE_RELEASED);
    // The block and VNI are free again.
    const auto next = create(2);
    EXPECT_EQ(next.sites(0).block(), cluster.sites(0).block());
    EXPECT_EQ(next.vni(), cluster.vni());
}

TEST_F(CrmTest, ReleaseWithoutPilotsIsImmediate) {
    const auto cluster = create(4);
    v1::Cluster released;
    ASSERT_TRUE(release(cluster.id(), &released).ok());
    EXPECT_EQ(released.state(), v1::CLUSTER_STATE_RELEASED);
}

TEST_F(CrmTest, AFailingPilotFailsTheClusterWithItsReason) {
    const auto cluster = create(2);
    auto specs = pilots(cluster.id(), 2);
    specs[1].state_after_view = v1::PILOT_STATE_FAILED;
    specs[1].failure_reason = "sshd would not start";
    auto pilot_fleet = fleet(std::move(specs));
    pilot_fleet->wait_ready(2, 10s);
    const auto failed = wait_for(cluster.id(), v1::CLUSTER_STATE_FAILED);
    EXPECT_EQ(failed.state(), v1::CLUSTER_STATE_FAILED);
    EXPECT_THAT(failed.reason(), AllOf(HasSubstr("node vc-a-"), HasSubstr("sshd would not start")));
}

TEST_F(CrmTest, PilotsAreRefusedWithoutTheRightCredential) {
    const auto cluster = create(2);
    auto specs = pilots(cluster.id(), 4);
    specs[0].credential = "";  // none
    specs[1].credential = munged_->credential_as(
        kNobody, "vcpilot-attach\n" + cluster.id() + "\nnode2\n1");  // not root
    specs[2].credential = munge_encode("vcpilot-attach\nvc-other\nnode3\n1",
                                       munged_->socket())
                              .value();      // another cluster
    specs[3].credential = "MUNGE:garbage:";  // malformed
    auto pilot_fleet = fleet(std::move(specs));
    ASSERT_TRUE(pilot_fleet->wait_done(10s));
    for (std::size_t i = 0; i < 4; ++i) {
        const auto outcome = pilot_fleet->outcome(i);
        EXPECT_EQ(outcome.final_status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << i;
        EXPECT_FALSE(outcome.got_setup) << i;
    }
    EXPECT_THAT(pilot_fleet->outcome(1).final_status.error_message(), HasSubstr("not root"));
    // Nothing changed: no node is held.
    v1::Cluster after;
    ASSERT_TRUE(get(cluster.id(), &after).ok());
    for (const auto& node : after.nodes()) {
        EXPECT_TRUE(node.host().empty());
    }
}

TEST_F(CrmTest, AnExtraPilotOrAnUnknownClusterIsRefused) {
    const auto cluster = create(1);
    auto specs = pilots(cluster.id(), 2);
    auto stray = pilots("vc-00000000", 1, 7);
    specs.push_back(stray[0]);
    auto pilot_fleet = fleet(std::move(specs));
    ASSERT_EQ(pilot_fleet->wait_ready(1, 10s), 1U);
    // Which of the first two gets the one node depends on who attaches first.
    const std::size_t winner = pilot_fleet->outcome(0).got_view ? 0 : 1;
    const std::size_t loser = 1 - winner;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while ((!pilot_fleet->outcome(loser).done || !pilot_fleet->outcome(2).done) &&
           std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(5ms);
    }
    EXPECT_EQ(pilot_fleet->outcome(loser).final_status.error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(pilot_fleet->outcome(loser).final_status.error_message(),
                HasSubstr("one too many"));
    EXPECT_FALSE(pilot_fleet->outcome(loser).got_setup);
    EXPECT_THAT(pilot_fleet->outcome(2).final_status.error_message(), HasSubstr("no cluster"));
    EXPECT_EQ(wait_for(cluster.id(), v1::CLUSTER_STATE_READY).state(), v1::CLUSTER_STATE_READY);
}

TEST_F(CrmTest, CallsWithoutOrWithTheWrongCredentialAreRefused) {
    v1::ListClustersRequest request;
    v1::ListClustersResponse response;
    auto c = client();
    {
        grpc::ClientContext context;  // no credential at all
        const auto status = c.stub().ListClusters(&context, request, &response);
        EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
        EXPECT_THAT(status.error_message(), HasSubstr("no MUNGE credential"));
    }
    {
        // A credential made for another method cannot be spent here.
        auto context = c.context("GetCluster").value();
        const auto status = c.stub().ListClusters(context.get(), request, &response);
        EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    }
    {
        // Nor can one be spent twice.
        const auto credential =
            munge_encode(munge_payload_for("ListClusters"), munged_->socket()).value();
        grpc::ClientContext first, second;
        first.AddMetadata(kMungeMetadata, credential);
        second.AddMetadata(kMungeMetadata, credential);
        EXPECT_TRUE(c.stub().ListClusters(&first, request, &response).ok());
        EXPECT_EQ(c.stub().ListClusters(&second, request, &response).error_code(),
                  grpc::StatusCode::UNAUTHENTICATED);
    }
}

TEST_F(CrmTest, UsersSeeAndChangeOnlyTheirOwnClusters) {
    const auto roots = create(1);
    auto c = client();
    auto as_nobody = [&](const std::string& method) {
        auto context = std::make_unique<grpc::ClientContext>();
        context->AddMetadata(kMungeMetadata,
                             munged_->credential_as(kNobody, munge_payload_for(method)));
        return context;
    };
    v1::ClusterRef ref;
    ref.set_id(roots.id());
    v1::Cluster cluster;
    auto status = c.stub().GetCluster(as_nobody("GetCluster").get(), ref, &cluster);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
    status = c.stub().ReleaseCluster(as_nobody("ReleaseCluster").get(), ref, &cluster);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
    v1::ListClustersRequest list;
    v1::ListClustersResponse listed;
    ASSERT_TRUE(c.stub().ListClusters(as_nobody("ListClusters").get(), list, &listed).ok());
    EXPECT_EQ(listed.clusters_size(), 0);
    list.set_all(true);
    EXPECT_EQ(c.stub().ListClusters(as_nobody("ListClusters").get(), list, &listed).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
    // Root's cluster is untouched.
    ASSERT_TRUE(get(roots.id(), &cluster).ok());
    EXPECT_EQ(cluster.state(), v1::CLUSTER_STATE_PENDING);
    // And nobody's own cluster is theirs: created, seen, released.
    v1::CreateClusterRequest request;
    request.add_sites()->set_site("a");
    request.mutable_sites(0)->set_nodes(1);
    ASSERT_TRUE(c.stub().CreateCluster(as_nobody("CreateCluster").get(), request, &cluster).ok());
    EXPECT_EQ(cluster.owner(), "nobody");
    ref.set_id(cluster.id());
    EXPECT_TRUE(c.stub().ReleaseCluster(as_nobody("ReleaseCluster").get(), ref, &cluster).ok());
}

TEST_F(CrmTest, BadCreateRequestsChangeNothing) {
    auto c = client();
    auto attempt = [&](const v1::CreateClusterRequest& request) {
        v1::Cluster cluster;
        auto context = c.context("CreateCluster").value();
        return c.stub().CreateCluster(context.get(), request, &cluster);
    };
    v1::CreateClusterRequest request;
    auto* site = request.add_sites();
    site->set_site("a");
    site->set_nodes(0);
    EXPECT_EQ(attempt(request).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    site->set_nodes(1000);  // more than a /24 holds
    auto status = attempt(request);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(status.error_message(), HasSubstr("10.20.0.0/24"));
    site->set_nodes(2);
    site->set_site("b");
    status = attempt(request);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("unknown site 'b'"));
    site->set_site("a");
    site->set_block("10.20.0.0/29");
    ASSERT_TRUE(attempt(request).ok());
    site->set_block("10.20.0.4/30");  // inside the first
    status = attempt(request);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(status.error_message(), HasSubstr("overlaps"));
    // Oversize: refused by the transport before it reaches the CRM.
    request.set_name_prefix(std::string(std::size_t{5} * 1024 * 1024, 'x'));
    EXPECT_EQ(attempt(request).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    v1::ListClustersRequest list;
    v1::ListClustersResponse listed;
    auto context = c.context("ListClusters").value();
    ASSERT_TRUE(c.stub().ListClusters(context.get(), list, &listed).ok());
    EXPECT_EQ(listed.clusters_size(), 1);
}

TEST_F(CrmTest, WatchStreamsEveryChangeUntilReleased) {
    const auto cluster = create(2);
    auto c = client();
    auto context = c.context("WatchCluster", 20s).value();
    v1::ClusterRef ref;
    ref.set_id(cluster.id());
    auto reader = c.stub().WatchCluster(context.get(), ref);
    v1::Cluster seen;
    ASSERT_TRUE(reader->Read(&seen));
    EXPECT_EQ(seen.state(), v1::CLUSTER_STATE_PENDING);
    auto pilot_fleet = fleet(pilots(cluster.id(), 2));
    std::vector<v1::ClusterState> states;
    bool released = false;
    while (reader->Read(&seen)) {
        states.push_back(seen.state());
        if (seen.state() == v1::CLUSTER_STATE_READY && !released) {
            v1::Cluster ignored;
            ASSERT_TRUE(release(cluster.id(), &ignored).ok());
            released = true;
        }
    }
    EXPECT_TRUE(reader->Finish().ok());
    ASSERT_FALSE(states.empty());
    EXPECT_EQ(states.back(), v1::CLUSTER_STATE_RELEASED);
    EXPECT_NE(std::find(states.begin(), states.end(), v1::CLUSTER_STATE_READY), states.end());
}

TEST_F(CrmTest, RunGoesToTheFirstNodeAndExecToEveryNode) {
    const auto cluster = create(3);
    auto pilot_fleet = fleet(pilots(cluster.id(), 3));
    ASSERT_EQ(wait_for(cluster.id(), v1::CLUSTER_STATE_READY).state(), v1::CLUSTER_STATE_READY);
    auto c = client();
    for (const bool every : {false, true}) {
        auto context = c.context(every ? "Exec" : "Run").value();
        v1::ClusterCommandRequest request;
        request.set_id(cluster.id());
        request.mutable_command()->add_argv("hostname");
        auto reader =
            every ? c.stub().Exec(context.get(), request) : c.stub().Run(context.get(), request);
        v1::NodeOutput output;
        std::set<std::string> nodes;
        int exits = 0;
        while (reader->Read(&output)) {
            nodes.insert(output.node());
            exits += output.output().has_exit_status() ? 1 : 0;
        }
        EXPECT_TRUE(reader->Finish().ok());
        EXPECT_EQ(exits, every ? 3 : 1);
        EXPECT_EQ(nodes.size(), every ? 3U : 1U);
    }
}

TEST_F(CrmTest, ARestartedCrmResumesAReleaseAndKeepsItsClusters) {
    const auto kept = create(2);
    const auto releasing = create(1);
    auto pilot_fleet = fleet(pilots(releasing.id(), 1));
    ASSERT_EQ(pilot_fleet->wait_ready(1, 10s), 1U);
    // Stop the CRM while the pilot has not confirmed the release yet: simulate by releasing,
    // then stopping before the pilot's GONE arrives is racy; instead, stop with the pilot
    // attached and release after the restart with no pilot coming back.
    pilot_fleet->cancel();
    pilot_fleet->wait_done(5s);
    stop();
    release_timeout_ = 300ms;
    start();
    v1::Cluster cluster;
    ASSERT_TRUE(get(kept.id(), &cluster).ok());
    EXPECT_EQ(cluster.state(), v1::CLUSTER_STATE_PENDING);
    ASSERT_TRUE(release(releasing.id(), &cluster).ok());
    EXPECT_EQ(wait_for(releasing.id(), v1::CLUSTER_STATE_RELEASED).state(),
              v1::CLUSTER_STATE_RELEASED);
}

TEST_F(CrmTest, APilotThatLosesItsStreamAndDoesNotComeBackFailsTheCluster) {
    stop();
    reattach_grace_ = 300ms;
    start();
    const auto cluster = create(2);
    auto pilot_fleet = fleet(pilots(cluster.id(), 2));
    ASSERT_EQ(pilot_fleet->wait_ready(2, 10s), 2U);
    ASSERT_EQ(wait_for(cluster.id(), v1::CLUSTER_STATE_READY).state(), v1::CLUSTER_STATE_READY);
    pilot_fleet->cancel();
    pilot_fleet->wait_done(5s);
    const auto failed = wait_for(cluster.id(), v1::CLUSTER_STATE_FAILED);
    ASSERT_EQ(failed.state(), v1::CLUSTER_STATE_FAILED);
    EXPECT_THAT(failed.reason(), HasSubstr("did not come back"));
    // The reservation holds until its owner releases it.
    v1::Cluster released;
    ASSERT_TRUE(release(cluster.id(), &released).ok());
    EXPECT_EQ(wait_for(cluster.id(), v1::CLUSTER_STATE_RELEASED).state(),
              v1::CLUSTER_STATE_RELEASED);
}

TEST_F(CrmTest, APilotThatComesBackWithinTheGraceKeepsItsNode) {
    stop();
    reattach_grace_ = 5s;
    start();
    const auto cluster = create(1);
    auto specs = pilots(cluster.id(), 1);
    auto first = fleet(specs);
    ASSERT_EQ(first->wait_ready(1, 10s), 1U);
    first->cancel();
    first->wait_done(5s);
    // The same pilot (host, job) attaches again: it keeps node 1 and the cluster stays up.
    auto again = fleet(specs);
    again->wait_ready(1, 3s);
    v1::Cluster cluster_now;
    ASSERT_TRUE(get(cluster.id(), &cluster_now).ok());
    EXPECT_NE(cluster_now.state(), v1::CLUSTER_STATE_FAILED) << cluster_now.reason();
    ASSERT_EQ(cluster_now.nodes_size(), 1);
    EXPECT_EQ(cluster_now.nodes(0).host(), "node1");
}

TEST_F(CrmTest, PilotsThatDoNotAttachAgainAfterARestartAreGone) {
    const auto cluster = create(1);
    auto pilot_fleet = fleet(pilots(cluster.id(), 1));
    ASSERT_EQ(pilot_fleet->wait_ready(1, 10s), 1U);
    pilot_fleet->cancel();
    pilot_fleet->wait_done(5s);
    stop();
    reattach_grace_ = 300ms;
    start();
    const auto failed = wait_for(cluster.id(), v1::CLUSTER_STATE_FAILED);
    ASSERT_EQ(failed.state(), v1::CLUSTER_STATE_FAILED);
    EXPECT_THAT(failed.reason(), HasSubstr("did not come back"));
    ASSERT_EQ(failed.nodes_size(), 1);
    EXPECT_EQ(failed.nodes(0).state(), v1::PILOT_STATE_GONE);
}

TEST_F(CrmTest, APilotThatStopsOnItsOwnFailsTheCluster) {
    const auto cluster = create(2);
    auto specs = pilots(cluster.id(), 2);
    specs[1].state_after_view = v1::PILOT_STATE_GONE;
    auto pilot_fleet = fleet(std::move(specs));
    pilot_fleet->wait_ready(2, 5s);
    const auto failed = wait_for(cluster.id(), v1::CLUSTER_STATE_FAILED);
    ASSERT_EQ(failed.state(), v1::CLUSTER_STATE_FAILED);
    EXPECT_THAT(failed.reason(), HasSubstr("its pilot stopped"));
}

// Pilots that Slurm started for a job (--vc) make the job's cluster themselves.
std::vector<SimPilotSpec> job_pilots(const std::string& job, std::size_t count,
                                     const std::string& block, const std::string& munge_socket) {
    std::vector<SimPilotSpec> specs;
    for (std::size_t i = 1; i <= count; ++i) {
        SimPilotSpec spec =
            pilot_spec("vcj-" + job, job, i, "172.16.1." + std::to_string(10 + i), munge_socket);
        v1::JobCluster cluster;
        cluster.set_user("nobody");
        cluster.set_nodes(static_cast<std::uint32_t>(count));
        cluster.set_block(block);
        spec.job_cluster = cluster;
        specs.push_back(std::move(spec));
    }
    return specs;
}

TEST_F(CrmTest, AJobsPilotsMakeItsCluster) {
    auto pilot_fleet = fleet(job_pilots("41", 2, "", munged_->socket()));
    ASSERT_EQ(pilot_fleet->wait_ready(2, 10s), 2U);
    const auto ready = wait_for("vcj-41", v1::CLUSTER_STATE_READY);
    ASSERT_EQ(ready.state(), v1::CLUSTER_STATE_READY);
    EXPECT_EQ(ready.owner(), "nobody");
    EXPECT_EQ(ready.sites(0).block(), "10.20.0.0/30");
}

TEST_F(CrmTest, AJobsNodesAreNamedInSlurmsOrderOfItsNodes) {
    auto fleets = attach_ranked_in_reverse(job_pilots("42", 3, "", munged_->socket()));
    for (std::size_t i = 0; i < fleets.size(); ++i) {
        ASSERT_EQ(fleets[i]->wait_ready(1, 10s), 1U);
        EXPECT_EQ(fleets[i]->outcome(0).setup.node_name(),
                  fmt::format("vc-a-{}", fleets.size() - i));
    }
}

TEST_F(CrmTest, TwoJobsMayNameTheSameRangeAndAJobsRangeIsNotThePools) {
    auto first = fleet(job_pilots("51", 2, "10.99.0.0/29", munged_->socket()));
    auto second = fleet(job_pilots("52", 2, "10.99.0.0/29", munged_->socket()));
    ASSERT_EQ(first->wait_ready(2, 10s), 2U);
    ASSERT_EQ(second->wait_ready(2, 10s), 2U);
    const auto one = wait_for("vcj-51", v1::CLUSTER_STATE_READY);
    const auto two = wait_for("vcj-52", v1::CLUSTER_STATE_READY);
    EXPECT_EQ(one.sites(0).block(), "10.99.0.0/29");
    EXPECT_EQ(two.sites(0).block(), "10.99.0.0/29");
    EXPECT_NE(one.vni(), two.vni());
    // The pool is untouched: a coordinated cluster still gets its first block.
    EXPECT_EQ(create(1).sites(0).block(), "10.20.0.0/30");
}

TEST_F(CrmTest, AJobClusterIsReleasedWhenAPilotOfItStops) {
    auto specs = job_pilots("61", 2, "", munged_->socket());
    specs[1].state_after_view = v1::PILOT_STATE_GONE;
    auto pilot_fleet = fleet(std::move(specs));
    pilot_fleet->wait_ready(2, 5s);
    const auto released = wait_for("vcj-61", v1::CLUSTER_STATE_RELEASED);
    EXPECT_EQ(released.state(), v1::CLUSTER_STATE_RELEASED);
    EXPECT_EQ(released.reason(), "the job ended");
    EXPECT_TRUE(pilot_fleet->wait_done(10s));
}

TEST_F(CrmTest, AJobClusterIdMustBeTheJobs) {
    auto specs = job_pilots("71", 1, "", munged_->socket());
    specs[0].cluster = "vcj-72";
    specs[0].credential =
        munge_encode("vcpilot-attach\nvcj-72\nnode1\n71", munged_->socket()).value();
    auto pilot_fleet = fleet(std::move(specs));
    ASSERT_TRUE(pilot_fleet->wait_done(5s));
    const auto outcome = pilot_fleet->outcome(0);
    EXPECT_EQ(outcome.final_status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(outcome.final_status.error_message(), HasSubstr("vcj-71"));
}

// Pilots that Slurm started for a job joining a reserved cluster (--vc-cluster=ID).
// Their hosts are node<first>... with underlay 172.16.1.<10 + 2 first>, +2 each: no two
// follow on from each other, so that a view carries one address per node.
std::vector<SimPilotSpec> join_pilots(const std::string& cluster, const std::string& job,
                                      std::size_t count, const std::string& user,
                                      const std::string& munge_socket, std::size_t first = 1) {
    std::vector<SimPilotSpec> specs;
    for (std::size_t i = first; i < first + count; ++i) {
        SimPilotSpec spec =
            pilot_spec(cluster, job, i, "172.16.1." + std::to_string(10 + 2 * i), munge_socket);
        v1::JoinCluster join;
        join.set_user(user);
        join.set_nodes(static_cast<std::uint32_t>(count));
        spec.join = join;
        specs.push_back(std::move(spec));
    }
    return specs;
}

// Every node of the cluster is free: no pilot holds it, nothing of a job is left on it.
void expect_all_free(const v1::Cluster& cluster) {
    for (const auto& node : cluster.nodes()) {
        EXPECT_EQ(node.host(), "") << node.name();
        EXPECT_EQ(node.state(), v1::PILOT_STATE_NEW) << node.name();
    }
}

TEST_F(CrmTest, AJobJoinsAReservedClusterWhichOutlivesItForTheNextJob) {
    const auto cluster = create(2);
    for (const std::string job : {"81", "82"}) {
        auto pilot_fleet =
            fleet(join_pilots(cluster.id(), job, 2, cluster.owner(), munged_->socket()));
        ASSERT_EQ(pilot_fleet->wait_ready(2, 10s), 2U) << "job " << job;
        const auto ready = wait_for(cluster.id(), v1::CLUSTER_STATE_READY);
        ASSERT_EQ(ready.state(), v1::CLUSTER_STATE_READY) << ready.reason();
        std::set<std::string> names;
        for (std::size_t i = 0; i < 2; ++i) {
            EXPECT_EQ(pilot_fleet->outcome(i).setup.cluster_id(), cluster.id());
            names.insert(pilot_fleet->outcome(i).setup.node_name());
        }
        EXPECT_EQ(names, (std::set<std::string>{"vc-a-1", "vc-a-2"}));
        // The job ends: its pilots stop, the nodes are free again, the cluster waits for the
        // next job instead of failing or being released.
        pilot_fleet->stop_pilot(0);
        pilot_fleet->stop_pilot(1);
        ASSERT_TRUE(pilot_fleet->wait_done(10s));
        const auto pending = wait_for(cluster.id(), v1::CLUSTER_STATE_PENDING);
        ASSERT_EQ(pending.state(), v1::CLUSTER_STATE_PENDING) << pending.reason();
        expect_all_free(pending);
    }
}

// Jobs joining a reserved cluster: each gets the nodes of its ranks while they are free, else
// the lowest free ones.
TEST_F(CrmTest, AJobJoiningAClusterGetsTheNodesOfItsRanksWhenTheyAreFree) {
    const auto cluster = create(4);
    auto first = join_pilots(cluster.id(), "85", 2, cluster.owner(), munged_->socket(), 1);
    auto second = join_pilots(cluster.id(), "86", 2, cluster.owner(), munged_->socket(), 3);
    for (auto* job : {&first, &second}) {
        for (std::size_t i = 0; i < job->size(); ++i) {
            (*job)[i].rank = static_cast<std::uint32_t>(i + 1);
        }
        std::reverse(job->begin(), job->end());
    }
    auto a = attach_one_by_one(std::move(first));
    auto b = attach_one_by_one(std::move(second));
    // The second job's nodes 1 and 2 are the first job's: its node 2 gets 3, its node 1 gets 4.
    const std::vector<std::string> expected = {"vc-a-2", "vc-a-1", "vc-a-3", "vc-a-4"};
    for (std::size_t i = 0; i < 4; ++i) {
        auto& pilot = i < 2 ? a[i] : b[i - 2];
        ASSERT_EQ(pilot->wait_ready(1, 10s), 1U);
        EXPECT_EQ(pilot->outcome(0).setup.node_name(), expected[i]);
    }
}

TEST_F(CrmTest, AJobIsRefusedAClusterItsUserDoesNotOwnAsIfItDidNotExist) {
    const auto cluster = create(1);
    v1::Cluster gone;
    const auto released = create(1);
    ASSERT_TRUE(release(released.id(), &gone).ok());
    ASSERT_EQ(wait_for(released.id(), v1::CLUSTER_STATE_RELEASED).state(),
              v1::CLUSTER_STATE_RELEASED);
    for (const auto& [id, user] : {std::pair{cluster.id(), std::string("nobody")},
                                   std::pair{std::string("vc-0badc0de"), cluster.owner()},
                                   std::pair{released.id(), cluster.owner()}}) {
        auto pilot_fleet = fleet(join_pilots(id, "91", 1, user, munged_->socket()));
        ASSERT_TRUE(pilot_fleet->wait_done(5s));
        const auto outcome = pilot_fleet->outcome(0);
        EXPECT_FALSE(outcome.got_setup);
        EXPECT_EQ(outcome.final_status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
        EXPECT_EQ(outcome.final_status.error_message(),
                  fmt::format("no cluster '{}' of '{}' at site a", id, user));
    }
    v1::Cluster untouched;
    ASSERT_TRUE(get(cluster.id(), &untouched).ok());
    EXPECT_EQ(untouched.state(), v1::CLUSTER_STATE_PENDING);
    expect_all_free(untouched);
}

TEST_F(CrmTest, AJobWithMoreNodesThanAreFreeIsRefusedAndHoldsNothing) {
    const auto cluster = create(2);
    auto pilot_fleet =
        fleet(join_pilots(cluster.id(), "93", 3, cluster.owner(), munged_->socket()));
    ASSERT_TRUE(pilot_fleet->wait_done(5s));
    for (std::size_t i = 0; i < 3; ++i) {
        const auto outcome = pilot_fleet->outcome(i);
        EXPECT_EQ(outcome.final_status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
        EXPECT_EQ(
            outcome.final_status.error_message(),
            fmt::format("cluster {} has 2 free node(s) at site a, job 93 has 3", cluster.id()));
    }
    v1::Cluster untouched;
    ASSERT_TRUE(get(cluster.id(), &untouched).ok());
    expect_all_free(untouched);
    // A job that fits still gets in.
    auto fitting = fleet(join_pilots(cluster.id(), "94", 2, cluster.owner(), munged_->socket()));
    EXPECT_EQ(fitting->wait_ready(2, 10s), 2U);
}

TEST_F(CrmTest, AJobsPilotThatGoesAwayGivesItsNodeBackWithoutFailingTheCluster) {
    stop();
    reattach_grace_ = 300ms;
    start();
    const auto cluster = create(2);
    auto pilot_fleet =
        fleet(join_pilots(cluster.id(), "95", 2, cluster.owner(), munged_->socket()));
    ASSERT_EQ(pilot_fleet->wait_ready(2, 10s), 2U);
    ASSERT_EQ(wait_for(cluster.id(), v1::CLUSTER_STATE_READY).state(), v1::CLUSTER_STATE_READY);
    pilot_fleet->cancel();  // kill -9 of the pilots: no STOPPING, no GONE
    pilot_fleet->wait_done(5s);
    std::this_thread::sleep_for(600ms);
    v1::Cluster after;
    ASSERT_TRUE(get(cluster.id(), &after).ok());
    EXPECT_EQ(after.state(), v1::CLUSTER_STATE_PENDING) << after.reason();
    expect_all_free(after);
}

TEST_F(CrmTest, AJobsImageGoesToItsNodesSetup) {
    const auto cluster = create(1);
    auto specs = join_pilots(cluster.id(), "96", 1, cluster.owner(), munged_->socket());
    specs[0].join->set_image("/srv/images/job");
    specs[0].join->set_image_mount("/mnt");
    auto pilot_fleet = fleet(std::move(specs));
    ASSERT_EQ(pilot_fleet->wait_ready(1, 10s), 1U);
    EXPECT_EQ(pilot_fleet->outcome(0).setup.image(), "/srv/images/job");
    EXPECT_EQ(pilot_fleet->outcome(0).setup.image_mount(), "/mnt");
}

TEST_F(CrmTest, AJobCannotJoinAnotherJobsCluster) {
    auto owner = fleet(job_pilots("97", 1, "", munged_->socket()));
    ASSERT_EQ(owner->wait_ready(1, 10s), 1U);
    auto specs = join_pilots("vcj-97", "98", 1, "nobody", munged_->socket());
    auto pilot_fleet = fleet(std::move(specs));
    ASSERT_TRUE(pilot_fleet->wait_done(5s));
    EXPECT_THAT(pilot_fleet->outcome(0).final_status.error_message(),
                HasSubstr("is another job's own"));
}

// The underlay addresses a view gives the nodes of its (only) site, sorted; for nodes whose
// underlays do not follow on from each other (join_pilots), one packed address per node.
std::vector<std::string> underlays(const v1::ClusterView& view) {
    std::vector<std::string> out;
    const std::string& packed = view.sites(0).underlay();
    for (std::size_t i = 0; i + 4 <= packed.size(); i += 4) {
        out.push_back(fmt::format("{}.{}.{}.{}", static_cast<unsigned char>(packed[i]),
                                  static_cast<unsigned char>(packed[i + 1]),
                                  static_cast<unsigned char>(packed[i + 2]),
                                  static_cast<unsigned char>(packed[i + 3])));
    }
    std::sort(out.begin(), out.end());
    return out;
}

TEST_F(CrmTest, JobsSharingAClusterAllGetTheViewAgainWhenANewJobFillsIt) {
    const auto cluster = create(4);
    const std::string& owner = cluster.owner();
    auto a = fleet(join_pilots(cluster.id(), "101", 2, owner, munged_->socket(), 1));
    auto b = fleet(join_pilots(cluster.id(), "102", 2, owner, munged_->socket(), 3));
    ASSERT_EQ(a->wait_ready(2, 10s), 2U);
    ASSERT_EQ(b->wait_ready(2, 10s), 2U);
    ASSERT_EQ(wait_for(cluster.id(), v1::CLUSTER_STATE_READY).state(), v1::CLUSTER_STATE_READY);
    a->stop_pilot(0);
    a->stop_pilot(1);
    ASSERT_TRUE(a->wait_done(10s));
    ASSERT_EQ(wait_for(cluster.id(), v1::CLUSTER_STATE_PENDING).state(), v1::CLUSTER_STATE_PENDING);
    auto c = fleet(join_pilots(cluster.id(), "103", 2, owner, munged_->socket(), 5));
    ASSERT_EQ(c->wait_ready(2, 10s), 2U);
    ASSERT_EQ(wait_for(cluster.id(), v1::CLUSTER_STATE_READY).state(), v1::CLUSTER_STATE_READY);
    const std::vector<std::string> now = {"172.16.1.16", "172.16.1.18", "172.16.1.20",
                                          "172.16.1.22"};
    EXPECT_EQ(underlays(c->outcome(0).view), now);
    // B's nodes stayed, and learned where C's nodes are.
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (underlays(b->outcome(0).view) != now && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(5ms);
    }
    EXPECT_EQ(underlays(b->outcome(0).view), now);
    EXPECT_EQ(underlays(b->outcome(1).view), now);
}
// ---- clusters whose pilots come from a Slurm job the CRM submits ----

class CrmSlurmTest : public CrmTest {
  protected:
    void SetUp() override {
        // Stand-ins for Slurm's commands: each logs "<user> <args>"; sbatch prints job 4242.
        for (const auto& [name, body] : {std::pair{"squeue", ""}, std::pair{"sbatch", "echo 4242"},
                                         std::pair{"scancel", ""}}) {
            tool(name, body);
        }
        SlurmOptions options;
        options.bin_dir = bin_.path();
        options.timeout = 5s;
        slurm_ = options;
        CrmTest::SetUp();
    }

    void tool(const std::string& name, const std::string& body) {
        const auto path =
            bin_.write(name, "#!/bin/sh\necho \"$(id -un) $*\" >> \"" +
                                 (bin_.path() / (name + ".log")).string() + "\"\n" + body + "\n");
        std::filesystem::permissions(path, std::filesystem::perms::owner_all);
    }
    std::string log(const std::string& name) const {
        std::ifstream in(bin_.path() / (name + ".log"));
        return std::string(std::istreambuf_iterator<char>(in), {});
    }
    // Waits (bounded) until `name` has logged a line containing `text`.
    bool logged(const std::string& name, const std::string& text) const {
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        while (std::chrono::steady_clock::now() < deadline) {
            if (log(name).find(text) != std::string::npos) {
                return true;
            }
            std::this_thread::sleep_for(5ms);
        }
        return false;
    }

    grpc::Status create_slurm(std::uint32_t nodes, std::uint32_t walltime, v1::Cluster* cluster) {
        v1::CreateClusterRequest request;
        auto* site = request.add_sites();
        site->set_site("a");
        site->set_nodes(nodes);
        request.set_pilots(v1::PILOT_SOURCE_SLURM);
        request.set_walltime_minutes(walltime);
        auto c = client();
        auto context = c.context("CreateCluster").value();
        return c.stub().CreateCluster(context.get(), request, cluster);
    }

    // Waits (bounded) until the site's pilot job is recorded.
    std::string pilot_job(const std::string& id) {
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        v1::Cluster cluster;
        while (std::chrono::steady_clock::now() < deadline) {
            if (get(id, &cluster).ok() && !cluster.sites(0).pilot_job().empty()) {
                break;
            }
            std::this_thread::sleep_for(5ms);
        }
        return cluster.sites_size() > 0 ? cluster.sites(0).pilot_job() : "";
    }

    TempDir bin_;
};

TEST_F(CrmSlurmTest, TheSitesPilotJobIsSubmittedAsTheOwnerAndCancelledOnRelease) {
    v1::Cluster cluster;
    ASSERT_TRUE(create_slurm(2, 60, &cluster).ok());
    EXPECT_EQ(cluster.pilots(), v1::PILOT_SOURCE_SLURM);
    EXPECT_EQ(cluster.walltime_minutes(), 60U);
    EXPECT_GT(cluster.expires_unix_ms(), cluster.created_unix_ms());
    ASSERT_EQ(pilot_job(cluster.id()), "4242");
    const std::string sbatch = log("sbatch");
    for (const std::string& expected :
         std::vector<std::string>{"root --parsable", "--job-name=" + cluster.id(), "--nodes=2",
                                  "--time=62", "--vc-cluster=" + cluster.id()}) {
        EXPECT_THAT(sbatch, HasSubstr(expected));
    }
    // The job's pilots join, the cluster is READY; the release cancels the job.
    auto pilot_fleet =
        fleet(join_pilots(cluster.id(), "4242", 2, cluster.owner(), munged_->socket()));
    ASSERT_EQ(pilot_fleet->wait_ready(2, 10s), 2U);
    ASSERT_EQ(wait_for(cluster.id(), v1::CLUSTER_STATE_READY).state(), v1::CLUSTER_STATE_READY);
    v1::Cluster released;
    ASSERT_TRUE(release(cluster.id(), &released).ok());
    EXPECT_TRUE(logged("scancel", "root 4242")) << log("scancel");
    ASSERT_TRUE(pilot_fleet->wait_done(10s));
    EXPECT_EQ(wait_for(cluster.id(), v1::CLUSTER_STATE_RELEASED).state(),
              v1::CLUSTER_STATE_RELEASED);
    EXPECT_EQ(log("sbatch").size(), sbatch.size()) << "submitted once";
}

TEST_F(CrmSlurmTest, APilotJobThatEndsBeforeTheReleaseFailsTheClusterWithTheReason) {
    v1::Cluster cluster;
    ASSERT_TRUE(create_slurm(2, 0, &cluster).ok());
    ASSERT_EQ(pilot_job(cluster.id()), "4242");
    EXPECT_THAT(log("sbatch"), Not(HasSubstr("--time")));
    auto pilot_fleet =
        fleet(join_pilots(cluster.id(), "4242", 2, cluster.owner(), munged_->socket()));
    ASSERT_EQ(pilot_fleet->wait_ready(2, 10s), 2U);
    // scancel by someone else, or its time limit: the job's pilots stop.
    pilot_fleet->stop_pilot(0);
    const auto failed = wait_for(cluster.id(), v1::CLUSTER_STATE_FAILED);
    ASSERT_EQ(failed.state(), v1::CLUSTER_STATE_FAILED);
    EXPECT_THAT(failed.reason(), HasSubstr("(Slurm job 4242)"));
    EXPECT_THAT(failed.reason(), HasSubstr("before the release"));
}

TEST_F(CrmSlurmTest, ASubmissionSlurmRefusesFailsTheClusterWithSlurmsMessage) {
    tool("sbatch",
         "echo 'sbatch: error: Batch job submission failed: Invalid account' >&2; exit 1");
    v1::Cluster cluster;
    ASSERT_TRUE(create_slurm(2, 0, &cluster).ok());
    const auto failed = wait_for(cluster.id(), v1::CLUSTER_STATE_FAILED);
    ASSERT_EQ(failed.state(), v1::CLUSTER_STATE_FAILED);
    EXPECT_THAT(failed.reason(), HasSubstr("Invalid account"));
    v1::Cluster released;
    ASSERT_TRUE(release(failed.id(), &released).ok());
    EXPECT_EQ(wait_for(failed.id(), v1::CLUSTER_STATE_RELEASED).state(),
              v1::CLUSTER_STATE_RELEASED);
}

TEST_F(CrmSlurmTest, ARestartedCrmSubmitsTheJobItHadNotSubmittedYetButNotTwice) {
    tool("sbatch", "sleep 1; echo 4242");
    v1::Cluster cluster;
    ASSERT_TRUE(create_slurm(1, 0, &cluster).ok());
    stop();                       // while sbatch runs: its answer is lost
    tool("squeue", "echo 4242");  // but Slurm has the job
    start();
    ASSERT_EQ(pilot_job(cluster.id()), "4242");
}

TEST_F(CrmTest, ClustersWithPilotsFromSlurmAreRefusedByACrmWithoutSlurm) {
    v1::CreateClusterRequest request;
    auto* site = request.add_sites();
    site->set_site("a");
    site->set_nodes(1);
    request.set_pilots(v1::PILOT_SOURCE_SLURM);
    auto c = client();
    v1::Cluster cluster;
    auto context = c.context("CreateCluster").value();
    const auto status = c.stub().CreateCluster(context.get(), request, &cluster);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("--slurm-conf"));
    request.set_pilots(static_cast<v1::PilotSource>(9));
    auto again = c.context("CreateCluster").value();
    EXPECT_EQ(c.stub().CreateCluster(again.get(), request, &cluster).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
    request.set_pilots(v1::PILOT_SOURCE_JOBS);
    request.set_walltime_minutes(10'000'000);
    auto third = c.context("CreateCluster").value();
    const auto long_one = c.stub().CreateCluster(third.get(), request, &cluster);
    EXPECT_THAT(long_one.error_message(), HasSubstr("walltime"));
}

}  // namespace
}  // namespace vcpilot::coordinator
