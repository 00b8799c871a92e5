#pragma once
// A stage's answer to the client, as a value: the status, the body, extra headers, and how the
// request ends (outcome and machine-readable reason for the access log and the ledger). The
// session writes it; no stage touches the connection.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tollgate/core/errors.hpp"
#include "server/pipeline/request_context.hpp"

namespace tollgate::pipeline {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct Reply {
  int status = 200;
  std::string body;  // JSON
  HeaderList headers;
  pipeline::Outcome outcome = pipeline::Outcome::kOk;
  std::string_view reason;  // ctx.error when not ok (static text)

  /// An OpenAI-style error answer that ends the request with `outcome` (default: rejected).
  static Reply error(std::string_view reason, const core::HttpError& e, HeaderList headers = {},
                     pipeline::Outcome outcome = pipeline::Outcome::kRejected) {
    return Reply{e.status, e.body(), std::move(headers), outcome, reason};
  }
  /// A 200 answer the gateway makes itself (the model list).
  static Reply ok(std::string body) { return Reply{200, std::move(body), {}, pipeline::Outcome::kOk, {}}; }
};

/// 403 PermissionDenied: the caller may not do this.
Reply forbidden(std::string message);

/// The wait a client is told about in a 429: `retry-after-ms` and whole seconds in `retry-after`
/// (both, as Azure sends them: the SDKs read the first, proxies and older clients the second).
HeaderList retry_after(std::int64_t wait_ms);
/// "Please retry after N second(s)." for a wait in milliseconds.
std::string retry_sentence(std::int64_t wait_ms);
/// The one 429 in Azure's shape: `message` + the retry sentence, with the retry headers (plus
/// `extra`). Ends the request with `outcome`.
Reply too_many_requests(std::string_view reason, const std::string& message, std::int64_t wait_ms,
                        pipeline::Outcome outcome, HeaderList extra = {});
/// A 503 that tells the SDKs not to retry (x-should-retry: false), with retry-after in seconds
/// when a recovery time is known.
Reply unavailable(std::string_view reason, std::string message, std::optional<std::int64_t> wait_ms,
                  pipeline::Outcome outcome);

/// 503 for a body the gateway may not buffer now (server.limits.max_buffered_bytes reached):
/// retry shortly (retry-after), the SDKs do.
Reply buffers_full(std::int64_t wait_ms);

}  // namespace tollgate::pipeline
