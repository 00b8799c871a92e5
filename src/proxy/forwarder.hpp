#pragma once
// The forwarder: sends one request to one backend and relays the answer to the client as it
// arrives (event by event for SSE), observing usage on the way. See docs/design/streaming.md.

#include "proxy/deadline.hpp"
#include "proxy/net.hpp"
#include "server/worker.hpp"
#include "tollgate/core/request_context.hpp"

namespace tollgate::proxy {

/// The client side of a request: its stream and the connection's I/O deadline.
template <class Stream>
struct Client {
  Stream& stream;
  Deadline& deadline;
};

/// Forwards `req` (body: `body`) to `backend` and relays the response to `down`.
/// Thread: the worker owning `down`. Sets ctx.status/upstream_status/usage/outcome/error.
/// Returns whether the client connection may be kept alive afterwards.
template <class Down>
net::awaitable<bool> forward(Client<Down> down, const Request& req, std::string_view body,
                             core::RequestContext& ctx, server::Worker& worker,
                             const server::BackendRuntime& backend, bool keep_alive);

/// Writes a gateway-generated response. Returns whether the connection may be kept alive.
template <class Down>
net::awaitable<bool> respond(Client<Down> down, core::RequestContext& ctx, int status,
                             std::string body, bool keep_alive, unsigned version = 11,
                             std::string_view content_type = "application/json",
                             const std::vector<std::pair<std::string, std::string>>& extra = {});

/// True for headers that describe one connection and never cross the proxy (RFC 9110 §7.6.1).
bool is_hop_by_hop(std::string_view name);

/// Request headers not forwarded: hop-by-hop ones (also those named in Connection), framing,
/// Host, and the client's credentials (api-key, Authorization) — the backend gets its own key.
bool drop_request_header(const http::fields& fields, std::string_view name);
/// Response headers replaced by the gateway: hop-by-hop ones, framing, x-request-id (ours wins)
/// and x-tollgate-backend.
bool drop_response_header(const http::fields& fields, std::string_view name);

}  // namespace tollgate::proxy
