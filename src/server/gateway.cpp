#include "tollgate/server/gateway.hpp"

#include "cluster/backend_sync.hpp"
#include "cluster/shared_objects.hpp"
#include "cluster/cluster_options.hpp"
#include "cluster/key_sync.hpp"

#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <csignal>
#include <boost/asio/ssl/context.hpp>
#include <algorithm>
#include <limits>
#include <map>
#include <stdexcept>
#include <unordered_map>

#include "proxy/tls.hpp"
#include "server/admin.hpp"
#include "tollgate/core/clock.hpp"
#include "server/health.hpp"
#include "server/identity.hpp"
#include "server/runtime.hpp"
#include "server/snapshot_builder.hpp"
#include "server/worker.hpp"
#include "tollgate/metrics/families.hpp"
#include "tollgate/metrics/logging.hpp"
#include "tollgate/metrics/stats.hpp"
#include "tollgate/tokenize/count_cache.hpp"
#include "tollgate/usage/ledger.hpp"
#include "tollgate/usage/shipper.hpp"
#include "usage/report.hpp"

namespace tollgate::server {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using metrics::log_error;
using metrics::log_info;
using metrics::log_warn;

namespace {

// How long a stopping gateway keeps shipping the spool's backlog to PostgreSQL.
constexpr auto kShipOnStop = std::chrono::seconds(5);

tcp::endpoint make_endpoint(const std::string& host, std::uint16_t port) {
  boost::system::error_code ec;
  auto addr = net::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
  if (ec) throw std::runtime_error("cannot listen on \"" + host + "\": not an IP address");
  return {addr, port};
}

tcp::acceptor make_acceptor(net::io_context& io, const tcp::endpoint& ep, bool reuse_port) {
  tcp::acceptor a(io);
  a.open(ep.protocol());
  a.set_option(net::socket_base::reuse_address(true));
  if (reuse_port) {
    int one = 1;
    if (::setsockopt(a.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
      throw std::runtime_error("SO_REUSEPORT is not available");
    }
  }
  boost::system::error_code ec;
  a.bind(ep, ec);
  if (ec) {
    throw std::runtime_error("cannot bind " + ep.address().to_string() + ":" +
                             std::to_string(ep.port()) + ": " + ec.message());
  }
  a.listen(net::socket_base::max_listen_connections);
  return a;
}

// Settings a reload cannot apply (listeners, threads, the admin listener, the access log file),
// compared with what the process started with.
std::string restart_only_changes(const config::Config& running, const config::Config& next) {
  std::string out;
  auto note = [&](bool changed, std::string_view key) {
    if (!changed) return;
    if (!out.empty()) out += ", ";
    out += key;
  };
  bool listen = running.server.listen.size() != next.server.listen.size();
  for (std::size_t i = 0; !listen && i < next.server.listen.size(); ++i) {
    const auto& a = running.server.listen[i];
    const auto& b = next.server.listen[i];
    listen = a.host != b.host || a.port != b.port || a.tls.has_value() != b.tls.has_value() ||
             (a.tls && (a.tls->cert_file != b.tls->cert_file || a.tls->key_file != b.tls->key_file));
  }
  note(listen, "server.listen");
  note(running.server.workers != next.server.workers, "server.workers");
  note(running.admin.enabled != next.admin.enabled || running.admin.host != next.admin.host ||
           running.admin.port != next.admin.port ||
           running.admin.tls.has_value() != next.admin.tls.has_value() ||
           (running.admin.tls && (running.admin.tls->cert_file != next.admin.tls->cert_file ||
                                  running.admin.tls->key_file != next.admin.tls->key_file)),
       "admin");
  note(running.logging.access_log != next.logging.access_log, "logging.access_log");
  note(running.tokenizer.data_dir != next.tokenizer.data_dir ||
           running.tokenizer.count_cache != next.tokenizer.count_cache,
       "tokenizer");
  note(running.usage.ledger != next.usage.ledger ||
           running.usage.flush_interval != next.usage.flush_interval ||
           running.usage.batch_size != next.usage.batch_size ||
           running.usage.max_buffered != next.usage.max_buffered ||
           running.usage.postgres != next.usage.postgres,
       "usage");
  note(running.server.replica_name != next.server.replica_name, "server.replica_name");
  note(running.dns.servers != next.dns.servers || running.dns.timeout != next.dns.timeout ||
           running.dns.min_ttl != next.dns.min_ttl || running.dns.max_ttl != next.dns.max_ttl,
       "dns");
  note(!(running.cluster.redis == next.cluster.redis) || running.cluster.key_prefix != next.cluster.key_prefix ||
           running.cluster.timeout != next.cluster.timeout || running.cluster.ca_file != next.cluster.ca_file,
       "cluster.redis");
  return out;
}

// The report's query on the report thread (arguments by value: they live in the coroutine frame).
net::awaitable<std::vector<usage::Row>> read_totals(std::string path, usage::GroupBy group,
                                                    std::int64_t from, std::int64_t to) {
  co_return usage::totals(path, group, from, to);
}

// The fleet report's query (PostgreSQL) on the report thread.
net::awaitable<std::vector<usage::Row>> read_fleet_totals(config::PostgresLedgerConfig pg,
                                                          usage::GroupBy group, std::int64_t from,
                                                          std::int64_t to) {
  co_return usage::fleet_totals(pg, group, from, to);
}

}  // namespace

struct Gateway::Impl {
  std::string config_path;
  std::shared_ptr<const config::Config> config;
  std::shared_ptr<const config::Config> started;  // the config the listeners were built from
  net::io_context control{1};
  // Shared by the workers: per-address connection counts and accept failures (outlives them).
  std::unique_ptr<SharedConnections> connections;
  std::vector<std::unique_ptr<Worker>> workers;
  metrics::SeriesRegistry series;
  metrics::ControlStats control_stats;
  // Requests waiting for capacity, and the control thread's timer that kicks them when a
  // backend's cooldown or open breaker ends.
  std::shared_ptr<routing::Scheduler> scheduler = std::make_shared<routing::Scheduler>();
  net::steady_timer wake_timer{control};
  routing::TimeMs wake_armed = std::numeric_limits<routing::TimeMs>::max();
  routing::Rng control_rng{0x5DEECE66DULL};
  std::shared_ptr<const Snapshot> current;  // the snapshot the workers run (control thread)
  // DNS for the control thread's connections (health probes, JWKS, tokens); dns.* at start-up.
  std::unique_ptr<proxy::Resolver> resolver;
  std::unique_ptr<HealthChecker> health;
  std::unique_ptr<IdentityManager> identity;
  ratelimit::BucketRegistry buckets;  // admission buckets, kept across reloads
  ratelimit::BudgetRegistry budget_counters;  // calendar budgets, kept across reloads
  std::shared_ptr<usage::Ledger> ledger;      // null when usage.ledger is not set
  std::unique_ptr<usage::Shipper> shipper;    // null when usage.postgres is not set
  // Replicas seen in the cluster's Redis lately (worker 0's heartbeat keeps it; 1 without cluster).
  std::shared_ptr<std::atomic<std::size_t>> replicas = std::make_shared<std::atomic<std::size_t>>(1);
  std::shared_ptr<cluster::BackendSync> backend_sync;  // with cluster: backend news to and from the others
  std::shared_ptr<cluster::KeySync> key_sync;  // with cluster and auth.keys_file: runtime keys shared

