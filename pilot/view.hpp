// The compact cluster view a coordinator sends (coordinator.proto ClusterView), expanded into the
// SET_KEYS request the pilot validates and applies. The view grows with the number of sites, not
// of nodes: names and addresses follow from each site's block and the node's ordinal, and in
// certificate mode no per-node keys travel at all. Expansion only builds the request; every
// check of what it means for this node is validate_set_keys()'s.
#pragma once

#include <string_view>

#include "common/ip.hpp"
#include "common/result.hpp"
#include "vcpilot/v1/coordinator.pb.h"
#include "vcpilot/v1/pilot.pb.h"

namespace vcpilot::pilot {

// Node i (1-based) of site s is named "<name_prefix>-<s>-<i>" ("vc" when the prefix is empty),
// has the address block base + i, the MAC mac_for_address() derives from it, the underlay
// address at i-1 of the site's packed `underlay` (4 bytes per node for IPv4, 16 for IPv6) and,
// without ca_key, the keys at i-1 of host_keys and user_keys. Every site's block that is not
// inside `own_address`'s prefix becomes an on-link block. Refuses a view for another cluster
// than `cluster_id`, and anything whose counts and lengths do not add up; errors name the field
// ("sites[1].underlay: ...").
Result<v1::SetKeysRequest> expand_cluster_view(const v1::ClusterView& view,
                                               std::string_view cluster_id,
                                               const InterfaceAddress& own_address);

}  // namespace vcpilot::pilot
