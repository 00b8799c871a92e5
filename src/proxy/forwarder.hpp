#pragma once
#include <functional>
// The forwarder: sends one request to one backend and relays the answer to the client as it
// arrives (event by event for SSE), observing usage on the way. See docs/design/streaming.md.

#include "proxy/deadline.hpp"
#include "proxy/net.hpp"
#include "proxy/upstream_pool.hpp"
#include "server/pipeline/snapshot.hpp"
#include "tollgate/core/objects.hpp"
#include "tollgate/metrics/stats.hpp"
#include "server/pipeline/request_context.hpp"
#include "tollgate/routing/signals.hpp"

namespace tollgate::proxy {

/// The client side of a request: its stream and the connection's I/O deadline (a fake one in
/// the relay's tests).
template <class Stream, IoDeadline D = Deadline>
struct Client {
  Stream& stream;
  D& deadline;
};

/// What the balancer's caller wants from one attempt.
struct AttemptOptions {
  bool hold_retryable = false;  // keep a 408/5xx answer back (the request may be retried); a
                                // 429 is always kept back
  bool capture_id = false;      // read the ids a 2xx answer carries (affinity)
  // Called with those ids as soon as they are known: before the answer's last byte reaches the
  // client, so a client that uses the object at once finds it known. May be empty.
  std::function<void(const core::AnswerIds&)> on_ids;
};

/// How one attempt on one backend ended.
struct AttemptResult {
  enum class Kind : std::uint8_t {
    kRelayed,  // the client got the backend's answer (or went away while getting it)
    kFailed,   // nothing reached the client: `error` says why
    kHeld,     // a retryable answer, read whole and not sent: `held`
  };
  Kind kind = Kind::kFailed;
  std::optional<metrics::UpstreamError> error;
  int status = 0;                          // the backend's status (0: none)
  bool answered = false;                   // the backend had sent its header (kFailed: no retry)
  routing::Signals signals;                // capacity headers of the backend's answer
  http::response<http::string_body> held;  // kHeld: ready to send (headers already filtered)
  std::string body_head;                   // kHeld: the body's first bytes (for retry hints)
  core::AnswerIds created_id;              // capture_id: the ids in a 2xx answer, if any
};

/// One attempt: sends `req` (body: `body`) to `backend` and, unless it holds the answer back or
/// fails before the client saw anything, relays the response to `down` as it arrives.
/// Thread: the worker owning `down`. Sets ctx.status/upstream_status/usage/outcome/error for a
/// relayed answer; `keep_alive` becomes false when the client connection must close.
template <class Down>
net::awaitable<AttemptResult> attempt(Client<Down> down, const Request& req, std::string_view body,
                                      pipeline::RequestContext& ctx, const UpstreamEnv& env,
                                      const pipeline::BackendRuntime& backend, bool& keep_alive,
                                      AttemptOptions options);

/// The credential a request to a backend carries: its api-key, or the Entra ID token the
/// control thread keeps fresh (`bearer`, held for the request).
struct Credential {
  std::shared_ptr<const std::string> bearer;  // null: the backend's api-key
};
/// `backend`'s credential now; nullopt when its token is missing or expired
/// (UpstreamError::kCredential).
std::optional<Credential> backend_credential(const pipeline::BackendRuntime& backend);
/// Appends the credential's header line to a request head ("\r\napi-key: ..." or
/// "\r\nAuthorization: Bearer ...", without the final CRLF).
void append_credential(std::string& head, const config::BackendConfig& cfg, const Credential& c);
/// The request line (`method` `target`), Host, the backend's credential, x-request-id and the
/// client's headers as they are forwarded (hop-by-hop, credentials, x-tollgate-* and the pin
/// header left out), each line ended; the caller adds framing and the blank line.
void append_request_head(std::string& head, std::string_view method, std::string_view target,
                         const Request& req, const pipeline::RequestContext& ctx,
                         const config::BackendConfig& cfg, const Credential& credential);
/// Opens a new connection to `backend` (its endpoint, TLS context and connect timeouts),
/// counted in upstream_connects, with its request Deadline set up. Null (and `err`) on failure.
net::awaitable<std::unique_ptr<UpstreamConn>> connect_backend(
    const UpstreamEnv& env, const pipeline::BackendRuntime& backend,
    std::optional<metrics::UpstreamError>& err);

/// Sends an answer held back by attempt(). Returns whether the connection may be kept alive.
template <class Down>
net::awaitable<bool> send_held(Client<Down> down, pipeline::RequestContext& ctx,
                               http::response<http::string_body>& held, bool keep_alive,
                               unsigned version);

/// Answers for an attempt that failed before the client saw anything (502/504), counting it.
template <class Down>
net::awaitable<bool> respond_failure(Client<Down> down, pipeline::RequestContext& ctx,
                                     metrics::UpstreamError reason, bool keep_alive,
                                     unsigned version);

/// True when the client has closed its side of the connection (checked without blocking).
bool client_closed(tcp::socket& socket);

/// Writes a gateway-generated response. Returns whether the connection may be kept alive.
template <class Down>
net::awaitable<bool> respond(Client<Down> down, pipeline::RequestContext& ctx, int status,
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
