#pragma once
// Client API keys: an immutable index (config keys + runtime keys − revoked) that workers
// consult per request, and the keys file that makes runtime changes survive restarts.
// Only SHA-256 digests are kept; a key itself exists in memory only while a request is checked
// and once, in the admin API's answer that creates it.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tollgate/crypto/crypto.hpp"
#include "tollgate/config/config.hpp"

namespace tollgate::auth {

using crypto::Digest;

/// A key created at runtime (admin API), as stored in the keys file.
struct RuntimeKey {
  std::string id;
  std::string client;  // client name
  Digest digest{};
  std::string prefix;
  std::int64_t created = 0;  // Unix seconds
  std::optional<std::int64_t> expires;

  bool operator==(const RuntimeKey&) const = default;
};

/// The keys file: runtime keys and revoked key ids (config keys included).
struct KeysFile {
  std::vector<RuntimeKey> keys;
  std::vector<std::string> revoked;

  bool operator==(const KeysFile&) const = default;
};

/// One runtime key as the keys file stores it: a JSON object with its digest (never the key).
std::string encode_runtime_key(const RuntimeKey& k);
/// A record encode_runtime_key() wrote; nullopt for anything else.
std::optional<RuntimeKey> decode_runtime_key(std::string_view text);

/// The union of two keys files, as replicas sharing keys need it: every key of either (by id;
/// `a`'s record when both have one) and every revoked id of either, minus the keys whose id is
/// revoked (a key revoked anywhere is revoked everywhere). `a`'s entries keep their order and
/// come first, so merge(a, b) == a when `b` adds nothing (and `a` is itself merged). Idempotent:
/// merge(merge(a, b), b) == merge(a, b).
KeysFile merge(const KeysFile& a, const KeysFile& b);

/// Reads `path`; a missing file is an empty KeysFile. Errors (unreadable, malformed) in `error`.
KeysFile load_keys_file(const std::string& path, std::string& error);
/// Writes atomically: a temporary file in the same directory, fsync, rename, fsync of the
/// directory. Returns an error message, or "" on success.
std::string save_keys_file(const std::string& path, const KeysFile& data);

struct KeyEntry {
  std::string id;
  std::uint32_t client = 0;  // index into Config::clients
  Digest digest{};
  std::string prefix;
  std::optional<std::int64_t> expires;
  std::int64_t created = 0;
  bool runtime = false;
};

class KeyIndex {
 public:
  /// Config keys and the keys file's runtime keys (of clients that still exist), minus revoked
  /// ids. Thread: control.
  KeyIndex(const config::Config& cfg, const KeysFile& file);
  /// The client a key belongs to, if it is known and not expired at `now` (Unix seconds).
  /// Compares digests in constant time. Thread: any.
  std::optional<std::uint32_t> find(std::string_view key, std::int64_t now) const;
  const std::vector<KeyEntry>& entries() const { return entries_; }
  const KeyEntry* by_id(std::string_view id) const;

 private:
  std::vector<KeyEntry> entries_;
  std::unordered_multimap<std::uint64_t, std::size_t> by_head_;  // first 8 digest bytes -> entry
};

}  // namespace tollgate::auth
