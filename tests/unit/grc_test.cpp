// The GRC as its clients see it: a real vc-grcd engine behind a gRPC server with mutual TLS on
// loopback, two real CRM engines (sites "a" and "b") connected to it with their site
// certificates, simulated pilots at each site, and vcctl's client code.
#include "grc/grc.hpp"

#include <fmt/format.h>
#include <fstream>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <set>

#include "common/underlays.hpp"
#include "coordinator/daemon.hpp"
#include "coordinator/sshcert.hpp"
#include "crm/crm.hpp"
#include "literals.hpp"
#include "tests/support/sim_pilot.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_munged.hpp"
#include "tests/support/test_pki.hpp"
#include "vcctl/client.hpp"

namespace vcpilot::coordinator {
namespace {

using ::testing::HasSubstr;
using vcpilot::testing::TempDir;
using vcpilot::testing::TestMunged;
using vcpilot::testing::TestPki;
using vcpilot::testing::TlsIdentity;
using namespace std::chrono_literals;

class GrcTest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!TestMunged::available()) {
            GTEST_SKIP() << "needs root and munged (scripts/install-deps.sh installs it)";
        }
        auto pki = TestPki::make(dir_.path() / "pki",
                                 {.sites = {"a", "b", "c"}, .users = {"alice", "bob", "root"}});
        ASSERT_TRUE(pki) << pki.error().message;
        pki_.emplace(std::move(*pki));
        munged_ = std::make_unique<TestMunged>();
        start_grc();
        start_crm("a");
        start_crm("b");
    }

    void TearDown() override {
        for (auto& [site, crm] : crms_) {
            stop_crm(site);
        }
        stop_grc();
    }

    void start_grc() {
        GrcOptions options{.sites = {"a", "b", "c"}, .pool = pool_of({cidr("10.96.0.0/24")})};
        options.vni_first = 5000;
        options.vni_last = 5099;
        options.release_timeout = release_timeout_;
        options.n2n_supernode = supernode_;
        auto store = LeaseStore::open(dir_.path() / "grc.db").value();
        grc_ = GrcServer::start(std::move(options), ClusterStore(std::move(store))).value();
        grpc::ServerBuilder builder;
        int port = 0;
        const std::string listen =
            grc_port_ != 0 ? fmt::format("127.0.0.1:{}", grc_port_) : "127.0.0.1:0";
        builder.AddListeningPort(listen, pki_->grc_server_credentials(), &port);
        builder.RegisterService(grc_->service());
        grc_server_ = builder.BuildAndStart();
        ASSERT_TRUE(grc_server_);
        ASSERT_NE(port, 0);
        grc_port_ = port;
    }
    void stop_grc() {
        if (grc_server_) {
            grc_server_->Shutdown(std::chrono::system_clock::now() + 1s);
            grc_server_.reset();
        }
        grc_.reset();
    }

    struct Site {
        std::unique_ptr<CrmServer> crm;
        std::unique_ptr<grpc::Server> server;
    };

    std::string crm_target(const std::string& site) const {
        return "unix:" + (dir_.path() / ("crm-" + site + ".sock")).string();
    }

    void start_crm(const std::string& site) {
        CrmOptions options;
        options.site = site;
        options.munge_socket = munged_->socket();
        options.release_timeout = release_timeout_;
        options.grc = GrcUplinkOptions{fmt::format("127.0.0.1:{}", grc_port_), pki_->ca(),
                                       pki_->crm(site).cert, pki_->crm(site).key};
        options.behind_nat = natted_.contains(site);
        if (auto bin = slurm_bins_.find(site); bin != slurm_bins_.end()) {
            SlurmOptions slurm;
            slurm.bin_dir = bin->second;
            slurm.timeout = 5s;
            options.slurm = slurm;
        }
        auto store = LeaseStore::open(dir_.path() / ("crm-" + site + ".db")).value();
        Site out;
        out.crm = CrmServer::start(std::move(options), ClusterStore(std::move(store))).value();
        grpc::ServerBuilder builder;
        builder.AddListeningPort(crm_target(site), grpc::InsecureServerCredentials());
        builder.RegisterService(out.crm->service());
        out.server = builder.BuildAndStart();
        ASSERT_TRUE(out.server);
        crms_[site] = std::move(out);
    }
    void stop_crm(const std::string& site) {
        auto& entry = crms_[site];
        if (entry.server) {
            entry.server->Shutdown(std::chrono::system_clock::now() + 1s);
            entry.server.reset();
        }
        entry.crm.reset();
    }

    ClusterClient user(const std::string& name) const {
        const TlsIdentity& identity =
            name.starts_with("crm:") ? pki_->crm(name.substr(4)) : pki_->user(name);
        return ClusterClient::grc({fmt::format("127.0.0.1:{}", grc_port_), pki_->ca(),
                                   identity.cert, identity.key})
            .value();
    }
    ClusterClient site_root(const std::string& site) const {
        return ClusterClient::crm({crm_target(site), munged_->socket()}).value();
    }

    grpc::Status create(const ClusterClient& client,
                        const std::vector<std::pair<std::string, std::uint32_t>>& sites,
                        v1::Cluster* cluster, v1::KeyMode mode = v1::KEY_MODE_CA,
                        const std::vector<std::string>& blocks = {}) {
        v1::CreateClusterRequest request;
        for (std::size_t i = 0; i < sites.size(); ++i) {
            auto* site = request.add_sites();
            site->set_site(sites[i].first);
            site->set_nodes(sites[i].second);
            if (i < blocks.size()) {
                site->set_block(blocks[i]);
            }
        }
        request.set_key_mode(mode);
        auto context = client.context("CreateCluster").value();
        return client.call(
            [&](auto& stub) { return stub.CreateCluster(context.get(), request, cluster); });
    }

    grpc::Status get(const ClusterClient& client, const std::string& id, v1::Cluster* cluster) {
        v1::ClusterRef ref;
        ref.set_id(id);
        auto context = client.context("GetCluster").value();
        return client.call(
            [&](auto& stub) { return stub.GetCluster(context.get(), ref, cluster); });
    }

    grpc::Status release(const ClusterClient& client, const std::string& id) {
        v1::ClusterRef ref;
        ref.set_id(id);
        v1::Cluster cluster;
        auto context = client.context("ReleaseCluster").value();
        return client.call(
            [&](auto& stub) { return stub.ReleaseCluster(context.get(), ref, &cluster); });
    }

    // Waits (bounded) until `client` sees the cluster in `state`.
    v1::Cluster wait_for(const ClusterClient& client, const std::string& id,
                         v1::ClusterState state) {
        v1::Cluster cluster;
        const auto deadline = std::chrono::steady_clock::now() + 15s;
        while (std::chrono::steady_clock::now() < deadline) {
            if (get(client, id, &cluster).ok() && cluster.state() == state) {
                break;
            }
            std::this_thread::sleep_for(10ms);
        }
        return cluster;
    }

    // Waits (bounded) until the site's CRM holds the cluster.
    bool assigned(const std::string& site, const std::string& id) {
        v1::Cluster cluster;
        const auto deadline = std::chrono::steady_clock::now() + 15s;
        while (std::chrono::steady_clock::now() < deadline) {
            if (get(site_root(site), id, &cluster).ok()) {
                return true;
            }
            std::this_thread::sleep_for(10ms);
        }
        return false;
    }

    std::unique_ptr<SimPilotFleet> pilots(const std::string& site, const std::string& cluster,
                                          std::size_t count) {
        std::vector<SimPilotSpec> specs;
        for (std::size_t i = 1; i <= count; ++i) {
            SimPilotSpec spec;
            spec.cluster = cluster;
            spec.host = fmt::format("{}-node{}", site, i);
            spec.underlay = fmt::format("172.16.{}.{}", site == "a" ? 1 : 2, 10 + i);
            mint_credential(spec, munged_->socket()).value();
            spec.host_key = SshCa::generate().value().public_key_line("host");
            spec.user_key = SshCa::generate().value().public_key_line("user");
            specs.push_back(std::move(spec));
        }
        auto fleet = std::make_unique<SimPilotFleet>(separate_channels(crm_target(site), count),
                                                     std::move(specs));
        fleet->start();
        return fleet;
    }

    std::chrono::milliseconds release_timeout_ = 5s;
    std::string supernode_;
    TempDir dir_;
    std::optional<TestPki> pki_;
    std::unique_ptr<TestMunged> munged_;
    std::unique_ptr<GrcServer> grc_;
    std::unique_ptr<grpc::Server> grc_server_;
    int grc_port_ = 0;
    std::map<std::string, Site> crms_;
    // Sites whose CRM submits pilot jobs, to stand-ins for Slurm's commands in this directory.
    std::map<std::string, std::filesystem::path> slurm_bins_;
    std::set<std::string> natted_;  // sites whose CRM says they are behind NAT
};

