#pragma once
// The BPE rank table: token bytes → rank, looked up by byte span (module-private).
//
// Layout: all token bytes in one arena ordered by rank (`offsets_[r]..offsets_[r+1]` are the
// bytes of rank r, for decode), plus an open-addressing (linear probing) index at load factor
// <= 0.5 whose 16-byte slots hold the token's first 8 bytes, its length, its rank and its arena
// offset. A lookup of a span of <= 8 bytes — nearly every lookup the merge makes — touches one
// slot and nothing else; longer spans compare their tail in the arena. Spans of 1 and 2 bytes
// use direct tables (256 and 65536 entries). No std::string keys, no allocation per lookup.

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "tollgate/tokenize/result.hpp"

namespace tollgate::tokenize::detail {

using Rank = std::uint32_t;
inline constexpr Rank kNoRank = 0xFFFFFFFFu;

inline std::uint64_t mix64(std::uint64_t a, std::uint64_t b) noexcept {
  __extension__ typedef unsigned __int128 U128;
  const U128 r = static_cast<U128>(a) * b;
  return static_cast<std::uint64_t>(r) ^ static_cast<std::uint64_t>(r >> 64);
}

inline std::uint64_t load64(const unsigned char* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

inline std::uint32_t load32(const unsigned char* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

/// The first min(n, 8) bytes of [p, p+n) as a little-endian word, zero-padded, reading only
/// inside the span (overlapping loads; the overlapping bytes are equal, so OR is exact).
inline std::uint64_t head8(const unsigned char* p, std::size_t n) noexcept {
  if (n >= 8) return load64(p);
  if (n >= 4) {
    return static_cast<std::uint64_t>(load32(p)) |
           (static_cast<std::uint64_t>(load32(p + n - 4)) << (8 * (n - 4)));
  }
  // n in 1..3: bytes 0, n/2 and n-1 cover the span.
  return static_cast<std::uint64_t>(p[0]) |
         (static_cast<std::uint64_t>(p[n >> 1]) << (8 * (n >> 1))) |
         (static_cast<std::uint64_t>(p[n - 1]) << (8 * (n - 1)));
}

/// 64-bit hash of a byte span whose head8() is `head` (wyhash-style multiply mixing). Not
/// keyed: the key set is fixed and public, so there is nothing for an attacker to collide that
/// they could not look up anyway; probes stay short because the keys are fixed at load time.
inline std::uint64_t hash_span(const unsigned char* p, std::size_t n, std::uint64_t head) noexcept {
  constexpr std::uint64_t kP0 = 0xa0761d6478bd642full, kP1 = 0xe7037ed1a0b428dbull,
                          kP2 = 0x8ebc6af09c88c6e3ull;
  if (n <= 8) return mix64(head ^ kP0, n ^ kP1);
  std::uint64_t seed = mix64(head ^ kP0, n ^ kP1);
  std::size_t i = 8;
  for (; i + 8 < n; i += 8) seed = mix64(load64(p + i) ^ kP2, seed ^ kP1);
  return mix64(load64(p + n - 8) ^ kP2, seed ^ kP0);
}

/// a[0..n) == b[0..n) for n >= 1, with word compares (reads stay inside both spans).
inline bool equal_bytes(const unsigned char* a, const unsigned char* b, std::size_t n) noexcept {
  if (n >= 8) {
    std::size_t i = 0;
    for (; i + 8 < n; i += 8) {
      if (load64(a + i) != load64(b + i)) return false;
    }
    return load64(a + n - 8) == load64(b + n - 8);
  }
  return head8(a, n) == head8(b, n);
}

class RankTable {
 public:
  /// Parses the .tiktoken text ("base64 SP rank LF" lines). `origin` names the file in errors.
  static Result<RankTable> parse(std::string_view text, std::string_view origin);

  /// Rank of exactly the bytes [p, p+n), or kNoRank.
  Rank find(const unsigned char* p, std::size_t n) const noexcept {
    if (n == 1) return byte_rank_[p[0]];
    if (n == 2) return pair_rank_[p[0] | (static_cast<std::size_t>(p[1]) << 8)];
    return probe(p, n);
  }

  /// find() for two spans at once: both index slots are fetched before either is compared, so
  /// the two cache misses of a merge step overlap instead of queueing.
  void find2(const unsigned char* p1, std::size_t n1, Rank& r1, const unsigned char* p2,
             std::size_t n2, Rank& r2) const noexcept {
    if (n1 <= 2 || n2 <= 2) {
      r1 = find(p1, n1);
      r2 = find(p2, n2);
      return;
    }
    const std::uint64_t h1 = head8(p1, n1), h2 = head8(p2, n2);
    const std::size_t i1 = static_cast<std::size_t>(hash_span(p1, n1, h1)) & mask_;
    const std::size_t i2 = static_cast<std::size_t>(hash_span(p2, n2, h2)) & mask_;
    __builtin_prefetch(&slots_[i2]);
    r1 = probe_at(p1, n1, h1, i1);
    r2 = probe_at(p2, n2, h2, i2);
  }

  /// Like find() but always through the hash index.
  Rank probe(const unsigned char* p, std::size_t n) const noexcept {
    const std::uint64_t head = head8(p, n);
    return probe_at(p, n, head, static_cast<std::size_t>(hash_span(p, n, head)) & mask_);
  }

  Rank probe_at(const unsigned char* p, std::size_t n, std::uint64_t head,
                std::size_t i) const noexcept {
    for (;;) {
      const Slot& s = slots_[i];
      const std::uint32_t len = s.len_offset & 0xFF;
      if (len == 0) return kNoRank;
      if (s.head == head && len == n &&
          (n <= 8 || equal_bytes(arena_base() + (s.len_offset >> 8) + 8, p + 8, n - 8))) {
        return s.rank;
      }
      i = (i + 1) & mask_;
    }
  }

  /// Rank of the single byte b (every byte is a token in both encodings).
  Rank byte_rank(unsigned char b) const noexcept { return byte_rank_[b]; }

  /// Bytes of `rank`, or an empty view if `rank` is not a token.
  std::string_view bytes_of(Rank rank) const noexcept {
    if (rank + 1 >= offsets_.size()) return {};
    return std::string_view(arena_).substr(offsets_[rank], offsets_[rank + 1] - offsets_[rank]);
  }
  bool has_rank(Rank rank) const noexcept {
    return rank + 1 < offsets_.size() && offsets_[rank + 1] != offsets_[rank];
  }

  std::size_t size() const noexcept { return count_; }
  std::size_t memory_bytes() const noexcept {
    return arena_.capacity() + offsets_.capacity() * sizeof(std::uint32_t) +
           slots_.capacity() * sizeof(Slot) + pair_rank_.capacity() * sizeof(Rank);
  }

  static constexpr std::size_t kMaxTokenBytes = 255;
  static constexpr std::size_t kMaxArenaBytes = std::size_t{1} << 24;

 private:
  struct Slot {
    std::uint64_t head;  // first min(len, 8) bytes, zero-padded (head8)
    Rank rank;
    std::uint32_t len_offset;  // len (1..255) | arena offset << 8; 0 = empty slot
  };
  static_assert(sizeof(Slot) == 16);

  const unsigned char* arena_base() const noexcept {
    return reinterpret_cast<const unsigned char*>(arena_.data());
  }

  std::string arena_;                   // token bytes, by rank
  std::vector<std::uint32_t> offsets_;  // rank -> arena offset; size max_rank + 2
  std::vector<Slot> slots_;             // power-of-two sized index
  std::vector<Rank> pair_rank_;         // 2-byte spans: b0 | b1 << 8 -> rank or kNoRank
  std::size_t mask_ = 0;
  std::size_t count_ = 0;
  std::array<Rank, 256> byte_rank_{};
};

}  // namespace tollgate::tokenize::detail
