#include "tollgate/usage/ledger.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <stdexcept>
#include <utility>

#include "tollgate/core/request_id.hpp"
#include "usage/sqlite.hpp"

#include "tollgate/metrics/logging.hpp"

namespace tollgate::usage {

using metrics::log_error;
using metrics::log_info;
using metrics::log_warn;

namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS usage (
  id INTEGER PRIMARY KEY,
  time_ms INTEGER NOT NULL,
  request_id TEXT NOT NULL,
  client TEXT NOT NULL,
  tenant TEXT NOT NULL,
  deployment TEXT NOT NULL,
  backend TEXT NOT NULL,
  operation TEXT NOT NULL,
  tier INTEGER NOT NULL,
  status INTEGER NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  cached_tokens INTEGER NOT NULL,
  reasoning_tokens INTEGER NOT NULL,
  estimated INTEGER NOT NULL,
  cost_nano_usd INTEGER NOT NULL,
  latency_ms REAL NOT NULL,
  ttft_ms REAL,
  outcome TEXT NOT NULL,
  record_id TEXT,
  replica TEXT NOT NULL DEFAULT '',
  shipped INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS usage_time ON usage(time_ms);
CREATE TABLE IF NOT EXISTS objects (
  id TEXT PRIMARY KEY,
  backend TEXT NOT NULL,
  deployment TEXT NOT NULL,
  client TEXT NOT NULL,
  tenant TEXT NOT NULL,
  billing TEXT NOT NULL,
  expires_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_expires ON objects(expires_ms);
)sql";

// Columns a ledger written before the fleet ledger lacks (added in place at open). Its rows get
// a record id and count as not shipped: enabling usage.postgres ships the history too.
constexpr std::array<std::pair<const char*, const char*>, 3> kAddedColumns{{
    {"record_id", "ALTER TABLE usage ADD COLUMN record_id TEXT"},
    {"replica", "ALTER TABLE usage ADD COLUMN replica TEXT NOT NULL DEFAULT ''"},
    {"shipped", "ALTER TABLE usage ADD COLUMN shipped INTEGER NOT NULL DEFAULT 0"},
}};
constexpr const char* kAfterColumns = R"sql(
UPDATE usage SET record_id = lower(hex(randomblob(16))) WHERE record_id IS NULL;
CREATE INDEX IF NOT EXISTS usage_unshipped ON usage(id) WHERE shipped = 0;
)sql";

constexpr const char* kInsert =
    "INSERT INTO usage (time_ms, request_id, client, tenant, deployment, backend, operation, tier, "
    "status, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, estimated, "
    "cost_nano_usd, latency_ms, ttft_ms, outcome, record_id, replica) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";

constexpr const char* kUpsertObject =
    "INSERT OR REPLACE INTO objects (id, backend, deployment, client, tenant, billing, expires_ms) "
    "VALUES (?,?,?,?,?,?,?)";
constexpr const char* kEraseObject = "DELETE FROM objects WHERE id = ?";
constexpr const char* kPurgeAll = "DELETE FROM objects WHERE expires_ms <= ?";
// Bounded work per transaction: at most kPurgeChunk rows.
constexpr const char* kPurgeChunkSql =
    "DELETE FROM objects WHERE rowid IN "
    "(SELECT rowid FROM objects WHERE expires_ms <= ? LIMIT ?)";
constexpr std::size_t kPurgeChunk = 1000;

std::string_view billing_text(routing::Billing b) {
  return b == routing::Billing::kPending ? "pending" : "settled";
}

// Anything but "pending" is settled: an unreadable state never bills twice.
routing::Billing billing_from(std::string_view text) {
  return text == "pending" ? routing::Billing::kPending : routing::Billing::kSettled;
}

using sqlite::Connection;
using sqlite::Statement;

}  // namespace