  // Runtime keys and revocations shared through Redis (the keys file stays the local copy).
  void share_keys(const config::ClusterConfig& c) {
    cluster::LocalKeys local{[this]() -> const auth::KeysFile& { return identity->keys_file(); },
                             [this](auth::KeysFile f) { identity->adopt_keys(std::move(f)); }};
    key_sync = cluster::KeySync::create(control.get_executor(), c, std::move(local), nullptr);
    if (!key_sync) return;
    identity->share_keys(key_sync);
    key_sync->start();
  }

  // The running backends, for the backend-state sync. Thread: control.
  void sync_backends(const pipeline::Snapshot& snap) {
    if (!backend_sync) return;
    std::vector<cluster::SyncedBackend> list;
    for (const auto& b : snap.backends) list.push_back({b.config->name, b.state});
    backend_sync->set_backends(std::move(list));
  }
  // The affinity table the ledger journals (null: none); detached before the ledger closes.
  std::shared_ptr<routing::AffinityTable> journaled;
  std::unique_ptr<cluster::ObjectJournal> object_journal;  // with cluster: owners to Redis, then the ledger
  std::shared_ptr<BodyBudget> body_budget;    // request bodies held, all workers
  net::thread_pool report_pool{1};            // admin usage reports (SQLite reads)
  // Builds each generation's snapshot; keeps the live routing state across reloads, and loads
  // the encodings a generation needs. Created with the tokenizer's data_dir (restart-only).
  // Thread: control.
  std::optional<SnapshotBuilder> builder;
  std::optional<tcp::acceptor> admin;
  std::shared_ptr<net::ssl::context> admin_tls;  // admin.tls: HTTPS on the admin listener
  net::signal_set signals{control, SIGINT, SIGTERM, SIGHUP};  // and SIGUSR1, added at start
  bool draining = false;
  std::shared_ptr<metrics::AccessLog> access_log;

