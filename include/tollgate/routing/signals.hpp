#pragma once
// What a backend's response says about its capacity: retry hints, remaining quota, PTU
// utilization. Plain C++ parsers (no Beast); every value is validated and anything negative,
// missing or malformed is "unknown" (Azure sends -1 at times). See docs/design/routing.md.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>

namespace tollgate::routing {

using Millis = std::chrono::milliseconds;

/// `retry-after-ms`: a non-negative number of milliseconds (fractions allowed, rounded up).
std::optional<Millis> parse_retry_after_ms(std::string_view v);
/// `retry-after`: non-negative seconds (fractions allowed) or an HTTP date (IMF-fixdate, RFC 850
/// or asctime), relative to `now_unix_ms`; a date in the past is 0.
std::optional<Millis> parse_retry_after(std::string_view v, std::int64_t now_unix_ms);
/// `x-ratelimit-reset-*`: seconds as a number ("55", "1.5") or OpenAI's duration text ("6m0s",
/// "17ms", "1s").
std::optional<Millis> parse_reset(std::string_view v);
/// `x-ratelimit-remaining-*`: a non-negative whole number.
std::optional<std::int64_t> parse_count(std::string_view v);
/// `azure-openai-deployment-utilization`: "87.5%" (or "87.5") -> 87.5.
std::optional<double> parse_utilization(std::string_view v);
/// The wait in an error message: "retry after N second(s)", "try again in N seconds" (any case).
std::optional<Millis> parse_body_retry_after(std::string_view body);
/// Parses an HTTP date into Unix milliseconds.
std::optional<std::int64_t> parse_http_date(std::string_view v);

/// Everything the capacity model reads from one response.
struct Signals {
  std::optional<Millis> retry_after;  // retry-after-ms, else retry-after
  std::optional<Millis> reset_tokens;
  std::optional<Millis> reset_requests;
  std::optional<std::int64_t> remaining_tokens;
  std::optional<std::int64_t> remaining_requests;
  std::optional<double> utilization;  // percent
};

/// Header lookup by lower-case name; returns "" when absent.
using HeaderLookup = std::function<std::string_view(std::string_view)>;

/// Reads the capacity headers of a response. Thread: any.
Signals read_signals(const HeaderLookup& header, std::int64_t now_unix_ms);

/// How long a throttled backend should rest, in Azure's documented order: retry-after-ms,
/// retry-after, x-ratelimit-reset-tokens, x-ratelimit-reset-requests, then the body's
/// "retry after N seconds". nullopt when nothing says.
std::optional<Millis> throttle_hint(const Signals& s, std::string_view body);

}  // namespace tollgate::routing
