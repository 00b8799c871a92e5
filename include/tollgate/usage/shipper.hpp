#pragma once
// The fleet's ledger (usage.postgres): a thread that ships the local spool's records (the
// SQLite ledger) to one PostgreSQL table, in order, in batches. Each record carries an id the
// spool gave it; PostgreSQL inserts it once (ON CONFLICT DO NOTHING) and the spool marks it
// shipped only after the commit, so a crash between the two re-sends rows PostgreSQL skips:
// every record exactly once. Nothing here is on the request path: while PostgreSQL is away the
// spool keeps the backlog (bounded by max_backlog: the oldest shipped rows go first, never an
// unshipped one). See docs/design/ledger.md.

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tollgate/config/config.hpp"
#include "tollgate/usage/ledger.hpp"

namespace tollgate::usage {

/// Why a shipping round failed (the label of tollgate_ledger_ship_errors_total).
enum class ShipError : std::uint8_t { kConnect, kAuth, kTimeout, kQuery, kSpool };
inline constexpr std::size_t kShipErrors = 5;
std::string_view to_string(ShipError e);

/// Fleet-wide totals from PostgreSQL (its own connection; each step bounded by pg.timeout).
/// Throws std::runtime_error with a message free of secrets. Thread: any.
std::vector<Row> fleet_totals(const config::PostgresLedgerConfig& pg, GroupBy group,
                              std::int64_t from_ms, std::int64_t to_ms);

class Shipper {
 public:
  /// Starts the thread; it connects (and creates the table) in the background: a PostgreSQL
  /// that is down or refuses the credentials never stops the gateway. Throws
  /// std::runtime_error when the spool cannot be opened.
  Shipper(std::string spool_path, config::PostgresLedgerConfig pg);
  ~Shipper();
  Shipper(const Shipper&) = delete;
  Shipper& operator=(const Shipper&) = delete;

  /// Ships what it can for at most `timeout` (the spool keeps the rest for the next start),
  /// then stops the thread. Thread: one caller.
  void close(std::chrono::milliseconds timeout);

  // Read at scrape time. Thread: any.
  bool up() const { return up_.load(std::memory_order_relaxed); }
  std::uint64_t shipped() const { return shipped_.load(std::memory_order_relaxed); }
  std::uint64_t duplicates() const { return duplicates_.load(std::memory_order_relaxed); }
  std::uint64_t backlog() const { return backlog_.load(std::memory_order_relaxed); }
  /// Unix ms of the oldest unshipped record; 0 when none waits.
  std::int64_t oldest_unshipped_ms() const { return oldest_ms_.load(std::memory_order_relaxed); }
  bool spool_full() const { return full_.load(std::memory_order_relaxed); }
  std::uint64_t errors(ShipError e) const {
    return errors_[static_cast<std::size_t>(e)].load(std::memory_order_relaxed);
  }

 private:
  struct State;  // the thread's: the spool, the PostgreSQL connection, backoff and log times
  enum class Round : std::uint8_t { kIdle, kShipped, kFull, kFailed };
  void run();
  Round ship_once(std::chrono::milliseconds timeout);  // connects if needed, ships one batch
  bool connect(std::chrono::milliseconds timeout);
  void observe_spool();                                // backlog gauges, pruning, the full alert
  void fail(ShipError e, const std::string& message);
  void sleep_for(std::chrono::milliseconds d);  // wakes early on close()
  /// A round trip's bound: pg.timeout, or less once close() set a deadline; 0: time is up.
  std::chrono::milliseconds op_timeout();

  std::string spool_path_;
  config::PostgresLedgerConfig pg_;
  std::unique_ptr<State> state_;  // the thread's alone once it runs
  std::mutex m_;
  std::condition_variable cv_;
  bool stopping_ = false;                                   // guarded by m_
  std::chrono::steady_clock::time_point stop_deadline_{};  // guarded by m_
  // Written by the shipper's thread, read by scrapes.
  std::atomic<bool> up_{false};
  std::atomic<std::uint64_t> shipped_{0};
  std::atomic<std::uint64_t> duplicates_{0};
  std::atomic<std::uint64_t> backlog_{0};
  std::atomic<std::int64_t> oldest_ms_{0};
  std::atomic<bool> full_{false};
  std::array<std::atomic<std::uint64_t>, kShipErrors> errors_{};
  std::thread thread_;
};

}  // namespace tollgate::usage