struct Ledger::Db {
  Connection conn;
  Statement insert;
  Statement upsert_object;
  Statement erase_object;
  Statement purge;
  Db(const std::string& path, core::UnixMs now_ms)
      : conn(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX),
        insert(conn.db, (setup(path), kInsert)),
        upsert_object(conn.db, kUpsertObject),
        erase_object(conn.db, kEraseObject),
        purge(conn.db, kPurgeChunkSql) {
    if (!insert.st || !upsert_object.st || !erase_object.st || !purge.st) {
      throw std::runtime_error("usage ledger " + path + ": not a Tollgate usage ledger (" +
                               conn.error() + ")");
    }
    // Owner records that expired while the gateway was down (once, before it serves).
    Statement all(conn.db, kPurgeAll);
    if (all.st != nullptr) sqlite3_bind_int64(all.st, 1, now_ms);
    if (all.st == nullptr || !all.done()) {
      throw std::runtime_error("usage ledger " + path + ": cannot purge expired objects: " +
                               conn.error());
    }
  }
  // Deletes up to kPurgeChunk expired owner records; the number deleted, or nullopt on failure.
  std::optional<std::size_t> purge_expired(core::UnixMs now_ms) {
    sqlite3_bind_int64(purge.st, 1, now_ms);
    sqlite3_bind_int64(purge.st, 2, static_cast<std::int64_t>(kPurgeChunk));
    if (!purge.done()) return std::nullopt;
    return static_cast<std::size_t>(sqlite3_changes(conn.db));
  }
  void setup(const std::string& path) {
    Statement mode(conn.db, "PRAGMA journal_mode=WAL");
    bool wal = mode.st != nullptr && sqlite3_step(mode.st) == SQLITE_ROW &&
               std::string_view(reinterpret_cast<const char*>(sqlite3_column_text(mode.st, 0))) == "wal";
    if (!wal) throw std::runtime_error("usage ledger " + path + ": cannot use WAL mode: " + conn.error());
    // FULL: every committed batch survives a power loss (one fsync per batch, a few per second).
    if (!conn.exec("PRAGMA synchronous=FULL") || !conn.exec(kSchema) || !add_columns() ||
        !conn.exec(kAfterColumns)) {
      throw std::runtime_error("usage ledger " + path + ": cannot create the schema: " + conn.error());
    }
  }
  bool add_columns() {
    std::vector<std::string> have;
    Statement info(conn.db, "PRAGMA table_info(usage)");
    if (info.st == nullptr) return false;
    while (sqlite3_step(info.st) == SQLITE_ROW) have.push_back(info.column(1));
    for (const auto& [name, sql] : kAddedColumns) {
      if (std::find(have.begin(), have.end(), name) == have.end() && !conn.exec(sql)) return false;
    }
    return true;
  }
};

std::optional<GroupBy> parse_group_by(std::string_view s) {
  if (s == "tenant") return GroupBy::kTenant;
  if (s == "client") return GroupBy::kClient;
  if (s == "deployment") return GroupBy::kDeployment;
  if (s == "backend") return GroupBy::kBackend;
  if (s == "replica") return GroupBy::kReplica;
  return std::nullopt;
}

std::string_view to_string(GroupBy g) {
  switch (g) {
    case GroupBy::kTenant: return "tenant";
    case GroupBy::kClient: return "client";
    case GroupBy::kDeployment: return "deployment";
    case GroupBy::kBackend: return "backend";
    case GroupBy::kReplica: return "replica";
  }
  return "client";
}

std::vector<Row> totals(const std::string& path, GroupBy group, std::int64_t from_ms,
                        std::int64_t to_ms, Rows which) {
  Connection conn(path, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX);
  // The column name comes from the enum, never from the caller's text.
  std::string col(to_string(group));
  std::string sql = "SELECT " + col +
                    ", COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens), "
                    "SUM(reasoning_tokens), SUM(cost_nano_usd), SUM(estimated) FROM usage "
                    "WHERE time_ms >= ? AND time_ms < ?" +
                    (which == Rows::kUnshipped ? " AND shipped = 0" : "") + " GROUP BY " + col +
                    " ORDER BY " + col;
  Statement q(conn.db, sql.c_str());
  if (q.st == nullptr) throw std::runtime_error("usage ledger " + path + ": " + conn.error());
  sqlite3_bind_int64(q.st, 1, from_ms);
  sqlite3_bind_int64(q.st, 2, to_ms);
  std::vector<Row> rows;
  int rc = 0;
  while ((rc = sqlite3_step(q.st)) == SQLITE_ROW) {
    Row r;
    auto text = sqlite3_column_text(q.st, 0);
    r.key = text ? reinterpret_cast<const char*>(text) : "";
    r.requests = sqlite3_column_int64(q.st, 1);
    r.prompt_tokens = sqlite3_column_int64(q.st, 2);
    r.completion_tokens = sqlite3_column_int64(q.st, 3);
    r.cached_tokens = sqlite3_column_int64(q.st, 4);
    r.reasoning_tokens = sqlite3_column_int64(q.st, 5);
    r.cost_nano_usd = sqlite3_column_int64(q.st, 6);
    r.estimated_requests = sqlite3_column_int64(q.st, 7);
    rows.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) throw std::runtime_error("usage ledger " + path + ": " + conn.error());
  return rows;
}