TEST_F(GrcTest, CreatesOneBlockPerSiteFromTheGlobalPoolAndAssignsEachSiteItsShare) {
    v1::Cluster cluster;
    ASSERT_TRUE(create(user("alice"), {{"a", 2}, {"b", 3}}, &cluster).ok());
    EXPECT_EQ(cluster.owner(), "alice");
    EXPECT_EQ(cluster.state(), v1::CLUSTER_STATE_PENDING);
    EXPECT_EQ(cluster.vni(), 5000u);
    ASSERT_EQ(cluster.sites_size(), 2);
    const Cidr a = cidr(cluster.sites(0).block());
    const Cidr b = cidr(cluster.sites(1).block());
    EXPECT_FALSE(a.overlaps(b));
    EXPECT_TRUE(cidr("10.96.0.0/24").contains(a) && cidr("10.96.0.0/24").contains(b));

    for (const auto& [site, index] : {std::pair{"a", 0}, std::pair{"b", 1}}) {
        ASSERT_TRUE(assigned(site, cluster.id())) << site;
        v1::Cluster there;
        ASSERT_TRUE(get(site_root(site), cluster.id(), &there).ok());
        ASSERT_EQ(there.sites_size(), 1);
        EXPECT_EQ(there.sites(0).block(), cluster.sites(index).block()) << site;
        EXPECT_EQ(there.vni(), cluster.vni());
        EXPECT_EQ(there.owner(), "alice");
    }
}

