#pragma once
// The durable usage ledger: one record per request in an SQLite database (WAL), written by its
// own thread in batched transactions — never a database call on the request path. While the
// disk refuses writes (full, read-only, I/O errors) records wait in bounded memory and the
// writer retries; close() flushes what is queued (SIGTERM loses nothing). Reads (budget replay,
// the admin usage report) open their own connections. See docs/design/rate-limiting.md.
// The same file holds the affinity table's owner records (table `objects`): the ledger is the
// table's journal, and load_objects() reads them back at start (docs/design/routing.md).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tollgate/core/clock.hpp"
#include "tollgate/routing/affinity.hpp"

namespace tollgate::usage {

struct Record {
  std::int64_t time_ms = 0;  // unix ms when the request ended
  std::string request_id;
  std::string client;
  std::string tenant;
  std::string deployment;  // "" when the request named none the gateway knows
  std::string backend;     // "" when no backend answered
  std::string operation;
  int tier = 0;            // 1-based tier of the answering backend (0: none)
  int status = 0;          // sent to the client (0: none)
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t cached_tokens = 0;
  std::int64_t reasoning_tokens = 0;
  bool estimated = false;  // the gateway counted the tokens (a stream ended without usage)
  std::int64_t cost_nano_usd = 0;
  std::int64_t latency_us = 0;
  std::int64_t ttft_us = -1;  // time to the first byte of the answer (-1: none)
  std::string outcome;
};

struct Options {
  std::string path;
  std::chrono::milliseconds flush_interval{200};
  std::size_t batch_size = 1000;
  std::size_t max_buffered = 100'000;  // records; and, apart, owner-record changes
  // How often the writer deletes expired owner records (a bounded chunk per transaction; again
  // at the next flush while a chunk comes back full). Every expired one also goes at open.
  std::chrono::milliseconds purge_every{60'000};
  const core::Clock* clock = &core::system_clock();  // unix time of owner records' expiry
  std::string replica;  // written in every record (server.replica_name)
};

enum class GroupBy : std::uint8_t { kTenant, kClient, kDeployment, kBackend, kReplica };
std::optional<GroupBy> parse_group_by(std::string_view s);
std::string_view to_string(GroupBy g);

struct Row {
  std::string key;
  std::int64_t requests = 0;
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t cached_tokens = 0;
  std::int64_t reasoning_tokens = 0;
  std::int64_t cost_nano_usd = 0;
  std::int64_t estimated_requests = 0;
};

/// Which rows of the spool a total counts: all, or those not yet shipped to the fleet's ledger.
enum class Rows : std::uint8_t { kAll, kUnshipped };

/// Totals per key over [from_ms, to_ms) read from the database at `path` (its own read-only
/// connection). Throws std::runtime_error when the database cannot be read. Thread: any.
std::vector<Row> totals(const std::string& path, GroupBy group, std::int64_t from_ms,
                        std::int64_t to_ms, Rows which = Rows::kAll);

/// The owner records at `path` that are still alive at `now_ms`, longest-lived last (so a
/// bounded table restored in this order keeps the freshest), each with its remaining lifetime.
/// Its own read-only connection. Throws std::runtime_error when the database cannot be read.
/// Thread: any.
std::vector<routing::StoredObject> load_objects(const std::string& path, core::UnixMs now_ms);

/// Also the affinity table's journal: saved() and erased() queue an upsert or a delete of the
/// owner record, written in the same transactions as the usage records.
class Ledger final : public routing::AffinityJournal {
 public:
  /// Opens (creating the file and schema when needed) and starts the writer thread. Throws
  /// std::runtime_error naming the path when the database cannot be opened or is not a ledger.
  explicit Ledger(Options options);
  ~Ledger() override;
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  /// Queues a record. Never blocks on I/O; when max_buffered records wait already, the oldest
  /// is dropped (counted). Thread: any.
  void submit(Record r);
  // routing::AffinityJournal. Never block on I/O: a queue push; when max_buffered changes wait
  // already, the oldest is dropped (counted in objects_dropped). The expiry written is the
  // clock's unix time plus the object's remaining lifetime. Thread: any.
  void saved(const routing::StoredObject& object) override;
  void erased(std::string_view id) override;
  /// Writes everything queued (for at most `timeout` while the disk refuses) and stops the
  /// writer. Returns the number of records that could not be written. Thread: one caller.
  std::size_t close(std::chrono::milliseconds timeout);

  const std::string& path() const { return options_.path; }
  std::size_t queued() const { return queued_.load(std::memory_order_relaxed); }
  std::uint64_t written() const { return written_.load(std::memory_order_relaxed); }
  std::uint64_t write_errors() const { return write_errors_.load(std::memory_order_relaxed); }
  std::uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  std::uint64_t objects_dropped() const { return objects_dropped_.load(std::memory_order_relaxed); }
  bool healthy() const { return healthy_.load(std::memory_order_relaxed); }

 private:
  struct Db;
  /// A change of one owner record (erased: only object.id is set).
  struct ObjectChange {
    enum class Kind : std::uint8_t { kSaved, kErased } kind;
    routing::StoredObject object;
    core::UnixMs expires_ms = 0;
  };
  /// What one transaction writes (writer thread).
  struct Batch {
    std::vector<Record> records;
    std::vector<ObjectChange> objects;
    bool purge = false;  // also deletes a bounded number of expired owner records
    bool empty() const { return records.empty() && objects.empty() && !purge; }
  };
  void push_object(ObjectChange change);
  void run();
  void take(Batch& batch);            // under m_
  void put_back(Batch& batch);        // under m_: a failed batch goes in front again, bounded
  bool write(Batch& batch);           // writer thread
  bool insert(const Record& r);       // writer thread, inside a transaction
  bool apply(const ObjectChange& c);  // writer thread, inside a transaction
  std::size_t purged_ = 0;            // rows the last purge deleted (writer thread)

  Options options_;
  std::unique_ptr<Db> db_;  // the writer's connection
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<Record> queue_;          // guarded by m_
  std::deque<ObjectChange> objects_;  // guarded by m_
  bool stopping_ = false;     // guarded by m_
  std::chrono::steady_clock::time_point stop_deadline_{};  // guarded by m_
  std::atomic<std::size_t> queued_{0};
  std::atomic<std::uint64_t> written_{0};
  std::atomic<std::uint64_t> write_errors_{0};
  std::atomic<std::uint64_t> dropped_{0};
  std::atomic<std::uint64_t> objects_dropped_{0};
  std::atomic<bool> healthy_{true};
  std::size_t unwritten_at_close_ = 0;
  std::string error_;  // the last write's error (writer thread)
  std::thread thread_;
};

}  // namespace tollgate::usage
