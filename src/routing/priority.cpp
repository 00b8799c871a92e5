#include "tollgate/routing/priority.hpp"

#include <algorithm>
#include <limits>

namespace tollgate::routing {

bool PriorityQueues::push(QueueEntry& e, std::size_t limit) {
  if (e.cls >= classes_.size()) classes_.resize(e.cls + 1);
  auto& c = classes_[e.cls];
  if (c.waiting.size() >= limit) return false;
  // SFQ: a flow starts where the class is now, or where its previous request finished if that is
  // later; so a backlogged flow's requests line up 1/weight apart and a newcomer goes between.
  auto& finish = c.finish[e.flow];
  e.tag = std::max(c.vtime, finish);
  finish = e.tag + 1.0 / std::max(e.weight, 1e-6);
  e.seq = ++seq_;
  e.queued = true;
  c.waiting.emplace(std::pair{e.tag, e.seq}, &e);
  // Flows that finished before the class's virtual time are equivalent to new ones: forget them
  // so the map stays as small as the set of backlogged flows.
  if (c.finish.size() > 2 * c.waiting.size() + 64) {
    for (auto it = c.finish.begin(); it != c.finish.end();) {
      it = it->second <= c.vtime ? c.finish.erase(it) : std::next(it);
    }
  }
  return true;
}

void PriorityQueues::remove(QueueEntry& e) {
  if (!e.queued || e.cls >= classes_.size()) return;
  classes_[e.cls].waiting.erase({{e.tag, e.seq}, &e});
  e.queued = false;
}

std::size_t PriorityQueues::size() const {
  std::size_t n = 0;
  for (const auto& c : classes_) n += c.waiting.size();
  return n;
}

std::size_t PriorityQueues::waiting_at_or_above(std::size_t cls) const {
  std::size_t n = 0;
  for (std::size_t i = 0; i <= cls && i < classes_.size(); ++i) n += classes_[i].waiting.size();
  return n;
}

bool Scheduler::enqueue(Waiter& w, std::size_t limit, TimeMs now, Rng& rng) {
  std::lock_guard lock(m_);
  if (!rooms_[w.deployment].queues.push(w, limit)) return false;
  waiting_.fetch_add(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with after_release()
  dispatch_locked(now, rng);
  return true;
}

bool Scheduler::leave(Waiter& w) {
  std::lock_guard lock(m_);
  if (!w.queued) return false;  // dispatched: the lease is the caller's
  rooms_[w.deployment].queues.remove(w);
  waiting_.fetch_sub(1, std::memory_order_acq_rel);
  return true;
}

std::size_t Scheduler::dispatch_locked(TimeMs now, Rng& rng) {
  std::size_t n = 0;
  for (auto& entry : rooms_) {
    auto& room = entry.second;  // (not a structured binding: lambdas capture it)
    if (room.queues.size() == 0) continue;
    n += room.queues.dispatch([&](QueueEntry& e) {
      auto& w = static_cast<Waiter&>(e);
      auto lease = pick(*w.route, w.slots, PickRequest{now, w.need_tokens, w.tried, w.only, w.allowed}, rng);
      if (!lease) return false;
      w.lease = lease;
      room.dispatched[room.count++ % room.dispatched.size()] = now;
      if (w.wake) w.wake();
      return true;
    });
  }
  waiting_.fetch_sub(n, std::memory_order_acq_rel);
  return n;
}

void Scheduler::kick(TimeMs now, Rng& rng) {
  std::lock_guard lock(m_);
  dispatch_locked(now, rng);
}

std::optional<TimeMs> Scheduler::next_recovery(TimeMs now) {
  std::lock_guard lock(m_);
  std::optional<TimeMs> next;
  for (const auto& [name, room] : rooms_) {
    room.queues.for_each([&](const QueueEntry& e) {
      const auto& w = static_cast<const Waiter&>(e);
      auto r = earliest_recovery(*w.route, w.slots, now, w.only, w.allowed);
      if (r && (!next || *r < *next)) next = r;
    });
  }
  return next;
}

bool Scheduler::must_queue(const std::string& deployment, std::size_t cls) {
  if (waiting() == 0) return false;
  std::lock_guard lock(m_);
  auto it = rooms_.find(deployment);
  return it != rooms_.end() && it->second.queues.waiting_at_or_above(cls) > 0;
}

std::vector<std::pair<std::string, std::vector<std::size_t>>> Scheduler::depths() {
  std::lock_guard lock(m_);
  std::vector<std::pair<std::string, std::vector<std::size_t>>> out;
  for (const auto& [name, room] : rooms_) {
    std::vector<std::size_t> d;
    for (std::size_t c = 0; c < kMaxClasses; ++c) d.push_back(room.queues.depth(c));
    out.emplace_back(name, std::move(d));
  }
  return out;
}

std::optional<TimeMs> Scheduler::drain_estimate(const std::string& deployment, std::size_t cls, TimeMs now) {
  std::lock_guard lock(m_);
  auto it = rooms_.find(deployment);
  if (it == rooms_.end() || it->second.count < 2) return std::nullopt;
  const auto& room = it->second;
  auto n = std::min(room.count, room.dispatched.size());
  auto newest = room.dispatched[(room.count - 1) % room.dispatched.size()];
  auto oldest = room.dispatched[(room.count - n) % room.dispatched.size()];
  if (now - newest > 10'000) return std::nullopt;  // nothing drained lately: no rate to go by
  double per_ms = static_cast<double>(n - 1) / static_cast<double>(std::max<TimeMs>(1, newest - oldest));
  auto ahead = static_cast<double>(room.queues.waiting_at_or_above(cls) + 1);
  return static_cast<TimeMs>(ahead / per_ms);
}

}  // namespace tollgate::routing
