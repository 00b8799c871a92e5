#pragma once
// The waiting room of one deployment: requests that found no backend with capacity wait here
// until capacity appears. Strict priority between classes (rank 0 first); within a class,
// start-time fair queueing (SFQ) between flows (clients), so one client flooding its class
// cannot starve the others: each flow's requests get start tags 1/weight apart from the class's
// virtual time, and the smallest tag goes first. Plain C++, no locking: the caller (the
// scheduler) holds its mutex. See docs/design/priority.md.

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tollgate/routing/backend_state.hpp"
#include "tollgate/routing/balancer.hpp"

namespace tollgate::routing {

inline constexpr std::size_t kMaxClasses = 8;

/// One waiting request. Owned by whoever queued it; the queues hold pointers.
struct QueueEntry {
  std::size_t cls = 0;     // class rank: 0 is the highest
  std::string flow;        // fairness key: the client
  double weight = 1;       // the flow's share within its class
  TimeMs enqueued = 0;
  TimeMs deadline = 0;     // dispatched by then, or shed
  // Set by PriorityQueues::push.
  double tag = 0;
  std::uint64_t seq = 0;
  bool queued = false;
};

class PriorityQueues {
 public:
  explicit PriorityQueues(std::size_t classes = 3) : classes_(classes) {}

  /// Queues `e` in its class unless `limit` entries of that class wait already (false).
  bool push(QueueEntry& e, std::size_t limit);
  /// Takes `e` out (cancelled, expired, or dispatched). No-op when not queued.
  void remove(QueueEntry& e);

  /// Offers waiting entries to `place` in dispatch order (class rank, then start tag); an entry
  /// for which `place` returns true leaves the queue (dispatched) and advances its class's
  /// virtual time. A class is given up after `max_misses` consecutive refusals (its remaining
  /// entries most likely want the same busy backends: bounded work per event). Returns how many
  /// were dispatched.
  template <class Place>
  std::size_t dispatch(Place&& place, std::size_t max_misses = 64) {
    std::size_t n = 0;
    for (auto& c : classes_) {
      std::size_t misses = 0;
      double last = c.vtime;
      for (auto it = c.waiting.begin(); it != c.waiting.end() && misses < max_misses;) {
        QueueEntry* e = it->second;
        if (place(*e)) {
          last = std::max(last, e->tag);
          e->queued = false;
          it = c.waiting.erase(it);
          ++n;
          misses = 0;
        } else {
          ++misses;
          ++it;
        }
      }
      // The class's virtual time is the start tag at its head: an entry placed out of order (it
      // could use a backend the ones before it could not) must not move newcomers behind them.
      c.vtime = std::max(c.vtime, c.waiting.empty() ? last : c.waiting.begin()->first.first);
    }
    return n;
  }

  std::size_t depth(std::size_t cls) const { return cls < classes_.size() ? classes_[cls].waiting.size() : 0; }
  std::size_t size() const;
  /// Entries of rank `cls` or higher: a new request of class `cls` must queue behind them.
  std::size_t waiting_at_or_above(std::size_t cls) const;
  /// Every queued entry (for computing wake-up times).
  template <class F>
  void for_each(F&& f) const {
    for (const auto& c : classes_) {
      for (const auto& [key, e] : c.waiting) f(*e);
    }
  }
  void resize(std::size_t classes) {
    if (classes > classes_.size()) classes_.resize(classes);
  }

 private:
  struct Class {
    // (start tag, sequence) -> entry: the dispatch order within the class.
    std::set<std::pair<std::pair<double, std::uint64_t>, QueueEntry*>> waiting;
    double vtime = 0;  // virtual time: the head's start tag (the last one dispatched when empty)
    std::unordered_map<std::string, double> finish;    // per flow: its last finish tag
  };
  std::vector<Class> classes_;
  std::uint64_t seq_ = 0;
};

/// A request waiting for capacity: what the balancer needs to place it, and where the lease goes.
struct Waiter : QueueEntry {
  std::string deployment;
  const Route* route = nullptr;
  std::span<const Slot> slots;
  std::int64_t need_tokens = 0;
  std::span<const char> tried;
  std::optional<std::uint32_t> only;
  std::span<const char> allowed;
  std::optional<Lease> lease;  // set when dispatched: the in-flight slot is taken for it
  /// Called when dispatched, with the scheduler's lock held: must only hand off (post).
  std::function<void()> wake;
};

/// The waiting rooms of all deployments, shared by every worker. Dispatch happens on whichever
/// thread sees capacity appear (a request releasing its backend, a cooldown timer); the waiting
/// request is handed a lease and woken on its own worker. Thread: any.
class Scheduler {
 public:
  /// Queues `w` (false: its class's queue for the deployment is full), then dispatches at once
  /// whatever can go (capacity may have appeared since the caller looked).
  bool enqueue(Waiter& w, std::size_t limit, TimeMs now, Rng& rng);
  /// Takes `w` out of the queue (deadline, client gone). Returns false when it was dispatched
  /// meanwhile: w.lease is then set and the caller owns that in-flight slot.
  bool leave(Waiter& w);
  /// Capacity may have appeared: dispatches what can go now.
  void kick(TimeMs now, Rng& rng);
  /// Call after releasing a backend's in-flight slot: kicks when anyone waits. (The fence pairs
  /// with enqueue's: either the releaser sees the waiter or the waiter sees the free slot.)
  void after_release(TimeMs now, Rng& rng) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (waiting() > 0) kick(now, rng);
  }
  /// The earliest moment a backend of a waiting request recovers (for a wake-up timer), if any.
  std::optional<TimeMs> next_recovery(TimeMs now);
  /// Whether requests of class `cls` or higher wait for `deployment` (a new request of class
  /// `cls` must then queue behind them instead of taking capacity first).
  bool must_queue(const std::string& deployment, std::size_t cls);
  /// Requests waiting, all deployments. Lock-free: lets releases skip kick() when idle.
  std::size_t waiting() const { return waiting_.load(std::memory_order_acquire); }
  /// Waiting requests per (deployment, class rank).
  std::vector<std::pair<std::string, std::vector<std::size_t>>> depths();
  /// How long until a new request of class `cls` would be dispatched, from the queue's recent
  /// drain rate (nullopt when it has not drained anything lately).
  std::optional<TimeMs> drain_estimate(const std::string& deployment, std::size_t cls, TimeMs now);

 private:
  std::size_t dispatch_locked(TimeMs now, Rng& rng);
  struct Room {
    PriorityQueues queues{kMaxClasses};
    std::array<TimeMs, 32> dispatched{};  // times of the last dispatches (a ring)
    std::size_t count = 0;
  };
  std::mutex m_;
  std::unordered_map<std::string, Room> rooms_;
  std::atomic<std::size_t> waiting_{0};
};

}  // namespace tollgate::routing