class GrcKeyModes : public GrcTest, public ::testing::WithParamInterface<v1::KeyMode> {};

TEST_P(GrcKeyModes, TheBarrierSpansSitesAndEveryNodeGetsTheWholeCluster) {
    v1::Cluster cluster;
    ASSERT_TRUE(create(user("alice"), {{"a", 2}, {"b", 2}}, &cluster, GetParam()).ok());
    ASSERT_TRUE(assigned("a", cluster.id()));
    ASSERT_TRUE(assigned("b", cluster.id()));
    auto fleet_a = pilots("a", cluster.id(), 2);
    // Site a alone cannot pass the barrier.
    EXPECT_EQ(fleet_a->wait_ready(2, 300ms), 0u);
    auto fleet_b = pilots("b", cluster.id(), 2);
    ASSERT_EQ(fleet_a->wait_ready(2, 15s), 2u);
    ASSERT_EQ(fleet_b->wait_ready(2, 15s), 2u);
    EXPECT_EQ(wait_for(user("alice"), cluster.id(), v1::CLUSTER_STATE_READY).state(),
              v1::CLUSTER_STATE_READY);

    std::set<std::string> names;
    for (auto* fleet : {fleet_a.get(), fleet_b.get()}) {
        for (std::size_t i = 0; i < fleet->size(); ++i) {
            const auto outcome = fleet->outcome(i);
            names.insert(outcome.setup.node_name());
            const v1::ClusterView& view = outcome.view;
            ASSERT_EQ(view.sites_size(), 2);
            for (const auto& site : view.sites()) {
                const auto underlays = unpack_underlays(site);
                ASSERT_TRUE(underlays) << underlays.error().message;
                std::set<std::string> got;  // site K's nodes: 172.16.K.11-12, in any order
                for (const auto& underlay : *underlays) {
                    got.insert(underlay.to_string());
                }
                const std::string lan = site.site() == "a" ? "172.16.1." : "172.16.2.";
                EXPECT_EQ(got, (std::set<std::string>{lan + "11", lan + "12"}));
                EXPECT_EQ(site.host_keys_size(), GetParam() == v1::KEY_MODE_EXCHANGE ? 2 : 0);
            }
            if (GetParam() == v1::KEY_MODE_CA) {
                EXPECT_THAT(view.ca_key(), HasSubstr("ssh-ed25519"));
                EXPECT_THAT(view.host_certificate(), HasSubstr("ssh-ed25519-cert-v01"));
                EXPECT_THAT(view.user_certificate(), HasSubstr("ssh-ed25519-cert-v01"));
            } else {
                EXPECT_TRUE(view.ca_key().empty());
                EXPECT_TRUE(view.host_certificate().empty());
            }
        }
    }
    EXPECT_EQ(names, (std::set<std::string>{"vc-a-1", "vc-a-2", "vc-b-1", "vc-b-2"}));
}

