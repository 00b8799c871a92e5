// The admit stage: reserve the request's expected tokens (and one request) from every limit that
// applies — client, tenant, deployment — and its expected tokens and cost from every budget, all
// or nothing; settled in finish(). With a usage ledger, every inference call is accounted (exact
// stream usage, counted output when a stream ends early). And the request_usage filter.

#include <algorithm>

#include "server/pipeline/stages.hpp"
#include "tollgate/crypto/crypto.hpp"
#include "tollgate/core/json_fields.hpp"
#include "tollgate/core/request_id.hpp"
#include "tollgate/ratelimit/admission.hpp"
#include "cluster/shared_hold.hpp"

namespace tollgate::pipeline {

namespace {

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
Reply over_budget(Exchange& x, const ratelimit::BudgetHold::Refusal& refusal, std::int64_t tokens,
                  std::int64_t nano_usd, ratelimit::UnixMs now) {
  const auto& b = *refusal.limit;
  bool usd = b.measure == ratelimit::Measure::kNanoUsd;
  x.stats.client(x.ctx.client_series).budget_refused.at(b.scope, b.period, b.measure).add();
  auto amount = [usd](std::int64_t v) { return usd ? usd_text(v) : std::to_string(v) + " tokens"; };
  std::string what = std::string(b.period == ratelimit::Period::kDay ? "daily" : "monthly") +
                     (usd ? " spending" : " token") + " budget of " +
                     std::string(ratelimit::to_string(b.scope)) + " '" + std::string(b.name) + "' (" +
                     amount(b.limit) + ")";
  if (!refusal.exhausted) {
    return too_many_requests("budget_busy", "Requests in flight hold the rest of the " + what + ".",
                             1000, pipeline::Outcome::kRejected);
  }
  auto reset_ms = ratelimit::period_end(b.period, now);
  HeaderList headers;
  headers.emplace_back("x-should-retry", "false");
  headers.emplace_back("retry-after", std::to_string((reset_ms - now + 999) / 1000));
  core::HttpError e{429, "insufficient_quota",
                    "The " + what + " is used up: " + amount(refusal.used) +
                        " used, and this request may need up to " + amount(usd ? nano_usd : tokens) +
                        ". It resets at " + crypto::format_rfc3339(reset_ms / 1000) + ".",
                    "insufficient_quota", {}};
  return Reply::error("budget_exhausted", e, std::move(headers));
}

/// A limit lacks room: 429 in Azure's shape with the wait, or 400 when the request can never
/// fit (it needs more than the limit allows in a minute).
Reply rate_limited(Exchange& x, const ratelimit::Reservation::Refusal& refusal, std::int64_t needed,
                   std::int64_t remaining) {
  const auto& l = *refusal.limit;
  auto unit = ratelimit::to_string(l.unit);
  std::string what = std::string(ratelimit::to_string(l.scope)) + " '" + std::string(l.name) + "' (" +
                     std::to_string(l.per_minute) + " " + std::string(unit) + " per minute)";
  if (!refusal.wait) {
    return Reply::error("over_limit",
                        core::bad_request("This request needs about " + std::to_string(needed) +
                                          " tokens, more than the limit of " + what +
                                          " allows: lower max_tokens or split the input."));
  }
  x.stats.client(x.ctx.client_series).rate_limited.at(l.scope, l.unit).add();
  auto wait_ms = std::max<std::int64_t>(1, (*refusal.wait + 999'999) / 1'000'000);
  HeaderList extra;
  extra.emplace_back("x-ratelimit-limit-" + std::string(unit), std::to_string(l.per_minute));
  extra.emplace_back("x-ratelimit-remaining-" + std::string(unit), std::to_string(std::max<std::int64_t>(0, remaining)));
  return too_many_requests("rate_limited", "Rate limit of " + what + " exceeded.", wait_ms,
                           pipeline::Outcome::kRejected, std::move(extra));
}

// The caller's remaining quota as Azure reports it: the tightest token and request limits.
// `remaining[i]`: what limits[i] could still give.
std::string remaining_headers(const std::vector<ratelimit::Limit>& limits, const std::vector<std::int64_t>& remaining) {
  std::optional<std::pair<std::int64_t, std::int64_t>> tokens, requests;  // (limit, remaining)
  for (std::size_t i = 0; i < limits.size(); ++i) {
    const auto& l = limits[i];
    auto avail = remaining[i];
    auto& slot = l.unit == ratelimit::Unit::kTokens ? tokens : requests;
    if (!slot || avail < slot->second) slot = std::pair{l.per_minute, avail};
  }
  std::string h;
  auto add = [&h](std::string_view unit, const std::pair<std::int64_t, std::int64_t>& v) {
    h += "x-ratelimit-limit-" + std::string(unit) + ": " + std::to_string(v.first) + "\r\n";
    h += "x-ratelimit-remaining-" + std::string(unit) + ": " + std::to_string(v.second) + "\r\n";
  };
  if (tokens) add("tokens", *tokens);
  if (requests) add("requests", *requests);
  return h;
}

// What the balancer looks for room for (a backend whose remaining tokens cover it is preferred):
// the body's size / 4 plus the requested output, like Azure's own rough count.
std::int64_t routing_need(const Exchange& x) {
  const auto& call = x.ctx.call;
  if (!x.inference() || !call.fields) return 0;
  auto number = [&call](core::BodyField f) -> std::int64_t {
    return core::as_int(call.body, (*call.fields)[f]).value_or(0);
  };
  using core::BodyField;
  auto max_out = std::max({number(BodyField::kMaxCompletionTokens), number(BodyField::kMaxTokens),
                           number(BodyField::kMaxOutputTokens)});
  return routing::expected_tokens(x.req.body.size(), max_out,
                                  std::max(number(BodyField::kN), number(BodyField::kBestOf)));
}

struct Applicable {
  std::vector<ratelimit::Limit> limits;
  const std::vector<ratelimit::BudgetLimit>* budgets = nullptr;
};

Applicable applicable_limits(const Exchange& x) {
  Applicable a;
  if (x.identity.kind == auth::Identity::Kind::kClient) {
    const auto& cl = x.auth.client_limits[x.identity.client];
    a.limits.insert(a.limits.end(), cl.begin(), cl.end());
    if (!x.auth.client_budgets[x.identity.client].empty()) a.budgets = &x.auth.client_budgets[x.identity.client];
  }
  a.limits.insert(a.limits.end(), x.route->limits.begin(), x.route->limits.end());
  return a;
}

bool reserves_tokens(const std::vector<ratelimit::Limit>& limits) {
  return std::any_of(limits.begin(), limits.end(),
                     [](const ratelimit::Limit& l) { return l.unit == ratelimit::Unit::kTokens; });
}

std::vector<std::int64_t> available(const std::vector<ratelimit::Limit>& limits, ratelimit::Nanos now) {
  std::vector<std::int64_t> out;
  out.reserve(limits.size());
  for (const auto& l : limits) out.push_back(l.bucket->available(now, l.per_minute));
  return out;
}

// The price ceiling of the estimate (0 without a price or a budget to hold it against).
std::int64_t cost_ceiling(const Exchange& x, const Applicable& a, const ratelimit::Estimate& estimate) {
  const auto& price = x.ctx.deployment->price;
  if (a.budgets == nullptr || !price.set) return 0;
  return ratelimit::Price(price).ceiling(estimate.prompt, estimate.allowance);
}

// This process's buckets and budgets (no cluster, or its Redis is away and on_failure is local).
StageResult reserve_locally(Exchange& x, const std::vector<ratelimit::Limit>& limits,
                            const std::vector<ratelimit::BudgetLimit>* budgets, std::int64_t tokens,
                            std::int64_t cost) {
  auto& ctx = x.ctx;
  if (budgets != nullptr) {
    auto wall = x.clock.unix_ms();
    if (auto refusal = ctx.budget_hold.reserve(*budgets, tokens, cost, wall)) {
      return over_budget(x, *refusal, tokens, cost, wall);
    }
  }
  auto now = x.clock.steady_ns();
  if (auto refusal = ctx.reservation.reserve(limits, tokens, now)) {
    ctx.budget_hold.release(x.clock.unix_ms());
    return rate_limited(x, *refusal, tokens, refusal->limit->bucket->available(now, refusal->limit->per_minute));
  }
  if (ctx.reservation.held() || ctx.budget_hold.held()) x.stats.reservations.add(1);
  if (!limits.empty()) ctx.response_headers = remaining_headers(limits, available(limits, now));
  return std::nullopt;
}

StageResult reserve(Exchange& x, const Applicable& a, const ratelimit::Estimate& estimate) {
  auto cost = cost_ceiling(x, a, estimate);
  if (x.shared && (!a.limits.empty() || a.budgets != nullptr)) {
    // Held in Redis by the admit_shared await stage (server/shared_admission.hpp).
    // Its own id, not the request id (a client may send the same x-request-id twice).
    x.ctx.shared_demand = cluster::Demand{a.limits, a.budgets, estimate.total(), cost, core::new_request_id()};
    return std::nullopt;
  }
  return reserve_locally(x, a.limits, a.budgets, estimate.total(), cost);
}

}  // namespace

StageResult admitted_shared(Exchange& x, const cluster::ReserveOutcome& outcome, std::size_t replicas) {
  using Kind = cluster::ReserveOutcome::Kind;
  auto& ctx = x.ctx;
  auto& d = *ctx.shared_demand;
  switch (outcome.kind) {
    case Kind::kHeld:
      ctx.shared_hold = outcome.hold;
      if (ctx.shared_hold.taken) x.stats.reservations.add(1);
      if (!d.limits.empty()) ctx.response_headers = remaining_headers(d.limits, outcome.remaining);
      return std::nullopt;
    case Kind::kLimited: {
      auto i = static_cast<std::size_t>(outcome.limited->limit - d.limits.data());
      return rate_limited(x, *outcome.limited, d.tokens, outcome.remaining[i]);
    }
    case Kind::kOverBudget:
      return over_budget(x, *outcome.over_budget, d.tokens, d.nano_usd, x.clock.unix_ms());
    case Kind::kUnavailable: break;
  }
  if (x.config().cluster.on_failure == config::ClusterFailure::kDeny) {
    HeaderList headers;
    headers.emplace_back("x-should-retry", "true");
    headers.emplace_back("retry-after", "1");
    core::HttpError e{503, "503", "The gateway cannot reach the store its replicas share limits through; retry shortly.",
                      "service_unavailable", {}};
    return Reply::error("cluster_unavailable", e, std::move(headers), Outcome::kRejected);
  }
  // This replica's share of every limit until the store is back (its use is settled there then).
  auto share = d.limits;
  for (auto& l : share) l.per_minute = std::max<std::int64_t>(1, l.per_minute / static_cast<std::int64_t>(std::max<std::size_t>(1, replicas)));
  ctx.shared_local = true;
  return reserve_locally(x, share, d.budgets, d.tokens, d.nano_usd);
}

StageResult admit(Exchange& x) {
  auto& ctx = x.ctx;
  const auto& cfg = x.config();
  auto a = applicable_limits(x);
  bool inference = x.inference();
  bool policy = inference && (x.caller != nullptr || cfg.policy.max_n > 0 || cfg.policy.max_best_of > 0);
  // Passthrough: from its answer, no estimate. Object calls (a background response's usage may
  // come with a read) need the ledger row only.
  bool billed = ctx.charge != Charge::kNone;
  x.accounted = !a.limits.empty() || policy || a.budgets != nullptr || (billed && x.ledger);
  if (x.accounted) {
    ratelimit::Estimate estimate;
    if (inference) {
      // Only what is reserved needs the prompt's tokens now; a ledger or a price needs them
      // only for an answer without usage, counted then (finish: billed_usage).
      ctx.prompt_counted = a.budgets != nullptr || reserves_tokens(a.limits);
      auto count = ctx.prompt_counted ? ratelimit::PromptCount::kCount : ratelimit::PromptCount::kSkip;
      estimate = ratelimit::admit(ctx.call, x.req.body.size(), x.caller, cfg.policy,
                                  *x.snap.tokenizers, ctx.deployment->model, count);
      if (estimate.error) return Reply::error("over_policy", *estimate.error);
    }
    ctx.prompt_estimate = estimate.prompt;
    // An answer without usage is counted only where something needs the count (its encoding is
    // loaded only then: server::counts_tokens).
    bool counts = x.route->counts_tokens;
    ctx.tokenizers = counts ? x.snap.tokenizers.get() : nullptr;
    ctx.model = ctx.deployment->model;
    // A passthrough answer's text is counted when it streams (the capture sees only SSE).
    ctx.count_output = counts && (inference ? ctx.call.stream : ctx.passthrough);
    if (auto refused = reserve(x, a, estimate)) return refused;
  }
  x.need_tokens = routing_need(x);
  x.stats.route(x.route->series_none).class_requests[metrics::ClassRank{x.plan.cls}].add();  // admitted to routing
  return std::nullopt;
}

// A stream's exact usage comes only when asked for: ask on the client's behalf, and take it back
// out of what the client receives (the relay's UsageStripper).
void request_usage(Exchange& x) {
  auto& ctx = x.ctx;
  bool streamed_text = ctx.call.op == core::Operation::kChatCompletions ||
                       ctx.call.op == core::Operation::kCompletions;
  auto& call = ctx.call;
  if (!x.accounted || !call.stream || !streamed_text || call.include_usage || !call.fields) return;
  // Spliced into the client's bytes: include_usage's value, else a member of stream_options,
  // else a new stream_options.
  const auto& so = (*call.fields)[core::BodyField::kStreamOptions];
  if (call.fields->include_usage.present()) {
    call.edits.replace(call.fields->include_usage.span, "true");
  } else if (so.kind == core::JsonKind::kObject) {
    call.edits.insert_member(so, "include_usage", "true");
  } else if (so.present()) {
    call.edits.replace(so.span, R"({"include_usage":true})");
  } else {
    call.edits.insert_member(call.fields->object, "stream_options", R"({"include_usage":true})");
  }
  ctx.strip_usage = true;
}

}  // namespace tollgate::pipeline
