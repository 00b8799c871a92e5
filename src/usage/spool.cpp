#include "usage/spool.hpp"

#include <algorithm>
#include <stdexcept>

#include "usage/sqlite.hpp"

namespace tollgate::usage {

namespace {

using sqlite::Connection;
using sqlite::Statement;

// The ledger's names for pg::kColumns (estimated is 0/1, which PostgreSQL reads as a boolean).
constexpr const char* kRead =
    "SELECT id, record_id, request_id, time_ms, replica, client, tenant, deployment, backend, "
    "operation, tier, status, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, "
    "estimated, cost_nano_usd, latency_ms, ttft_ms, outcome FROM usage WHERE shipped = 0 "
    "ORDER BY id LIMIT ?";
constexpr const char* kMark = "UPDATE usage SET shipped = 1 WHERE shipped = 0 AND id <= ?";
constexpr const char* kOldest =
    "SELECT id, time_ms FROM usage WHERE shipped = 0 ORDER BY id LIMIT 1";
// Ids grow by one per row and only a prefix is ever deleted: the span is the row count.
// (Two subqueries: each is one b-tree probe; min() and max() in one SELECT would scan.)
constexpr const char* kSpan = "SELECT (SELECT min(id) FROM usage), (SELECT max(id) FROM usage)";
constexpr const char* kPrune =
    "DELETE FROM usage WHERE id IN (SELECT id FROM usage WHERE shipped = 1 ORDER BY id LIMIT ?)";

}  // namespace

struct Spool::Db {
  Connection conn;
  Statement read, mark, oldest, span, prune;
  explicit Db(const std::string& path)
      : conn(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX),
        read(conn.db, kRead),
        mark(conn.db, kMark),
        oldest(conn.db, kOldest),
        span(conn.db, kSpan),
        prune(conn.db, kPrune) {
    if (!read.st || !mark.st || !oldest.st || !span.st || !prune.st) {
      throw std::runtime_error("usage ledger " + path + ": not a Tollgate usage ledger (" +
                               conn.error() + ")");
    }
  }
};

Spool::Spool(const std::string& path) : db_(std::make_unique<Db>(path)) {}
Spool::~Spool() = default;

bool Spool::read(std::size_t limit, Batch& out) {
  out.count = 0;
  out.params.clear();
  out.params.reserve(limit * pg::kColumnCount);
  auto* st = db_->read.st;
  sqlite3_bind_int64(st, 1, static_cast<std::int64_t>(limit));
  int rc = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    out.last_id = sqlite3_column_int64(st, 0);
    for (int c = 1; c <= static_cast<int>(pg::kColumnCount); ++c) {
      if (db_->read.is_null(c)) {
        out.params.add_null();
      } else {
        out.params.add(db_->read.column(c));
      }
    }
    ++out.count;
  }
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) {
    error_ = db_->conn.error();
    return false;
  }
  return true;
}

bool Spool::mark_shipped(std::int64_t last_id) {
  db_->mark.int64(1, last_id);
  if (db_->mark.done()) return true;
  error_ = db_->conn.error();
  return false;
}

std::optional<Spool::Backlog> Spool::backlog() {
  Backlog b;
  auto* span = db_->span.st;
  std::int64_t min_id = 0;
  std::int64_t max_id = 0;
  bool ok = sqlite3_step(span) == SQLITE_ROW;
  if (ok && sqlite3_column_type(span, 0) != SQLITE_NULL) {
    min_id = sqlite3_column_int64(span, 0);
    max_id = sqlite3_column_int64(span, 1);
    b.rows = static_cast<std::uint64_t>(max_id - min_id + 1);
  }
  sqlite3_reset(span);
  auto* oldest = db_->oldest.st;
  int rc = ok ? sqlite3_step(oldest) : SQLITE_ERROR;
  if (rc == SQLITE_ROW) {
    b.unshipped = static_cast<std::uint64_t>(max_id - sqlite3_column_int64(oldest, 0) + 1);
    b.oldest_ms = sqlite3_column_int64(oldest, 1);
  }
  sqlite3_reset(oldest);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    error_ = db_->conn.error();
    return std::nullopt;
  }
  return b;
}

std::optional<std::uint64_t> Spool::prune(std::uint64_t max_rows, std::uint64_t chunk) {
  auto b = backlog();
  if (!b) return std::nullopt;
  if (b->rows <= max_rows) return 0;
  auto shipped = b->rows - b->unshipped;
  auto n = std::min({b->rows - max_rows, shipped, chunk});
  if (n == 0) return 0;
  db_->prune.int64(1, static_cast<std::int64_t>(n));
  if (!db_->prune.done()) {
    error_ = db_->conn.error();
    return std::nullopt;
  }
  return static_cast<std::uint64_t>(sqlite3_changes(db_->conn.db));
}

}  // namespace tollgate::usage
