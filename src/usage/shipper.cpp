#include "tollgate/usage/shipper.hpp"

#include <algorithm>
#include <stdexcept>

#include "tollgate/metrics/logging.hpp"
#include "usage/postgres.hpp"
#include "usage/spool.hpp"

namespace tollgate::usage {

using metrics::log_error;
using metrics::log_info;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

namespace {

constexpr milliseconds kMinBackoff{200};
constexpr milliseconds kMaxBackoff{5'000};
constexpr auto kLogEvery = std::chrono::seconds(60);  // per condition
constexpr std::uint64_t kPruneChunk = 10'000;         // rows deleted per round at most

}  // namespace

std::string_view to_string(ShipError e) {
  switch (e) {
    case ShipError::kConnect: return "connect";
    case ShipError::kAuth: return "auth";
    case ShipError::kTimeout: return "timeout";
    case ShipError::kQuery: return "query";
    case ShipError::kSpool: return "spool";
  }
  return "query";
}

std::vector<Row> fleet_totals(const config::PostgresLedgerConfig& pg, GroupBy group,
                              std::int64_t from_ms, std::int64_t to_ms) {
  pg::Connection c;
  auto failed = [&pg](const pg::Error& e) {
    return std::runtime_error("PostgreSQL at " + pg.where + " (" + std::string(to_string(e.kind)) +
                              "): " + e.message);
  };
  if (auto e = c.connect(pg.url, pg.timeout)) throw failed(*e);
  pg::TableNames names(pg.table);
  // A fleet that has shipped nothing yet has no table: create it (once, under its lock), then read.
  if (auto e = pg::migrate(c, names, pg.timeout)) throw failed(*e);
  auto got = pg::totals(c, names, group, from_ms, to_ms, pg.timeout);
  if (auto* e = std::get_if<pg::Error>(&got)) throw failed(*e);
  return std::get<std::vector<Row>>(std::move(got));
}

struct Shipper::State {
  Spool spool;
  pg::Connection conn;
  pg::TableNames names;
  Spool::Batch batch;
  std::string full_insert;  // the INSERT of a full batch (built once)
  milliseconds backoff{0};
  std::array<Clock::time_point, kShipErrors> logged{};
  Clock::time_point full_logged{};
  bool failing = false;  // since the last successful round
  State(const std::string& path, const config::PostgresLedgerConfig& pg)
      : spool(path), names(pg.table), full_insert(pg::insert_sql(names, pg.batch_size)) {}
};

Shipper::Shipper(std::string spool_path, config::PostgresLedgerConfig pg)
    : spool_path_(std::move(spool_path)),
      pg_(std::move(pg)),
      state_(std::make_unique<State>(spool_path_, pg_)) {  // opens the spool: throws here
  thread_ = std::thread([this] { run(); });
}

Shipper::~Shipper() {
  if (thread_.joinable()) close(milliseconds(0));
}

void Shipper::close(milliseconds timeout) {
  {
    std::lock_guard lock(m_);
    stopping_ = true;
    stop_deadline_ = Clock::now() + timeout;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void Shipper::sleep_for(milliseconds d) {
  std::unique_lock lock(m_);
  cv_.wait_for(lock, d, [this] { return stopping_; });
}

milliseconds Shipper::op_timeout() {
  std::lock_guard lock(m_);
  if (!stopping_) return pg_.timeout;
  auto left = std::chrono::duration_cast<milliseconds>(stop_deadline_ - Clock::now());
  return std::clamp(left, milliseconds(0), pg_.timeout);
}

void Shipper::fail(ShipError e, const std::string& message) {
  auto& s = *state_;
  errors_[static_cast<std::size_t>(e)].fetch_add(1, std::memory_order_relaxed);
  if (e != ShipError::kSpool) up_.store(false, std::memory_order_relaxed);
  s.failing = true;
  s.backoff = std::clamp(s.backoff * 2, kMinBackoff, kMaxBackoff);
  auto& last = s.logged[static_cast<std::size_t>(e)];
  auto now = Clock::now();
  if (last != Clock::time_point{} && now - last < kLogEvery) return;
  last = now;
  auto what = e == ShipError::kSpool ? "usage shipper cannot read or mark the local spool; retrying"
                                     : "usage shipper cannot ship to PostgreSQL; records wait in "
                                       "the local spool and are retried";
  log_error(what, core::JsonFields()
                      .add("postgres", pg_.where)
                      .add("spool", spool_path_)
                      .add("reason", to_string(e))
                      .add("error", message));
}

bool Shipper::connect(milliseconds timeout) {
  auto& s = *state_;
  if (auto e = s.conn.connect(pg_.url, timeout)) {
    fail(e->kind, e->message);
    return false;
  }
  if (auto e = pg::migrate(s.conn, s.names, timeout)) {
    s.conn.close();
    fail(e->kind, e->message);
    return false;
  }
  return true;
}

Shipper::Round Shipper::ship_once(milliseconds timeout) {
  auto& s = *state_;
  if (!s.conn.connected() && !connect(timeout)) return Round::kFailed;
  if (!s.spool.read(pg_.batch_size, s.batch)) {
    fail(ShipError::kSpool, s.spool.error());
    return Round::kFailed;
  }
  if (s.batch.count > 0) {
    auto sql = s.batch.count == pg_.batch_size ? s.full_insert : pg::insert_sql(s.names, s.batch.count);
    auto done = s.conn.exec(sql, &s.batch.params, timeout);
    if (auto* e = std::get_if<pg::Error>(&done)) {
      fail(e->kind, e->message);
      return Round::kFailed;
    }
    auto inserted = static_cast<std::uint64_t>(std::get<pg::Result>(done).affected);
    duplicates_.fetch_add(s.batch.count - std::min<std::uint64_t>(inserted, s.batch.count),
                          std::memory_order_relaxed);
    // Committed in PostgreSQL: a failure here only re-sends rows it will skip.
    if (!s.spool.mark_shipped(s.batch.last_id)) {
      fail(ShipError::kSpool, s.spool.error());
      return Round::kFailed;
    }
    shipped_.fetch_add(s.batch.count, std::memory_order_relaxed);
  }
  if (!up_.exchange(true, std::memory_order_relaxed)) {
    log_info(s.failing ? "usage shipper reaches PostgreSQL again" : "usage shipper connected to PostgreSQL",
             core::JsonFields().add("postgres", pg_.where).add("table", pg_.table));
  }
  s.failing = false;
  s.backoff = milliseconds(0);
  if (s.batch.count == 0) return Round::kIdle;
  return s.batch.count == pg_.batch_size ? Round::kFull : Round::kShipped;
}

void Shipper::observe_spool() {
  auto& s = *state_;
  auto pruned = s.spool.prune(pg_.max_backlog, kPruneChunk);
  auto b = s.spool.backlog();
  if (!pruned || !b) {
    fail(ShipError::kSpool, s.spool.error());
    return;
  }
  backlog_.store(b->unshipped, std::memory_order_relaxed);
  oldest_ms_.store(b->oldest_ms, std::memory_order_relaxed);
  bool full = b->unshipped > pg_.max_backlog;
  full_.store(full, std::memory_order_relaxed);
  auto now = Clock::now();
  if (full && (s.full_logged == Clock::time_point{} || now - s.full_logged >= kLogEvery)) {
    s.full_logged = now;
    log_error("usage spool full: more than usage.postgres.max_backlog records wait for "
              "PostgreSQL; none is dropped, the spool keeps growing on disk",
              core::JsonFields()
                  .add("spool", spool_path_)
                  .add("unshipped", b->unshipped)
                  .add("max_backlog", static_cast<std::uint64_t>(pg_.max_backlog)));
  }
}

void Shipper::run() {
  for (;;) {
    bool stopping = false;
    {
      std::lock_guard lock(m_);
      stopping = stopping_;
    }
    auto timeout = op_timeout();
    if (stopping && timeout.count() == 0) break;
    auto round = ship_once(timeout);
    observe_spool();
    if (stopping && (round == Round::kIdle || round == Round::kFailed)) break;
    if (round == Round::kFailed) {
      sleep_for(state_->backoff);
    } else if (round == Round::kIdle || round == Round::kShipped) {
      sleep_for(pg_.flush_interval);
    }
  }
  state_->conn.close();
  if (backlog_.load() > 0) {
    log_info("usage shipper stopped; the spool's unshipped records go at the next start",
             core::JsonFields().add("spool", spool_path_).add("unshipped", backlog_.load()));
  }
}

}  // namespace tollgate::usage