std::vector<routing::StoredObject> load_objects(const std::string& path, core::UnixMs now_ms) {
  Connection conn(path, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX);
  Statement q(conn.db,
              "SELECT id, backend, deployment, client, tenant, billing, expires_ms FROM objects "
              "WHERE expires_ms > ? ORDER BY expires_ms");
  if (q.st == nullptr) throw std::runtime_error("usage ledger " + path + ": " + conn.error());
  sqlite3_bind_int64(q.st, 1, now_ms);
  std::vector<routing::StoredObject> objects;
  int rc = 0;
  while ((rc = sqlite3_step(q.st)) == SQLITE_ROW) {
    routing::StoredObject o;
    o.id = q.column(0);
    o.owner = routing::ObjectOwner{q.column(1), q.column(2), q.column(3), q.column(4)};
    o.billing = billing_from(q.column(5));
    o.expires_in_ms = sqlite3_column_int64(q.st, 6) - now_ms;
    objects.push_back(std::move(o));
  }
  if (rc != SQLITE_DONE) throw std::runtime_error("usage ledger " + path + ": " + conn.error());
  return objects;
}

Ledger::Ledger(Options options) : options_(std::move(options)) {
  db_ = std::make_unique<Db>(options_.path, options_.clock->unix_ms());
  thread_ = std::thread([this] { run(); });
}

Ledger::~Ledger() {
  if (thread_.joinable()) close(std::chrono::milliseconds(0));
}

void Ledger::submit(Record r) {
  {
    std::lock_guard lock(m_);
    queue_.push_back(std::move(r));
    while (queue_.size() > options_.max_buffered) {
      queue_.pop_front();
      dropped_.fetch_add(1, std::memory_order_relaxed);
    }
    queued_.store(queue_.size(), std::memory_order_relaxed);
  }
  cv_.notify_one();
}

void Ledger::saved(const routing::StoredObject& object) {
  push_object(ObjectChange{ObjectChange::Kind::kSaved, object,
                           options_.clock->unix_ms() + object.expires_in_ms});
}

void Ledger::erased(std::string_view id) {
  routing::StoredObject gone;
  gone.id = std::string(id);
  push_object(ObjectChange{ObjectChange::Kind::kErased, std::move(gone), 0});
}

