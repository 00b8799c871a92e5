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

#include <nlohmann/json.hpp>

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

/// True for paths of the stateful APIs (op_path relative to /openai/, /openai/v1/ or /v1/):
/// responses (but not its create, decided by `store`), files, threads, assistants,
/// vector_stores, batches, fine_tuning, uploads.
bool is_stateful_path(std::string_view op_path);

/// True when a successful answer to this request creates an object whose id must be remembered.
bool creates_object(std::string_view method, std::string_view op_path,
                    const nlohmann::ordered_json* body);

/// The object ids a request names: id segments of the path (`files/{id}`,
/// `threads/{id}/runs/{id}`) and body fields (previous_response_id, thread_id, assistant_id,
/// file_id, input_file_id, vector_store_id(s), file_ids ...).
std::vector<std::string> referenced_ids(std::string_view op_path, const nlohmann::ordered_json* body);

/// The id of the created object in a JSON response body (top-level "id", or "response.id" of a
/// Responses stream event). Empty when absent.
std::string created_id(std::string_view json);

}  // namespace tollgate::routing
