#pragma once
// Process-wide state of client connections that the workers share: the open connections per
// source address (server.limits.max_connections_per_ip) and whether accepting fails (out of file
// descriptors: /readyz says not ready while it lasts). Owned by the Gateway, handed to every
// worker; both outlive the workers.

#include <array>
#include <atomic>
#include <boost/asio/ip/address.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "tollgate/core/clock.hpp"

namespace tollgate::server {

/// Open client connections per source address, across workers. Thread: any (sharded mutexes;
/// an accept and a close each take one shard's lock once).
class AddressCounts {
 public:
  /// One open connection of an address; gives it back when destroyed. An empty slot (no cap
  /// configured) holds nothing.
  class Slot {
   public:
    Slot() = default;
    Slot(Slot&& o) noexcept : owner_(std::exchange(o.owner_, nullptr)), key_(std::move(o.key_)) {}
    Slot& operator=(Slot&& o) noexcept;
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    ~Slot() { release(); }

   private:
    friend class AddressCounts;
    Slot(AddressCounts* owner, std::string key) : owner_(owner), key_(std::move(key)) {}
    void release() noexcept;
    AddressCounts* owner_ = nullptr;
    std::string key_;
  };

  /// A slot for a new connection from `addr`, or nullopt when `cap` connections from it are
  /// open already. `cap` 0: no cap (an empty slot; nothing is counted).
  std::optional<Slot> try_take(const boost::asio::ip::address& addr, std::uint32_t cap);
  /// Connections from `addr` counted now.
  std::uint32_t open(const boost::asio::ip::address& addr) const;

 private:
  struct Shard {
    mutable std::mutex mutex;
    std::unordered_map<std::string, std::uint32_t> counts;  // guarded by mutex; no zeros kept
  };
  static std::string key_of(const boost::asio::ip::address& addr);
  Shard& shard_of(const std::string& key) const;
  void give_back(const std::string& key) noexcept;

  mutable std::array<Shard, 16> shards_;
};

/// Whether the workers' accept loops fail (EMFILE, ENFILE, ENOBUFS, ENOMEM, ...): a failure
/// lasts until that worker's next accept succeeds. Thread: each worker writes its own flag and
/// the shared log stamp; the control thread reads (relaxed atomics).
class AcceptHealth {
 public:
  /// Failures are logged at most once per this interval, across workers.
  static constexpr std::chrono::milliseconds kLogInterval{60'000};

  explicit AcceptHealth(std::size_t workers)
      : failing_(std::make_unique<std::atomic<bool>[]>(workers)), workers_(workers) {}

  /// An accept of `worker` failed at `now` (steady ms). Returns true when this failure is to be
  /// logged: none was logged within kLogInterval.
  bool failed(std::size_t worker, core::TimeMs now) noexcept;
  /// An accept of `worker` succeeded: its failure, if any, is over.
  void succeeded(std::size_t worker) noexcept {
    failing_[worker].store(false, std::memory_order_relaxed);
  }
  /// True while some worker's last accept failed.
  bool failing() const noexcept;

 private:
  std::unique_ptr<std::atomic<bool>[]> failing_;  // writer: worker i; reader: control
  std::size_t workers_;
  static constexpr core::TimeMs kNever = std::numeric_limits<core::TimeMs>::min();
  std::atomic<core::TimeMs> last_logged_{kNever};  // writers: workers (compare-exchange)
};

/// What the Gateway hands every worker.
struct SharedConnections {
  AddressCounts per_address;
  AcceptHealth accept;
  explicit SharedConnections(std::size_t workers) : accept(workers) {}
};

}  // namespace tollgate::server
