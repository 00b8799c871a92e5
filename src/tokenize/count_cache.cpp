#include "tollgate/tokenize/count_cache.hpp"

#include <functional>

namespace tollgate::tokenize {

CountCache::CountCache(std::size_t max_bytes) : max_bytes_(max_bytes), shard_bytes_(max_bytes / kShards) {}

std::uint64_t CountCache::hash(std::string_view model, std::string_view message) {
  auto h = std::hash<std::string_view>{}(message);
  return h ^ (std::hash<std::string_view>{}(model) * 0x9E3779B97F4A7C15ULL);
}

std::list<CountCache::Entry>::iterator CountCache::locate(Shard& s, std::uint64_t h,
                                                          std::string_view model,
                                                          std::string_view message) {
  auto [first, last] = s.index.equal_range(h);
  for (auto it = first; it != last; ++it) {
    const auto& e = *it->second;
    if (e.message == message && e.model == model) return it->second;
  }
  return s.lru.end();
}

std::optional<TokenEstimate> CountCache::find(std::string_view model, std::string_view message) {
  auto h = hash(model, message);
  auto& s = shards_[h % kShards];
  std::lock_guard lock(s.mu);
  auto it = locate(s, h, model, message);
  if (it == s.lru.end()) {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  }
  hits_.fetch_add(1, std::memory_order_relaxed);
  s.lru.splice(s.lru.begin(), s.lru, it);
  return it->count;
}

void CountCache::put(std::string_view model, std::string_view message, TokenEstimate count) {
  if (Entry::cost(model.size(), message.size()) > shard_bytes_ / 8) return;
  auto h = hash(model, message);
  Entry e{h, std::string(model), std::string(message), count};
  auto& s = shards_[h % kShards];
  std::lock_guard lock(s.mu);
  if (locate(s, h, model, message) != s.lru.end()) return;  // counted twice at once
  s.bytes += e.cost();
  s.lru.push_front(std::move(e));
  s.index.emplace(h, s.lru.begin());
  while (s.bytes > shard_bytes_ && !s.lru.empty()) {
    auto& old = s.lru.back();
    auto [first, last] = s.index.equal_range(old.hash);
    for (auto it = first; it != last; ++it) {
      if (&*it->second == &old) {
        s.index.erase(it);
        break;
      }
    }
    s.bytes -= old.cost();
    s.lru.pop_back();
  }
}

CountCache::Stats CountCache::stats() const {
  Stats out;
  out.hits = hits_.load(std::memory_order_relaxed);
  out.misses = misses_.load(std::memory_order_relaxed);
  for (const auto& s : shards_) {
    std::lock_guard lock(s.mu);
    out.entries += s.lru.size();
    out.bytes += s.bytes;
  }
  return out;
}

}  // namespace tollgate::tokenize
