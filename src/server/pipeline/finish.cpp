#include "server/pipeline/finish.hpp"

#include "tollgate/core/json_fields.hpp"
#include "tollgate/ratelimit/admission.hpp"
#include "tollgate/usage/ledger.hpp"

namespace tollgate::pipeline {

using pipeline::RequestContext;

core::Usage billed_usage(RequestContext& ctx) {
  if (ctx.charge != Charge::kTokens) {
    // An object read shows a stored response's usage, a background create has none yet:
    // neither is charged, counted in the token metrics or logged as this request's tokens.
    ctx.usage = {};
    return {};
  }
  auto u = ctx.usage;
  if (u.present) {
    if (u.total == 0) u.total = u.prompt + u.completion;
    return u;
  }
  u = {};
  // A passthrough answer without usage costs the text it streamed, if any.
  bool billed = !ctx.passthrough || !ctx.output_text.empty();
  if (!billed || ctx.status / 100 != 2 || ctx.ttfb_us < 0 ||
      ctx.tokenizers == nullptr) {
    return u;  // a request that failed before producing tokens costs nothing
  }
  ctx.usage_estimated = true;
  if (!ctx.prompt_counted && !ctx.passthrough) {  // admitted without the count: count it now
    ctx.prompt_estimate = ratelimit::prompt_tokens(ctx.call, ctx.call.body.size(), *ctx.tokenizers, ctx.model);
    ctx.prompt_counted = true;
  }
  u.prompt = static_cast<std::uint64_t>(ctx.prompt_estimate);
  u.completion = static_cast<std::uint64_t>(ratelimit::count_output(*ctx.tokenizers, ctx.model, ctx.output_text));
  u.total = u.prompt + u.completion;
  return u;
}

namespace {

void log_budget_warning(const RequestContext& ctx, const ratelimit::BudgetLimit& b, core::UnixMs now) {
  core::JsonFields f;
  f.add("scope", ratelimit::to_string(b.scope))
      .add("name", b.name)
      .add("period", ratelimit::to_string(b.period))
      .add("unit", ratelimit::to_string(b.measure));
  auto used = b.budget->used(b.period, now);
  if (b.measure == ratelimit::Measure::kNanoUsd) {
    f.add_usd("limit", b.limit).add_usd("used", used);
  } else {
    f.add("limit", b.limit).add("used", used);
  }
  metrics::log_warn("budget warning level reached", f.add("request_id", ctx.request_id));
}

template <class Cells>
void add_tokens(Cells& cells, const core::Usage& u) {
  using metrics::TokenType;
  cells.tokens[TokenType::kPrompt].add(u.prompt);
  cells.tokens[TokenType::kCompletion].add(u.completion);
  cells.tokens[TokenType::kCached].add(u.cached);
  cells.tokens[TokenType::kReasoning].add(u.reasoning);
}

std::string attempts_json(const RequestContext& ctx) {
  std::string attempts = "[";
  for (const auto& a : ctx.attempts) {
    if (attempts.size() > 1) attempts += ',';
    core::JsonFields one;
    one.add("backend", a.backend).add("status", a.status).add("reason", a.reason).add_ms("duration_ms", a.duration_us);
    attempts += one.object();
  }
  attempts += ']';
  return attempts;
}

}  // namespace

void settle(RequestContext& ctx, const core::Usage& billed, const core::Clock& clock, cluster::Settler* shared) {
  if (ctx.deployment != nullptr && ctx.deployment->price.set) {
    ctx.cost_nano_usd = ratelimit::Price(ctx.deployment->price).cost(billed);
  }
  ctx.charged_tokens = static_cast<std::int64_t>(billed.total);
  if (ctx.reservation.held()) ctx.reservation.settle(ctx.charged_tokens, clock.steady_ns());
  if (ctx.budget_hold.held()) {
    std::vector<const ratelimit::BudgetLimit*> crossed;
    auto now = clock.unix_ms();
    ctx.budget_hold.settle(ctx.charged_tokens, ctx.cost_nano_usd, now, &crossed);
    for (const auto* b : crossed) log_budget_warning(ctx, *b, now);
  }
  if (shared == nullptr) return;
  if (ctx.shared_hold.needs_settle()) {
    shared->settle(std::move(ctx.shared_hold), ctx.charged_tokens, ctx.cost_nano_usd);
  } else if (ctx.shared_local && ctx.shared_demand) {
    auto use = cluster::use_only(*ctx.shared_demand, clock.unix_ms());
    if (use.needs_settle()) shared->settle(std::move(use), ctx.charged_tokens, ctx.cost_nano_usd);
  }
}

void record_stats(metrics::WorkerStats& stats, const RequestContext& ctx, std::int64_t duration_us) {
  auto& cells = stats.route(ctx.series);
  auto status = metrics::status_class(ctx.status);
  cells.requests[status].add();
  cells.duration.observe_micros(duration_us);
  if (ctx.ttfb_us >= 0) cells.ttfb.observe_micros(ctx.ttfb_us);
  const auto& u = ctx.usage;
  if (u.present) {
    add_tokens(cells, u);
  } else if (ctx.usage_expected && ctx.status / 100 == 2 && ctx.outcome == pipeline::Outcome::kOk) {
    cells.usage_missing.add();
  }
  auto& client_cells = stats.client(ctx.client_series);
  client_cells.requests[status].add();
  if (ctx.reservation.held() || ctx.shared_hold.taken) client_cells.charged_tokens.add(static_cast<std::uint64_t>(ctx.charged_tokens));
  if (ctx.usage_estimated) client_cells.usage_estimated.add();
  if (ctx.cost_nano_usd > 0) {
    client_cells.cost_nano_usd.add(static_cast<std::uint64_t>(ctx.cost_nano_usd));
    cells.cost_nano_usd.add(static_cast<std::uint64_t>(ctx.cost_nano_usd));
  }
  if (u.present) add_tokens(client_cells, u);
  stats.in_flight.add(-1);
}

void record_usage(usage::Ledger& ledger, const RequestContext& ctx, const core::Usage& billed,
                  std::int64_t duration_us, const core::Clock& clock) {
  usage::Record r;
  r.time_ms = clock.unix_ms();
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
  r.latency_us = duration_us;
  r.ttft_us = ctx.ttfb_us;
  r.outcome = pipeline::to_string(ctx.outcome);
  ledger.submit(std::move(r));
}

void write_access_log(metrics::AccessLog& log, const RequestContext& ctx, std::int64_t duration_us,
                      const core::Clock& clock) {
  core::JsonFields f;
  f.add("time", core::utc_iso(clock.unix_ms()))
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
      .add_ms("duration_ms", duration_us);
  if (ctx.ttfb_us >= 0) {
    f.add_ms("ttfb_ms", ctx.ttfb_us);
  } else {
    f.add_raw("ttfb_ms", "null");  // no backend answered
  }
  f.add("tier", ctx.tier).add("priority", ctx.priority);
  if (ctx.queue_us >= 0) {
    f.add_ms("queue_ms", ctx.queue_us);
  } else {
    f.add_raw("queue_ms", "0");
  }
  f.add_raw("attempts", attempts_json(ctx));
  const auto& u = ctx.usage;
  f.add("prompt_tokens", u.prompt)
      .add("completion_tokens", u.completion)
      .add("total_tokens", u.total)
      .add("cached_tokens", u.cached)
      .add("reasoning_tokens", u.reasoning)
      .add("usage_reported", u.present)
      .add("reserved_tokens", ctx.reservation.held() ? ctx.reservation.tokens() : ctx.shared_hold.tokens)
      .add("charged_tokens", ctx.charged_tokens)
      .add("usage_estimated", ctx.usage_estimated)
      .add_usd("cost_usd", ctx.cost_nano_usd)
      .add("bytes_in", ctx.bytes_in)
      .add("bytes_out", ctx.bytes_out)
      .add("outcome", pipeline::to_string(ctx.outcome))
      .add("error", ctx.error)
      .add("remote", ctx.remote)
      .add("user_agent", ctx.user_agent);
  log.write(f);
}

void finish(const FinishEnv& env, RequestContext& ctx) {
  bool held = ctx.reservation.held() || ctx.budget_hold.held() || ctx.shared_hold.taken;  // outstanding
  auto billed = billed_usage(ctx);
  settle(ctx, billed, env.clock, env.shared);
  if (held) env.stats.reservations.add(-1);
  auto duration = core::micros_since(ctx.start);
  record_stats(env.stats, ctx, duration);
  // One ledger record per request of a known caller (anonymous included); requests refused
  // before authentication are in the access log only (no one to bill, and a flood of them must
  // not fill the disk).
  if (env.ledger != nullptr && ctx.client != "unauthenticated") record_usage(*env.ledger, ctx, billed, duration, env.clock);
  if (env.access_log.enabled()) write_access_log(env.access_log, ctx, duration, env.clock);
}

}  // namespace tollgate::pipeline