  // Builds the runtime view of a config. Thread: control. Throws std::runtime_error when a TLS
  // context cannot be built (bad CA file).
  std::shared_ptr<const Snapshot> build(std::shared_ptr<const config::Config> cfg) {
    return builder->build(std::move(cfg));
  }

  void reload() {
    log_info("reloading configuration", core::JsonFields().add("path", config_path));
    auto result = config::load_file(config_path);
    if (!result.ok()) {
      control_stats.reloads_failed.add();
      for (const auto& e : result.errors) log_error("configuration error", core::JsonFields().add("error", e));
      log_error("configuration reload failed; keeping the running configuration",
                core::JsonFields().add("errors", static_cast<std::uint64_t>(result.errors.size())));
      return;
    }
    std::shared_ptr<const Snapshot> snap;
    try {
      snap = build(result.config);
    } catch (const std::exception& e) {
      control_stats.reloads_failed.add();
      log_error("configuration reload failed; keeping the running configuration",
                core::JsonFields().add("error", e.what()));
      return;
    }
    try {
      identity->apply(result.config, *snap);
    } catch (const std::exception& e) {
      control_stats.reloads_failed.add();
      log_error("configuration reload failed; keeping the running configuration",
                core::JsonFields().add("error", e.what()));
      return;
    }
    if (auto changed = restart_only_changes(*started, *result.config); !changed.empty()) {
      log_warn("these settings differ from the running ones and take effect only after a restart",
               core::JsonFields().add("keys", changed));
    }
    metrics::set_log_level(result.config->logging.level);
    config = result.config;
    current = snap;
    health->apply(snap);
    sync_backends(*snap);
    body_budget->set_limit(snap->config->server.limits.max_buffered_bytes);
    for (auto& w : workers) w->publish(snap);
    control_stats.reloads_ok.add();
    control_stats.last_reload_ok_time.store(static_cast<double>(core::unix_now_ms()) / 1000.0);
    log_info("configuration reloaded", core::JsonFields().add("generation", snap->generation));
  }

  // Before /readyz says ready: every worker's Redis connection is up (bounded), so a replica
  // joining a fleet enforces the shared limits from its first routed request. Past the bound it
  // is ready anyway: admission follows cluster.on_failure until Redis answers.
  void await_cluster() {
    constexpr auto kBound = std::chrono::seconds(5);
    auto deadline = std::chrono::steady_clock::now() + kBound;
    auto all_up = [this] {
      return std::all_of(workers.begin(), workers.end(),
                         [](const auto& w) { return w->stats().cluster_up.value() > 0; });
    };
    while (!all_up() && std::chrono::steady_clock::now() < deadline) control.run_one_for(std::chrono::milliseconds(20));
    if (!all_up()) {
      log_warn("cluster: Redis not reached within 5 s of start; ready anyway, admission follows cluster.on_failure",
               core::JsonFields().add("redis", config::display_url(config->cluster.redis)));
    }
  }

  void begin_drain() {
    if (draining) {
      log_warn("second stop signal: exiting without waiting for the drain");
      stop_all();
      return;
    }
    draining = true;
    control_stats.ready.store(0);
    log_info("draining", core::JsonFields().add("timeout_ms", static_cast<std::int64_t>(
                                                                  config->server.drain_timeout.count())));
    for (auto& w : workers) w->begin_drain();
    auto deadline = std::chrono::steady_clock::now() + config->server.drain_timeout;
    wait_drained(deadline);
  }

  void wait_drained(std::chrono::steady_clock::time_point deadline) {
    std::int64_t open = 0, unsettled = 0;
    for (auto& w : workers) open += w->stats().open_connections.value();
    for (auto& w : workers) unsettled += w->stats().cluster_unsettled.value();
    if ((open == 0 && unsettled == 0) || std::chrono::steady_clock::now() >= deadline) {
      if (open != 0) {
        log_warn("drain timeout: closing remaining connections",
                 core::JsonFields().add("connections", open));
      }
      if (unsettled != 0) {
        log_error("drain timeout: settlements of shared limits and budgets not applied in Redis",
                  core::JsonFields().add("settlements", unsettled));
      }
      if (backend_sync) backend_sync->close();
      if (key_sync) key_sync->close();
      stop_all();
      return;
    }
    auto timer = std::make_shared<net::steady_timer>(control, std::chrono::milliseconds(20));
    timer->async_wait([this, timer, deadline](boost::system::error_code) { wait_drained(deadline); });
  }

  void stop_all() {
    wake_timer.cancel();
    if (health) health->stop();
    if (identity) identity->stop();
    for (auto& w : workers) w->stop();
    if (admin) {
      boost::system::error_code ec;
      admin->close(ec);
    }
    access_log->flush();
    control.stop();
  }

