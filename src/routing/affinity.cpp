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
  while (!s.lru.empty() && (s.lru.size() > cap || s.lru.back().expires <= now)) {
    s.index.erase(s.lru.back().id);
    s.lru.pop_back();
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
    s.lru.push_front(Entry{std::string(id), std::move(owner), expires, billing});
    s.index.emplace(s.lru.front().id, s.lru.begin());
  }
  evict(s, now);
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
  it->second->expires = now + ttl_ms_.load(std::memory_order_relaxed);
  s.lru.splice(s.lru.begin(), s.lru, it->second);
  return it->second->owner;
}

void AffinityTable::forget(std::string_view id) {
  auto& s = shard(id);
  std::lock_guard lock(s.mu);
  if (auto it = s.index.find(id); it != s.index.end()) {
    s.lru.erase(it->second);
    s.index.erase(it);
  }
}

bool AffinityTable::claim_billing(std::string_view id, TimeMs now) {
  auto& s = shard(id);
  std::lock_guard lock(s.mu);
  auto it = s.index.find(id);
  if (it == s.index.end() || it->second->expires <= now) return false;
  if (it->second->billing != Billing::kPending) return false;
  it->second->billing = Billing::kSettled;
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