INSTANTIATE_TEST_SUITE_P(Modes, GrcKeyModes,
                         ::testing::Values(v1::KEY_MODE_CA, v1::KEY_MODE_EXCHANGE),
                         [](const ::testing::TestParamInfo<v1::KeyMode>& mode) {
                             return mode.param == v1::KEY_MODE_CA ? "Ca" : "Exchange";
                         });

TEST_F(GrcTest, ReleaseStopsThePilotsAtEverySiteAndFreesTheBlocksForReuse) {
    v1::Cluster cluster;
    ASSERT_TRUE(create(user("alice"), {{"a", 1}, {"b", 1}}, &cluster).ok());
    ASSERT_TRUE(assigned("a", cluster.id()) && assigned("b", cluster.id()));
    auto fleet_a = pilots("a", cluster.id(), 1);
    auto fleet_b = pilots("b", cluster.id(), 1);
    ASSERT_EQ(fleet_a->wait_ready(1, 15s) + fleet_b->wait_ready(1, 15s), 2u);

    ASSERT_TRUE(release(user("alice"), cluster.id()).ok());
    EXPECT_TRUE(fleet_a->wait_done(10s));
    EXPECT_TRUE(fleet_b->wait_done(10s));
    EXPECT_TRUE(fleet_a->outcome(0).got_shutdown);
    EXPECT_TRUE(fleet_b->outcome(0).got_shutdown);
    EXPECT_EQ(wait_for(user("alice"), cluster.id(), v1::CLUSTER_STATE_RELEASED).state(),
              v1::CLUSTER_STATE_RELEASED);
    for (const char* site : {"a", "b"}) {
        EXPECT_EQ(wait_for(site_root(site), cluster.id(), v1::CLUSTER_STATE_RELEASED).state(),
                  v1::CLUSTER_STATE_RELEASED)
            << site;
    }

    v1::Cluster again;
    ASSERT_TRUE(create(user("bob"), {{"a", 1}, {"b", 1}}, &again).ok());
    EXPECT_EQ(again.sites(0).block(), cluster.sites(0).block());
    EXPECT_EQ(again.sites(1).block(), cluster.sites(1).block());
    EXPECT_EQ(again.vni(), cluster.vni());
}

TEST_F(GrcTest, ASiteThatConnectsLateGetsItsAssignmentAndTheClusterComesUp) {
    stop_crm("b");
    v1::Cluster cluster;
    ASSERT_TRUE(create(user("alice"), {{"a", 1}, {"b", 1}}, &cluster).ok());
    ASSERT_TRUE(assigned("a", cluster.id()));
    auto fleet_a = pilots("a", cluster.id(), 1);
    start_crm("b");
    ASSERT_TRUE(assigned("b", cluster.id()));
    auto fleet_b = pilots("b", cluster.id(), 1);
    EXPECT_EQ(fleet_a->wait_ready(1, 15s), 1u);
    EXPECT_EQ(fleet_b->wait_ready(1, 15s), 1u);
}

