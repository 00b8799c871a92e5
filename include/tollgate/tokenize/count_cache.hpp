#pragma once
// Memoized token counts of chat messages: real traffic repeats system prompts and conversation
// history, so a request of a known conversation needs BPE only for its new message. Keyed by
// the model and the message's exact JSON bytes: a hit compares the bytes, never trusts the hash
// alone, so a count is exact or absent. Bounded in bytes (keys and entries), least recently used
// out first; 16 shards, each behind its own mutex (held for a lookup or an insert, never for
// a count). Thread: any. Lifetime: the gateway's (its Tokenizers own it).

#include <array>
#include <atomic>
#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "tollgate/tokenize/estimate.hpp"

namespace tollgate::tokenize {

class CountCache {
 public:
  /// Messages shorter than this are counted, not memoized (the lookup would cost about as much).
  static constexpr std::size_t kMinMessageBytes = 64;

  explicit CountCache(std::size_t max_bytes);
  CountCache(const CountCache&) = delete;
  CountCache& operator=(const CountCache&) = delete;

  /// The count memoized for `message` (its JSON bytes) under `model`; counts a hit or a miss.
  std::optional<TokenEstimate> find(std::string_view model, std::string_view message);
  /// Memoizes a count; a message over an eighth of a shard's bytes is not kept.
  void put(std::string_view model, std::string_view message, TokenEstimate count);

  struct Stats {
    std::uint64_t hits = 0;
    std::uint64_t misses = 0;
    std::uint64_t entries = 0;
    std::uint64_t bytes = 0;
  };
  Stats stats() const;
  std::size_t max_bytes() const { return max_bytes_; }

 private:
  struct Entry {
    std::uint64_t hash = 0;
    std::string model;
    std::string message;
    TokenEstimate count;
    /// Bytes an entry holds: its strings, itself and its index node.
    static constexpr std::size_t cost(std::size_t model_bytes, std::size_t message_bytes) {
      return model_bytes + message_bytes + sizeof(Entry) + 32;
    }
    std::size_t cost() const { return cost(model.size(), message.size()); }
  };
  struct Shard {
    mutable std::mutex mu;
    std::list<Entry> lru;  // most recent first
    std::unordered_multimap<std::uint64_t, std::list<Entry>::iterator> index;
    std::size_t bytes = 0;
  };
  static constexpr std::size_t kShards = 16;
  static std::uint64_t hash(std::string_view model, std::string_view message);
  std::list<Entry>::iterator locate(Shard& s, std::uint64_t h, std::string_view model,
                                    std::string_view message);

  const std::size_t max_bytes_;
  const std::size_t shard_bytes_;
  std::array<Shard, kShards> shards_;
  std::atomic<std::uint64_t> hits_{0};
  std::atomic<std::uint64_t> misses_{0};
};

}  // namespace tollgate::tokenize
