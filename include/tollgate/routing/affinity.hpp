#pragma once
// Affinity for stateful APIs: server-side objects (responses, files, threads, runs, batches,
// vector stores, assistants, fine-tuning jobs) exist only on the backend that created them. The
// table maps each id the gateway saw created to its owner (the client and tenant that made it)
// and that backend; later requests naming the id go there, and only its owner may name it.
// Shared by all workers: a sharded, mutex-guarded LRU with a sliding TTL, touched only by stateful
// calls (never by chat/completions/embeddings). An AffinityJournal (the usage ledger) may record
// every change so the table survives a restart. See docs/design/routing.md ("Owner records").

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
  bool operator==(const ObjectOwner&) const = default;
};

/// Whether an object's tokens are still to be charged: a background response
/// (`background: true`) is answered before it has run, and is billed once, by the first answer
/// that carries its usage.
enum class Billing : std::uint8_t {
  kSettled,  // nothing left to charge (billed at creation, or not inference)
  kPending,  // a background response whose usage no answer has carried yet
};

/// One entry as a journal records it. Time: the table keeps steady-clock ms, which mean nothing
/// to another process, so an entry crosses the boundary as its remaining lifetime: the journal
/// turns `expires_in_ms` into an absolute (unix) expiry with the clock it owns, and a loader
/// turns it back (load time minus the stored expiry) for restore().
struct StoredObject {
  std::string id;
  ObjectOwner owner;
  Billing billing = Billing::kSettled;
  TimeMs expires_in_ms = 0;  // > 0: remaining lifetime when the call is made
};

/// Where the table reports its changes (the usage ledger). The table calls it while holding the
/// entry's shard mutex, so calls for one id arrive in the order the table applied them; an
/// implementation must therefore never block (the ledger's is a bounded queue push, no I/O).
/// Thread: any worker. Lifetime: set_journal(nullptr) before the journal is destroyed.
class AffinityJournal {
 public:
  virtual ~AffinityJournal() = default;
  /// `object` was created, changed (billing settled) or had its expiry moved.
  virtual void saved(const StoredObject& object) = 0;
  /// `id` was forgotten (deleted, or replaced).
  virtual void erased(std::string_view id) = 0;
  /// `id` was pushed out by the size bound: gone from this table, not from the world. A journal
  /// that is this table's copy treats it as erased (the default); a store other tables share
  /// keeps the object.
  virtual void evicted(std::string_view id) { erased(id); }
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

  /// Inserts a journaled entry (loading at start), not reporting it back; one with no lifetime
  /// left is ignored. Thread: any.
  void restore(const StoredObject& object, TimeMs now);
  /// Reports every later change to `journal` (null: none). When it returns, no call to the
  /// previous journal is running or will start, so that one may then be destroyed. Thread: any.
  /// A find() slides the TTL without reporting it until the journaled expiry lags the new one by
  /// more than ttl/8: one write per object per ttl/8 at most, and a restored entry may expire up
  /// to ttl/8 early. Entries that expire are not reported (the journal's own expiry covers them).
  void set_journal(AffinityJournal* journal);

 private:
  struct Entry {
    std::string id;
    ObjectOwner owner;
    TimeMs expires = 0;
    TimeMs journaled_expires = 0;  // the expiry the journal holds (<= expires)
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
  void journal_saved(Entry& e, TimeMs now);  // under the entry's shard mutex

  std::array<Shard, kShards> shards_;
  // Writer: set_journal. Readers: callers holding a shard mutex.
  std::atomic<AffinityJournal*> journal_{nullptr};
  std::atomic<std::size_t> per_shard_;
  std::atomic<TimeMs> ttl_ms_;
};

}  // namespace tollgate::routing
