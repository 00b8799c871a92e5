#pragma once
// A PostgreSQL connection (libpq) whose every wait is bounded: connecting and each statement use
// libpq's non-blocking API with poll(), so a server that stops answering (SIGSTOP, a dead link)
// costs at most the timeout, never a thread stuck in a read. A Connection belongs to one thread.
// Also the fleet ledger's SQL: the versioned schema, the idempotent batch insert, the totals.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "tollgate/usage/shipper.hpp"

struct pg_conn;

namespace tollgate::usage::pg {

using Millis = std::chrono::milliseconds;

struct Error {
  ShipError kind = ShipError::kQuery;
  std::string message;  // libpq's words (no secrets: libpq never repeats the password)
};

/// Text parameters of one statement; nullopt is SQL NULL.
class Params {
 public:
  void reserve(std::size_t n) { values_.reserve(n); }
  void add(std::string v) { values_.emplace_back(std::move(v)); }
  void add_null() { values_.emplace_back(std::nullopt); }
  std::size_t size() const { return values_.size(); }
  void clear() { values_.clear(); }
  /// Pointers for libpq (nullptr for NULL), valid until the next change.
  std::vector<const char*> pointers() const;

 private:
  std::vector<std::optional<std::string>> values_;
};

struct Result {
  std::vector<std::vector<std::string>> rows;  // text values ("" for NULL)
  std::int64_t affected = 0;                   // rows the commands changed (INSERT: inserted)
};

class Connection {
 public:
  Connection() = default;
  ~Connection() { close(); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// Connects (closing any previous connection) within `timeout`.
  std::optional<Error> connect(const std::string& url, Millis timeout);
  bool connected() const { return conn_ != nullptr; }
  void close();
  /// Runs `sql` within `timeout`: with params, one statement (extended protocol); without, the
  /// simple protocol (several statements allowed). A timeout or a lost connection closes it.
  std::variant<Result, Error> exec(const std::string& sql, const Params* params, Millis timeout);

 private:
  Error lost(std::string_view what);
  pg_conn* conn_ = nullptr;
};

/// The fleet ledger's table and its companions, quoted: "schema"."table" or "table".
struct TableNames {
  std::string table;     // the usage rows
  std::string versions;  // applied schema versions
  std::string bare;      // the table's own name, unquoted (index names derive from it)
  explicit TableNames(std::string_view configured);
};

/// The schema version this build writes; migrate() refuses a table of a newer one.
inline constexpr int kSchemaVersion = 1;

/// Creates or upgrades the table (under an advisory lock: replicas starting together migrate once).
std::optional<Error> migrate(Connection& c, const TableNames& t, Millis timeout);

/// The columns a spool row ships, in the order of the INSERT's parameters.
inline constexpr std::string_view kColumns =
    "record_id, request_id, time_ms, replica, client, tenant, deployment, backend, operation, "
    "tier, status, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, estimated, "
    "cost_nano_usd, latency_ms, ttft_ms, outcome";
inline constexpr std::size_t kColumnCount = 20;

/// INSERT of `rows` records (kColumnCount parameters each); a record already there is skipped.
std::string insert_sql(const TableNames& t, std::size_t rows);

/// The report's totals per key over [from_ms, to_ms).
std::variant<std::vector<Row>, Error> totals(Connection& c, const TableNames& t, GroupBy group,
                                             std::int64_t from_ms, std::int64_t to_ms, Millis timeout);

}  // namespace tollgate::usage::pg
