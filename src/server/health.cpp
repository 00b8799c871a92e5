#include "server/health.hpp"

#include <boost/asio/steady_timer.hpp>
#include <variant>

#include "proxy/connect.hpp"
#include "proxy/net.hpp"
#include "tollgate/metrics/families.hpp"
#include "tollgate/metrics/logging.hpp"
#include "tollgate/metrics/stats.hpp"

namespace tollgate::server {

using namespace proxy;  // net, beast, http, streams, use_tuple

struct HealthChecker::Probe {
  config::BackendConfig backend;                   // a copy: the probe outlives snapshots
  std::shared_ptr<net::ssl::context> tls;          // null for http://
  std::shared_ptr<routing::BackendState> state;
  std::shared_ptr<TokenSlot> token;                // Entra ID backends: probe with their token
  net::steady_timer timer;
  bool stopped = false;                            // owner: control thread
  std::function<void()> on_recovered;
  proxy::Resolver* resolver = nullptr;             // the control thread's (outlives the probes)
  unsigned passes = 0;                             // consecutive
  unsigned failures = 0;                           // consecutive
  std::uint64_t passed_total = 0;
  std::uint64_t failed_total = 0;

  Probe(net::io_context& io, const BackendRuntime& rt)
      : backend(*rt.config), tls(rt.tls), state(rt.state), token(rt.token), timer(io) {}
};

namespace {

bool same_check(const config::BackendConfig& a, const config::BackendConfig& b) {
  const auto& x = *a.health_check;
  const auto& y = *b.health_check;
  return a.endpoint.text == b.endpoint.text && a.api_key == b.api_key && a.ca_file == b.ca_file &&
         x.tcp == y.tcp && x.path == y.path && x.interval == y.interval && x.timeout == y.timeout &&
         x.rise == y.rise && x.fall == y.fall;
}

using ProbeResult = std::pair<bool, std::string>;

// For HTTP probes: sends the GET and reads the status line and header.
template <class Stream>
net::awaitable<ProbeResult> http_probe(HealthChecker::Probe& p, Stream& stream) {
  const auto& b = p.backend;
  const auto& hc = *b.health_check;
  http::request<http::empty_body> req{http::verb::get, b.endpoint.base_path + hc.path, 11};
  req.set(http::field::host, b.endpoint.host_header);
  if (p.token) {
    auto t = p.token->token.load();
    if (!t) co_return ProbeResult{false, "no backend token yet"};
    req.set(http::field::authorization, "Bearer " + *t);
  } else {
    req.set("api-key", b.api_key);
  }
  req.set(http::field::user_agent, "tollgate-health-check");
  req.keep_alive(false);
  auto [wec, wn] = co_await http::async_write(stream, req, use_tuple);
  if (wec) co_return ProbeResult{false, "write: " + wec.message()};
  beast::flat_buffer buffer;
  http::response_parser<http::empty_body> parser;
  parser.skip(true);  // the status is enough; the body is not read
  auto [hec, hn] = co_await http::async_read_header(stream, buffer, parser, use_tuple);
  if (hec) co_return ProbeResult{false, "read: " + hec.message()};
  auto status = parser.get().result_int();
  if (status / 100 != 2) co_return ProbeResult{false, "status " + std::to_string(status)};
  co_return ProbeResult{true, std::string()};
}

// One probe: connect (TCP, then TLS), and for HTTP the exchange. The whole probe is bounded by
// the probe's timeout. Returns pass/fail and why.
net::awaitable<ProbeResult> probe_once(HealthChecker::Probe& p) {
  const auto& b = p.backend;
  const auto& hc = *b.health_check;
  auto deadline = std::chrono::steady_clock::now() + hc.timeout;
  auto stream = co_await connect_upstream(UpstreamTarget{.host = b.endpoint.host,
                                                        .port = b.endpoint.port,
                                                        .tls = p.tls.get(),
                                                        .timeout = hc.timeout,
                                                        .resolve_timeout = b.timeouts.resolve,
                                                        .deadline = deadline},
                                         *p.resolver);
  if (!stream) co_return ProbeResult{false, stream.error().message()};
  if (hc.tcp) co_return ProbeResult{true, std::string()};
  co_return co_await std::visit(
      [&p, deadline](auto& s) {
        beast::get_lowest_layer(s).expires_at(deadline);
        return http_probe(p, s);
      },
      *stream);
}

net::awaitable<void> probe_loop(std::shared_ptr<HealthChecker::Probe> p) {
  while (!p->stopped) {
    auto [ok, why] = co_await probe_once(*p);
    if (p->stopped) break;
    const auto& hc = *p->backend.health_check;
    bool healthy = p->state->probe_healthy();
    if (ok) {
      ++p->passed_total;
      p->failures = 0;
      if (++p->passes >= hc.rise && !healthy) {
        p->state->set_probe_healthy(true);
        metrics::log_info("backend passed its health checks",
                          core::JsonFields().add("backend", p->backend.name));
        if (p->on_recovered) p->on_recovered();
      }
    } else {
      ++p->failed_total;
      p->passes = 0;
      if (++p->failures >= hc.fall && healthy) {
        p->state->set_probe_healthy(false);
        metrics::log_warn("backend failed its health checks",
                          core::JsonFields().add("backend", p->backend.name).add("reason", why));
      }
    }
    p->timer.expires_after(hc.interval);
    co_await p->timer.async_wait(use_tuple);
  }
}

}  // namespace

HealthChecker::~HealthChecker() { stop(); }

void HealthChecker::apply(const std::shared_ptr<const Snapshot>& snap) {
  std::unordered_map<const routing::BackendState*, std::shared_ptr<Probe>> next;
  for (const auto& rt : snap->backends) {
    const routing::BackendState* key = rt.state.get();
    auto it = probes_.find(key);
    if (!rt.config->health_check) {
      rt.state->set_probe_healthy(true);  // no probe: passive signals only
      continue;
    }
    if (it != probes_.end() && same_check(it->second->backend, *rt.config)) {
      next.emplace(key, it->second);
      continue;
    }
    auto p = std::make_shared<Probe>(io_, rt);
    p->on_recovered = on_recovered_;
    p->resolver = &resolver_;
    net::co_spawn(io_, probe_loop(p),
                  metrics::LogFailure{"health check loop failed", "backend", rt.config->name});
    next.emplace(key, std::move(p));
  }
  for (auto& [key, p] : probes_) {
    auto it = next.find(key);
    if (it == next.end() || it->second != p) {
      p->stopped = true;
      p->timer.cancel();
    }
  }
  probes_ = std::move(next);
}

void HealthChecker::stop() {
  for (auto& [key, p] : probes_) {
    p->stopped = true;
    p->timer.cancel();
  }
  probes_.clear();
}

void HealthChecker::families(std::vector<prometheus::MetricFamily>& out) const {
  metrics::FamilyBuilder<2> f(metrics::families::kHealthChecks);
  for (const auto& [key, p] : probes_) {
    f.add({p->backend.name, "pass"}, static_cast<double>(p->passed_total));
    f.add({p->backend.name, "fail"}, static_cast<double>(p->failed_total));
  }
  out.push_back(f.take());
}

}  // namespace tollgate::server