  void wait_signal() {
    signals.async_wait([this](boost::system::error_code ec, int sig) {
      if (ec) return;
      if (sig == SIGHUP) {
        reload();
      } else if (sig == SIGUSR1) {
        if (access_log->reopen()) log_info("access log reopened");
      } else {
        log_info("stop signal received", core::JsonFields().add("signal", sig));
        begin_drain();
      }
      wait_signal();
    });
  }

  // Backend state read from the shared atomics at scrape time; the families: metrics/families.hpp.
  std::vector<prometheus::MetricFamily> routing_families() const {
    namespace fam = metrics::families;
    std::vector<prometheus::MetricFamily> out;
    if (!current) return out;
    auto now = routing::steady_now_ms();
    metrics::FamilyBuilder state(fam::kBackendState);
    metrics::FamilyBuilder<1> in_flight(fam::kBackendInFlight),
        tokens(fam::kBackendRemainingTokens), requests(fam::kBackendRemainingRequests),
        util(fam::kBackendUtilization), opens(fam::kBackendBreakerOpens),
        throttles(fam::kBackendThrottled);
    const auto& cfg = *current->config;
    for (std::size_t i = 0; i < current->backends.size(); ++i) {
      std::string_view name = cfg.backends[i].name;
      const auto& st = *current->backends[i].state;
      auto cond = st.condition(now, cfg.backends[i].max_in_flight);
      for (std::size_t c = 0; c < static_cast<std::size_t>(routing::Condition::kCount); ++c) {
        state.add({name, routing::to_string(static_cast<routing::Condition>(c))},
                  static_cast<std::size_t>(cond) == c ? 1 : 0);
      }
      in_flight.add({name}, static_cast<double>(st.in_flight()));
      if (auto v = st.last_remaining_tokens()) tokens.add({name}, static_cast<double>(*v));
      if (auto v = st.last_remaining_requests()) requests.add({name}, static_cast<double>(*v));
      if (auto v = st.utilization()) util.add({name}, *v / 100.0);
      opens.add({name}, static_cast<double>(st.breaker_opens()));
      throttles.add({name}, static_cast<double>(st.throttles()));
    }
    out.push_back(state.take());
    for (auto* f : {&in_flight, &tokens, &requests, &util, &opens, &throttles}) {
      out.push_back(f->take());
    }
    out.push_back(
        metrics::single(fam::kAffinityEntries, static_cast<double>(current->affinity->size())));
    priority_families(out);
    if (current->config->cluster.enabled()) {
      metrics::append_cluster_families(series, replicas->load(std::memory_order_relaxed), out);
    }
    if (health) health->families(out);
    if (identity) identity->families(out, current.get());
    auto add = [&](const metrics::FamilySpec<0>& spec, auto v) {
      out.push_back(metrics::single(spec, static_cast<double>(v)));
    };
    if (const auto* cache = current->tokenizers->count_cache()) {
      auto st = cache->stats();
      add(fam::kCountCacheHits, st.hits);
      add(fam::kCountCacheMisses, st.misses);
      add(fam::kCountCacheBytes, st.bytes);
    }
    add(fam::kRequestBufferedBytes, body_budget->held());
    add(fam::kRequestBufferFull, body_budget->refused());
    if (ledger) {
      add(fam::kLedgerQueueDepth, ledger->queued());
      add(fam::kLedgerWritten, ledger->written());
      add(fam::kLedgerWriteErrors, ledger->write_errors());
      add(fam::kLedgerDropped, ledger->dropped());
      add(fam::kLedgerObjectsDropped, ledger->objects_dropped());
      add(fam::kLedgerWritable, ledger->healthy() ? 1 : 0);
    }
    if (shipper) shipper_families(out);
    return out;
  }

  // The fleet ledger's shipper (usage.postgres). Thread: control.
  void shipper_families(std::vector<prometheus::MetricFamily>& out) const {
    namespace fam = metrics::families;
    auto add = [&](const metrics::FamilySpec<0>& spec, auto v) {
      out.push_back(metrics::single(spec, static_cast<double>(v)));
    };
    add(fam::kShipperUp, shipper->up() ? 1 : 0);
    add(fam::kShipped, shipper->shipped());
    add(fam::kShipDuplicates, shipper->duplicates());
    add(fam::kShipBacklog, shipper->backlog());
    auto oldest = shipper->oldest_unshipped_ms();
    add(fam::kShipOldest, oldest == 0 ? 0.0 : std::max<double>(0.0, static_cast<double>(core::unix_now_ms() - oldest) / 1000.0));
    metrics::FamilyBuilder<1> errors(fam::kShipErrors);
    for (auto e : {usage::ShipError::kConnect, usage::ShipError::kAuth, usage::ShipError::kTimeout,
                   usage::ShipError::kQuery, usage::ShipError::kSpool}) {
      errors.add({usage::to_string(e)}, static_cast<double>(shipper->errors(e)));
    }
    out.push_back(errors.take());
    add(fam::kSpoolFull, shipper->spool_full() ? 1 : 0);
  }

