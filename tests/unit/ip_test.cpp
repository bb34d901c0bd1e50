#include "common/ip.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <string>
#include <string_view>
#include <vector>

#include "common/text.hpp"
#include "tests/unit/expect_error.hpp"
#include "tests/unit/literals.hpp"

namespace vcpilot {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using namespace std::string_literals;

const uint128 kAllOnes = ~uint128{0};

// ---- IpAddress ----

TEST(IpAddress, ParsesDottedQuad) {
    const IpAddress address = ip("10.1.2.3");
    EXPECT_TRUE(address.is_v4());
    EXPECT_EQ(address.family(), IpFamily::v4);
    EXPECT_EQ(address.max_prefix(), 32);
    EXPECT_EQ(address.to_string(), "10.1.2.3");
    EXPECT_THAT(address.bytes(), ::testing::ElementsAre(10, 1, 2, 3));
}

TEST(IpAddress, ParsesIpv6AndPrintsTheCanonicalForm) {
    EXPECT_EQ(ip("2001:DB8:0:0:0:0:0:1").to_string(), "2001:db8::1");
    EXPECT_EQ(ip("2001:0db8::0001").to_string(), "2001:db8::1");
    EXPECT_EQ(ip("0:0:0:0:0:0:0:0").to_string(), "::");
    EXPECT_EQ(ip("2001:db8:0:1:0:0:0:1").to_string(), "2001:db8:0:1::1");
    EXPECT_EQ(ip("2001:db8:0:0:1:0:0:1").to_string(), "2001:db8::1:0:0:1");
    EXPECT_EQ(ip("2001:db8:1:1:1:1:0:1").to_string(), "2001:db8:1:1:1:1:0:1");

    const IpAddress loopback = ip("::1");
    EXPECT_FALSE(loopback.is_v4());
    EXPECT_EQ(loopback.max_prefix(), 128);
    EXPECT_EQ(loopback.bytes().size(), 16U);
}

TEST(IpAddress, KeepsIpv4MappedAddressesAsIpv6) {
    const IpAddress mapped = ip("::ffff:1.2.3.4");
    EXPECT_FALSE(mapped.is_v4());
    EXPECT_EQ(mapped.to_string(), "::ffff:1.2.3.4");
    EXPECT_NE(mapped, ip("1.2.3.4"));
}

TEST(IpAddress, FormatsWhatItParses) {
    for (const char* text : {"0.0.0.0", "255.255.255.255", "192.168.0.1", "::", "::1", "fe80::1",
                             "2001:db8::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                             "::ffff:10.0.0.1", "2001:db8:85a3::8a2e:370:7334"}) {
        EXPECT_EQ(ip(text).to_string(), text);
        EXPECT_EQ(ip(ip(text).to_string()), ip(text));
    }
}

TEST(IpAddress, ComesFromNetworkOrderBytes) {
    EXPECT_EQ(IpAddress::from_v4_bytes({192, 168, 1, 2}), ip("192.168.1.2"));
    EXPECT_EQ(
        IpAddress::from_v6_bytes({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}),
        ip("2001:db8::1"));
}

TEST(IpAddress, RejectsEmptyText) {
    EXPECT_THAT(error_of(IpAddress::parse("")), HasSubstr("empty"));
}

TEST(IpAddress, RejectsShortDottedForms) {
    EXPECT_EQ(error_of(IpAddress::parse("1.2.3")),
              "invalid IP address '1.2.3': expected 4 dot-separated numbers, found 3");
    EXPECT_THAT(error_of(IpAddress::parse("10")), HasSubstr("found 1"));
    EXPECT_THAT(error_of(IpAddress::parse("1.2.3.4.5")), HasSubstr("found 5"));
    EXPECT_THAT(error_of(IpAddress::parse("1..3.4")), HasSubstr("empty number"));
    EXPECT_THAT(error_of(IpAddress::parse("1.2.3.")), HasSubstr("empty number"));
}

TEST(IpAddress, RejectsLeadingZerosThatCouldMeanOctal) {
    EXPECT_EQ(error_of(IpAddress::parse("010.0.0.1")),
              "invalid IP address '010.0.0.1': '010' has a leading zero (octal or decimal?)");
    EXPECT_THAT(error_of(IpAddress::parse("10.0.0.00")), HasSubstr("leading zero"));
    EXPECT_THAT(error_of(IpAddress::parse("::ffff:1.2.3.04")),
                HasSubstr("embedded IPv4 address: '04' has a leading zero"));
}

TEST(IpAddress, RejectsNumbersAbove255) {
    EXPECT_THAT(error_of(IpAddress::parse("256.0.0.1")), HasSubstr("'256' is larger than 255"));
    EXPECT_THAT(error_of(IpAddress::parse("1.2.3.1000")), HasSubstr("larger than 255"));
}

TEST(IpAddress, RejectsHexInDottedQuad) {
    EXPECT_THAT(error_of(IpAddress::parse("1.2.3.a")), HasSubstr("'a' is not a decimal number"));
}

TEST(IpAddress, RejectsSurroundingWhitespace) {
    EXPECT_EQ(error_of(IpAddress::parse("10.0.0.1 ")),
              "invalid IP address '10.0.0.1 ': unexpected character ' ' at position 8");
    EXPECT_THAT(error_of(IpAddress::parse(" 10.0.0.1")), HasSubstr("position 0"));
    EXPECT_THAT(error_of(IpAddress::parse("10.0.0.1\n")), HasSubstr("'10.0.0.1\\n'"));
    EXPECT_THAT(error_of(IpAddress::parse("\t::1")), HasSubstr("'\\t::1'"));
}

TEST(IpAddress, RejectsEmbeddedNul) {
    EXPECT_EQ(error_of(IpAddress::parse("10.0.0.1\0"s)),
              "invalid IP address '10.0.0.1\\x00': unexpected character '\\x00' at position 8");
    EXPECT_THAT(error_of(IpAddress::parse("10.0\0.0.1"s)), HasSubstr("position 4"));
    EXPECT_THAT(error_of(IpAddress::parse("::1\0"s)), HasSubstr("'\\x00'"));
}

TEST(IpAddress, RejectsZoneIds) {
    EXPECT_EQ(error_of(IpAddress::parse("fe80::1%eth0")),
              "invalid IP address 'fe80::1%eth0': zone ids ('%eth0') are not supported");
}

TEST(IpAddress, RejectsOverlongTextWithoutEchoingAllOfIt) {
    const std::string huge(100000, '1');
    const std::string message = error_of(IpAddress::parse(huge));
    EXPECT_THAT(message, HasSubstr("longer than the 45 characters"));
    EXPECT_THAT(message, HasSubstr("(100000 bytes)"));
    EXPECT_LT(message.size(), 200U);
    // The longest valid form is exactly at the limit.
    EXPECT_TRUE(IpAddress::parse("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255").ok());
}

TEST(IpAddress, RejectsMalformedIpv6) {
    for (const char* text : {":::", "1::2::3", "12345::", "g::1", "1:2:3:4:5:6:7:8:9",
                             "1:2:3:4:5:6:7", ":1::", "1.2.3.4::", "::1.2.3"}) {
        EXPECT_FALSE(IpAddress::parse(text).ok()) << text;
    }
    EXPECT_EQ(error_of(IpAddress::parse("1::2::3")),
              "invalid IP address '1::2::3': not a valid IPv6 address");
}

TEST(IpAddress, RejectsAPrefix) {
    EXPECT_THAT(error_of(IpAddress::parse("10.0.0.0/24")),
                HasSubstr("unexpected character '/' at position 8"));
}

TEST(IpAddress, SortsIpv4BeforeIpv6AndNumericallyWithinAFamily) {
    EXPECT_LT(ip("9.255.255.255"), ip("10.0.0.0"));
    EXPECT_LT(ip("10.0.0.2"), ip("10.0.0.10"));
    EXPECT_LT(ip("255.255.255.255"), ip("::"));
    EXPECT_LT(ip("::ffff"), ip("::1:0"));
    EXPECT_EQ(ip("::0:1"), ip("::1"));
}

TEST(IpAddress, OffsetCountsOnwardAcrossOctets) {
    EXPECT_EQ(ip("10.0.0.255").offset(1).value(), ip("10.0.1.0"));
    EXPECT_EQ(ip("10.0.0.1").offset(0).value(), ip("10.0.0.1"));
    EXPECT_EQ(ip("0.0.0.0").offset(0xffffffff).value(), ip("255.255.255.255"));
    EXPECT_EQ(ip("::").offset(kAllOnes).value(), ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
    EXPECT_EQ(ip("::ffff").offset(1).value(), ip("::1:0"));
}

TEST(IpAddress, OffsetRefusesToPassTheLastAddressOfTheFamily) {
    EXPECT_EQ(error_of(ip("255.255.255.255").offset(1)),
              "255.255.255.255 + 1 is past the last IPv4 address");
    EXPECT_FALSE(ip("0.0.0.0").offset(uint128{1} << 32).ok());
    EXPECT_FALSE(ip("10.0.0.1").offset(kAllOnes).ok());
    EXPECT_FALSE(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").offset(1).ok());
    EXPECT_FALSE(ip("::1").offset(kAllOnes).ok());
}

// ---- Cidr ----

TEST(Cidr, ParsesNetworkAndPrefix) {
    const Cidr block = cidr("10.20.0.0/16");
    EXPECT_EQ(block.network(), ip("10.20.0.0"));
    EXPECT_EQ(block.prefix(), 16);
    EXPECT_EQ(block.family(), IpFamily::v4);
    EXPECT_EQ(block.to_string(), "10.20.0.0/16");
}

TEST(Cidr, ParsesIpv6Blocks) {
    EXPECT_EQ(cidr("fe80::/10").prefix(), 10);
    EXPECT_EQ(cidr("2001:db8::/32").network(), ip("2001:db8::"));
    EXPECT_EQ(cidr("::/0").prefix(), 0);
    EXPECT_EQ(cidr("::1/128").network(), ip("::1"));
    EXPECT_EQ(cidr("::ffff:0.0.0.0/96").family(), IpFamily::v6);
    EXPECT_EQ(cidr("2001:DB8:0::/48").to_string(), "2001:db8::/48");
}

TEST(Cidr, FormatsWhatItParses) {
    for (const char* text : {"0.0.0.0/0", "10.0.0.0/8", "10.0.0.0/24", "10.0.0.1/32", "::/0",
                             "fe80::/10", "2001:db8::/32", "::1/128", "::ffff:0.0.0.0/96"}) {
        EXPECT_EQ(cidr(text).to_string(), text);
    }
}

TEST(Cidr, RejectsHostBitsAndNamesTheNetworkMeant) {
    EXPECT_EQ(error_of(Cidr::parse("10.0.0.1/24")),
              "invalid CIDR block '10.0.0.1/24': host bits are set; the network is 10.0.0.0/24");
    EXPECT_THAT(error_of(Cidr::parse("11.0.0.0/7")), HasSubstr("the network is 10.0.0.0/7"));
    EXPECT_TRUE(Cidr::parse("10.0.0.0/7").ok());
    EXPECT_THAT(error_of(Cidr::parse("1.2.3.4/0")), HasSubstr("the network is 0.0.0.0/0"));
    EXPECT_THAT(error_of(Cidr::parse("fe80::1/10")), HasSubstr("the network is fe80::/10"));
    EXPECT_THAT(error_of(Cidr::parse("::1/0")), HasSubstr("the network is ::/0"));
}

TEST(Cidr, RejectsPrefixLongerThanFamily) {
    EXPECT_EQ(error_of(Cidr::parse("10.0.0.0/33")),
              "invalid CIDR block '10.0.0.0/33': prefix length '33' is out of range; "
              "an IPv4 prefix is 0 to 32");
    EXPECT_EQ(error_of(Cidr::parse("::1/129")),
              "invalid CIDR block '::1/129': prefix length '129' is out of range; "
              "an IPv6 prefix is 0 to 128");
    EXPECT_THAT(error_of(Cidr::parse("10.0.0.0/128")), HasSubstr("0 to 32"));
    EXPECT_THAT(error_of(Cidr::parse("10.0.0.0/99999999999999999999")),
                HasSubstr("prefix length '99999999999999999999' is out of range"));
    EXPECT_THAT(error_of(Cidr::parse("::/18446744073709551745")), HasSubstr("out of range"));
}

TEST(Cidr, RejectsPrefixThatIsNotPlainDecimal) {
    EXPECT_EQ(error_of(Cidr::parse("10.0.0.0/-1")),
              "invalid CIDR block '10.0.0.0/-1': prefix length '-1' is not a decimal number");
    EXPECT_THAT(error_of(Cidr::parse("10.0.0.0/+8")), HasSubstr("'+8' is not a decimal number"));
    EXPECT_THAT(error_of(Cidr::parse("10.0.0.0/0x8")), HasSubstr("not a decimal number"));
    EXPECT_THAT(error_of(Cidr::parse("10.0.0.0/8.0")), HasSubstr("not a decimal number"));
    EXPECT_EQ(error_of(Cidr::parse("10.0.0.0/08")),
              "invalid CIDR block '10.0.0.0/08': prefix length '08' has a leading zero");
    EXPECT_THAT(error_of(Cidr::parse("::/00")), HasSubstr("leading zero"));
}

TEST(Cidr, RejectsTrailingGarbage) {
    EXPECT_THAT(error_of(Cidr::parse("10.0.0.0/24x")), HasSubstr("'24x' is not a decimal number"));
    EXPECT_THAT(error_of(Cidr::parse("10.0.0.0/24/8")),
                HasSubstr("'24/8' is not a decimal number"));
    EXPECT_THAT(error_of(Cidr::parse("10.0.0.0/24 ")), HasSubstr("'24 ' is not a decimal"));
    EXPECT_THAT(error_of(Cidr::parse("10.0.0.0/24\n")), HasSubstr("'24\\n'"));
    EXPECT_THAT(error_of(Cidr::parse("10.0.0.0 /24")), HasSubstr("unexpected character ' '"));
    EXPECT_THAT(error_of(Cidr::parse(" 10.0.0.0/24")), HasSubstr("unexpected character ' '"));
}

TEST(Cidr, RejectsEmbeddedNul) {
    EXPECT_EQ(error_of(Cidr::parse("10.0.0.0/2\0"s)),
              "invalid CIDR block '10.0.0.0/2\\x00': prefix length '2\\x00' is not a decimal "
              "number");
    EXPECT_THAT(error_of(Cidr::parse("10.0.0.0\0/24"s)), HasSubstr("unexpected character"));
    EXPECT_FALSE(Cidr::parse("\0"s).ok());
}

TEST(Cidr, RejectsMissingParts) {
    EXPECT_EQ(error_of(Cidr::parse("")), "invalid CIDR block '': the text is empty");
    EXPECT_EQ(error_of(Cidr::parse("10.0.0.0")),
              "invalid CIDR block '10.0.0.0': missing the /prefix length (for example "
              "10.0.0.0/24)");
    EXPECT_EQ(error_of(Cidr::parse("/")), "invalid CIDR block '/': the address is empty");
    EXPECT_THAT(error_of(Cidr::parse("/24")), HasSubstr("the address is empty"));
    EXPECT_EQ(error_of(Cidr::parse("10.0.0.0/")),
              "invalid CIDR block '10.0.0.0/': the prefix length after '/' is empty");
}

TEST(Cidr, RejectsBadAddressPart) {
    EXPECT_EQ(error_of(Cidr::parse("1.2.3/24")),
              "invalid CIDR block '1.2.3/24': expected 4 dot-separated numbers, found 3");
    EXPECT_THAT(error_of(Cidr::parse("fe80::%eth0/64")), HasSubstr("zone ids"));
    EXPECT_THAT(error_of(Cidr::parse("010.0.0.0/8")), HasSubstr("leading zero"));
}

TEST(Cidr, FromAppliesTheSameRulesAsParse) {
    EXPECT_EQ(Cidr::from(ip("10.0.0.0"), 24).value(), cidr("10.0.0.0/24"));
    EXPECT_EQ(error_of(Cidr::from(ip("10.0.0.1"), 24)),
              "invalid CIDR block '10.0.0.1/24': host bits are set; the network is 10.0.0.0/24");
    EXPECT_THAT(error_of(Cidr::from(ip("10.0.0.0"), 33)), HasSubstr("0 to 32"));
    EXPECT_THAT(error_of(Cidr::from(ip("10.0.0.0"), -1)), HasSubstr("prefix length -1"));
    EXPECT_THAT(error_of(Cidr::from(ip("::"), 129)), HasSubstr("0 to 128"));
    EXPECT_EQ(Cidr::from(ip("::"), 0).value(), cidr("::/0"));
}

TEST(Cidr, ContainsTheAddressesInsideOnly) {
    const Cidr block = cidr("10.0.0.0/24");
    EXPECT_TRUE(block.contains(ip("10.0.0.0")));
    EXPECT_TRUE(block.contains(ip("10.0.0.77")));
    EXPECT_TRUE(block.contains(ip("10.0.0.255")));
    EXPECT_FALSE(block.contains(ip("10.0.1.0")));
    EXPECT_FALSE(block.contains(ip("9.255.255.255")));
}

TEST(Cidr, ZeroPrefixContainsItsWholeFamilyOnly) {
    EXPECT_TRUE(cidr("0.0.0.0/0").contains(ip("255.255.255.255")));
    EXPECT_TRUE(cidr("0.0.0.0/0").contains(ip("0.0.0.0")));
    EXPECT_FALSE(cidr("0.0.0.0/0").contains(ip("::")));
    EXPECT_TRUE(cidr("::/0").contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
    EXPECT_FALSE(cidr("::/0").contains(ip("10.0.0.1")));
}

TEST(Cidr, HostPrefixContainsOnlyItsAddress) {
    EXPECT_TRUE(cidr("10.0.0.5/32").contains(ip("10.0.0.5")));
    EXPECT_FALSE(cidr("10.0.0.5/32").contains(ip("10.0.0.4")));
    EXPECT_FALSE(cidr("10.0.0.5/32").contains(ip("10.0.0.6")));
    EXPECT_TRUE(cidr("::1/128").contains(ip("::1")));
    EXPECT_FALSE(cidr("::1/128").contains(ip("::")));
}

TEST(Cidr, ContainsNestedBlocksButNotEnclosingOnes) {
    EXPECT_TRUE(cidr("10.0.0.0/8").contains(cidr("10.1.0.0/16")));
    EXPECT_TRUE(cidr("10.0.0.0/8").contains(cidr("10.0.0.0/8")));
    EXPECT_TRUE(cidr("10.0.0.0/8").contains(cidr("10.255.255.255/32")));
    EXPECT_FALSE(cidr("10.1.0.0/16").contains(cidr("10.0.0.0/8")));
    EXPECT_FALSE(cidr("10.0.0.0/8").contains(cidr("11.0.0.0/16")));
    EXPECT_TRUE(cidr("::/0").contains(cidr("2001:db8::/32")));
}

TEST(Cidr, NestedBlocksOverlapEitherWayRound) {
    EXPECT_TRUE(cidr("10.0.0.0/8").overlaps(cidr("10.1.2.0/24")));
    EXPECT_TRUE(cidr("10.1.2.0/24").overlaps(cidr("10.0.0.0/8")));
    EXPECT_TRUE(cidr("10.0.0.0/24").overlaps(cidr("10.0.0.0/24")));
    EXPECT_TRUE(cidr("0.0.0.0/0").overlaps(cidr("192.168.0.1/32")));
    EXPECT_TRUE(cidr("2001:db8::/32").overlaps(cidr("2001:db8:1::/48")));
}

TEST(Cidr, AdjacentBlocksDoNotOverlap) {
    EXPECT_FALSE(cidr("10.0.0.0/25").overlaps(cidr("10.0.0.128/25")));
    EXPECT_FALSE(cidr("10.0.0.128/25").overlaps(cidr("10.0.0.0/25")));
    EXPECT_FALSE(cidr("10.0.0.0/24").overlaps(cidr("10.0.1.0/24")));
    EXPECT_FALSE(cidr("10.0.0.4/32").overlaps(cidr("10.0.0.5/32")));
    EXPECT_FALSE(cidr("2001:db8::/33").overlaps(cidr("2001:db8:8000::/33")));
}

TEST(Cidr, MixedFamiliesNeverContainOrOverlap) {
    EXPECT_FALSE(cidr("0.0.0.0/0").overlaps(cidr("::/0")));
    EXPECT_FALSE(cidr("::/0").overlaps(cidr("0.0.0.0/0")));
    EXPECT_FALSE(cidr("::/0").contains(cidr("10.0.0.0/8")));
    EXPECT_FALSE(cidr("0.0.0.0/0").contains(cidr("::/128")));
    // IPv4-mapped IPv6 is still IPv6.
    EXPECT_FALSE(cidr("::ffff:0.0.0.0/96").overlaps(cidr("0.0.0.0/0")));
    EXPECT_FALSE(cidr("::ffff:0.0.0.0/96").contains(ip("1.2.3.4")));
}

TEST(Cidr, SizeCountsItsAddresses) {
    EXPECT_EQ(to_string(cidr("10.0.0.0/24").size()), "256");
    EXPECT_EQ(to_string(cidr("10.0.0.1/32").size()), "1");
    EXPECT_EQ(to_string(cidr("0.0.0.0/0").size()), "4294967296");
    EXPECT_EQ(to_string(cidr("::1/128").size()), "1");
    EXPECT_EQ(to_string(cidr("2001:db8::/64").size()), "18446744073709551616");
    EXPECT_EQ(to_string(cidr("::/1").size()), "170141183460469231731687303715884105728");
}

TEST(Cidr, SizeOfTheWholeIpv6SpaceSaturates) {
    EXPECT_TRUE(cidr("::/0").size() == kAllOnes);
}

TEST(Cidr, LastIsTheHighestAddress) {
    EXPECT_EQ(cidr("10.0.0.0/24").last(), ip("10.0.0.255"));
    EXPECT_EQ(cidr("10.0.0.7/32").last(), ip("10.0.0.7"));
    EXPECT_EQ(cidr("0.0.0.0/0").last(), ip("255.255.255.255"));
    EXPECT_EQ(cidr("::/0").last(), ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
    EXPECT_EQ(cidr("fe80::/10").last(), ip("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
}

TEST(Cidr, NthCountsFromTheNetworkAddressToTheLast) {
    const Cidr block = cidr("10.0.0.0/24");
    EXPECT_EQ(block.nth(0).value(), ip("10.0.0.0"));
    EXPECT_EQ(block.nth(1).value(), ip("10.0.0.1"));
    EXPECT_EQ(block.nth(255).value(), ip("10.0.0.255"));
    EXPECT_EQ(error_of(block.nth(256)),
              "address index 256 is outside 10.0.0.0/24, which holds 256 addresses");
    EXPECT_FALSE(block.nth(kAllOnes).ok());
}

TEST(Cidr, NthAtTheEdgesOfTheAddressSpace) {
    EXPECT_EQ(cidr("10.0.0.9/32").nth(0).value(), ip("10.0.0.9"));
    EXPECT_FALSE(cidr("10.0.0.9/32").nth(1).ok());
    EXPECT_EQ(cidr("0.0.0.0/0").nth(0xffffffff).value(), ip("255.255.255.255"));
    EXPECT_FALSE(cidr("0.0.0.0/0").nth(uint128{1} << 32).ok());
    EXPECT_EQ(cidr("::1/128").nth(0).value(), ip("::1"));
    EXPECT_FALSE(cidr("::1/128").nth(1).ok());
    EXPECT_EQ(cidr("::/0").nth(kAllOnes).value(), ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
    EXPECT_THAT(error_of(cidr("2001:db8::/64").nth(uint128{1} << 64)),
                HasSubstr("holds 18446744073709551616 addresses"));
}

TEST(Cidr, SubnetPicksTheIndexedBlock) {
    EXPECT_EQ(cidr("10.0.0.0/16").subnet(24, 0).value(), cidr("10.0.0.0/24"));
    EXPECT_EQ(cidr("10.0.0.0/16").subnet(24, 5).value(), cidr("10.0.5.0/24"));
    EXPECT_EQ(cidr("10.0.0.0/16").subnet(24, 255).value(), cidr("10.0.255.0/24"));
    EXPECT_EQ(cidr("10.0.0.0/16").subnet(16, 0).value(), cidr("10.0.0.0/16"));
    EXPECT_EQ(cidr("2001:db8::/32").subnet(48, 0xffff).value(), cidr("2001:db8:ffff::/48"));
    EXPECT_EQ(cidr("0.0.0.0/0").subnet(32, 0xffffffff).value(), cidr("255.255.255.255/32"));
    EXPECT_EQ(cidr("::/0").subnet(0, 0).value(), cidr("::/0"));
    EXPECT_EQ(cidr("::/0").subnet(128, kAllOnes).value(),
              cidr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"));
    EXPECT_EQ(cidr("::/0").subnet(1, 1).value(), cidr("8000::/1"));
}

TEST(Cidr, SubnetRefusesIndexPastTheLastBlock) {
    EXPECT_EQ(error_of(cidr("10.0.0.0/16").subnet(24, 256)),
              "block index 256 is outside 10.0.0.0/16, which holds 256 blocks of /24");
    EXPECT_FALSE(cidr("10.0.0.0/16").subnet(16, 1).ok());
    EXPECT_FALSE(cidr("::/0").subnet(0, 1).ok());
    EXPECT_FALSE(cidr("::/0").subnet(64, uint128{1} << 64).ok());
}

TEST(Cidr, SubnetRefusesPrefixOutsideTheBlock) {
    EXPECT_EQ(error_of(cidr("10.0.0.0/16").subnet(8, 0)),
              "cannot take a /8 out of 10.0.0.0/16: the prefix must be 16 to 32");
    EXPECT_FALSE(cidr("10.0.0.0/16").subnet(33, 0).ok());
    EXPECT_FALSE(cidr("10.0.0.0/16").subnet(-1, 0).ok());
    EXPECT_FALSE(cidr("::/0").subnet(129, 0).ok());
}

TEST(Cidr, SplitsA24IntoFour26sInAddressOrder) {
    const std::vector<Cidr> expected = {cidr("10.0.0.0/26"), cidr("10.0.0.64/26"),
                                        cidr("10.0.0.128/26"), cidr("10.0.0.192/26")};
    EXPECT_EQ(cidr("10.0.0.0/24").split(26).value(), expected);
}

TEST(Cidr, SplitsToTheSamePrefixAsItself) {
    EXPECT_EQ(cidr("10.0.0.0/24").split(24).value(), std::vector<Cidr>{cidr("10.0.0.0/24")});
    EXPECT_EQ(cidr("::/0").split(0).value(), std::vector<Cidr>{cidr("::/0")});
}

TEST(Cidr, SplitsIpv6AndToSingleAddresses) {
    const auto halves = cidr("::/0").split(1).value();
    EXPECT_EQ(halves, (std::vector<Cidr>{cidr("::/0").subnet(1, 0).value(), cidr("8000::/1")}));
    const auto hosts = cidr("10.0.0.4/30").split(32).value();
    ASSERT_EQ(hosts.size(), 4U);
    EXPECT_EQ(hosts.back(), cidr("10.0.0.7/32"));
}

TEST(Cidr, SplitRefusesTooManyBlocks) {
    EXPECT_EQ(error_of(cidr("10.0.0.0/8").split(32)),
              "splitting 10.0.0.0/8 into /32 blocks would make 16777216 blocks, more than the "
              "limit of 65536");
    EXPECT_FALSE(cidr("10.0.0.0/16").split(24, 255).ok());
    EXPECT_EQ(cidr("10.0.0.0/16").split(24, 256).value().size(), 256U);
    EXPECT_THAT(error_of(cidr("2001:db8::/32").split(96)), HasSubstr("18446744073709551616"));
    EXPECT_THAT(error_of(cidr("::/0").split(128)), HasSubstr("2^128 blocks"));
    EXPECT_FALSE(cidr("::/0").split(64).ok());
    EXPECT_FALSE(cidr("10.0.0.0/24").split(25, 0).ok());
}

TEST(Cidr, SplitRefusesPrefixOutsideTheBlock) {
    EXPECT_EQ(error_of(cidr("10.0.0.0/24").split(23)),
              "cannot split 10.0.0.0/24 into /23 blocks: the prefix must be 24 to 32");
    EXPECT_FALSE(cidr("10.0.0.0/24").split(33).ok());
    EXPECT_FALSE(cidr("::/0").split(129).ok());
    EXPECT_FALSE(cidr("::/0").split(-1).ok());
}

TEST(Cidr, SortsByNetworkThenPrefix) {
    EXPECT_LT(cidr("10.0.0.0/8"), cidr("10.0.0.0/24"));
    EXPECT_LT(cidr("10.0.0.0/24"), cidr("10.0.1.0/24"));
    EXPECT_LT(cidr("255.255.255.255/32"), cidr("::/0"));
}

// ---- InterfaceAddress ----

TEST(InterfaceAddress, KeepsHostBitsAndKnowsItsNetwork) {
    const auto address = InterfaceAddress::parse("10.0.0.5/24").value();
    EXPECT_EQ(address.address(), ip("10.0.0.5"));
    EXPECT_EQ(address.prefix(), 24);
    EXPECT_EQ(address.network(), cidr("10.0.0.0/24"));
    EXPECT_EQ(address.to_string(), "10.0.0.5/24");
}

TEST(InterfaceAddress, HandlesIpv6AndEdgePrefixes) {
    EXPECT_EQ(InterfaceAddress::parse("2001:db8::5/64")->network(), cidr("2001:db8::/64"));
    EXPECT_EQ(InterfaceAddress::parse("10.0.0.5/32")->network(), cidr("10.0.0.5/32"));
    EXPECT_EQ(InterfaceAddress::parse("10.0.0.5/0")->network(), cidr("0.0.0.0/0"));
    EXPECT_EQ(InterfaceAddress::parse("::1/0")->network(), cidr("::/0"));
    EXPECT_EQ(InterfaceAddress::parse("::1/128")->network(), cidr("::1/128"));
    EXPECT_EQ(InterfaceAddress::parse("10.0.0.0/24")->network(), cidr("10.0.0.0/24"));
}

TEST(InterfaceAddress, RejectsWhatCidrRejectsExceptHostBits) {
    EXPECT_EQ(error_of(InterfaceAddress::parse("10.0.0.5")),
              "invalid interface address '10.0.0.5': missing the /prefix length (for example "
              "10.0.0.5/24)");
    EXPECT_THAT(error_of(InterfaceAddress::parse("10.0.0.5/33")), HasSubstr("0 to 32"));
    EXPECT_THAT(error_of(InterfaceAddress::parse("::5/129")), HasSubstr("0 to 128"));
    EXPECT_THAT(error_of(InterfaceAddress::parse("10.0.0.5/08")), HasSubstr("leading zero"));
    EXPECT_THAT(error_of(InterfaceAddress::parse("")), HasSubstr("empty"));
    EXPECT_THAT(error_of(InterfaceAddress::parse("10.0.0.5/24 ")), HasSubstr("not a decimal"));
}

TEST(InterfaceAddress, FromChecksThePrefix) {
    EXPECT_EQ(InterfaceAddress::from(ip("10.0.0.5"), 24).value().to_string(), "10.0.0.5/24");
    EXPECT_EQ(error_of(InterfaceAddress::from(ip("10.0.0.5"), 40)),
              "invalid interface address '10.0.0.5/40': prefix length 40 is out of range; an "
              "IPv4 prefix is 0 to 32");
}

// ---- every error ----

// Every bad input above, and then some: each gives one line that quotes what was given.
TEST(IpErrors, AreOneLineAndQuoteTheInput) {
    // clang-format off
    const std::vector<std::string> bad = {
        "", "/", "x", "\r\n", "\x7f", "\xff\xfe"s,                  // nothing like an address
        "1.2.3", "010.0.0.1", "1::2::3", "fe80::1%eth0",            // bad address
        "10.0.0.1 ", "10.0.0.1\n", "10.0.0.1\0"s, "10.0.0.0/2\0"s,  // stray characters
        "10.0.0.0", "10.0.0.0/", "1.2.3.4/",                        // no prefix
        "10.0.0.0/33", "::1/129", "10.0.0.0/99999999999999999999",  // prefix too long
        "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/08", "::/00",       // prefix not plain
        "10.0.0.0/24x", "10.0.0.0/24/8",                            // trailing garbage
        "10.0.0.1/24", "fe80::1/10",                                // host bits set
    };
    // clang-format on
    for (const std::string& text : bad) {
        const std::string as_quoted = quote(text);
        if (!IpAddress::parse(text).ok()) {
            EXPECT_THAT(error_of(IpAddress::parse(text)),
                        StartsWith("invalid IP address " + as_quoted));
        }
        EXPECT_THAT(error_of(Cidr::parse(text)), StartsWith("invalid CIDR block " + as_quoted));
        if (text != "10.0.0.1/24" && text != "fe80::1/10") {
            EXPECT_THAT(error_of(InterfaceAddress::parse(text)),
                        StartsWith("invalid interface address " + as_quoted));
        }
    }
}

}  // namespace

TEST(Ipv4Endpoint, IsAnIpv4AddressAndAPortOf1To65535) {
    auto endpoint = parse_ipv4_endpoint("172.31.0.2:7654");
    ASSERT_TRUE(endpoint) << endpoint.error().message;
    EXPECT_EQ(endpoint->address.to_string(), "172.31.0.2");
    EXPECT_EQ(endpoint->port, 7654);
    EXPECT_EQ(parse_ipv4_endpoint("10.0.0.1:65535")->port, 65535);
    for (const char* bad : {"172.31.0.2", "172.31.0.2:", ":7654", "172.31.0.2:0",
                            "172.31.0.2:65536", "172.31.0.2:+1", "172.31.0.2:-1", "172.31.0.2:76a",
                            "2001:db8::1:7654", "host:7654", "172.31.0.2:000007654"}) {
        EXPECT_FALSE(parse_ipv4_endpoint(bad)) << bad;
    }
    EXPECT_EQ(parse_ipv4_endpoint("1.2.3:4").error().message,
              "'1.2.3:4' is not an IPv4 address and port");
}

}  // namespace vcpilot
