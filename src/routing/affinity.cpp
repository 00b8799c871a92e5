#include "tollgate/routing/affinity.hpp"

#include <algorithm>

namespace tollgate::routing {

AffinityTable::AffinityTable(std::size_t max_entries, TimeMs ttl_ms)
    : per_shard_(std::max<std::size_t>(1, max_entries / kShards)), ttl_ms_(ttl_ms) {}

void AffinityTable::configure(std::size_t max_entries, TimeMs ttl_ms) {
  per_shard_.store(std::max<std::size_t>(1, max_entries / kShards));
  ttl_ms_.store(ttl_ms);
}

AffinityTable::Shard& AffinityTable::shard(std::string_view id) {
  return shards_[std::hash<std::string_view>{}(id) % kShards];
}

void AffinityTable::evict(Shard& s, TimeMs now) {
  auto cap = per_shard_.load(std::memory_order_relaxed);
  auto* journal = journal_.load(std::memory_order_acquire);
  while (!s.lru.empty() && (s.lru.size() > cap || s.lru.back().expires <= now)) {
    // An expired entry's journaled expiry has passed too; one pushed out by the bound has not.
    if (journal != nullptr && s.lru.back().expires > now) journal->evicted(s.lru.back().id);
    s.index.erase(s.lru.back().id);
    s.lru.pop_back();
  }
}

void AffinityTable::journal_saved(Entry& e, TimeMs now) {
  e.journaled_expires = e.expires;
  if (auto* journal = journal_.load(std::memory_order_acquire)) {
    journal->saved(StoredObject{e.id, e.owner, e.billing, e.expires - now});
  }
}

void AffinityTable::remember(std::string_view id, ObjectOwner owner, TimeMs now, Billing billing) {
  if (id.empty() || id.size() > 256) return;
  auto& s = shard(id);
  std::lock_guard lock(s.mu);
  auto expires = now + ttl_ms_.load(std::memory_order_relaxed);
  if (auto it = s.index.find(id); it != s.index.end()) {
    it->second->owner = std::move(owner);
    it->second->expires = expires;
    it->second->billing = billing;
    s.lru.splice(s.lru.begin(), s.lru, it->second);
  } else {
    s.lru.push_front(Entry{std::string(id), std::move(owner), expires, expires, billing});
    s.index.emplace(s.lru.front().id, s.lru.begin());
  }
  journal_saved(s.lru.front(), now);
  evict(s, now);
}

void AffinityTable::restore(const StoredObject& object, TimeMs now) {
  const auto& id = object.id;
  if (id.empty() || id.size() > 256 || object.expires_in_ms <= 0) return;
  auto& s = shard(id);
  std::lock_guard lock(s.mu);
  auto expires = now + object.expires_in_ms;
  if (auto it = s.index.find(id); it != s.index.end()) {
    s.lru.erase(it->second);
    s.index.erase(it);
  }
  s.lru.push_front(Entry{id, object.owner, expires, expires, object.billing});
  s.index.emplace(s.lru.front().id, s.lru.begin());
  evict(s, now);
}

void AffinityTable::set_journal(AffinityJournal* journal) {
  journal_.store(journal, std::memory_order_release);
  // Every call to a journal runs under a shard mutex: once each has been taken after the store,
  // no call to the previous journal is still running.
  for (auto& s : shards_) {
    std::lock_guard lock(s.mu);
  }
}

std::optional<ObjectOwner> AffinityTable::find(std::string_view id, TimeMs now) {
  auto& s = shard(id);
  std::lock_guard lock(s.mu);
  auto it = s.index.find(id);
  if (it == s.index.end()) return std::nullopt;
  if (it->second->expires <= now) {
    s.lru.erase(it->second);
    s.index.erase(it);
    return std::nullopt;
  }
  auto ttl = ttl_ms_.load(std::memory_order_relaxed);
  auto& e = *it->second;
  e.expires = now + ttl;
  // Bounded writes: the journal hears of a slide only once it is worth ttl/8.
  if (e.expires - e.journaled_expires > ttl / 8) journal_saved(e, now);
  s.lru.splice(s.lru.begin(), s.lru, it->second);
  return e.owner;
}

void AffinityTable::forget(std::string_view id) {
  auto& s = shard(id);
  std::lock_guard lock(s.mu);
  if (auto it = s.index.find(id); it != s.index.end()) {
    s.lru.erase(it->second);
    s.index.erase(it);
    if (auto* journal = journal_.load(std::memory_order_acquire)) journal->erased(id);
  }
}

bool AffinityTable::claim_billing(std::string_view id, TimeMs now) {
  auto& s = shard(id);
  std::lock_guard lock(s.mu);
  auto it = s.index.find(id);
  if (it == s.index.end() || it->second->expires <= now) return false;
  if (it->second->billing != Billing::kPending) return false;
  it->second->billing = Billing::kSettled;
  journal_saved(*it->second, now);
  return true;
}

std::size_t AffinityTable::size() const {
  std::size_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard lock(s.mu);
    n += s.lru.size();
  }
  return n;
}

}  // namespace tollgate::routing