  // Priority classes and waiting rooms, per deployment and class. Thread: control.
  void priority_families(std::vector<prometheus::MetricFamily>& out) const {
    const auto& cfg = *current->config;
    std::unordered_map<std::string, std::vector<std::size_t>> depths;
    for (auto& [name, d] : scheduler->depths()) depths.emplace(name, std::move(d));
    std::vector<metrics::PriorityView> views;
    for (std::size_t i = 0; i < cfg.deployments.size(); ++i) {
      auto& v = views.emplace_back();
      v.deployment = cfg.deployments[i].name;
      v.series = current->deployments[i].series_none;
      auto it = depths.find(cfg.deployments[i].name);
      for (std::size_t k = 0; k < cfg.priority.classes.size(); ++k) {
        const auto& klass = cfg.priority.classes[k];
        v.classes.push_back({klass.name, klass.max_queue_wait.count() > 0,
                             it == depths.end() ? 0 : it->second[k]});
      }
    }
    metrics::append_priority_families(series, views, out);
  }

  // Arms the wake-up timer for `at` unless it fires earlier already. Thread: control.
  void wake_at(routing::TimeMs at) {
    if (at >= wake_armed) return;
    wake_armed = at;
    auto delay = std::max<routing::TimeMs>(0, at - routing::steady_now_ms());
    wake_timer.expires_after(std::chrono::milliseconds(delay));
    wake_timer.async_wait([this](boost::system::error_code ec) {
      if (ec) return;  // re-armed earlier, or stopping
      wake_armed = std::numeric_limits<routing::TimeMs>::max();
      auto now = routing::steady_now_ms();
      scheduler->kick(now, control_rng);
      // The next recovery among those still waiting; never sooner than 5 ms (a backend that
      // says "now" but cannot be picked waits for a release instead of a busy loop).
      if (auto next = scheduler->next_recovery(now)) wake_at(std::max(*next, now + 5));
    });
  }

  // Budgets start from the current day's and month's use, so neither a restart nor a new replica
  // resets spend: with usage.postgres, the fleet's records there plus this spool's records not
  // shipped yet (PostgreSQL unreachable: the spool's alone, and a warning); else the spool's.
  // Thread: control, before serving.
  void replay_budgets(const config::UsageConfig& u) {
    auto now = ratelimit::unix_now_ms();
    std::size_t seeded = 0;
    bool fleet = u.postgres.has_value();
    for (auto p : {ratelimit::Period::kDay, ratelimit::Period::kMonth}) {
      auto from = ratelimit::period_start(p, now);
      auto index = ratelimit::period_index(p, now);
      for (auto g : {usage::GroupBy::kClient, usage::GroupBy::kTenant}) {
        auto scope = g == usage::GroupBy::kClient ? ratelimit::Scope::kClient : ratelimit::Scope::kTenant;
        for (const auto& row : use_since(u, g, from, fleet)) {
          using ratelimit::BudgetRegistry;
          budget_counters.get(BudgetRegistry::key(scope, row.key, p, ratelimit::Measure::kTokens))
              ->seed(row.prompt_tokens + row.completion_tokens, index);
          budget_counters.get(BudgetRegistry::key(scope, row.key, p, ratelimit::Measure::kNanoUsd))
              ->seed(row.cost_nano_usd, index);
          ++seeded;
        }
      }
    }
    log_info(fleet ? "budgets rebuilt from the fleet's usage ledger (PostgreSQL) and this spool"
                   : "budgets rebuilt from the usage ledger",
             core::JsonFields().add("path", ledger->path()).add("totals", static_cast<std::uint64_t>(seeded)));
  }

