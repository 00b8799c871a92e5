// Client connections: accept, read requests (with size and time limits), classify each once, run
// the pipeline, forward, and always finish with metrics and an access-log line.

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/container/small_vector.hpp>
#include <charconv>
#include <ctime>

#include "proxy/forwarder.hpp"
#include "proxy/net.hpp"
#include "server/worker.hpp"
#include "tollgate/core/api_call.hpp"
#include "tollgate/core/request_context.hpp"
#include "tollgate/auth/authenticator.hpp"
#include "tollgate/auth/crypto.hpp"
#include "tollgate/ratelimit/admission.hpp"
#include "tollgate/metrics/logging.hpp"
#include "tollgate/routing/affinity.hpp"
#include "tollgate/routing/balancer.hpp"
#include "tollgate/usage/ledger.hpp"

namespace tollgate::server {

using namespace proxy;  // net, beast, http, streams, use_tuple
using core::RequestContext;

namespace {

std::int64_t micros_since(core::SteadyClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(core::SteadyClock::now() - t).count();
}

std::int64_t unix_now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string utc_now_iso() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

bool is_inference(core::Operation op) {
  return op == core::Operation::kChatCompletions || op == core::Operation::kCompletions ||
         op == core::Operation::kEmbeddings || op == core::Operation::kResponses;
}

// What a finished request is billed: the backend's usage, else (a successful inference answer
// without usage, like a stream the client left early) the prompt estimate plus the generated
// text the gateway relayed, counted with the tokenizer and marked estimated, else nothing (a
// request that failed before producing tokens costs nothing).
core::Usage billed_usage(RequestContext& ctx) {
  auto u = ctx.usage;
  if (u.present) {
    if (u.total == 0) u.total = u.prompt + u.completion;
    return u;
  }
  u = {};
  if (!is_inference(ctx.call.op) || ctx.status / 100 != 2 || ctx.ttfb_us < 0 || ctx.tokenizers == nullptr) {
    return u;
  }
  ctx.usage_estimated = true;
  u.prompt = static_cast<std::uint64_t>(ctx.prompt_estimate);
  u.completion = static_cast<std::uint64_t>(ratelimit::count_output(*ctx.tokenizers, ctx.model, ctx.output_text));
  u.total = u.prompt + u.completion;
  return u;
}

void log_budget_warning(const RequestContext& ctx, const ratelimit::BudgetLimit& b) {
  core::JsonFields f;
  f.add("scope", ratelimit::to_string(b.scope))
      .add("name", b.name)
      .add("period", ratelimit::to_string(b.period))
      .add("unit", ratelimit::to_string(b.measure));
  auto used = b.budget->used(b.period, ratelimit::unix_now_ms());
  if (b.measure == ratelimit::Measure::kNanoUsd) {
    f.add_usd("limit", b.limit).add_usd("used", used);
  } else {
    f.add("limit", b.limit).add("used", used);
  }
  metrics::log_warn("budget warning level reached", f.add("request_id", ctx.request_id));
}

/// Always runs once per request, on every path: settlement, metrics, the usage ledger and the
/// access log.
void finish(Worker& w, RequestContext& ctx) {
  bool held = ctx.reservation.held() || ctx.budget_hold.held();  // counted as outstanding
  auto billed = billed_usage(ctx);
  if (ctx.deployment != nullptr && ctx.deployment->price.set) {
    ctx.cost_nano_usd = ratelimit::Price(ctx.deployment->price).cost(billed);
  }
  ctx.charged_tokens = static_cast<std::int64_t>(billed.total);
  if (ctx.reservation.held()) ctx.reservation.settle(ctx.charged_tokens, ratelimit::steady_now_ns());
  if (ctx.budget_hold.held()) {
    std::vector<const ratelimit::BudgetLimit*> crossed;
    ctx.budget_hold.settle(ctx.charged_tokens, ctx.cost_nano_usd, ratelimit::unix_now_ms(), &crossed);
    for (const auto* b : crossed) log_budget_warning(ctx, *b);
  }
  if (held) w.stats().reservations.add(-1);
  auto& stats = w.stats();
  auto& cells = stats.route(ctx.series);
  auto duration = micros_since(ctx.start);
  cells.requests[metrics::status_class(ctx.status)].add();
  cells.duration.observe_micros(duration);
  if (ctx.ttfb_us >= 0) cells.ttfb.observe_micros(ctx.ttfb_us);
  const auto& u = ctx.usage;
  if (u.present) {
    cells.tokens[metrics::TokenType::kPrompt].add(u.prompt);
    cells.tokens[metrics::TokenType::kCompletion].add(u.completion);
    cells.tokens[metrics::TokenType::kCached].add(u.cached);
    cells.tokens[metrics::TokenType::kReasoning].add(u.reasoning);
  } else if (ctx.usage_expected && ctx.status / 100 == 2 && ctx.outcome == std::string_view("ok")) {
    cells.usage_missing.add();
  }
  auto& client_cells = stats.client(ctx.client_series);
  client_cells.requests[metrics::status_class(ctx.status)].add();
  if (ctx.reservation.held()) client_cells.charged_tokens.add(static_cast<std::uint64_t>(ctx.charged_tokens));
  if (ctx.usage_estimated) client_cells.usage_estimated.add();
  if (ctx.cost_nano_usd > 0) {
    client_cells.cost_nano_usd.add(static_cast<std::uint64_t>(ctx.cost_nano_usd));
    cells.cost_nano_usd.add(static_cast<std::uint64_t>(ctx.cost_nano_usd));
  }
  if (u.present) {
    client_cells.tokens[metrics::TokenType::kPrompt].add(u.prompt);
    client_cells.tokens[metrics::TokenType::kCompletion].add(u.completion);
    client_cells.tokens[metrics::TokenType::kCached].add(u.cached);
    client_cells.tokens[metrics::TokenType::kReasoning].add(u.reasoning);
  }
  stats.in_flight.add(-1);
  // The usage ledger: one record per request of a known caller (anonymous included); requests
  // refused before authentication are in the access log only (no one to bill, and a flood of
  // them must not fill the disk).
  if (auto* ledger = w.ledger(); ledger != nullptr && ctx.client != "unauthenticated") {
    usage::Record r;
    r.time_ms = ratelimit::unix_now_ms();
    r.request_id = ctx.request_id;
    r.client = ctx.client;
    r.tenant = ctx.tenant;
    if (ctx.deployment != nullptr) r.deployment = ctx.deployment->name;
    r.backend = ctx.backend;
    r.operation = core::to_string(ctx.call.op);
    r.tier = ctx.tier;
    r.status = ctx.status;
    r.prompt_tokens = static_cast<std::int64_t>(billed.prompt);
    r.completion_tokens = static_cast<std::int64_t>(billed.completion);
    r.cached_tokens = static_cast<std::int64_t>(billed.cached);
    r.reasoning_tokens = static_cast<std::int64_t>(billed.reasoning);
    r.estimated = ctx.usage_estimated;
    r.cost_nano_usd = ctx.cost_nano_usd;
    r.latency_us = duration;
    r.ttft_us = ctx.ttfb_us;
    r.outcome = ctx.outcome;
    ledger->submit(std::move(r));
  }
  auto& log = w.access_log();
  if (!log.enabled()) return;
  core::JsonFields f;
  f.add("time", utc_now_iso())
      .add("request_id", ctx.request_id)
      .add("method", ctx.method)
      .add("path", ctx.path)
      .add("api_version", ctx.call.api_version)
      .add("operation", core::to_string(ctx.call.op))
      .add("deployment", ctx.deployment ? std::string_view(ctx.deployment->name) : std::string_view())
      .add("backend", ctx.backend)
      .add("client", ctx.client)
      .add("tenant", ctx.tenant)
      .add("status", ctx.status)
      .add("upstream_status", ctx.upstream_status)
      .add("stream", ctx.call.stream)
      .add_ms("duration_ms", duration);
  if (ctx.ttfb_us >= 0) {
    f.add_ms("ttfb_ms", ctx.ttfb_us);
  } else {
    f.add_raw("ttfb_ms", "null");  // no backend answered
  }
  f.add("tier", ctx.tier);
  f.add("priority", ctx.priority);
  if (ctx.queue_us >= 0) {
    f.add_ms("queue_ms", ctx.queue_us);
  } else {
    f.add_raw("queue_ms", "0");
  }
  std::string attempts = "[";
  for (const auto& a : ctx.attempts) {
    if (attempts.size() > 1) attempts += ',';
    core::JsonFields one;
    one.add("backend", a.backend).add("status", a.status).add("reason", a.reason).add_ms("duration_ms", a.duration_us);
    attempts += one.object();
  }
  attempts += ']';
  f.add_raw("attempts", attempts);
  f
      .add("prompt_tokens", u.prompt)
      .add("completion_tokens", u.completion)
      .add("total_tokens", u.total)
      .add("cached_tokens", u.cached)
      .add("reasoning_tokens", u.reasoning)
      .add("usage_reported", u.present)
      .add("reserved_tokens", ctx.reservation.held() ? ctx.reservation.tokens() : 0)
      .add("charged_tokens", ctx.charged_tokens)
      .add("usage_estimated", ctx.usage_estimated)
      .add_usd("cost_usd", ctx.cost_nano_usd)
      .add("bytes_in", ctx.bytes_in)
      .add("bytes_out", ctx.bytes_out)
      .add("outcome", ctx.outcome)
      .add("error", ctx.error)
      .add("remote", ctx.remote)
      .add("user_agent", ctx.user_agent);
  log.write(f);
}

core::HttpError body_too_large(std::size_t limit) {
  return {413, "request_too_large",
          "the request body exceeds the limit of " + std::to_string(limit) + " bytes", {}, {}};
}

// The balancer's reading of one attempt: the breaker outcome, the reason logged and, when the
// request may move to another backend, why.
struct Judgement {
  routing::Outcome outcome;
  std::string_view reason;
  std::optional<metrics::RetryReason> retry;
};

// `creates`: the request creates a server-side object (file upload, batch, stored response);
// it moves to another backend only when the first cannot have created it (the connection never
// carried it, or the backend refused it with 429/503), so no object is made twice.
Judgement judge(const AttemptResult& r, const RequestContext& ctx, bool creates) {
  using Kind = AttemptResult::Kind;
  using metrics::RetryReason;
  using metrics::UpstreamError;
  if (r.kind == Kind::kFailed) {
    auto e = *r.error;
    bool timeout = e == UpstreamError::kConnectTimeout || e == UpstreamError::kFirstByteTimeout ||
                   e == UpstreamError::kIdleTimeout;
    std::optional<RetryReason> retry;
    bool unsent = e == UpstreamError::kResolve || e == UpstreamError::kConnect ||
                  e == UpstreamError::kConnectTimeout || e == UpstreamError::kTls ||
                  e == UpstreamError::kCredential;
    if (!r.answered && (unsent || !creates)) {
      retry = timeout ? RetryReason::kTimeout : RetryReason::kConnect;
    }
    return {routing::Outcome::kFailure, metrics::to_string(e), retry};
  }
  auto retry_if_held = [&](RetryReason reason) {
    bool refused = r.status == 429 || r.status == 503;
    return r.kind == Kind::kHeld && (refused || !creates) ? std::optional(reason) : std::nullopt;
  };
  // A 429 is the throttle's business, not the breaker's: Azure says exactly when to come back,
  // and a breaker would keep a paid-for PTU deployment idle for longer than that.
  if (r.status == 429) return {routing::Outcome::kNeutral, "throttled", retry_if_held(RetryReason::kThrottled)};
  if (r.status == 408) return {routing::Outcome::kFailure, "timeout", retry_if_held(RetryReason::kTimeout)};
  if (r.status >= 500) {
    return {routing::Outcome::kFailure, "server_error", retry_if_held(RetryReason::kServerError)};
  }
  if (ctx.outcome == std::string_view("upstream_error")) {  // broke after bytes reached the client
    return {routing::Outcome::kFailure, ctx.error, std::nullopt};
  }
  return {routing::Outcome::kSuccess, "ok", std::nullopt};
}

routing::TimeMs cooldown(const routing::Signals& s, std::string_view body,
                         const config::RoutingConfig& r) {
  auto hint = routing::throttle_hint(s, body);
  auto ms = hint ? hint->count() : r.cooldown_default.count();
  return std::clamp<routing::TimeMs>(ms, r.cooldown_min.count(), r.cooldown_max.count());
}

// A longer wait than this makes the SDKs ignore retry-after (node, old python) or give up (new
// python): the gateway answers 503 + x-should-retry: false instead of 429.
constexpr routing::TimeMs kMaxClientWaitMs = 60'000;

/// No backend can take the request: 429 with the earliest recovery when it is near, else 503.
template <class Stream>
net::awaitable<bool> respond_unavailable(Worker& w, Client<Stream> client, const Request& req,
                                         RequestContext& ctx, const Snapshot& snap,
                                         const DeploymentRuntime& drt,
                                         std::optional<std::uint32_t> only, bool keep_alive,
                                         std::span<const char> allowed) {
  auto now = routing::steady_now_ms();
  auto earliest = routing::earliest_recovery(drt.route, snap.slots, now, only, allowed);
  ctx.series = drt.series_none;
  ctx.backend = {};
  ctx.tier = 0;
  ctx.outcome = "no_backend";
  ctx.error = "no_backend_available";
  auto& cells = w.stats().route(ctx.series);
  const auto& name = ctx.deployment->name;
  std::vector<std::pair<std::string, std::string>> headers;
  if (earliest && *earliest - now <= kMaxClientWaitMs) {
    auto wait = std::max<routing::TimeMs>(*earliest - now, 1);
    auto secs = (wait + 999) / 1000;
    headers.emplace_back("retry-after-ms", std::to_string(wait));
    headers.emplace_back("retry-after", std::to_string(secs));
    cells.no_backend[metrics::NoBackendCode::k429].add();
    core::HttpError e{429, "429",
                      "All backends of deployment '" + name +
                          "' are at capacity. Please retry after " + std::to_string(secs) +
                          " second" + (secs == 1 ? "" : "s") + ".",
                      "rate_limit_exceeded", {}};
    co_return co_await respond(client, ctx, 429, e.body(), keep_alive, req.version(),
                               "application/json", headers);
  }
  headers.emplace_back("x-should-retry", "false");
  if (earliest) headers.emplace_back("retry-after", std::to_string((*earliest - now + 999) / 1000));
  cells.no_backend[metrics::NoBackendCode::k503].add();
  core::HttpError e{503, "503",
                    "No backend of deployment '" + name +
                        "' can take requests now, and none is expected to recover within a "
                        "minute.",
                    "service_unavailable", {}};
  co_return co_await respond(client, ctx, 503, e.body(), keep_alive, req.version(),
                             "application/json", headers);
}

// The caller's remaining quota as Azure reports it: the tightest token and request limits.
std::string remaining_headers(const std::vector<ratelimit::Limit>& limits, ratelimit::Nanos now) {
  std::optional<std::pair<std::int64_t, std::int64_t>> tokens, requests;  // (limit, remaining)
  for (const auto& l : limits) {
    auto avail = l.bucket->available(now, l.per_minute);
    auto& slot = l.unit == ratelimit::Unit::kTokens ? tokens : requests;
    if (!slot || avail < slot->second) slot = std::pair{l.per_minute, avail};
  }
  std::string h;
  if (tokens) {
    h += "x-ratelimit-limit-tokens: " + std::to_string(tokens->first) + "\r\n";
    h += "x-ratelimit-remaining-tokens: " + std::to_string(tokens->second) + "\r\n";
  }
  if (requests) {
    h += "x-ratelimit-limit-requests: " + std::to_string(requests->first) + "\r\n";
    h += "x-ratelimit-remaining-requests: " + std::to_string(requests->second) + "\r\n";
  }
  return h;
}

/// A limit lacks room: 429 in Azure's shape with the wait, or 400 when the request can never
/// fit (it needs more than the limit allows in a minute).
template <class Stream>
net::awaitable<bool> respond_rate_limited(Worker& w, Client<Stream> client, const Request& req,
                                          RequestContext& ctx,
                                          const ratelimit::Reservation::Refusal& refusal,
                                          std::int64_t needed, bool keep_alive,
                                          ratelimit::Nanos now) {
  const auto& l = *refusal.limit;
  auto scope = ratelimit::to_string(l.scope);
  auto unit = ratelimit::to_string(l.unit);
  ctx.outcome = "rejected";
  ctx.error = refusal.wait ? "rate_limited" : "over_limit";
  if (refusal.wait) w.stats().client(ctx.client_series).rate_limited.at(l.scope, l.unit).add();
  std::string what = std::string(scope) + " '" + std::string(l.name) + "' (" +
                     std::to_string(l.per_minute) + " " + std::string(unit) + " per minute)";
  if (!refusal.wait) {
    core::HttpError e = core::bad_request(
        "This request needs about " + std::to_string(needed) + " tokens, more than the limit of " +
        what + " allows: lower max_tokens or split the input.");
    co_return co_await respond(client, ctx, 400, e.body(), keep_alive, req.version());
  }
  auto wait_ms = std::max<std::int64_t>(1, (*refusal.wait + 999'999) / 1'000'000);
  auto secs = (wait_ms + 999) / 1000;
  std::vector<std::pair<std::string, std::string>> headers;
  headers.emplace_back("retry-after-ms", std::to_string(wait_ms));
  headers.emplace_back("retry-after", std::to_string(secs));
  headers.emplace_back(std::string("x-ratelimit-limit-") + std::string(unit), std::to_string(l.per_minute));
  headers.emplace_back(std::string("x-ratelimit-remaining-") + std::string(unit),
                       std::to_string(l.bucket->available(now, l.per_minute)));
  core::HttpError e{429, "429",
                    "Rate limit of " + what + " exceeded. Please retry after " + std::to_string(secs) +
                        " second" + (secs == 1 ? "" : "s") + ".",
                    "rate_limit_exceeded", {}};
  co_return co_await respond(client, ctx, 429, e.body(), keep_alive, req.version(),
                             "application/json", headers);
}

// "$2.50", "$0.00022": exact, without trailing zeros beyond the cents.
std::string usd_text(std::int64_t nano_usd) {
  auto text = core::usd_decimal(nano_usd);
  auto dot = text.find('.');
  while (text.size() > dot + 3 && text.back() == '0') text.pop_back();
  return "$" + text;
}

/// A calendar budget cannot hold the request: 429 with x-should-retry: false until the period
/// ends (OpenAI's insufficient_quota), or — when requests in flight hold the rest — a short,
/// retryable 429.
template <class Stream>
net::awaitable<bool> respond_over_budget(Worker& w, Client<Stream> client, const Request& req,
                                         RequestContext& ctx,
                                         const ratelimit::BudgetHold::Refusal& refusal,
                                         std::int64_t tokens, std::int64_t nano_usd,
                                         bool keep_alive, ratelimit::UnixMs now) {
  const auto& b = *refusal.limit;
  bool usd = b.measure == ratelimit::Measure::kNanoUsd;
  w.stats().client(ctx.client_series).budget_refused.at(b.scope, b.period, b.measure).add();
  ctx.outcome = "rejected";
  auto amount = [usd](std::int64_t v) { return usd ? usd_text(v) : std::to_string(v) + " tokens"; };
  std::string what = std::string(b.period == ratelimit::Period::kDay ? "daily" : "monthly") +
                     (usd ? " spending" : " token") + " budget of " +
                     std::string(ratelimit::to_string(b.scope)) + " '" + std::string(b.name) + "' (" +
                     amount(b.limit) + ")";
  std::vector<std::pair<std::string, std::string>> headers;
  if (!refusal.exhausted) {
    ctx.error = "budget_busy";
    headers.emplace_back("retry-after-ms", "1000");
    headers.emplace_back("retry-after", "1");
    core::HttpError e{429, "429",
                      "Requests in flight hold the rest of the " + what +
                          ". Please retry after 1 second.",
                      "rate_limit_exceeded", {}};
    co_return co_await respond(client, ctx, 429, e.body(), keep_alive, req.version(),
                               "application/json", headers);
  }
  ctx.error = "budget_exhausted";
  auto reset_ms = ratelimit::period_end(b.period, now);
  auto reset = auth::format_rfc3339(reset_ms / 1000);
  headers.emplace_back("x-should-retry", "false");
  headers.emplace_back("retry-after", std::to_string((reset_ms - now + 999) / 1000));
  core::HttpError e{429, "insufficient_quota",
                    "The " + what + " is used up: " + amount(refusal.used) +
                        " used, and this request may need up to " + amount(usd ? nano_usd : tokens) +
                        ". It resets at " + reset + ".",
                    "insufficient_quota", {}};
  co_return co_await respond(client, ctx, 429, e.body(), keep_alive, req.version(),
                             "application/json", headers);
}

/// What a request may do when no backend can take it now: wait for capacity (its priority
/// class's `max_queue_wait`, its own timeout) or not.
struct QueuePlan {
  std::size_t cls = 0;
  const config::PriorityClassConfig* klass = nullptr;
  bool wait = false;            // the class queues (max_queue_wait > 0)
  double weight = 1;            // the client's share within its class
  routing::TimeMs deadline = 0;  // dispatched by then, or shed
};

struct WaitResult {
  enum class Kind { kDispatched, kDeadline, kClientGone, kUnreachable, kFull } kind;
  std::optional<routing::Lease> lease;
};

/// Waits in the deployment's waiting room until the scheduler hands this request a backend
/// (a lease), its deadline passes, or its client leaves. `allowed` is every backend it may still
/// use. Answers at once when no such backend recovers before the deadline, or the queue is full.
template <class Stream>
net::awaitable<WaitResult> wait_for_capacity(Worker& w, Client<Stream> client, RequestContext& ctx,
                                             const Snapshot& snap, const DeploymentRuntime& drt,
                                             const QueuePlan& plan, std::int64_t need,
                                             std::optional<std::uint32_t> only,
                                             std::span<const char> allowed) {
  using namespace boost::asio::experimental::awaitable_operators;
  using Kind = WaitResult::Kind;
  auto& scheduler = *snap.scheduler;
  auto now = routing::steady_now_ms();
  // A backend that is only busy can free up any moment: worth waiting for whatever the deadline.
  auto earliest = routing::earliest_recovery(drt.route, snap.slots, now, only, allowed, true);
  if (!earliest || *earliest > plan.deadline) co_return WaitResult{Kind::kUnreachable, std::nullopt};

  net::steady_timer timer(w.io());
  timer.expires_after(std::chrono::milliseconds(plan.deadline - now));
  // The dispatcher (any thread, under the scheduler's lock) wakes us through the timer, on this
  // worker; `alive` is cleared before the timer goes away.
  auto alive = std::make_shared<net::steady_timer*>(&timer);
  routing::Waiter waiter;
  waiter.cls = plan.cls;
  waiter.flow = ctx.client;
  waiter.weight = plan.weight;
  waiter.enqueued = now;
  waiter.deadline = plan.deadline;
  waiter.deployment = ctx.deployment->name;
  waiter.route = &drt.route;
  waiter.slots = snap.slots;
  waiter.need_tokens = need;
  waiter.only = only;
  waiter.allowed = allowed;
  // Expiring the timer (rather than cancelling its wait) makes the wake stick: a wait begun
  // after it — the client's socket won the last round — completes at once.
  waiter.wake = [exec = w.io().get_executor(), alive] {
    net::post(exec, [alive] {
      if (*alive != nullptr) (*alive)->expires_at(net::steady_timer::time_point::min());
    });
  };
  if (!scheduler.enqueue(waiter, plan.klass->queue_limit, now, w.rng())) {
    co_return WaitResult{Kind::kFull, std::nullopt};
  }
  if (*earliest > now) snap.wake_at(*earliest);  // a cooldown or open breaker ends then
  // On every way out — including this coroutine being destroyed while it waits (a stop) — the
  // request leaves the room, and a backend handed to it that nobody will use is given back.
  struct Leave {
    std::shared_ptr<net::steady_timer*>& alive;
    routing::Scheduler& scheduler;
    routing::Waiter& waiter;
    const Snapshot& snap;
    bool handled = false;
    Worker& w;
    ~Leave() {
      *alive = nullptr;
      if (handled || scheduler.leave(waiter) || !waiter.lease) return;
      auto& st = *snap.backends[waiter.lease->backend].state;
      st.release();
      auto now = routing::steady_now_ms();
      st.record(routing::Outcome::kNeutral, waiter.lease->trial, now, snap.breaker);
      scheduler.after_release(now, w.rng());
    }
  } leave_guard{alive, scheduler, waiter, snap, false, w};
  // Leaves the queue; false when dispatched meanwhile (the lease is then ours).
  auto leave = [&] { return scheduler.leave(waiter); };
  auto& sock = beast::get_lowest_layer(client.stream).socket();
  bool watch_client = true;
  auto result = [&](Kind k) -> WaitResult {
    leave_guard.handled = true;
    ctx.queue_us = std::max<std::int64_t>(ctx.queue_us, 0) + (routing::steady_now_ms() - now) * 1000;
    return {k, waiter.lease};
  };
  for (;;) {
    boost::system::error_code ec;
    bool readable = false;
    if (watch_client) {
      auto r = co_await (timer.async_wait(use_tuple) ||
                         sock.async_wait(tcp::socket::wait_read, use_tuple));
      if (r.index() == 0) {
        ec = std::get<0>(std::get<0>(r));
      } else {
        readable = true;
        ec = std::get<0>(std::get<1>(r));
      }
    } else {
      std::tie(ec) = co_await timer.async_wait(use_tuple);
    }
    if (readable) {
      if (ec || client_closed(sock)) {
        if (leave()) co_return result(Kind::kClientGone);
        co_return result(Kind::kDispatched);  // raced with the dispatch: the caller releases it
      }
      watch_client = false;  // data (a pipelined request): only the timer from here on
      continue;
    }
    // The timer: expired by a dispatch, or the deadline.
    if (leave()) co_return result(Kind::kDeadline);
    co_return result(Kind::kDispatched);
  }
}

/// The request could have waited but did not get capacity: 429 with a wait estimated from the
/// queue's drain rate (503 and x-should-retry: false beyond a minute).
template <class Stream>
net::awaitable<bool> respond_shed(Client<Stream> client, const Request& req,
                                  RequestContext& ctx, const Snapshot& snap, const QueuePlan& plan,
                                  metrics::ShedReason reason, bool keep_alive) {
  const auto& name = ctx.deployment->name;
  auto now = routing::steady_now_ms();
  auto wait = snap.scheduler->drain_estimate(name, plan.cls, now)
                  .value_or(std::max<routing::TimeMs>(1000, plan.klass->max_queue_wait.count() / 2));
  wait = std::max<routing::TimeMs>(wait, 100);
  ctx.outcome = "shed";
  ctx.error = reason == metrics::ShedReason::kQueueFull ? "queue_full" : "queue_timeout";
  ctx.backend = {};
  std::string why = reason == metrics::ShedReason::kQueueFull
                        ? "Too many requests of priority '" + plan.klass->name + "' are waiting for deployment '" + name + "'."
                        : "No capacity of deployment '" + name + "' became available while this request of priority '" +
                              plan.klass->name + "' could wait.";
  std::vector<std::pair<std::string, std::string>> headers;
  if (wait > kMaxClientWaitMs) {
    headers.emplace_back("x-should-retry", "false");
    headers.emplace_back("retry-after", std::to_string((wait + 999) / 1000));
    core::HttpError e{503, "503", why + " The backlog will not clear within a minute.", "service_unavailable", {}};
    co_return co_await respond(client, ctx, 503, e.body(), keep_alive, req.version(), "application/json", headers);
  }
  auto secs = (wait + 999) / 1000;
  headers.emplace_back("retry-after-ms", std::to_string(wait));
  headers.emplace_back("retry-after", std::to_string(secs));
  core::HttpError e{429, "429",
                    why + " Please retry after " + std::to_string(secs) + " second" + (secs == 1 ? "" : "s") + ".",
                    "rate_limit_exceeded", {}};
  co_return co_await respond(client, ctx, 429, e.body(), keep_alive, req.version(), "application/json", headers);
}

/// Balancer and forwarder: attempts on backends picked tier by tier, failing over while nothing
/// has reached the client, feeding every answer into the backends' shared state.
template <class Stream>
net::awaitable<bool> route_and_forward(Worker& w, Client<Stream> client, const Request& req,
                                       RequestContext& ctx, const Snapshot& snap,
                                       const DeploymentRuntime& drt,
                                       std::optional<std::uint32_t> only, bool creates,
                                       bool keep_alive, std::span<const char> allowed,
                                       const QueuePlan& plan) {
  const auto& cfg = *snap.config;
  const auto& retry = ctx.deployment->retry;
  std::int64_t need = 0;
  if (is_inference(ctx.call.op) && ctx.call.json) {
    const auto& j = *ctx.call.json;
    auto number = [&j](const char* key) -> std::int64_t {
      auto it = j.find(key);
      return it != j.end() && it->is_number_integer() ? it->get<std::int64_t>() : 0;
    };
    auto max_out = std::max({number("max_completion_tokens"), number("max_tokens"),
                             number("max_output_tokens")});
    need = routing::expected_tokens(req.body().size(), max_out,
                                    std::max(number("n"), number("best_of")));
  }
  boost::container::small_vector<char, 32> tried(snap.backends.size(), 0);
  struct BudgetGuard {
    routing::RetryBudget& budget;
    bool retrying = false;
    ~BudgetGuard() {
      if (retrying) budget.end_retry();
      budget.end_request();
    }
  } budget{*drt.budget};
  drt.budget->begin_request();
  std::optional<AttemptResult> last;
  std::uint32_t last_tier = drt.first_tier;
  // A retry is counted (and takes budget) only once another backend was found for it.
  std::optional<std::pair<std::uint32_t, metrics::RetryReason>> pending_retry;  // (series, why)

  // tried[b]: 1 = failed for this request, 2 = throttled it (usable again after its cooldown
  // when the request waits for capacity).
  auto& prio = w.stats().route(drt.series_none);
  std::optional<routing::Lease> handed;  // a backend the scheduler took for this request
  for (unsigned n = 0;;) {
    auto now = routing::steady_now_ms();
    std::optional<routing::Lease> lease;
    if (handed) {
      lease = handed;
      handed.reset();
    } else if (!(n == 0 && plan.wait && snap.scheduler->must_queue(ctx.deployment->name, plan.cls))) {
      // (requests of this class or higher already wait: this one queues behind them)
      lease = routing::pick(drt.route, snap.slots,
                            routing::PickRequest{now, need, {tried.data(), tried.size()}, only, allowed},
                            w.rng());
    }
    if (!lease && plan.wait && n < retry.max_attempts && now < plan.deadline &&
        core::SteadyClock::now() - ctx.start < retry.deadline) {
      // No backend can take it now: wait for one (strict priority, fair within the class).
      boost::container::small_vector<char, 32> usable(snap.backends.size(), 1);
      for (std::size_t b = 0; b < usable.size(); ++b) {
        usable[b] = (allowed.empty() || allowed[b] != 0) && tried[b] != 1 ? 1 : 0;
      }
      auto waited = co_await wait_for_capacity(w, client, ctx, snap, drt, plan, need, only,
                                               {usable.data(), usable.size()});
      using Kind = WaitResult::Kind;
      if (waited.kind != Kind::kUnreachable && waited.kind != Kind::kFull) {
        prio.queue_wait[metrics::ClassRank{plan.cls}].observe_micros(ctx.queue_us);
      }
      switch (waited.kind) {
        case Kind::kDispatched:
          prio.dispatched[metrics::ClassRank{plan.cls}].add();
          if (client_closed(beast::get_lowest_layer(client.stream).socket())) {
            auto& st = *snap.backends[waited.lease->backend].state;
            st.release();
            auto t = routing::steady_now_ms();
            st.record(routing::Outcome::kNeutral, waited.lease->trial, t, snap.breaker);
            snap.scheduler->after_release(t, w.rng());
            prio.shed.at(metrics::ClassRank{plan.cls}, metrics::ShedReason::kClientGone).add();
            ctx.outcome = "client_gone";
            ctx.error = "client_gone";
            co_return false;
          }
          handed = waited.lease;
          continue;
        case Kind::kClientGone:
          prio.shed.at(metrics::ClassRank{plan.cls}, metrics::ShedReason::kClientGone).add();
          ctx.outcome = "client_gone";
          ctx.error = "client_gone";
          co_return false;
        case Kind::kDeadline:
          prio.shed.at(metrics::ClassRank{plan.cls}, metrics::ShedReason::kDeadline).add();
          co_return co_await respond_shed(client, req, ctx, snap, plan, metrics::ShedReason::kDeadline, keep_alive);
        case Kind::kFull:
          prio.shed.at(metrics::ClassRank{plan.cls}, metrics::ShedReason::kQueueFull).add();
          co_return co_await respond_shed(client, req, ctx, snap, plan, metrics::ShedReason::kQueueFull, keep_alive);
        case Kind::kUnreachable:
          prio.shed.at(metrics::ClassRank{plan.cls}, metrics::ShedReason::kUnreachable).add();
          break;  // the routing issue's answer: 429 with the recovery time, or 503
      }
    }
    if (!lease) break;
    ++n;
    const auto& backend = snap.backends[lease->backend];
    auto& state = *backend.state;
    if (pending_retry) {
      if (!budget.retrying && !drt.budget->try_begin_retry(retry.budget, retry.min_retries)) {
        state.release();
        state.record(routing::Outcome::kNeutral, lease->trial, now, snap.breaker);
        snap.scheduler->after_release(now, w.rng());
        w.stats().route(drt.series_none).budget_exhausted.add();
        break;
      }
      budget.retrying = true;
      w.stats().route(pending_retry->first).retries[pending_retry->second].add();
      pending_retry.reset();
    }
    // Releases the in-flight slot on every path (an exception included), and lets a request
    // waiting for capacity have it.
    struct LeaseGuard {
      routing::BackendState& state;
      bool trial;
      const routing::BreakerPolicy& policy;
      routing::Scheduler& scheduler;
      routing::Rng& rng;
      bool reported = false;
      ~LeaseGuard() {
        state.release();
        auto now = routing::steady_now_ms();
        if (!reported) state.record(routing::Outcome::kNeutral, trial, now, policy);
        scheduler.after_release(now, rng);
      }
    } guard{state, lease->trial, snap.breaker, *snap.scheduler, w.rng()};
    ctx.series = drt.series[lease->backend];
    ctx.backend = backend.config->name;
    ctx.tier = static_cast<int>(lease->tier) + 1;
    auto& cells = w.stats().route(ctx.series);
    if (lease->tier > last_tier) {
      cells.spilled_from[metrics::tier_rank(last_tier)].add();
    }
    last_tier = lease->tier;

    bool may_retry = n < retry.max_attempts && core::SteadyClock::now() - ctx.start < retry.deadline;
    auto rewritten = core::rewrite_body(ctx.call, *backend.config);
    std::string_view body = rewritten ? std::string_view(*rewritten) : std::string_view(req.body());
    auto t0 = core::SteadyClock::now();
    auto r = co_await attempt(client, req, body, ctx, w, backend, keep_alive,
                              AttemptOptions{may_retry, creates});
    auto verdict = judge(r, ctx, creates);
    auto done = routing::steady_now_ms();
    if (r.status == 429) state.throttle(done + cooldown(r.signals, r.body_head, cfg.routing));
    state.record(verdict.outcome, lease->trial, done, snap.breaker);
    guard.reported = true;
    ctx.attempts.push_back(core::AttemptLog{ctx.backend, r.status, verdict.reason, micros_since(t0)});

    if (r.kind == AttemptResult::Kind::kRelayed) {
      if (!r.created_id.empty()) snap.affinity->remember(r.created_id, ctx.backend, done);
      co_return keep_alive;
    }
    tried[lease->backend] = r.status == 429 ? 2 : 1;
    auto reason = verdict.retry;
    last = std::move(r);
    if (!reason || !may_retry) break;
    if (core::SteadyClock::now() - ctx.start >= retry.deadline) break;  // the attempt used it up
    if (client_closed(beast::get_lowest_layer(client.stream).socket())) {
      ctx.outcome = "client_gone";
      ctx.error = "client_gone";
      co_return false;
    }
    pending_retry.emplace(ctx.series, *reason);
  }

  if (!last) co_return co_await respond_unavailable(w, client, req, ctx, snap, drt, only, keep_alive, allowed);
  if (last->kind == AttemptResult::Kind::kHeld) {
    // Every backend throttled: one 429 that names the earliest recovery beats the last backend's.
    auto now = routing::steady_now_ms();
    auto earliest = routing::earliest_recovery(drt.route, snap.slots, now, only, allowed);
    if (last->status == 429 && !(earliest && *earliest <= now)) {
      co_return co_await respond_unavailable(w, client, req, ctx, snap, drt, only, keep_alive, allowed);
    }
    co_return co_await send_held(client, ctx, last->held, keep_alive, req.version());
  }
  co_return co_await respond_failure(client, ctx, *last->error, keep_alive, req.version());
}

/// One request through the fixed pipeline. Returns whether to keep the connection.
template <class Stream>
net::awaitable<bool> handle(Worker& w, Client<Stream> client, Request& req, RequestContext& ctx,
                            std::shared_ptr<const Snapshot> snap) {
  bool keep_alive = req.keep_alive() && !w.draining();
  const auto& cfg = *snap->config;

  // Authenticator: who is calling. Nothing about deployments or backends is revealed before.
  auto auth_state = w.auth();  // kept for the request: the caller's policy lives in it
  const auto& acfg = *auth_state->config;
  auto identity = auth::authenticate({req["api-key"], req[http::field::authorization]}, acfg,
                                     *auth_state->keys, auth_state->jwks, unix_now_seconds());
  if (identity.refresh_issuer) w.unknown_kid(*identity.refresh_issuer);
  const config::ClientConfig* caller = nullptr;
  switch (identity.kind) {
    case auth::Identity::Kind::kUnauthenticated: {
      ctx.outcome = "rejected";
      ctx.error = identity.reason;  // missing_credentials, unknown_key, token_expired, ...
      core::HttpError e{401, "401",
                        "Access denied due to a missing, invalid or expired API key or token. "
                        "Send your key in the api-key header, or a bearer token in the "
                        "Authorization header.",
                        "invalid_request_error", {}};
      std::string challenge = "Bearer realm=\"tollgate\"";
      if (identity.token) challenge += ", error=\"invalid_token\"";
      std::vector<std::pair<std::string, std::string>> headers;
      headers.emplace_back("www-authenticate", std::move(challenge));
      co_return co_await respond(client, ctx, 401, e.body(), keep_alive, req.version(),
                                 "application/json", headers);
    }
    case auth::Identity::Kind::kForbidden: {
      ctx.outcome = "rejected";
      ctx.error = identity.reason;
      core::HttpError e{403, "PermissionDenied",
                        "The token is valid but does not name a client of this gateway.",
                        "permission_error", {}};
      co_return co_await respond(client, ctx, 403, e.body(), keep_alive, req.version());
    }
    case auth::Identity::Kind::kClient:
      caller = &acfg.clients[identity.client];
      ctx.client = caller->name;
      ctx.tenant = caller->tenant == config::ClientConfig::kNoTenant
                       ? std::string("none")
                       : acfg.tenants[caller->tenant].name;
      ctx.client_series = auth_state->client_series[identity.client];
      break;
    case auth::Identity::Kind::kAnonymous:
      ctx.client = "anonymous";
      ctx.client_series = auth_state->anonymous_series;
      break;
  }
  // Classified only now: an unauthenticated caller costs no JSON parsing.
  auto content_type = req[http::field::content_type];
  auto classified = core::classify(req.method_string(), req.target(), content_type, req.body());
  ctx.call = std::move(classified.call);
  auto forbid = [&](std::string message) -> net::awaitable<bool> {
    ctx.outcome = "rejected";
    ctx.error = "forbidden";
    core::HttpError e{403, "PermissionDenied", std::move(message), "permission_error", {}};
    co_return co_await respond(client, ctx, 403, e.body(), keep_alive, req.version());
  };

  if (classified.error) {
    ctx.outcome = "rejected";
    ctx.error = "bad_request";
    co_return co_await respond(client, ctx, classified.error->status, classified.error->body(),
                               keep_alive, req.version());
  }
  if (ctx.call.op == core::Operation::kModels) {
    if (caller != nullptr && !auth::allows_operation(*caller, "models")) {
      co_return co_await forbid("This client may not call the 'models' operation.");
    }
    auto allowed = [caller](std::string_view d) {
      return caller == nullptr || auth::allows_deployment(*caller, d);
    };
    co_return co_await respond(client, ctx, 200, core::models_list(cfg, allowed), keep_alive,
                               req.version());
  }

  // Router: the deployment a client named (stateful calls without a model: the affinity
  // deployment), and its route (pools in priority order).
  if (ctx.call.stateful && ctx.call.deployment.empty()) {
    ctx.deployment = &cfg.deployments[cfg.routing.affinity_deployment];
  } else {
    ctx.deployment = cfg.find_deployment(ctx.call.deployment);
  }
  if (ctx.deployment == nullptr) {
    ctx.outcome = "rejected";
    ctx.error = "unknown_deployment";
    auto e = core::not_found("DeploymentNotFound",
                             "The API deployment for this resource does not exist.");
    co_return co_await respond(client, ctx, 404, e.body(), keep_alive, req.version());
  }
  auto d = cfg.deployment_index(*ctx.deployment);
  const auto& drt = snap->deployments[d];
  ctx.series = drt.series_none;
  // Authorization: the deployment, the operation, and the regions of its backends.
  boost::container::small_vector<char, 32> allowed;
  if (caller != nullptr) {
    if (!auth::allows_deployment(*caller, ctx.deployment->name)) {
      co_return co_await forbid("This client may not use deployment '" + ctx.deployment->name + "'.");
    }
    auto op = auth::operation_name(ctx.call);
    if (!auth::allows_operation(*caller, op)) {
      co_return co_await forbid("This client may not call the '" + std::string(op) + "' operation.");
    }
    if (!caller->regions.empty()) {
      allowed.assign(snap->backends.size(), 0);
      bool any = false;
      for (const auto& tier : drt.route.tiers) {
        for (const auto& m : tier) {
          bool ok = auth::allows_region(*caller, snap->backends[m.backend].config->region);
          allowed[m.backend] = ok ? 1 : 0;
          any = any || ok;
        }
      }
      if (!any) {
        co_return co_await forbid("No backend of deployment '" + ctx.deployment->name +
                                  "' is in a region this client may use.");
      }
    }
  }
  // Priority: the client's class, which a request may lower (never raise) with the priority
  // header; the class decides the tiers it may use and how long it may wait for capacity.
  const auto& pcfg = cfg.priority;
  QueuePlan plan;
  plan.cls = caller != nullptr && caller->priority ? *caller->priority : pcfg.default_class;
  if (!pcfg.header.empty()) {
    if (auto h = req[pcfg.header]; !h.empty()) {
      auto asked = pcfg.find(h);
      if (!asked) {
        ctx.outcome = "rejected";
        ctx.error = "bad_priority";
        std::string names;
        for (const auto& k : pcfg.classes) names += (names.empty() ? "" : ", ") + k.name;
        auto e = core::bad_request("the " + pcfg.header + " header names no priority class (" + names + ")");
        co_return co_await respond(client, ctx, 400, e.body(), keep_alive, req.version());
      }
      plan.cls = std::max(plan.cls, *asked);  // lower only
    }
  }
  plan.klass = &pcfg.classes[plan.cls];
  if (caller != nullptr) plan.weight = caller->weight;
  ctx.priority = plan.klass->name;
  if (!drt.class_allowed.empty()) {
    // The tiers reserved for other classes are out, on failover too; a tier the class may use
    // as spare capacity is in while its backends' utilization is below the threshold.
    boost::container::small_vector<char, 32> mask(drt.class_allowed[plan.cls].begin(),
                                                  drt.class_allowed[plan.cls].end());
    for (const auto& sp : drt.class_spare[plan.cls]) {
      const auto& st = *snap->backends[sp.backend].state;
      std::optional<double> util;
      if (auto u = st.utilization()) {
        util = *u / 100.0;
      } else if (auto cap = snap->slots[sp.backend].max_in_flight; cap > 0) {
        util = static_cast<double>(st.in_flight()) / cap;
      }
      if (util && *util < sp.max_utilization) mask[sp.backend] = 1;
    }
    if (allowed.empty()) {
      allowed = std::move(mask);
    } else {
      for (std::size_t b = 0; b < allowed.size(); ++b) allowed[b] = allowed[b] != 0 && mask[b] != 0;
    }
  }
  plan.wait = plan.klass->max_queue_wait.count() > 0;
  if (plan.wait) {
    auto wait = plan.klass->max_queue_wait.count();
    for (const auto& name : pcfg.timeout_headers) {  // the client's own timeout, in seconds
      auto v = req[name];
      if (v.empty()) continue;
      double secs = 0;
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), secs);
      if (ec == std::errc{} && p == v.data() + v.size() && secs > 0 && secs * 1000 < static_cast<double>(wait)) {
        wait = static_cast<std::int64_t>(secs * 1000);  // (inf and 1e300 fail the comparison)
      }
    }
    plan.deadline = routing::steady_now_ms() + wait;
  }
  // Streams carry usage only when asked for (stream_options.include_usage).
  ctx.usage_expected = is_inference(ctx.call.op) && (!ctx.call.stream || ctx.call.include_usage);
  auto reject = [&](int status, std::string_view error, core::HttpError e) -> net::awaitable<bool> {
    ctx.outcome = "rejected";
    ctx.error = error;
    co_return co_await respond(client, ctx, status, e.body(), keep_alive, req.version());
  };

  // Affinity: a stateful call naming an object goes to the backend that created it.
  std::optional<std::uint32_t> only;
  bool creates = false;
  const nlohmann::ordered_json* json = ctx.call.json ? &*ctx.call.json : nullptr;
  if (ctx.call.stateful) {
    creates = routing::creates_object(req.method_string(), ctx.call.op_path, json);
    auto ids = routing::referenced_ids(ctx.call.op_path, json);
    auto now = routing::steady_now_ms();
    for (const auto& id : ids) {
      auto owner = snap->affinity->find(id, now);
      if (!owner) continue;
      auto it = snap->backend_index.find(*owner);
      if (it == snap->backend_index.end() || !drt.route.contains(it->second)) {
        co_return co_await reject(404, "object_backend_gone",
                                  core::not_found("404", "The object '" + id +
                                                             "' lives on a backend that no longer "
                                                             "serves deployment '" +
                                                             ctx.deployment->name + "'."));
      }
      only = it->second;
      break;
    }
    if (!only && !ids.empty() && drt.route.size() > 1) {
      co_return co_await reject(
          404, "unknown_object",
          core::not_found("404", "No object '" + ids.front() +
                                     "' is known to this gateway: it was not created through it, "
                                     "or it expired from its affinity table."));
    }
  }
  // Pinning (for testing a specific backend), when the operator enabled the header.
  if (!cfg.routing.pin_header.empty()) {
    if (auto pin = req[cfg.routing.pin_header]; !pin.empty()) {
      if (caller != nullptr && !caller->may_pin) {
        co_return co_await forbid("This client may not choose a backend (" + cfg.routing.pin_header + ").");
      }
      auto it = snap->backend_index.find(std::string(pin));
      if (it == snap->backend_index.end() || !drt.route.contains(it->second) ||
          (!allowed.empty() && allowed[it->second] == 0)) {
        co_return co_await reject(400, "bad_pin",
                                  core::bad_request("the " + cfg.routing.pin_header +
                                                    " header names no backend of deployment '" +
                                                    ctx.deployment->name + "'"));
      }
      if (only && *only != it->second) {
        co_return co_await reject(400, "bad_pin",
                                  core::bad_request("the " + cfg.routing.pin_header +
                                                    " header conflicts with the backend that "
                                                    "holds the object this request names"));
      }
      only = it->second;
    }
    ctx.drop_header = cfg.routing.pin_header;
  }
  // Admission: reserve the request's expected tokens (and one request) from every limit that
  // applies — client, tenant, deployment — and its expected tokens and cost from every budget,
  // all or nothing; settled when the request ends. With a usage ledger, every inference call is
  // accounted (exact stream usage, counted output when a stream ends early).
  std::vector<ratelimit::Limit> limits;
  const std::vector<ratelimit::BudgetLimit>* budgets = nullptr;
  if (identity.kind == auth::Identity::Kind::kClient) {
    const auto& cl = auth_state->client_limits[identity.client];
    limits.insert(limits.end(), cl.begin(), cl.end());
    if (!auth_state->client_budgets[identity.client].empty()) {
      budgets = &auth_state->client_budgets[identity.client];
    }
  }
  limits.insert(limits.end(), drt.limits.begin(), drt.limits.end());
  bool inference = is_inference(ctx.call.op);
  bool policy = inference && (caller != nullptr || cfg.policy.max_n > 0 || cfg.policy.max_best_of > 0);
  bool ledger = inference && w.ledger() != nullptr;
  if (!limits.empty() || policy || budgets != nullptr || ledger) {
    ratelimit::Estimate estimate;
    if (inference) {
      estimate = ratelimit::admit(ctx.call, req.body().size(), caller, cfg.policy, *snap->tokenizers,
                                  ctx.deployment->model);
      if (estimate.error) {
        co_return co_await reject(400, "over_policy", std::move(*estimate.error));
      }
    }
    ctx.prompt_estimate = estimate.prompt;
    ctx.tokenizers = snap->tokenizers.get();
    ctx.model = ctx.deployment->model;
    ctx.count_output = inference && ctx.call.stream;
    // A stream's exact usage comes only when asked for: ask on the client's behalf, and take it
    // back out of what the client receives (UsageStripper).
    bool streamed_text = ctx.call.op == core::Operation::kChatCompletions ||
                         ctx.call.op == core::Operation::kCompletions;
    if (ctx.call.stream && streamed_text && !ctx.call.include_usage && ctx.call.json) {
      auto& so = (*ctx.call.json)["stream_options"];
      if (!so.is_object()) so = nlohmann::ordered_json::object();
      so["include_usage"] = true;
      ctx.call.body_modified = true;
      ctx.strip_usage = true;
    }
    if (budgets != nullptr) {
      auto wall = ratelimit::unix_now_ms();
      std::int64_t cost = ctx.deployment->price.set
                              ? ratelimit::Price(ctx.deployment->price).ceiling(estimate.prompt, estimate.allowance)
                              : 0;
      if (auto refusal = ctx.budget_hold.reserve(*budgets, estimate.total(), cost, wall)) {
        co_return co_await respond_over_budget(w, client, req, ctx, *refusal, estimate.total(), cost,
                                               keep_alive, wall);
      }
    }
    auto now = ratelimit::steady_now_ns();
    if (auto refusal = ctx.reservation.reserve(limits, estimate.total(), now)) {
      ctx.budget_hold.release(ratelimit::unix_now_ms());
      co_return co_await respond_rate_limited(w, client, req, ctx, *refusal, estimate.total(),
                                              keep_alive, now);
    }
    if (ctx.reservation.held() || ctx.budget_hold.held()) w.stats().reservations.add(1);
    if (!limits.empty()) ctx.response_headers = remaining_headers(limits, now);
  }
  w.stats().route(drt.series_none).class_requests[metrics::ClassRank{plan.cls}].add();
  co_return co_await route_and_forward(w, client, req, ctx, *snap, drt, only, creates, keep_alive,
                                       {allowed.data(), allowed.size()}, plan);
}
/// After an error answer on a request whose body was not read, keep reading (and discarding) for
/// a short while so the client sees the answer rather than a reset (nginx's lingering close).
template <class Stream>
net::awaitable<void> linger_close(Stream& stream, Deadline& deadline) {
  boost::system::error_code ec;
  beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_send, ec);
  std::array<char, 16 * 1024> sink;
  std::size_t total = 0;
  deadline.after(std::chrono::seconds(2));
  while (total < (8u << 20)) {
    auto [rec, n] = co_await beast::get_lowest_layer(stream).async_read_some(
        net::buffer(sink), use_tuple);
    if (rec) break;
    total += n;
  }
}

template <class Stream>
net::awaitable<void> run_session(Worker& w, Stream stream, std::string remote) {
  auto& stats = w.stats();
  stats.open_connections.add(1);
  stats.connections_total.add();
  auto entry = w.register_session([&stream] { beast::get_lowest_layer(stream).cancel(); });
  struct Exit {
    Worker& w;
    std::list<Worker::SessionEntry>::iterator it;
    ~Exit() {
      w.unregister_session(it);
      w.stats().open_connections.add(-1);
    }
  } exit_guard{w, entry};

  Deadline deadline(beast::get_lowest_layer(stream).socket());
  Client<Stream> client{stream, deadline};
  beast::flat_buffer buffer;
  buffer.reserve(8 * 1024);  // Beast reads at most the free capacity: 512 B steps cost syscalls
  bool first = true;
  while (!w.draining()) {
    auto snap = w.snapshot();
    const auto limits = snap->config->server.limits;  // a copy: snap is refreshed below
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(limits.max_header_size));
    parser.body_limit(limits.max_request_body);
    entry->idle = true;
    deadline.after(first ? limits.header_timeout : limits.idle_timeout);
    auto [ec, hn] = co_await http::async_read_header(stream, buffer, parser, use_tuple);
    entry->idle = false;
    first = false;
    // The request runs on the newest snapshot as of its arrival (not of the connection's last
    // request), and keeps it to its end.
    snap = w.snapshot();

    RequestContext ctx;
    ctx.start = core::SteadyClock::now();
    ctx.remote = remote;
    ctx.series = snap->unrouted_series;
    if (ec) {
      // Silence for closes and timeouts between requests (a Deadline cancels: operation_aborted);
      // an answer for malformed requests.
      if (ec == http::error::end_of_stream || ec == net::error::eof ||
          ec == net::error::operation_aborted || ec == beast::error::timeout ||
          ec == net::error::connection_reset || hn == 0) {
        co_return;
      }
      stats.in_flight.add(1);
      ctx.request_id = core::new_request_id();
      ctx.outcome = "rejected";
      core::HttpError e = core::bad_request("malformed HTTP request");
      ctx.error = "bad_request";
      if (ec == http::error::header_limit) {
        e = core::HttpError{431, "header_too_large", "the request header is too large", {}, {}};
        ctx.error = "header_too_large";
      } else if (ec == http::error::body_limit) {  // Content-Length above the limit
        e = body_too_large(limits.max_request_body);
        ctx.error = "body_too_large";
      }
      co_await respond(client, ctx, e.status, e.body(), false);
      finish(w, ctx);
      co_await linger_close(stream, deadline);
      co_return;
    }
    stats.in_flight.add(1);
    auto& header = parser.get();
    auto rid = header["x-request-id"];
    ctx.request_id = core::acceptable_request_id(rid) ? std::string(rid) : core::new_request_id();
    ctx.method = std::string(header.method_string());
    auto target = header.target();
    ctx.path = std::string(target.substr(0, target.find('?')));
    ctx.user_agent = std::string(header[http::field::user_agent].substr(0, 256));

    auto length = parser.content_length();
    if (length && *length > limits.max_request_body) {
      ctx.outcome = "rejected";
      ctx.error = "body_too_large";
      co_await respond(client, ctx, 413, body_too_large(limits.max_request_body).body(), false,
                       header.version());
      finish(w, ctx);
      co_await linger_close(stream, deadline);
      co_return;
    }
    if (beast::iequals(header[http::field::expect], "100-continue")) {
      http::response<http::empty_body> cont{http::status::continue_, header.version()};
      co_await http::async_write(stream, cont, use_tuple);
    }
    boost::system::error_code bec;
    std::size_t bn = parse_buffered(parser, buffer, bec);
    if (!bec && !parser.is_done()) {
      deadline.after(limits.header_timeout);
      auto [ec, n] = co_await http::async_read(stream, buffer, parser, use_tuple);
      bec = ec;
      bn += n;
    }
    ctx.bytes_in = hn + bn;
    if (bec) {
      bool too_big = bec == http::error::body_limit;
      ctx.outcome = "rejected";
      ctx.error = too_big ? "body_too_large" : "incomplete_request";
      if (too_big) {
        co_await respond(client, ctx, 413, body_too_large(limits.max_request_body).body(), false,
                         header.version());
        finish(w, ctx);
        co_await linger_close(stream, deadline);
        co_return;
      } else if (bec != net::error::operation_aborted && bec != beast::error::timeout &&
                 bec != http::error::partial_message && bec != net::error::eof) {
        co_await respond(client, ctx, 400, core::bad_request("malformed HTTP request").body(),
                         false, header.version());
      }
      finish(w, ctx);
      co_return;
    }
    auto req = parser.release();
    // finish() runs even when this coroutine is never resumed (a worker stopped after the drain
    // timeout destroys it) or an exception unwinds it: no settlement or usage record is lost.
    struct FinishGuard {
      Worker& w;
      RequestContext& ctx;
      bool armed = true;
      ~FinishGuard() {
        if (!armed) return;
        ctx.outcome = std::uncaught_exceptions() > 0 ? "internal_error" : "shutdown";
        if (ctx.error.empty()) ctx.error = ctx.outcome;
        try {
          finish(w, ctx);
        } catch (...) {  // nothing may escape a destructor
        }
      }
    } guard{w, ctx};
    bool keep = co_await handle(w, client, req, ctx, snap);
    guard.armed = false;
    finish(w, ctx);
    if (!keep) break;
  }
  // Graceful close: for TLS send close_notify (bounded), then shut the socket down.
  if constexpr (std::is_same_v<Stream, TlsStream>) {
    deadline.after(std::chrono::seconds(2));
    co_await stream.async_shutdown(use_tuple);
  }
  boost::system::error_code ignored;
  beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_send, ignored);
}

