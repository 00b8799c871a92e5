#pragma once
// Affinity for stateful APIs: server-side objects (responses, files, threads, runs, batches,
// vector stores, assistants, fine-tuning jobs) exist only on the backend that created them. The
// table maps each id the gateway saw created to its owner (the client and tenant that made it)
// and that backend; later requests naming the id go there, and only its owner may name it. Shared by all workers: a sharded, mutex-guarded LRU with a sliding TTL, touched
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

/// Who made a stored object, and where it lives. `client` and `tenant` are empty for anonymous
/// callers (and `tenant` for a client without one).
struct ObjectOwner {
  std::string backend;
  std::string deployment;  // the deployment it was created through
  std::string client;
  std::string tenant;
};

/// Whether an object's tokens are still to be charged: a background response
/// (`background: true`) is answered before it has run, and is billed once, by the first answer
/// that carries its usage.
enum class Billing : std::uint8_t {
  kSettled,  // nothing left to charge (billed at creation, or not inference)
  kPending,  // a background response whose usage no answer has carried yet
};

class AffinityTable {
 public:
  AffinityTable(std::size_t max_entries, TimeMs ttl_ms);
  /// New bounds (a reload); entries over the bound leave at their next touch. Thread: any.
  void configure(std::size_t max_entries, TimeMs ttl_ms);
  /// Remembers that `id` was made by `owner`. Thread: any.
  void remember(std::string_view id, ObjectOwner owner, TimeMs now,
                Billing billing = Billing::kSettled);
  /// Who made `id` and where it lives, refreshing its TTL; nullopt when unknown or expired.
  std::optional<ObjectOwner> find(std::string_view id, TimeMs now);
  void forget(std::string_view id);
  /// True for exactly one caller once `id` is pending (it then becomes settled): that caller
  /// bills the usage its answer carries. False when unknown, expired or settled. Thread: any.
  bool claim_billing(std::string_view id, TimeMs now);
  std::size_t size() const;

 private:
  struct Entry {
    std::string id;
    ObjectOwner owner;
    TimeMs expires = 0;
    Billing billing = Billing::kSettled;
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
