// A site's underlay addresses in a cluster view (v1::SiteView.underlay and underlay_runs): the
// coordinators pack them, each pilot unpacks them for its overlay's forwarding table.
#pragma once

#include <vector>

#include "common/ip.hpp"
#include "common/result.hpp"
#include "vcpilot/v1/coordinator.pb.h"

namespace vcpilot {

// Packs `underlays` (node i at i-1, all of one family) into `site`: one address per run of
// consecutive addresses when that is shorter than one per node, which it is for any site
// whose nodes are numbered the usual way.
Status pack_underlays(const std::vector<IpAddress>& underlays, v1::SiteView& site);

// The site's underlay addresses, node i at i-1, exactly site.nodes() of them; an error names
// the field (underlay or underlay_runs) and what is wrong with it.
Result<std::vector<IpAddress>> unpack_underlays(const v1::SiteView& site);

}  // namespace vcpilot