net::awaitable<void> run_tls_session(Worker& w, tcp::socket sock,
                                     std::shared_ptr<net::ssl::context> tls, std::string remote) {
  TlsStream stream(std::move(sock), *tls);
  auto timeout = w.snapshot()->config->server.limits.header_timeout;
  beast::get_lowest_layer(stream).expires_after(timeout);
  auto [ec] = co_await stream.async_handshake(net::ssl::stream_base::server, use_tuple);
  if (ec) co_return;
  beast::get_lowest_layer(stream).expires_never();  // from here on, the session's Deadline
  co_await run_session(w, std::move(stream), std::move(remote));
}

net::awaitable<void> accept_loop_impl(Worker& w, Listener& l) {
  for (;;) {
    auto [ec, sock] = co_await l.acceptor.async_accept(use_tuple);
    if (ec) {
      if (ec == net::error::operation_aborted || !l.acceptor.is_open()) co_return;
      // Out of file descriptors or similar: back off instead of spinning.
      net::steady_timer t(w.io(), std::chrono::milliseconds(50));
      co_await t.async_wait(use_tuple);
      continue;
    }
    boost::system::error_code opt_ec;
    sock.set_option(tcp::no_delay(true), opt_ec);
    auto ep = sock.remote_endpoint(opt_ec);
    std::string remote = opt_ec ? std::string() : ep.address().to_string() + ":" + std::to_string(ep.port());
    if (l.tls) {
      net::co_spawn(w.io(), run_tls_session(w, std::move(sock), l.tls, std::move(remote)),
                    metrics::LogFailure{"coroutine failed", "task", "tls session"});
    } else {
      net::co_spawn(w.io(), run_session(w, PlainStream(std::move(sock)), std::move(remote)),
                    metrics::LogFailure{"coroutine failed", "task", "session"});
    }
  }
}

}  // namespace

void Worker::accept_loop(Listener& l) {
  net::co_spawn(io_, accept_loop_impl(*this, l), metrics::LogFailure{"coroutine failed", "task", "accept"});
}

}  // namespace tollgate::server
