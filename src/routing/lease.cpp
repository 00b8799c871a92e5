#include "tollgate/routing/lease.hpp"

namespace tollgate::routing {

void LeaseHandle::report(Outcome outcome, TimeMs now) {
  if (!lease_ || reported_) return;
  state().record(outcome, lease_->trial, now, *env_.breaker);
  reported_ = true;
}

void LeaseHandle::release() {
  if (!lease_) return;
  auto& st = state();
  st.release();
  auto now = steady_now_ms();
  if (!reported_) st.record(Outcome::kNeutral, lease_->trial, now, *env_.breaker);
  lease_.reset();
  env_.scheduler->after_release(now, *env_.rng);
}

WaitTicket::~WaitTicket() {
  if (queued_) leave();
  take();  // a lease handed over that nobody took: the temporary handle gives it back
}

bool WaitTicket::enqueue(std::size_t limit, TimeMs now) {
  queued_ = env_.scheduler->enqueue(waiter_, limit, now, *env_.rng);
  return queued_;
}

bool WaitTicket::leave() {
  if (!queued_) return !waiter_.lease;
  queued_ = false;
  return env_.scheduler->leave(waiter_);
}

LeaseHandle WaitTicket::take() {
  if (!waiter_.lease) return {};
  LeaseHandle h(env_, *waiter_.lease);
  waiter_.lease.reset();
  return h;
}

}  // namespace tollgate::routing