  // Use per key since `from` (see replay_budgets); `fleet` turns false when PostgreSQL fails.
  std::vector<usage::Row> use_since(const config::UsageConfig& u, usage::GroupBy g, std::int64_t from,
                                    bool& fleet) {
    constexpr auto kEnd = std::numeric_limits<std::int64_t>::max();
    if (!fleet) return usage::totals(ledger->path(), g, from, kEnd);
    std::vector<usage::Row> rows;
    try {
      rows = usage::fleet_totals(*u.postgres, g, from, kEnd);
    } catch (const std::exception& e) {
      log_warn("budgets start from this replica's spool only: the fleet's usage ledger could not be read",
               core::JsonFields().add("error", e.what()));
      fleet = false;
      return usage::totals(ledger->path(), g, from, kEnd);
    }
    std::map<std::string, usage::Row> sum;
    for (auto& r : rows) sum[r.key] = std::move(r);
    for (const auto& r : usage::totals(ledger->path(), g, from, kEnd, usage::Rows::kUnshipped)) {
      auto& t = sum[r.key];
      t.key = r.key;
      t.prompt_tokens += r.prompt_tokens;
      t.completion_tokens += r.completion_tokens;
      t.cost_nano_usd += r.cost_nano_usd;
    }
    rows.clear();
    for (auto& [k, r] : sum) rows.push_back(std::move(r));
    return rows;
  }

  // Stored objects stay reachable across a restart: the owner records the ledger holds go into
  // the table before the workers serve, and from then on the ledger journals its changes.
  // Thread: control, before serving.
  void restore_affinity(const std::shared_ptr<routing::AffinityTable>& table) {
    auto now = routing::steady_now_ms();
    for (const auto& o : usage::load_objects(ledger->path(), core::unix_now_ms())) {
      table->restore(o, now);
    }
    table->set_journal(ledger.get());
    journaled = table;
    auto entries = static_cast<std::uint64_t>(table->size());
    log_info("affinity table restored",
             core::JsonFields().add("path", ledger->path()).add("entries", entries));
  }

  // With a cluster, the table's changes also go to the cluster's store (through each worker's
  // connection, cluster::ObjectJournal), ahead of the ledger. Thread: control, before serving.
  void share_affinity(const std::shared_ptr<routing::AffinityTable>& table) {
    object_journal = std::make_unique<cluster::ObjectJournal>(ledger.get());
    table->set_journal(object_journal.get());
    journaled = table;
  }

  // Thread: control, once the workers are gone (nothing touches the table any more).
  void detach_journal() {
    if (journaled) journaled->set_journal(nullptr);
    journaled.reset();
  }

  // On every way out (run() may throw): the table (kept alive by snapshots) never points at a
  // closed or destroyed ledger.
  ~Impl() { detach_journal(); }

  // GET /admin/usage (usage/report.hpp): the ledger is read on the report thread.
  net::awaitable<AdminResponse> usage_report(const AdminRequest& req) {
    if (req.method != "GET") co_return admin_error(405, "405", "use GET");
    if (!ledger) co_return admin_error(404, "404", "No usage ledger: set usage.ledger.");
    auto parsed = usage::parse_report_query(req.query, ratelimit::unix_now_ms());
    if (auto* refused = std::get_if<usage::ReportQueryError>(&parsed)) {
      co_return admin_error(400, "invalid_request", std::move(refused->message));
    }
    auto q = std::get<usage::ReportQuery>(parsed);
    const auto& pg = started->usage.postgres;  // the shipper's (a reload does not move it)
    bool fleet = q.scope == usage::ReportScope::kFleet && pg && shipper;
    std::vector<usage::Row> rows;
    try {
      // (Two statements: GCC 12 miscompiles co_await in both arms of a conditional.)
      if (fleet) {
        rows = co_await net::co_spawn(report_pool, read_fleet_totals(*pg, q.group, q.from_ms, q.to_ms),
                                      net::use_awaitable);
      } else {
        rows = co_await net::co_spawn(report_pool, read_totals(ledger->path(), q.group, q.from_ms, q.to_ms),
                                      net::use_awaitable);
      }
    } catch (const std::exception& e) {
      log_error("usage report failed", core::JsonFields().add("error", e.what()));
      if (fleet) {
        co_return admin_error(503, "ledger_unavailable",
                              "The fleet's usage ledger (PostgreSQL) could not be read; see the gateway's "
                              "log. scope=local reports this replica's records.");
      }
      co_return admin_error(500, "internal_error", "The usage ledger could not be read; see the gateway's log.");
    }
    auto report = usage::render_report(q, rows);
    co_return AdminResponse{200, std::string(report.content_type), std::move(report.body), {}};
  }

