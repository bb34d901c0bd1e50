#include "pilot/view.hpp"

#include <array>
#include <cstdint>
#include <string>

#include "common/hostlist.hpp"
#include "common/text.hpp"
#include "common/underlays.hpp"
#include "pilot/privileged/net.hpp"
#include "pilot/privileged/paths.hpp"
#include "pilot/validate.hpp"

namespace vcpilot::pilot {

namespace {

Error field_error(const std::string& field, const std::string& what) {
    return Error{field + ": " + what};
}

}  // namespace

Result<v1::SetKeysRequest> expand_cluster_view(const v1::ClusterView& view,
                                               std::string_view cluster_id,
                                               const InterfaceAddress& own_address) {
    if (view.cluster_id() != cluster_id) {
        return field_error("cluster_id", quote(view.cluster_id()) + " is not this node's cluster " +
                                             quote(cluster_id));
    }
    if (view.sites_size() == 0) {
        return field_error("sites", "the cluster has no sites");
    }
    // Counted before anything is built: a view is small, what it expands to need not be.
    std::uint64_t total = 0;
    for (int s = 0; s < view.sites_size(); ++s) {
        total += view.sites(s).nodes();
        if (total > kMaxClusterNodes) {
            return field_error("sites", "more than " + std::to_string(kMaxClusterNodes) +
                                            " nodes in all, over the limit");
        }
    }
    const bool certificates = !view.ca_key().empty();
    const std::string prefix = view.name_prefix().empty() ? "vc" : view.name_prefix();
    const Cidr own_network = own_address.network();

    v1::SetKeysRequest request;
    request.set_ca_key(view.ca_key());
    request.set_host_certificate(view.host_certificate());
    request.set_user_certificate(view.user_certificate());
    for (int s = 0; s < view.sites_size(); ++s) {
        const v1::SiteView& site = view.sites(s);
        const std::string where = "sites[" + std::to_string(s) + "]";
        if (auto ok = check_host_label(where + ".site", site.site()); !ok) {
            return ok.error();
        }
        auto block = Cidr::parse(site.block());
        if (!block) {
            return field_error(where + ".block", block.error().message);
        }
        if (block->family() != own_address.address().family()) {
            return field_error(where + ".block",
                               quote(site.block()) + " is not of the job network's family");
        }
        const std::uint32_t nodes = site.nodes();
        if (nodes == 0) {
            return field_error(where + ".nodes", "a site has at least one node");
        }
        // Base + 1 .. base + nodes, all inside the block and, for IPv4, short of its broadcast.
        const uint128 room = block->size() - (block->family() == IpFamily::v4 ? 2 : 1);
        if (block->size() < 2 || nodes > room) {
            return field_error(where + ".nodes", std::to_string(nodes) + " nodes do not fit in " +
                                                     block->to_string());
        }
        auto underlays = unpack_underlays(site);
        if (!underlays) {
            return Error{where + "." + underlays.error().message};
        }
        if (certificates) {
            if (site.host_keys_size() != 0 || site.user_keys_size() != 0) {
                return field_error(
                    where + (site.host_keys_size() != 0 ? ".host_keys" : ".user_keys"),
                    "given together with ca_key; in certificate mode the nodes carry no keys");
            }
        } else {
            if (static_cast<std::uint32_t>(site.host_keys_size()) != nodes) {
                return field_error(where + ".host_keys", std::to_string(site.host_keys_size()) +
                                                             " keys for " + std::to_string(nodes) +
                                                             " nodes");
            }
            if (static_cast<std::uint32_t>(site.user_keys_size()) != nodes) {
                return field_error(where + ".user_keys", std::to_string(site.user_keys_size()) +
                                                             " keys for " + std::to_string(nodes) +
                                                             " nodes");
            }
        }
        // Only this node's site's Slurm nodes: another site's are another Slurm's names.
        std::vector<std::string> hosts;
        if (!site.hosts().empty() && block->contains(own_address.address())) {
            auto expanded = expand_hostlist(site.hosts(), nodes);
            if (!expanded) {
                return field_error(where + ".hosts", expanded.error().message);
            }
            if (expanded->size() != nodes) {
                return field_error(where + ".hosts", std::to_string(expanded->size()) +
                                                         " hosts for " + std::to_string(nodes) +
                                                         " nodes");
            }
            hosts = std::move(*expanded);
        }
        for (std::uint32_t i = 1; i <= nodes; ++i) {
            const IpAddress address = block->nth(i).value();  // i <= room, checked above
            v1::ClusterNode* node = request.add_nodes();
            node->set_name(prefix + "-" + site.site() + "-" + std::to_string(i));
            node->set_address(address.to_string());
            node->set_mac(to_string(mac_for_address(address)));
            node->set_underlay_address((*underlays)[i - 1].to_string());
            if (!certificates) {
                node->set_host_key(site.host_keys(static_cast<int>(i - 1)));
                node->set_user_key(site.user_keys(static_cast<int>(i - 1)));
            }
            node->set_slots(view.slots());
            if (!hosts.empty()) {
                node->set_host(std::move(hosts[i - 1]));
            }
        }
        if (!own_network.contains(*block)) {
            request.add_onlink_blocks(block->to_string());
        }
    }
    return request;
}

}  // namespace vcpilot::pilot
