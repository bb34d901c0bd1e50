#include "pilot/validate.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/expect_error.hpp"

namespace vcpilot::pilot {
namespace {

using ::testing::HasSubstr;

// Two real ed25519 public keys (generated once with ssh-keygen; public halves only).
constexpr const char* kKeyA =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKnHZEuV0yRzoDGeZXRoDk5DXc12Ymvsyh6NgV2PODg+";
constexpr const char* kKeyB =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGp58zFp5xVrF2TXHEIj9pTiDwm0oYF7fYKRpr4ey8rL";

SetupLimits test_limits() {
    SetupLimits limits;
    limits.allowed_image_roots = {"/srv/images"};
    limits.find_user = [](std::string_view name) -> Result<UserIdentity> {
        if (name == "alice") {
            return UserIdentity{"alice", 1000, 1000, "/home/alice"};
        }
        return Error{"user: no user '" + std::string(name) + "' on this node"};
    };
    return limits;
}

v1::SetupRequest good_setup() {
    v1::SetupRequest request;
    request.set_cluster_id("c1");
    request.set_node_name("vn1");
    request.set_address("10.77.0.1/24");
    request.mutable_vxlan()->set_vni(100);
    request.set_user("alice");
    return request;
}

TEST(ValidateSetup, AcceptsAMinimalRequestAndFillsDefaults) {
    auto plan = validate_setup(good_setup(), test_limits());
    ASSERT_TRUE(plan) << plan.error().message;
    EXPECT_EQ(plan->udp_port, 4789);
    EXPECT_EQ(plan->user.uid, 1000u);
    EXPECT_EQ(plan->tmp_size_bytes, 1024ull * 1024 * 1024);
    EXPECT_TRUE(plan->seccomp);
    EXPECT_EQ(plan->mac, mac_for_address(plan->address.address()));
}

struct BadSetup {
    const char* name;
    void (*mutate)(v1::SetupRequest&);
    const char* field;
};

class ValidateSetupRefuses : public ::testing::TestWithParam<BadSetup> {};

TEST_P(ValidateSetupRefuses, NamingTheField) {
    auto request = good_setup();
    GetParam().mutate(request);
    auto plan = validate_setup(request, test_limits());
    EXPECT_THAT(error_of(plan), HasSubstr(GetParam().field));
}

INSTANTIATE_TEST_SUITE_P(
    BadFields, ValidateSetupRefuses,
    ::testing::Values(
        BadSetup{"EmptyCluster", [](auto& r) { r.set_cluster_id(""); }, "cluster_id"},
        BadSetup{"SlashInCluster", [](auto& r) { r.set_cluster_id("../x"); }, "cluster_id"},
        BadSetup{"UpperCaseHost", [](auto& r) { r.set_node_name("VN1"); }, "node_name"},
        BadSetup{"HostWithDot", [](auto& r) { r.set_node_name("vn1.example"); }, "node_name"},
        BadSetup{"HostLeadingDash", [](auto& r) { r.set_node_name("-vn"); }, "node_name"},
        BadSetup{"BadCidr", [](auto& r) { r.set_address("10.77.0.1/33"); }, "address"},
        BadSetup{"NoPrefix", [](auto& r) { r.set_address("10.77.0.1"); }, "address"},
        BadSetup{"NetworkAddress", [](auto& r) { r.set_address("10.77.0.0/24"); }, "address"},
        BadSetup{"Broadcast", [](auto& r) { r.set_address("10.77.0.255/24"); }, "address"},
        BadSetup{"Ipv6", [](auto& r) { r.set_address("fd00::1/64"); }, "address"},
        BadSetup{"MulticastMac", [](auto& r) { r.set_mac("01:00:5e:00:00:01"); }, "mac"},
        BadSetup{"GarbageMac", [](auto& r) { r.set_mac("zz"); }, "mac"},
        BadSetup{"NoOverlay", [](auto& r) { r.clear_vxlan(); }, "vxlan"},
        BadSetup{"VniZero", [](auto& r) { r.mutable_vxlan()->set_vni(0); }, "vxlan.vni"},
        BadSetup{"VniTooBig", [](auto& r) { r.mutable_vxlan()->set_vni(1u << 24); }, "vxlan.vni"},
        BadSetup{"PortTooBig", [](auto& r) { r.mutable_vxlan()->set_udp_port(70000); },
                 "vxlan.udp_port"},
        BadSetup{"BadUnderlay", [](auto& r) { r.mutable_vxlan()->set_local_address("1.2.3"); },
                 "vxlan.local_address"},
        BadSetup{"TinyMtu", [](auto& r) { r.mutable_vxlan()->set_mtu(100); }, "vxlan.mtu"},
        BadSetup{"UnknownUser", [](auto& r) { r.set_user("mallory"); }, "user"},
        BadSetup{"GatewayOutside", [](auto& r) { r.set_gateway("10.78.0.1"); }, "gateway"},
        BadSetup{"GatewayIsSelf", [](auto& r) { r.set_gateway("10.77.0.1"); }, "gateway"},
        BadSetup{"ImageOutsideRoots",
                 [](auto& r) {
                     r.set_image("/etc");
                     r.set_image_mount("/opt/i");
                 },
                 "image"},
        BadSetup{"ImageEscapesRoot",
                 [](auto& r) {
                     r.set_image("/srv/images/../../etc");
                     r.set_image_mount("/opt/i");
                 },
                 "image"},
        BadSetup{"ImageRelative",
                 [](auto& r) {
                     r.set_image("images/a");
                     r.set_image_mount("/opt/i");
                 },
                 "image"},
        BadSetup{"ImageWithoutMount", [](auto& r) { r.set_image("/srv/images/a"); }, "image_mount"},
        BadSetup{"MountWithoutImage", [](auto& r) { r.set_image_mount("/opt/i"); }, "image_mount"},
        BadSetup{"HugeTmp", [](auto& r) { r.set_tmp_size_mb(1ull << 40); }, "tmp_size_mb"},
        BadSetup{"ImageDoubleSlash",
                 [](auto& r) {
                     r.set_image("/srv//images/a");
                     r.set_image_mount("/opt/i");
                 },
                 "image"},
        BadSetup{"ImageTrailingSlash",
                 [](auto& r) {
                     r.set_image("/srv/images/a/");
                     r.set_image_mount("/opt/i");
                 },
                 "image"},
        BadSetup{"ImageOverProc",
                 [](auto& r) {
                     r.set_image("/srv/images/a");
                     r.set_image_mount("/proc");
                 },
                 "image_mount"},
        BadSetup{"ImageOverUsrLocal",
                 [](auto& r) {
                     r.set_image("/srv/images/a");
                     r.set_image_mount("/usr/local");
                 },
                 "image_mount"},
        BadSetup{"ImageInTmp",
                 [](auto& r) {
                     r.set_image("/srv/images/a");
                     r.set_image_mount("/tmp/i");
                 },
                 "image_mount"},
        BadSetup{"UnspecifiedUnderlay",
                 [](auto& r) { r.mutable_vxlan()->set_local_address("0.0.0.0"); },
                 "vxlan.local_address"},
        // n2n's fields end up on edge's command line and in its environment.
        BadSetup{"N2nCommunityTooLong",
                 [](auto& r) {
                     r.mutable_n2n()->set_community("vc-0123456789abcdef");
                     r.mutable_n2n()->set_key("0123456789abcdefXY");
                     r.mutable_n2n()->set_supernode("192.0.2.1:7654");
                 },
                 "n2n.community"},
        BadSetup{"N2nCommunityWithASpace",
                 [](auto& r) {
                     r.mutable_n2n()->set_community("vc 1");
                     r.mutable_n2n()->set_key("0123456789abcdefXY");
                     r.mutable_n2n()->set_supernode("192.0.2.1:7654");
                 },
                 "n2n.community"},
        BadSetup{"N2nKeyTooShort",
                 [](auto& r) {
                     r.mutable_n2n()->set_community("vc-1");
                     r.mutable_n2n()->set_key("short");
                     r.mutable_n2n()->set_supernode("192.0.2.1:7654");
                 },
                 "n2n.key"},
        BadSetup{"N2nKeyWithAnOption",
                 [](auto& r) {
                     r.mutable_n2n()->set_community("vc-1");
                     r.mutable_n2n()->set_key("0123456789abcdef -r x");
                     r.mutable_n2n()->set_supernode("192.0.2.1:7654");
                 },
                 "n2n.key"},
        BadSetup{"N2nSupernodeWithoutPort",
                 [](auto& r) {
                     r.mutable_n2n()->set_community("vc-1");
                     r.mutable_n2n()->set_key("0123456789abcdefXY");
                     r.mutable_n2n()->set_supernode("192.0.2.1");
                 },
                 "n2n.supernode"},
        BadSetup{"N2nSupernodeIpv6",
                 [](auto& r) {
                     r.mutable_n2n()->set_community("vc-1");
                     r.mutable_n2n()->set_key("0123456789abcdefXY");
                     r.mutable_n2n()->set_supernode("2001:db8::1:7654");
                 },
                 "n2n.supernode"},
        BadSetup{"N2nPortZero",
                 [](auto& r) {
                     r.mutable_n2n()->set_community("vc-1");
                     r.mutable_n2n()->set_key("0123456789abcdefXY");
                     r.mutable_n2n()->set_supernode("192.0.2.1:0");
                 },
                 "n2n.supernode"},
        BadSetup{"N2nMtuTooLarge",
                 [](auto& r) {
                     r.mutable_n2n()->set_community("vc-1");
                     r.mutable_n2n()->set_key("0123456789abcdefXY");
                     r.mutable_n2n()->set_supernode("192.0.2.1:7654");
                     r.mutable_n2n()->set_mtu(1500);
                 },
                 "n2n.mtu"}),
    [](const auto& test) { return std::string(test.param.name); });

TEST(ValidateSetup, AcceptsAnN2nOverlayWithItsDefaultMtu) {
    auto request = good_setup();
    request.mutable_n2n()->set_community("vc-0000abcd");
    request.mutable_n2n()->set_key("0123456789abcdefABCDEF");
    request.mutable_n2n()->set_supernode("172.31.0.2:7654");
    auto plan = validate_setup(request, test_limits());
    ASSERT_TRUE(plan) << plan.error().message;
    ASSERT_TRUE(plan->n2n);
    EXPECT_EQ(plan->n2n->community, "vc-0000abcd");
    EXPECT_EQ(plan->n2n->supernode.to_string(), "172.31.0.2");
    EXPECT_EQ(plan->n2n->supernode_port, 7654);
    EXPECT_EQ(plan->n2n->mtu, 1400U);
    EXPECT_FALSE(validate_setup(good_setup(), test_limits())->n2n);
}

TEST(ValidateSetup, AcceptsAnImageBelowAnAllowedRoot) {
    auto request = good_setup();
    request.set_image("/srv/images/debian");
    request.set_image_mount("/opt/image");
    auto plan = validate_setup(request, test_limits());
    ASSERT_TRUE(plan) << plan.error().message;
    EXPECT_EQ(plan->image->string(), "/srv/images/debian");
}

v1::SetKeysRequest good_keys(const SetupPlan& self) {
    v1::SetKeysRequest request;
    auto* a = request.add_nodes();
    a->set_name("vn1");
    a->set_address("10.77.0.1");
    a->set_mac(to_string(self.mac));
    a->set_underlay_address("172.16.1.11");
    a->set_host_key(kKeyA);
    a->set_user_key(kKeyB);
    auto* b = request.add_nodes();
    b->set_name("vn2");
    b->set_address("10.77.0.2");
    b->set_mac("02:00:0a:4d:00:02");
    b->set_underlay_address("172.16.1.12");
    b->set_host_key(kKeyB);
    b->set_user_key(kKeyA);
    return request;
}

TEST(ValidateSetKeys, AcceptsAConsistentCluster) {
    auto plan = validate_setup(good_setup(), test_limits());
    ASSERT_TRUE(plan);
    auto nodes = validate_set_keys(good_keys(*plan), *plan);
    ASSERT_TRUE(nodes) << nodes.error().message;
    ASSERT_EQ(nodes->size(), 2u);
    EXPECT_EQ((*nodes)[1].slots, 1u);
}

struct BadKeys {
    const char* name;
    void (*mutate)(v1::SetKeysRequest&);
    const char* field;
};

class ValidateSetKeysRefuses : public ::testing::TestWithParam<BadKeys> {};

TEST_P(ValidateSetKeysRefuses, NamingTheField) {
    auto plan = validate_setup(good_setup(), test_limits());
    ASSERT_TRUE(plan);
    auto request = good_keys(*plan);
    GetParam().mutate(request);
    EXPECT_THAT(error_of(validate_set_keys(request, *plan)), HasSubstr(GetParam().field));
}

INSTANTIATE_TEST_SUITE_P(
    BadFields, ValidateSetKeysRefuses,
    ::testing::Values(
        BadKeys{"Empty", [](auto& r) { r.clear_nodes(); }, "nodes"},
        BadKeys{"SelfMissing", [](auto& r) { r.mutable_nodes()->DeleteSubrange(0, 1); }, "nodes"},
        BadKeys{"DuplicateName", [](auto& r) { r.mutable_nodes(1)->set_name("vn1"); }, "nodes[1]"},
        BadKeys{"DuplicateAddress", [](auto& r) { r.mutable_nodes(1)->set_address("10.77.0.1"); },
                "nodes[1].address"},
        BadKeys{"DuplicateMac", [](auto& r) { r.mutable_nodes(1)->set_mac(r.nodes(0).mac()); },
                "nodes[1].mac"},
        BadKeys{"AddressOutsidePrefix",
                [](auto& r) { r.mutable_nodes(1)->set_address("10.78.0.2"); }, "nodes[1].address"},
        BadKeys{"BroadcastAddress", [](auto& r) { r.mutable_nodes(1)->set_address("10.77.0.255"); },
                "nodes[1].address"},
        BadKeys{"SelfDiffers", [](auto& r) { r.mutable_nodes(0)->set_address("10.77.0.9"); },
                "nodes[0]"},
        BadKeys{"BadHostname", [](auto& r) { r.mutable_nodes(1)->set_name("vn_2"); },
                "nodes[1].name"},
        BadKeys{"BadUnderlay", [](auto& r) { r.mutable_nodes(1)->set_underlay_address("x"); },
                "nodes[1].underlay_address"},
        BadKeys{"BadHostKey", [](auto& r) { r.mutable_nodes(1)->set_host_key("ssh-ed25519 AAAA"); },
                "nodes[1].host_key"},
        BadKeys{"KeyWithNewline",
                [](auto& r) {
                    r.mutable_nodes(1)->set_user_key(std::string(kKeyA) + "\nssh-ed25519 x");
                },
                "nodes[1].user_key"},
        BadKeys{"TooManySlots", [](auto& r) { r.mutable_nodes(1)->set_slots(100000); },
                "nodes[1].slots"},
        BadKeys{"UnspecifiedUnderlay",
                [](auto& r) { r.mutable_nodes(1)->set_underlay_address("0.0.0.0"); },
                "nodes[1].underlay_address"},
        BadKeys{"Ipv6Underlay",
                [](auto& r) { r.mutable_nodes(1)->set_underlay_address("fd00::2"); },
                "nodes[1].underlay_address"}),
    [](const auto& test) { return std::string(test.param.name); });

TEST(ValidateSetKeys, RefusesMoreNodesThanTheLimit) {
    auto plan = validate_setup(good_setup(), test_limits());
    ASSERT_TRUE(plan);
    v1::SetKeysRequest request;
    for (std::size_t i = 0; i <= kMaxClusterNodes; ++i) {
        request.add_nodes()->set_name("n" + std::to_string(i));
    }
    EXPECT_THAT(error_of(validate_set_keys(request, *plan)), HasSubstr("over the limit"));
}

}  // namespace
}  // namespace vcpilot::pilot
