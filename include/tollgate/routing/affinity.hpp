#pragma once
// Affinity for stateful APIs: server-side objects (responses, files, threads, runs, batches,
// vector stores, assistants, fine-tuning jobs) exist only on the backend that created them. The
// table maps each id the gateway saw created to that backend's name; later requests naming the
// id go there. Shared by all workers: a sharded, mutex-guarded LRU with a sliding TTL, touched
// only by stateful calls (never by chat/completions/embeddings). See docs/design/routing.md.

#include <array>
#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tollgate/routing/backend_state.hpp"

namespace tollgate::routing {

class AffinityTable {
 public:
  AffinityTable(std::size_t max_entries, TimeMs ttl_ms);
  /// New bounds (a reload); entries over the bound leave at their next touch. Thread: any.
  void configure(std::size_t max_entries, TimeMs ttl_ms);
  /// Remembers that `id` lives on `backend`. Thread: any.
  void remember(std::string_view id, std::string_view backend, TimeMs now);
  /// The backend that created `id`, refreshing its TTL; nullopt when unknown or expired.
  std::optional<std::string> find(std::string_view id, TimeMs now);
  void forget(std::string_view id);
  std::size_t size() const;

 private:
  struct Entry {
    std::string id;
    std::string backend;
    TimeMs expires = 0;
  };
  struct Shard {
    mutable std::mutex mu;
    std::list<Entry> lru;  // most recent first
    std::unordered_map<std::string_view, std::list<Entry>::iterator> index;  // keys view lru
  };
  static constexpr std::size_t kShards = 16;
  Shard& shard(std::string_view id);
  void evict(Shard& s, TimeMs now);

  std::array<Shard, kShards> shards_;
  std::atomic<std::size_t> per_shard_;
  std::atomic<TimeMs> ttl_ms_;
};

}  // namespace tollgate::routing