  net::awaitable<AdminResponse> admin_handler(const AdminRequest& req) {
    auto method = req.method;
    auto path = req.path;
    if (path == "/admin/usage") {
      if (auto refused = identity->refuse_admin(req)) co_return std::move(*refused);
      co_return co_await usage_report(req);
    }
    if (path == "/admin" || path.rfind("/admin/", 0) == 0) co_return identity->admin(req);
    if (method != "GET" && method != "HEAD") {
      co_return AdminResponse{405, "application/json",
              core::HttpError{405, "method_not_allowed", "use GET", {}, {}}.body()};
    }
    if (path == "/metrics") {
      co_return AdminResponse{200, "text/plain; version=0.0.4; charset=utf-8",
              metrics::render_metrics(series, control_stats, routing_families())};
    }
    if (path == "/healthz") co_return AdminResponse{200, "application/json", R"({"status":"ok"})"};
    if (path == "/readyz") {
      // Not ready while starting or draining, and while a worker cannot accept connections.
      if (connections->accept.failing()) {
        co_return AdminResponse{503, "application/json",
                                R"({"status":"not ready","reason":"accept_failing"})"};
      }
      if (control_stats.ready.load() == 1) co_return AdminResponse{200, "application/json", R"({"status":"ready"})"};
      co_return AdminResponse{503, "application/json", R"({"status":"not ready"})"};
    }
    co_return AdminResponse{404, "application/json", core::not_found("404", "Resource not found").body()};
  }
};

std::optional<std::string> startup_problem(const config::Config& cfg) {
  if (auto problem = cluster::connect_problem(cfg.cluster)) return cfg.source + ": " + *problem;
  return std::nullopt;
}

Gateway::Gateway(std::string config_path, std::shared_ptr<const config::Config> config)
    : impl_(std::make_unique<Impl>()) {
  auto& s = *impl_;
  s.config_path = std::move(config_path);
  s.config = std::move(config);
  s.started = s.config;
  const auto& cfg = *s.config;
  s.access_log = std::make_shared<metrics::AccessLog>(cfg.logging.access_log);
  s.connections = std::make_unique<SharedConnections>(cfg.server.workers);
  for (unsigned i = 0; i < cfg.server.workers; ++i) {
    s.workers.push_back(std::make_unique<Worker>(i, s.access_log, *s.connections));
    s.series.add_worker(&s.workers.back()->stats());
  }
  s.body_budget = std::make_shared<BodyBudget>(cfg.server.limits.max_buffered_bytes);
  for (auto& w : s.workers) w->set_body_budget(s.body_budget);
  s.resolver = std::make_unique<proxy::Resolver>(s.control.get_executor(), proxy::dns_settings(cfg.dns));
  s.identity = std::make_unique<IdentityManager>(s.control, *s.resolver, s.series,
                                                 [&s](std::shared_ptr<const AuthState> a) {
                                                   for (auto& w : s.workers) w->publish_auth(a);
                                                 },
                                                 cfg.admin.host == "127.0.0.1" ||
                                                     cfg.admin.host == "::1" ||
                                                     cfg.admin.host == "localhost",
                                                 s.buckets, s.budget_counters);
  if (!cfg.usage.ledger.empty()) {
    // A full disk or a file size limit must fail the ledger's write (it retries), not kill the
    // process with SIGXFSZ.
    std::signal(SIGXFSZ, SIG_IGN);
    usage::Options ledger_options{cfg.usage.ledger, cfg.usage.flush_interval, cfg.usage.batch_size,
                                  cfg.usage.max_buffered};
    ledger_options.replica = cfg.server.replica_name;
    s.ledger = std::make_shared<usage::Ledger>(std::move(ledger_options));
    s.replay_budgets(cfg.usage);
    if (cfg.usage.postgres) s.shipper = std::make_unique<usage::Shipper>(cfg.usage.ledger, *cfg.usage.postgres);
    for (auto& w : s.workers) w->set_ledger(s.ledger);
  } else {
    bool budgets = std::any_of(cfg.clients.begin(), cfg.clients.end(), [](const auto& c) { return c.limits.budget.any(); }) ||
                   std::any_of(cfg.tenants.begin(), cfg.tenants.end(), [](const auto& t) { return t.limits.budget.any(); });
    if (budgets) log_warn("budgets are configured without usage.ledger: their use starts from zero at every restart");
  }
  // The tokenizer (its files were verified before start): none of its encodings loaded yet; each
  // snapshot build loads those its configuration counts with (server::needed_encodings).
  auto tok = tokenize::Tokenizers::load(cfg.tokenizer.data_dir, tokenize::EncodingSet{});
  if (!tok) throw std::runtime_error(tok.error().message);
  tok->set_count_cache(cfg.tokenizer.count_cache);
  tok->on_missing([](std::string_view message) { log_error(message); });
  s.builder.emplace(SnapshotSources{
      s.series, s.buckets,
      [&s](const config::BackendConfig& b) { return s.identity->token_slot(b); },
      [&s](routing::TimeMs at) { net::post(s.control, [&s, at] { s.wake_at(at); }); },
      s.scheduler, std::make_shared<const tokenize::Tokenizers>(std::move(tok).value())});
  // One SO_REUSEPORT acceptor per worker and listener; port 0 is resolved by the first bind.
  for (std::size_t li = 0; li < cfg.server.listen.size(); ++li) {
    const auto& l = cfg.server.listen[li];
    auto ep = make_endpoint(l.host, l.port);
    std::shared_ptr<net::ssl::context> tls = l.tls ? proxy::make_server_tls(*l.tls) : nullptr;
    for (auto& w : s.workers) {
      auto a = make_acceptor(w->io(), ep, true);
      ep = a.local_endpoint();
      w->add_listener(std::move(a), tls);
    }
    log_info("listening", core::JsonFields()
                              .add("listener", li == 0 ? "main" : "main" + std::to_string(li))
                              .add("address", ep.address().to_string() + ":" + std::to_string(ep.port()))
                              .add("tls", l.tls.has_value())
                              .add("workers", cfg.server.workers));
  }
  if (cfg.admin.enabled) {
    auto ep = make_endpoint(cfg.admin.host, cfg.admin.port);
    s.admin.emplace(make_acceptor(s.control, ep, false));
    if (cfg.admin.tls) s.admin_tls = proxy::make_server_tls(*cfg.admin.tls);
    ep = s.admin->local_endpoint();
    log_info("listening", core::JsonFields()
                              .add("listener", "admin")
                              .add("address", ep.address().to_string() + ":" + std::to_string(ep.port()))
                              .add("tls", s.admin_tls != nullptr));
  }
}

Gateway::~Gateway() = default;

int Gateway::run() {
  auto& s = *impl_;
  auto snap = s.build(s.config);
  if (s.ledger) s.restore_affinity(snap->affinity);
  if (snap->config->cluster.enabled()) s.share_affinity(snap->affinity);
  auto auth = s.identity->apply(s.config, *snap);  // throws when the keys file is unusable
  // The JWT issuers' keys and the backends' Entra ID tokens are fetched before the listeners
  // serve (bounded), so the first requests after start-up don't fail for want of them.
  auto keys_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!s.identity->keys_ready() && std::chrono::steady_clock::now() < keys_deadline) {
    s.control.run_one_for(std::chrono::milliseconds(50));
  }
  if (!s.identity->keys_ready()) {
    log_warn("not every JWT issuer's keys or backend token could be obtained yet; they are retried");
  }
  auth = s.identity->state();
  s.current = snap;
  s.health = std::make_unique<HealthChecker>(s.control, *s.resolver, [&s] {
    if (s.scheduler->waiting() > 0) s.scheduler->kick(routing::steady_now_ms(), s.control_rng);
  });
  s.health->apply(snap);
  if (snap->config->cluster.enabled()) {
    s.backend_sync = cluster::BackendSync::create(s.control.get_executor(), snap->config->cluster, cluster::replica_id(), nullptr);
    s.sync_backends(*snap);
    if (s.backend_sync) s.backend_sync->start();
    if (!snap->config->auth.keys_file.empty()) s.share_keys(snap->config->cluster);
  }
  for (auto& w : s.workers) {
    w->set_replicas(s.replicas);
    w->on_unknown_kid([&s](std::size_t issuer) {
      net::post(s.control, [&s, issuer] { s.identity->unknown_kid(issuer); });
    });
    w->start(snap, auth);
  }
  if (s.admin) {
    serve_admin(s.control, *s.admin, s.admin_tls,
                [&s](const AdminRequest& r) { return s.admin_handler(r); });
  }
  if (snap->config->cluster.enabled()) s.await_cluster();
  s.signals.add(SIGUSR1);  // access log rotation
  s.wait_signal();
  s.control_stats.last_reload_ok_time.store(static_cast<double>(core::unix_now_ms()) / 1000.0);
  s.control_stats.ready.store(1);
  log_info("ready", core::JsonFields()
                        .add("version", TOLLGATE_VERSION)
                        .add("deployments", static_cast<std::uint64_t>(s.config->deployments.size()))
                        .add("backends", static_cast<std::uint64_t>(s.config->backends.size())));
  s.control.run();
  for (auto& w : s.workers) w->join();
  // Destroying the workers destroys requests cut off by the drain timeout; they still settle
  // and leave their usage records (FinishGuard), which the ledger then writes.
  s.workers.clear();
  s.detach_journal();  // the owner records queued so far are written by the close
  if (s.ledger) {
    auto lost = s.ledger->close(std::chrono::seconds(10));
    if (lost == 0) log_info("usage ledger flushed", core::JsonFields().add("records", s.ledger->written()));
  }
  // What the spool holds unshipped goes now if PostgreSQL takes it soon, else at the next start.
  if (s.shipper) s.shipper->close(kShipOnStop);
  s.access_log->flush();
  log_info("stopped");
  return 0;
}

}  // namespace tollgate::server
