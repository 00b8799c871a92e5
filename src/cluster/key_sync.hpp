#pragma once
// Runtime API keys and revocations shared by every replica: a key created or revoked through the
// admin API of any replica takes effect on all of them within a second. Redis holds the shared
// store; each replica's keys file stays its durable local copy, and what it serves from while
// Redis is away.
//
// The store (under the key prefix): `keys` a hash (key id -> the record as the keys file stores
// it: digest, client, prefix, created, expiry; never the key itself), `keys:revoked` a set of ids
// (a revoked runtime key's record is deleted from the hash), `keys:version` a counter raised by
// every change, which is also published on the channel `keys`. A change is one script (atomic),
// and a key revoked anywhere cannot be added back.
//
// A sync reads the whole store, merges it into the local file (auth::merge: the union of keys,
// revocations win), hands the merge to the owner when it changed anything, then writes to Redis
// what only the local file has (created or revoked here, possibly while Redis was away). Syncs
// run one at a time: at start, after every (re)subscription, on a message from another replica,
// when the 1 s poll of the version finds it moved (a lost message), after a failed sync (the
// poll retries it), and when the owner says the local keys changed (admin API, reload).
//
// Thread: the control thread's executor (the owner's callbacks run there). Lifetime: shared_ptr;
// close() stops the poll and the connections; no callback runs after it.

#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "cluster/redis_client.hpp"
#include "cluster/redis_subscriber.hpp"
#include "tollgate/auth/keys.hpp"
#include "tollgate/config/config.hpp"

namespace tollgate::cluster {

/// The store's Redis keys and channel, for a key prefix.
struct KeyStoreNames {
  explicit KeyStoreNames(const std::string& prefix)
      : keys(prefix + "keys"),
        revoked(prefix + "keys:revoked"),
        version(prefix + "keys:version"),
        channel(prefix + "keys") {}
  std::string keys, revoked, version, channel;
};

/// What Redis holds: its version and contents. Records that do not decode are skipped.
struct KeyStoreContents {
  std::int64_t version = 0;
  auth::KeysFile file;
};
/// The store script's reply (`{version, HGETALL keys, SMEMBERS revoked}`); nullopt when malformed.
std::optional<KeyStoreContents> parse_key_store(const RedisReply& reply);

/// The owner of the local keys (the identity layer).
struct LocalKeys {
  std::function<const auth::KeysFile&()> read;  // the local keys file's contents now
  std::function<void(auth::KeysFile)> adopt;    // replace them: save, rebuild the index, publish
};

class KeySync : public std::enable_shared_from_this<KeySync> {
 public:
  static constexpr std::chrono::milliseconds kPollEvery{1000};

  /// Null (logged) when the connections cannot be set up (the CA file cannot be loaded).
  static std::shared_ptr<KeySync> create(net::any_io_executor ex, const config::ClusterConfig& c,
                                         LocalKeys local, std::shared_ptr<RedisObserver> observer);
  void start();
  /// The local keys changed (a key created or revoked here, the file read again): sync.
  void local_changed() { request_sync(); }
  void close();

 private:
  KeySync(std::shared_ptr<RedisClient> pub, KeyStoreNames names, LocalKeys local);
  void request_sync();
  static net::awaitable<void> sync_loop(std::shared_ptr<KeySync> self);
  static net::awaitable<void> poll_loop(std::shared_ptr<KeySync> self);
  /// One read, merge and write. False when Redis failed (the poll retries).
  net::awaitable<bool> sync_once();
  /// Writes what `merged` has and `remote` lacks. Returns the store's version whose contents this
  /// replica now holds, nullopt on failure.
  net::awaitable<std::optional<std::int64_t>> push(const auth::KeysFile& merged,
                                                   const KeyStoreContents& remote);
  net::awaitable<void> check_version();
  void failed(std::string_view what, std::string_view why);

  // Owner of everything below: the executor.
  std::shared_ptr<RedisClient> pub_;
  std::shared_ptr<RedisSubscriber> sub_;
  KeyStoreNames names_;
  LocalKeys local_;
  net::steady_timer poll_timer_;     // the version poll's wait; close() cancels it
  std::int64_t known_version_ = -1;  // the store's version at the last sync (-1: none yet)
  bool wanted_ = false;              // a sync was asked for since the running one started
  bool running_ = false;             // sync_loop is running
  bool dirty_ = true;                // the last sync failed (or none ran yet)
  bool failing_ = false;             // a failure was logged; logged again after a success
  bool closed_ = false;
};

}  // namespace tollgate::cluster