TEST_F(GrcTest, AGrcRestartDuringBringUpResumesIt) {
    v1::Cluster cluster;
    ASSERT_TRUE(create(user("alice"), {{"a", 1}, {"b", 1}}, &cluster).ok());
    ASSERT_TRUE(assigned("a", cluster.id()) && assigned("b", cluster.id()));
    auto fleet_a = pilots("a", cluster.id(), 1);
    stop_grc();
    start_grc();  // same port, same store: the CRMs connect again and report every node
    auto fleet_b = pilots("b", cluster.id(), 1);
    EXPECT_EQ(fleet_a->wait_ready(1, 20s), 1u);
    EXPECT_EQ(fleet_b->wait_ready(1, 20s), 1u);
    EXPECT_EQ(wait_for(user("alice"), cluster.id(), v1::CLUSTER_STATE_READY).state(),
              v1::CLUSTER_STATE_READY);
}

TEST_F(GrcTest, RunAndExecReachTheNodesOfEverySiteThroughTheirCrms) {
    v1::Cluster cluster;
    ASSERT_TRUE(create(user("alice"), {{"a", 1}, {"b", 2}}, &cluster).ok());
    ASSERT_TRUE(assigned("a", cluster.id()) && assigned("b", cluster.id()));
    auto fleet_a = pilots("a", cluster.id(), 1);
    auto fleet_b = pilots("b", cluster.id(), 2);
    ASSERT_EQ(fleet_a->wait_ready(1, 15s) + fleet_b->wait_ready(2, 15s), 3u);
    wait_for(user("alice"), cluster.id(), v1::CLUSTER_STATE_READY);

    auto collect = [&](const ClusterClient& client, bool every_node, grpc::Status* status) {
        v1::ClusterCommandRequest request;
        request.set_id(cluster.id());
        request.mutable_command()->add_argv("hostname");
        auto context = client.context(every_node ? "Exec" : "Run", 10s).value();
        auto reader = client.call([&](auto& stub) {
            return every_node ? stub.Exec(context.get(), request)
                              : stub.Run(context.get(), request);
        });
        std::multiset<std::string> lines;
        v1::NodeOutput output;
        while (reader->Read(&output)) {
            if (output.output().has_stdout()) {
                lines.insert(output.node() + " " + output.output().stdout());
            }
        }
        *status = reader->Finish();
        return lines;
    };
    grpc::Status status;
    EXPECT_EQ(collect(user("alice"), false, &status),
              (std::multiset<std::string>{"vc-a-1 a-node1: hostname\n"}));
    EXPECT_TRUE(status.ok()) << status.error_message();
    // Site b's two pilots attach in either order, so which host is vc-b-1 is not fixed.
    const auto every = collect(user("root"), true, &status);
    const bool ordered = every == std::multiset<std::string>{"vc-a-1 a-node1: hostname\n",
                                                             "vc-b-1 b-node1: hostname\n",
                                                             "vc-b-2 b-node2: hostname\n"};
    const bool swapped = every == std::multiset<std::string>{"vc-a-1 a-node1: hostname\n",
                                                             "vc-b-1 b-node2: hostname\n",
                                                             "vc-b-2 b-node1: hostname\n"};
    EXPECT_TRUE(ordered || swapped) << ::testing::PrintToString(every);
    EXPECT_TRUE(status.ok()) << status.error_message();
    collect(user("alice"), true, &status);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(GrcTest, RefusesBadRequestsClearlyAndChangesNothing) {
    auto alice = user("alice");
    v1::Cluster cluster;
    ASSERT_TRUE(create(alice, {{"a", 1}}, &cluster, v1::KEY_MODE_CA, {"10.96.0.0/28"}).ok());

    struct Case {
        std::vector<std::pair<std::string, std::uint32_t>> sites;
        std::vector<std::string> blocks;
        grpc::StatusCode code;
        std::string says;
    };
    const std::vector<Case> cases = {
        {{{"a", 1}, {"b", 1}},
         {"", "10.96.0.8/29"},
         grpc::StatusCode::FAILED_PRECONDITION,
         "10.96.0.0/28"},
        {{{"a", 0}}, {}, grpc::StatusCode::INVALID_ARGUMENT, "0 nodes"},
        {{{"z", 1}}, {}, grpc::StatusCode::INVALID_ARGUMENT, "unknown site"},
        {{{"a", 300}}, {}, grpc::StatusCode::FAILED_PRECONDITION, "300 nodes"},
        {{{"a", 1}}, {"10.200.0.0/28"}, grpc::StatusCode::FAILED_PRECONDITION, "10.200.0.0/28"},
    };
    for (const auto& c : cases) {
        v1::Cluster refused;
        const auto status = create(alice, c.sites, &refused, v1::KEY_MODE_CA, c.blocks);
        EXPECT_EQ(status.error_code(), c.code) << c.says << ": " << status.error_message();
        EXPECT_THAT(status.error_message(), HasSubstr(c.says));
    }
    v1::ListClustersResponse list;
    {
        auto root = user("root");
        v1::ListClustersRequest request;
        request.set_all(true);
        auto context = root.context("ListClusters").value();
        ASSERT_TRUE(
            root.call([&](auto& stub) { return stub.ListClusters(context.get(), request, &list); })
                .ok());
    }
    EXPECT_EQ(list.clusters_size(), 1);  // only the first one exists

    // Another user's cluster is not there for them; list --all is root's.
    v1::Cluster seen;
    EXPECT_EQ(get(user("bob"), cluster.id(), &seen).error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(release(user("bob"), cluster.id()).error_code(), grpc::StatusCode::NOT_FOUND);
    {
        auto bob = user("bob");
        v1::ListClustersRequest request;
        request.set_all(true);
        v1::ListClustersResponse response;
        auto context = bob.context("ListClusters").value();
        EXPECT_EQ(bob.call([&](auto& stub) {
                         return stub.ListClusters(context.get(), request, &response);
                     })
                      .error_code(),
                  grpc::StatusCode::PERMISSION_DENIED);
    }
    EXPECT_EQ(get(alice, cluster.id(), &seen).error_code(), grpc::StatusCode::OK);
    EXPECT_EQ(seen.state(), v1::CLUSTER_STATE_PENDING);
}

TEST_F(GrcTest, ACrmCertificateIsNoUserAndAUserCertificateIsNoSite) {
    v1::Cluster cluster;
    const auto as_site = create(user("crm:a"), {{"a", 1}}, &cluster);
    EXPECT_EQ(as_site.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_THAT(as_site.error_message(), HasSubstr("site"));

    // A user's certificate opening a site stream is refused.
    auto channel = grpc::CreateChannel(
        fmt::format("127.0.0.1:{}", grc_port_),
        grpc::SslCredentials({pki_->ca(), pki_->user("alice").key, pki_->user("alice").cert}));
    auto stub = v1::Grc::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 5s);
    auto stream = stub->Connect(&context);
    v1::SiteReport hello;
    hello.mutable_hello()->set_site("a");
    stream->Write(hello);
    v1::SiteCommand command;
    EXPECT_FALSE(stream->Read(&command));
    const auto status = stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);

    // Site b's certificate cannot speak for site a.
    auto b_channel = grpc::CreateChannel(
        fmt::format("127.0.0.1:{}", grc_port_),
        grpc::SslCredentials({pki_->ca(), pki_->crm("b").key, pki_->crm("b").cert}));
    auto b_stub = v1::Grc::NewStub(b_channel);
    grpc::ClientContext b_context;
    b_context.set_deadline(std::chrono::system_clock::now() + 5s);
    auto b_stream = b_stub->Connect(&b_context);
    b_stream->Write(hello);
    EXPECT_FALSE(b_stream->Read(&command));
    const auto b_status = b_stream->Finish();
    EXPECT_EQ(b_status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(b_status.error_message(), HasSubstr("certificate is of site b"));
}

TEST_F(GrcTest, NoClientCertificateNoConnection) {
    auto channel = grpc::CreateChannel(fmt::format("127.0.0.1:{}", grc_port_),
                                       grpc::SslCredentials({pki_->ca(), "", ""}));
    auto stub = v1::Grc::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 5s);
    v1::ListClustersRequest request;
    v1::ListClustersResponse response;
    const auto status = stub->ListClusters(&context, request, &response);
    EXPECT_FALSE(status.ok());
}

TEST_F(GrcTest, ASiteCannotReleaseAClusterOfTheGrc) {
    v1::Cluster cluster;
    ASSERT_TRUE(create(user("alice"), {{"a", 1}}, &cluster).ok());
    ASSERT_TRUE(assigned("a", cluster.id()));
    const auto status = release(site_root("a"), cluster.id());
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(status.error_message(), HasSubstr("GRC"));
}

// Each site's CRM submits the job holding its share of the nodes (as the owner: root here, the
// one user the test PKI has that this machine knows); the GRC shows every site's job and the
// release cancels them all.
class GrcSlurmTest : public GrcTest {
  protected:
    void SetUp() override {
        for (const auto& [site, job] : jobs_) {
            const auto bin = dir_.path() / ("bin-" + site);
            std::filesystem::create_directories(bin);
            for (const auto& [tool, body] :
                 {std::pair{"squeue", std::string()}, std::pair{"sbatch", "echo " + job},
                  std::pair{"scancel", std::string()}}) {
                const auto path = bin / tool;
                std::ofstream(path)
                    << "#!/bin/sh\necho \"$*\" >> \"" << (bin / "log").string() << "\"\n"
                    << body << "\n";
                std::filesystem::permissions(path, std::filesystem::perms::owner_all);
            }
            slurm_bins_[site] = bin;
        }
        GrcTest::SetUp();
    }
    std::string log(const std::string& site) const {
        std::ifstream in(dir_.path() / ("bin-" + site) / "log");
        return std::string(std::istreambuf_iterator<char>(in), {});
    }
    const std::map<std::string, std::string> jobs_ = {{"a", "101"}, {"b", "202"}};
};

TEST_F(GrcSlurmTest, EverySiteSubmitsItsPilotJobAndTheReleaseCancelsThem) {
    v1::CreateClusterRequest request;
    for (const char* site : {"a", "b"}) {
        auto* s = request.add_sites();
        s->set_site(site);
        s->set_nodes(2);
    }
    request.set_pilots(v1::PILOT_SOURCE_SLURM);
    request.set_walltime_minutes(30);
    const auto owner = user("root");
    v1::Cluster cluster;
    auto context = owner.context("CreateCluster").value();
    ASSERT_TRUE(
        owner.call([&](auto& stub) { return stub.CreateCluster(context.get(), request, &cluster); })
            .ok());
    v1::Cluster seen;
    const auto deadline = std::chrono::steady_clock::now() + 15s;
    while (std::chrono::steady_clock::now() < deadline) {
        if (get(owner, cluster.id(), &seen).ok() && seen.sites_size() == 2 &&
            !seen.sites(0).pilot_job().empty() && !seen.sites(1).pilot_job().empty()) {
            break;
        }
        std::this_thread::sleep_for(10ms);
    }
    ASSERT_EQ(seen.sites_size(), 2);
    EXPECT_EQ(seen.sites(0).pilot_job(), "101");
    EXPECT_EQ(seen.sites(1).pilot_job(), "202");
    EXPECT_EQ(seen.walltime_minutes(), 30U);
    EXPECT_GT(seen.expires_unix_ms(), seen.created_unix_ms());
    for (const char* site : {"a", "b"}) {
        EXPECT_THAT(log(site), HasSubstr("--vc-cluster=" + cluster.id() + " --chdir=/"));
        EXPECT_THAT(log(site), HasSubstr("--nodes=2"));
        EXPECT_THAT(log(site), HasSubstr("--time=32"));
    }
    ASSERT_TRUE(release(owner, cluster.id()).ok());
    for (const auto& [site, job] : jobs_) {
        const auto until = std::chrono::steady_clock::now() + 15s;
        while (log(site).find("\n" + job + "\n") == std::string::npos &&
               std::chrono::steady_clock::now() < until) {
            std::this_thread::sleep_for(10ms);
        }
        EXPECT_THAT(log(site), HasSubstr("\n" + job + "\n")) << "site " << site;
    }
    EXPECT_EQ(wait_for(owner, cluster.id(), v1::CLUSTER_STATE_RELEASED).state(),
              v1::CLUSTER_STATE_RELEASED);
}

// n2n: the GRC refuses it without a supernode; with one, every site's pilots are told the
// cluster's community (its id), its key and the supernode.
TEST_F(GrcTest, AnN2nClusterNeedsASupernodeAndItsPilotsGetTheCommunity) {
    v1::CreateClusterRequest request;
    for (const char* site : {"a", "b"}) {
        auto* s = request.add_sites();
        s->set_site(site);
        s->set_nodes(1);
    }
    request.set_overlay(v1::OVERLAY_N2N);
    const auto owner = user("alice");
    v1::Cluster cluster;
    auto context = owner.context("CreateCluster").value();
    const auto refused = owner.call(
        [&](auto& stub) { return stub.CreateCluster(context.get(), request, &cluster); });
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(refused.error_message(), HasSubstr("--n2n-supernode"));

    stop_grc();
    supernode_ = "192.0.2.7:7654";
    start_grc();
    auto again = owner.context("CreateCluster").value();
    ASSERT_TRUE(
        owner.call([&](auto& stub) { return stub.CreateCluster(again.get(), request, &cluster); })
            .ok());
    EXPECT_EQ(cluster.overlay(), v1::OVERLAY_N2N);
    ASSERT_TRUE(assigned("a", cluster.id()) && assigned("b", cluster.id()));
    auto a = pilots("a", cluster.id(), 1);
    auto b = pilots("b", cluster.id(), 1);
    ASSERT_EQ(a->wait_ready(1, 15s) + b->wait_ready(1, 15s), 2U);
    const auto& setup_a = a->outcome(0).setup;
    const auto& setup_b = b->outcome(0).setup;
    ASSERT_TRUE(setup_a.has_n2n() && setup_b.has_n2n());
    EXPECT_EQ(setup_a.n2n().community(), cluster.id());
    EXPECT_EQ(setup_a.n2n().supernode(), "192.0.2.7:7654");
    EXPECT_EQ(setup_a.n2n().key().size(), 32U);
    EXPECT_EQ(setup_a.n2n().key(), setup_b.n2n().key());
    ASSERT_TRUE(release(owner, cluster.id()).ok());
}

// A site behind NAT (its CRM says so at its hello): VXLAN across it and another site is
// refused with the reason and holds nothing; auto chooses n2n; a cluster of that site alone
// may still be VXLAN.
TEST_F(GrcTest, VxlanAcrossASiteBehindNatIsRefusedAndAutoChoosesN2n) {
    stop_crm("b");
    stop_grc();
    supernode_ = "192.0.2.7:7654";
    natted_ = {"b"};
    start_grc();
    start_crm("b");
    const auto owner = user("alice");
    auto create_with = [&](v1::Overlay overlay, const std::vector<std::string>& sites,
                           v1::Cluster* out) {
        v1::CreateClusterRequest request;
        for (const auto& site : sites) {
            auto* s = request.add_sites();
            s->set_site(site);
            s->set_nodes(1);
        }
        request.set_overlay(overlay);
        auto context = owner.context("CreateCluster").value();
        return owner.call(
            [&](auto& stub) { return stub.CreateCluster(context.get(), request, out); });
    };
    // The hello of b must have arrived: retry (bounded) until the refusal names it.
    grpc::Status refused;
    v1::Cluster cluster;
    const auto deadline = std::chrono::steady_clock::now() + 15s;
    do {
        refused = create_with(v1::OVERLAY_VXLAN, {"a", "b"}, &cluster);
        if (refused.ok()) {
            ASSERT_TRUE(release(owner, cluster.id()).ok());
            std::this_thread::sleep_for(20ms);
        }
    } while (refused.ok() && std::chrono::steady_clock::now() < deadline);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(refused.error_message(),
                HasSubstr("overlay vxlan: site b is behind NAT (its CRM says so)"));
    ASSERT_TRUE(create_with(v1::OVERLAY_AUTO, {"a", "b"}, &cluster).ok());
    EXPECT_EQ(cluster.overlay(), v1::OVERLAY_N2N);
    v1::Cluster alone;
    ASSERT_TRUE(create_with(v1::OVERLAY_VXLAN, {"b"}, &alone).ok());
    EXPECT_EQ(alone.overlay(), v1::OVERLAY_VXLAN);
    v1::Cluster across_open;
    ASSERT_TRUE(create_with(v1::OVERLAY_AUTO, {"a", "c"}, &across_open).ok());
    EXPECT_EQ(across_open.overlay(), v1::OVERLAY_VXLAN);
}

}  // namespace
}  // namespace vcpilot::coordinator
