// The handshake that opens every vc-bcast stream (see bcast.proto), for both services: the
// client says hello with a nonce, the server proves it holds the transfer's secret, then the
// client does. Templates over the stream and message types, which differ per service but share
// the hello/challenge/proof fields.
#pragma once

#include <string>

#include "bcast/integrity.hpp"
#include "common/result.hpp"

namespace vcpilot::bcast {

struct Greeting {
    std::string node;           // the client's name
    std::string ring_endpoint;  // from its proof (Join only)
};

// Server side; `In` is what the client sends, `Out` what the server answers.
template <typename In, typename Out, typename Stream>
Result<Greeting> accept_handshake(Stream& stream, const Secret& secret) {
    In in;
    if (!stream.Read(&in) || !in.has_hello()) {
        return Error{"the stream did not start with a hello"};
    }
    const std::string client_nonce = in.hello().nonce();
    Greeting greeting{in.hello().node(), {}};
    auto nonce = random_nonce();
    if (!nonce) {
        return nonce.error();
    }
    auto server_mac = secret.server_mac(client_nonce, *nonce);
    auto client_mac = secret.client_mac(*nonce, client_nonce);
    if (!server_mac || !client_mac) {
        return (server_mac ? client_mac : server_mac).error();
    }
    Out challenge;
    challenge.mutable_challenge()->set_nonce(*nonce);
    challenge.mutable_challenge()->set_mac(*server_mac);
    if (!stream.Write(challenge) || !stream.Read(&in) || !in.has_proof()) {
        return Error{"the stream ended during the handshake"};
    }
    if (!same_mac(*client_mac, in.proof().mac())) {
        return Error{"wrong proof: not part of this transfer"};
    }
    greeting.ring_endpoint = in.proof().ring_endpoint();
    return greeting;
}

// Client side; `Out` is what the client sends, `In` what the server answers.
template <typename Out, typename In, typename Stream>
Status offer_handshake(Stream& stream, const Secret& secret, const std::string& node,
                       const std::string& ring_endpoint = {}) {
    auto nonce = random_nonce();
    if (!nonce) {
        return nonce.error();
    }
    Out out;
    out.mutable_hello()->set_node(node);
    out.mutable_hello()->set_nonce(*nonce);
    In in;
    if (!stream.Write(out) || !stream.Read(&in)) {
        return Error{"the stream ended during the handshake"};
    }
    if (!in.has_challenge()) {
        return Error{"the handshake failed: the other side does not hold this transfer's secret"};
    }
    auto server_mac = secret.server_mac(*nonce, in.challenge().nonce());
    auto client_mac = secret.client_mac(in.challenge().nonce(), *nonce);
    if (!server_mac || !client_mac) {
        return (server_mac ? client_mac : server_mac).error();
    }
    if (!same_mac(*server_mac, in.challenge().mac())) {
        return Error{"the handshake failed: the other side does not hold this transfer's secret"};
    }
    out.Clear();
    out.mutable_proof()->set_mac(*client_mac);
    out.mutable_proof()->set_ring_endpoint(ring_endpoint);
    if (!stream.Write(out)) {
        return Error{"the stream ended during the handshake"};
    }
    return {};
}

}  // namespace vcpilot::bcast
