#pragma once
// Stored-object owners shared by the replicas: the affinity table's entries in the cluster's
// store, `<prefix>object:<id>` = encode_object() with PX = the entry's remaining lifetime
// (routing.affinity.ttl, sliding as the table slides it). The local table stays the fast path and
// the cache; this is where a replica that did not see an object made finds its owner.
//
// Writes are fire-and-forget from the worker that changed the table (ObjectJournal), each bounded
// by cluster.redis.timeout; a failed write is not replayed (the creator still serves the object).
// A save keeps the billing state the store holds: only claim() settles a pending one, so exactly
// one replica charges a background response fleet-wide. Reads: fetch() (one MGET), awaited by
// the locate_shared stage. See docs/design/cluster.md ("Stored objects").
//
// Thread: a SharedObjects lives on one worker's executor (its RedisClient's): every member runs
// there. Lifetime: the worker's (shared_ptr; writes in flight hold it).

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/object_record.hpp"
#include "cluster/redis_client.hpp"
#include "tollgate/routing/affinity.hpp"

namespace tollgate::cluster {

/// What fetch() found: a failure, or per id asked its record (nullopt: none, or a bad value).
struct FetchedObjects {
  std::optional<RedisFailure> failure;
  std::vector<std::optional<ObjectRecord>> records;
};

/// How a claim on a pending object's billing ended fleet-wide.
enum class BillingClaim : std::uint8_t {
  kWon,          // this replica charges (the store had it pending; it is now settled)
  kLost,         // another replica did
  kUnknown,      // the store has no record of it (never written, or expired)
  kUnavailable,  // no answer from the store
};

class SharedObjects : public std::enable_shared_from_this<SharedObjects> {
 public:
  SharedObjects(std::shared_ptr<RedisClient> redis, std::string key_prefix);

  /// Writes `o` (remaining lifetime o.expires_in_ms), keeping the store's billing state when it
  /// has a record. Fire-and-forget.
  void save(const routing::StoredObject& o);
  /// Deletes `id`'s record. Fire-and-forget.
  void erase(std::string_view id);
  /// The records of `ids`, in one MGET.
  net::awaitable<FetchedObjects> fetch(std::span<const std::string> ids);
  /// Settles `id`'s billing in the store if it is pending there (atomic: one winner). Writes
  /// started before it on this worker reach the store first.
  net::awaitable<BillingClaim> claim(std::string_view id);
  bool up() const { return redis_->up(); }
  std::string key(std::string_view id) const;

  /// The SharedObjects of the worker whose thread calls (null: none). The worker binds its own
  /// on its thread before it serves; ObjectJournal writes through it.
  static SharedObjects* on_this_thread();
  static void bind_to_this_thread(SharedObjects* objects);

 private:
  static net::awaitable<void> run_save(std::shared_ptr<SharedObjects> self, std::string key,
                                       std::string value, std::string px);
  static net::awaitable<void> run_erase(std::shared_ptr<SharedObjects> self, std::string key);

  std::shared_ptr<RedisClient> redis_;
  std::string prefix_;
};

/// The affinity table's journal with a cluster: every change goes to the calling worker's
/// SharedObjects (on_this_thread(); a thread without one writes nothing) and then to `next` (the
/// usage ledger, or null). Never blocks (a save spawns the write). Thread: any worker.
class ObjectJournal final : public routing::AffinityJournal {
 public:
  explicit ObjectJournal(routing::AffinityJournal* next) : next_(next) {}
  void saved(const routing::StoredObject& object) override;
  void erased(std::string_view id) override;
  /// Pushed out of this replica's table only: the store keeps it (for the ledger, erased).
  void evicted(std::string_view id) override;

 private:
  routing::AffinityJournal* next_;  // outlives this journal (the gateway detaches both together)
};

}  // namespace tollgate::cluster
