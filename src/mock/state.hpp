#pragma once
// Shared, mutable state of one mock instance: counters, the fault queue, the captured-request
// ring, stored objects (responses, files) and the TPM window. Plain C++ (no Asio).
//
// Threading: every class here may be used from any worker thread. Counters are relaxed atomics;
// the fault queue, capture ring, object store and TPM window each hold one mutex. The plain
// success path touches only atomics, the worker's own (uncontended) by_path mutex and — when
// capture is on — the capture ring's mutex.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tollgate::mock {

// ---------------------------------------------------------------------------------------------
// Faults

/// One scripted misbehaviour (docs/mock.md "Faults"). Parsed from JSON by parse_fault().
struct Fault {
  std::optional<int> status;                                 // reply with this status
  std::vector<std::pair<std::string, std::string>> headers;  // extra/overriding reply headers
  std::vector<std::string> removed_headers;                  // defaults to omit ("name": null)
  std::optional<std::string> body;                           // replaces the body verbatim
  std::optional<std::string> content_type;
  std::chrono::milliseconds delay{0};          // before the reply headers
  bool hang = false;                           // never reply
  bool close_immediately = false;              // close without replying
  bool reset = false;                          // close with RST instead of FIN
  std::optional<unsigned> close_after_chunks;  // streams: N content chunks, then close
  std::optional<std::chrono::milliseconds> pace;
  std::optional<unsigned> chunks;
  bool error_event = false;                  // streams: error event after content
  std::optional<std::uint64_t> retry_after;  // N in "Please retry after N seconds"

  // Queue-only fields.
  std::int64_t count = 1;  // uses left; -1 = forever
  std::string match_path_contains;
  std::string match_deployment;
  nlohmann::json source;  // as posted (for GET /_mock/faults)
};

/// Parses one fault object. Returns the fault, or an error message naming the bad field.
struct FaultParse {
  std::optional<Fault> fault;
  std::string error;
};
FaultParse parse_fault(const nlohmann::json& j);

/// FIFO of faults posted through /_mock/faults.
class FaultQueue {
 public:
  /// Appends; returns the number now pending.
  std::size_t add(std::vector<Fault> faults);
  /// Consumes one use of the first fault matching the request; nullopt when none matches.
  /// Lock-free when the queue is empty.
  std::optional<Fault> take(std::string_view path, std::string_view deployment);
  nlohmann::json list() const;
  std::size_t clear();
  std::size_t pending() const { return size_.load(std::memory_order_relaxed); }

 private:
  mutable std::mutex mu_;
  std::deque<Fault> faults_;          // guarded by mu_
  std::atomic<std::size_t> size_{0};  // writers: under mu_ (release); readers: take() fast path
};

// ---------------------------------------------------------------------------------------------
// Captured requests

struct HeaderField {
  std::string_view name;  // as received (compared case-insensitively)
  std::string_view value;
};

/// One captured request, packed so that a ring slot reuses its buffers (no allocation per
/// request once the ring is warm).
struct CapturedRequest {
  std::uint64_t seq = 0;
  std::int64_t received_at_ms = 0;  // unix epoch
  std::size_t body_bytes = 0;       // full size; `body` keeps the first 64 KiB
  std::string head;                 // method NUL target NUL (name NUL value NUL)*
  std::string body;
};

/// Ring of the last `capacity` inference requests (capacity 0 = capture off).
class CaptureRing {
 public:
  static constexpr std::size_t kBodyLimit = 64 * 1024;

  explicit CaptureRing(std::size_t capacity) : capacity_(capacity) {}
  bool enabled() const { return capacity_ != 0; }
  void push(std::uint64_t seq, std::int64_t received_at_ms, std::string_view method,
            std::string_view target, std::span<const HeaderField> headers, std::string_view body);
  /// The newest `limit` entries, oldest first, as the /_mock/requests JSON array.
  nlohmann::json to_json(std::size_t limit) const;
  void clear();

 private:
  const std::size_t capacity_;
  mutable std::mutex mu_;
  std::vector<CapturedRequest> ring_;  // guarded by mu_
  std::size_t next_ = 0;               // guarded by mu_: slot of the next push once full
  std::size_t size_ = 0;               // guarded by mu_: live entries (slots are kept on clear)
};

// ---------------------------------------------------------------------------------------------
// Stored objects (per instance: another instance answers 404 for these ids)

class ObjectStore {
 public:
  explicit ObjectStore(std::string instance) : instance_(std::move(instance)) {}
  std::string new_response_id();
  std::string new_file_id();
  std::string new_batch_id();
  void put(std::string id, std::string body);
  std::optional<std::string> get(std::string_view id) const;
  /// An object that runs in the background: its stored body becomes `final_body` at its
  /// `reads`-th read(); cancel() ends it early.
  void defer(std::string id, std::string final_body, unsigned reads);
  /// get(), advancing a deferred object by one read.
  std::optional<std::string> read(std::string_view id);
  /// Drops a deferred object's final body; false when it is not (or no longer) running.
  bool cancel(std::string_view id);
  bool erase(std::string_view id);
  /// The bodies of the objects whose id starts with `prefix` (any order).
  std::vector<std::string> bodies_with_prefix(std::string_view prefix) const;
  std::size_t size() const;
  void clear();

