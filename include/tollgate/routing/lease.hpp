#pragma once
// Ownership of a backend's in-flight slot for one request, and of a place in a waiting room.
// Both are move-only values whose destructor does the bookkeeping that used to be repeated by
// hand at every exit: release the slot, report the attempt to the breaker, and let a waiting
// request have the capacity. Thread: the worker running the request.

#include <optional>

#include "tollgate/routing/backend_state.hpp"
#include "tollgate/routing/balancer.hpp"
#include "tollgate/routing/priority.hpp"

namespace tollgate::routing {

/// What the lease's release needs: the shared backend states, breaker policy, scheduler, and
/// the worker's random generator. Lives as long as the request's snapshot.
struct LeaseEnv {
  std::span<const Slot> slots;
  const BreakerPolicy* breaker = nullptr;
  Scheduler* scheduler = nullptr;
  Rng* rng = nullptr;
};

/// A backend slot held by a request (from pick() or a scheduler hand-off). On destruction (or
/// release()) the slot is freed, the outcome reported (neutral unless report() said otherwise),
/// and the scheduler kicked so a waiting request can take the capacity.
class LeaseHandle {
 public:
  LeaseHandle() = default;
  LeaseHandle(const LeaseEnv& env, Lease lease) : env_(env), lease_(lease) {}
  LeaseHandle(LeaseHandle&& o) noexcept : env_(o.env_), lease_(o.lease_), reported_(o.reported_) {
    o.lease_.reset();
  }
  LeaseHandle& operator=(LeaseHandle&& o) noexcept {
    if (this != &o) {
      release();
      env_ = o.env_;
      lease_ = o.lease_;
      reported_ = o.reported_;
      o.lease_.reset();
    }
    return *this;
  }
  LeaseHandle(const LeaseHandle&) = delete;
  LeaseHandle& operator=(const LeaseHandle&) = delete;
  ~LeaseHandle() { release(); }

  explicit operator bool() const { return lease_.has_value(); }
  const Lease& operator*() const { return *lease_; }
  const Lease* operator->() const { return &*lease_; }
  BackendState& state() const { return *env_.slots[lease_->backend].state; }
  /// Feeds the attempt's outcome to the backend's breaker (once; the release reports nothing).
  void report(Outcome outcome, TimeMs now);
  /// Frees the slot now (idempotent).
  void release();

 private:
  LeaseEnv env_;
  std::optional<Lease> lease_;
  bool reported_ = false;
};

/// A request's place in a deployment's waiting room. On destruction it leaves the room; a lease
/// the scheduler handed it meanwhile that nobody took is given back. Not movable: the scheduler
/// holds a pointer to the waiter.
class WaitTicket {
 public:
  WaitTicket(const LeaseEnv& env, Waiter& waiter) : env_(env), waiter_(waiter) {}
  WaitTicket(const WaitTicket&) = delete;
  WaitTicket& operator=(const WaitTicket&) = delete;
  ~WaitTicket();
  /// Queues the waiter (false: the class's queue is full; nothing to leave then).
  bool enqueue(std::size_t limit, TimeMs now);
  /// Leaves the queue: true when left without capacity; false when dispatched meanwhile (then
  /// the lease is handed over: take() it).
  bool leave();
  /// The handed lease as a handle (empty when none). After this the ticket owns nothing.
  LeaseHandle take();

 private:
  LeaseEnv env_;
  Waiter& waiter_;
  bool queued_ = false;
};

}  // namespace tollgate::routing