void Ledger::push_object(ObjectChange change) {
  {
    std::lock_guard lock(m_);
    objects_.push_back(std::move(change));
    while (objects_.size() > options_.max_buffered) {
      objects_.pop_front();
      objects_dropped_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  cv_.notify_one();
}

std::size_t Ledger::close(std::chrono::milliseconds timeout) {
  {
    std::lock_guard lock(m_);
    stopping_ = true;
    stop_deadline_ = std::chrono::steady_clock::now() + timeout;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
  return unwritten_at_close_;
}

bool Ledger::insert(const Record& r) {
  auto& q = db_->insert;
  auto* st = q.st;
  sqlite3_bind_int64(st, 1, r.time_ms);
  q.text(2, r.request_id);
  q.text(3, r.client);
  q.text(4, r.tenant);
  q.text(5, r.deployment);
  q.text(6, r.backend);
  q.text(7, r.operation);
  sqlite3_bind_int(st, 8, r.tier);
  sqlite3_bind_int(st, 9, r.status);
  sqlite3_bind_int64(st, 10, r.prompt_tokens);
  sqlite3_bind_int64(st, 11, r.completion_tokens);
  sqlite3_bind_int64(st, 12, r.cached_tokens);
  sqlite3_bind_int64(st, 13, r.reasoning_tokens);
  sqlite3_bind_int(st, 14, r.estimated ? 1 : 0);
  sqlite3_bind_int64(st, 15, r.cost_nano_usd);
  sqlite3_bind_double(st, 16, static_cast<double>(r.latency_us) / 1000.0);
  if (r.ttft_us >= 0) {
    sqlite3_bind_double(st, 17, static_cast<double>(r.ttft_us) / 1000.0);
  } else {
    sqlite3_bind_null(st, 17);
  }
  q.text(18, r.outcome);
  // Generated here, kept in the spool: a record shipped twice (a crash between PostgreSQL's
  // commit and the spool's mark) is the same row there. Not the request id: clients may reuse it.
  auto record_id = core::new_request_id();
  sqlite3_bind_text(st, 19, record_id.data(), static_cast<int>(record_id.size()), SQLITE_TRANSIENT);
  q.text(20, options_.replica);
  return q.done();
}

bool Ledger::apply(const ObjectChange& c) {
  const auto& o = c.object;
  if (c.kind == ObjectChange::Kind::kErased) {
    db_->erase_object.text(1, o.id);
    return db_->erase_object.done();
  }
  auto& q = db_->upsert_object;
  q.text(1, o.id);
  q.text(2, o.owner.backend);
  q.text(3, o.owner.deployment);
  q.text(4, o.owner.client);
  q.text(5, o.owner.tenant);
  q.text(6, billing_text(o.billing));
  sqlite3_bind_int64(q.st, 7, c.expires_ms);
  return q.done();
}

bool Ledger::write(Batch& batch) {
  auto fail = [this] {
    error_ = db_->conn.error();  // before the rollback replaces it
    db_->conn.exec("ROLLBACK");
    return false;
  };
  if (!db_->conn.exec("BEGIN IMMEDIATE")) return fail();
  for (const auto& r : batch.records) {
    if (!insert(r)) return fail();
  }
  for (const auto& c : batch.objects) {
    if (!apply(c)) return fail();
  }
  if (batch.purge) {
    auto n = db_->purge_expired(options_.clock->unix_ms());
    if (!n) return fail();
    purged_ = *n;
  }
  if (!db_->conn.exec("COMMIT")) return fail();
  // Bindings point into the batch's strings (SQLITE_STATIC): drop them with the batch.
  sqlite3_clear_bindings(db_->insert.st);
  sqlite3_clear_bindings(db_->upsert_object.st);
  sqlite3_clear_bindings(db_->erase_object.st);
  return true;
}

void Ledger::take(Batch& batch) {
  auto n = std::min(queue_.size(), options_.batch_size);
  batch.records.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    batch.records.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  auto k = std::min(objects_.size(), options_.batch_size);
  batch.objects.reserve(k);
  for (std::size_t i = 0; i < k; ++i) {
    batch.objects.push_back(std::move(objects_.front()));
    objects_.pop_front();
  }
}

void Ledger::put_back(Batch& batch) {
  auto& r = batch.records;
  for (auto it = r.rbegin(); it != r.rend(); ++it) queue_.push_front(std::move(*it));
  while (queue_.size() > options_.max_buffered) {
    queue_.pop_front();
    dropped_.fetch_add(1, std::memory_order_relaxed);
  }
  auto& o = batch.objects;
  for (auto it = o.rbegin(); it != o.rend(); ++it) objects_.push_front(std::move(*it));
  while (objects_.size() > options_.max_buffered) {
    objects_.pop_front();
    objects_dropped_.fetch_add(1, std::memory_order_relaxed);
  }
  queued_.store(queue_.size(), std::memory_order_relaxed);
}

void Ledger::run() {
  using namespace std::chrono;
  auto backoff = milliseconds(0);
  auto last_log = steady_clock::time_point{};
  auto next_purge = steady_clock::now() + options_.purge_every;
  Batch batch;
  for (;;) {
    batch.records.clear();
    batch.objects.clear();
    {
      std::unique_lock lock(m_);
      auto waiting = [this] { return queue_.size() + objects_.size(); };
      cv_.wait_until(lock, next_purge, [&] { return stopping_ || waiting() > 0; });
      if (!stopping_ && waiting() > 0 && waiting() < options_.batch_size) {
        // Gather a batch: one transaction (and one fsync) for everything that came meanwhile.
        cv_.wait_for(lock, options_.flush_interval,
                     [&] { return stopping_ || waiting() >= options_.batch_size; });
      }
      if (stopping_ && waiting() == 0) break;  // everything written
      take(batch);
    }
    batch.purge = steady_clock::now() >= next_purge;
    if (batch.empty()) continue;
    if (write(batch)) {
      written_.fetch_add(batch.records.size(), std::memory_order_relaxed);
      if (!healthy_.exchange(true)) {
        log_info("usage ledger writable again", core::JsonFields().add("path", options_.path));
      }
      backoff = milliseconds(0);
      if (batch.purge) {
        auto again = purged_ == kPurgeChunk ? options_.flush_interval : options_.purge_every;
        next_purge = steady_clock::now() + again;
      }
      std::lock_guard lock(m_);
      queued_.store(queue_.size(), std::memory_order_relaxed);
      continue;
    }
    // The disk refuses: keep the batch (in front, bounded), retry with backoff.
    write_errors_.fetch_add(1, std::memory_order_relaxed);
    healthy_.store(false);
    auto now = steady_clock::now();
    if (now - last_log >= seconds(60)) {
      last_log = now;
      log_error("usage ledger write failed; records are kept in memory and retried",
                core::JsonFields().add("path", options_.path).add("error", error_));
    }
    backoff = std::clamp(backoff * 2, milliseconds(250), milliseconds(5000));
    std::unique_lock lock(m_);
    put_back(batch);
    if (stopping_ && steady_clock::now() >= stop_deadline_) break;
    auto wake = stopping_ ? std::min(steady_clock::now() + backoff, stop_deadline_)
                          : steady_clock::now() + backoff;
    cv_.wait_until(lock, wake, [this, &wake] {
      return stopping_ && stop_deadline_ < wake;  // a close with a shorter deadline
    });
  }
  std::lock_guard lock(m_);
  unwritten_at_close_ = queue_.size();
  if (!queue_.empty() || !objects_.empty()) {
    log_error("usage ledger closed with unwritten records",
              core::JsonFields()
                  .add("path", options_.path)
                  .add("records", static_cast<std::uint64_t>(queue_.size()))
                  .add("objects", static_cast<std::uint64_t>(objects_.size())));
  }
}

}  // namespace tollgate::usage