 private:
  const std::string instance_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::string> objects_;  // guarded by mu_
  std::uint64_t next_response_ = 0;                       // guarded by mu_
  std::uint64_t next_file_ = 0;                           // guarded by mu_
  std::uint64_t next_batch_ = 0;                          // guarded by mu_
  struct Deferred {
    std::string final_body;
    unsigned reads = 0;
  };
  std::unordered_map<std::string, Deferred> deferred_;  // guarded by mu_
};

// ---------------------------------------------------------------------------------------------
// Tokens-per-minute window

/// Azure-style admission: a request is admitted when the tokens charged in the last 60 s plus
/// its estimate stay within the limit. Requests are also counted in a 10 s window for the
/// x-ratelimit-remaining-requests header (RPM = 6 per 1000 TPM; reported, not enforced).
/// Time is passed in (ms on any monotonic clock) so tests are exact.
class TpmWindow {
 public:
  explicit TpmWindow(std::uint64_t tokens_per_minute);

  struct Admission {
    bool admitted = false;
    std::uint64_t remaining_tokens = 0;
    std::uint64_t remaining_requests = 0;
    std::uint64_t retry_after_ms = 0;  // when rejected: until enough tokens leave the window
  };
  Admission admit(std::uint64_t tokens, std::int64_t now_ms);
  /// The header values without charging anything.
  Admission peek(std::int64_t now_ms);

  /// Window usage in percent of the limit (for the PTU utilization header).
  double utilization(std::int64_t now_ms);
  std::uint64_t limit_tokens() const { return limit_; }
  std::uint64_t limit_requests() const { return rpm_; }
  void clear();

 private:
  void expire(std::int64_t now_ms);  // requires mu_

  const std::uint64_t limit_;
  const std::uint64_t rpm_;      // 6 per 1000 TPM, at least 1
  const std::uint64_t per_10s_;  // rpm_ / 6, at least 1
  std::mutex mu_;
  std::deque<std::pair<std::int64_t, std::uint64_t>> charges_;  // guarded by mu_
  std::uint64_t used_ = 0;                                      // guarded by mu_
  std::deque<std::int64_t> requests_;                           // guarded by mu_
};

// ---------------------------------------------------------------------------------------------
// Counters

/// Counters of one worker. Writers: that worker; readers: any thread (relaxed). The by_path map
/// is guarded by its own mutex (uncontended except while /_mock/stats reads it).
struct alignas(64) WorkerStats {
  std::atomic<std::uint64_t> requests_total{0};
  std::atomic<std::uint64_t> streams_started{0};
  std::atomic<std::uint64_t> streams_completed{0};
  std::atomic<std::uint64_t> streams_aborted{0};
  std::atomic<std::uint64_t> streams_faulted{0};
  std::atomic<std::uint64_t> faults_applied{0};
  std::atomic<std::uint64_t> connections_total{0};
  std::atomic<std::int64_t> connections_open{0};
  std::array<std::atomic<std::uint64_t>, 600> by_status{};

  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::mutex by_path_mu;
  std::unordered_map<std::string, std::uint64_t, Hash, std::equal_to<>> by_path;  // by_path_mu

  void count_path(std::string_view path);
  void count_status(int status) {
    if (status >= 0 && status < 600) by_status[status].fetch_add(1, std::memory_order_relaxed);
  }
  void reset();
};

/// Everything shared by the workers of one instance.
class State {
 public:
  State(std::string instance, std::size_t capture_capacity, std::uint64_t tpm, unsigned workers);

  WorkerStats& worker(unsigned i) { return *workers_[i]; }
  unsigned workers() const { return static_cast<unsigned>(workers_.size()); }

  FaultQueue faults;
  CaptureRing captures;
  ObjectStore objects;
  std::unique_ptr<TpmWindow> tpm;  // null when --tpm is not set

  std::atomic<std::int64_t> in_flight{0};  // writers: all workers
  std::atomic<std::int64_t> max_in_flight_seen{0};
  std::atomic<std::uint64_t> seq{0};  // inference request numbers (never reset)

  /// Increments in_flight and returns the new value (updates max_in_flight_seen).
  std::int64_t enter();
  void leave() { in_flight.fetch_sub(1, std::memory_order_relaxed); }

  nlohmann::json stats_json() const;
  void reset();

 private:
  const std::string instance_;
  std::vector<std::unique_ptr<WorkerStats>> workers_;
};

}  // namespace tollgate::mock
