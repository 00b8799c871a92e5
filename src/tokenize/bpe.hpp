#pragma once
// tiktoken's byte-pair merge, in two exact variants (module-private).
//
// Semantics (tiktoken src/lib.rs): start from single bytes; repeatedly merge the adjacent pair
// whose concatenated bytes have the lowest rank, leftmost on ties, until no adjacent
// concatenation is a token. Both variants below implement exactly this rule:
//   * merge_small: tiktoken's vector scan, O(n^2) but with n < kLargePieceBytes, on the stack;
//   * merge_large: a min segment tree keyed by (rank, start) over a doubly linked list of parts,
//     O(n log n) — hostile input (one 1 MB "word") cannot make it quadratic.
// Each part remembers the rank it was created with, so no lookup is repeated at the end.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "rank_table.hpp"

namespace tollgate::tokenize::detail {

/// Pieces of at least this many bytes use merge_large (tiktoken >= 0.13 switches at 100 too).
inline constexpr std::size_t kLargePieceBytes = 100;

/// Reusable buffers for merge_large. Owner: one thread (kept in thread_local storage).
struct MergeScratch {
  std::vector<std::uint32_t> next, prev;
  std::vector<Rank> token;
  std::vector<std::uint64_t> tree;

  // Do not let one huge piece pin tens of MB per thread forever.
  void trim() {
    if (next.capacity() > (1u << 16)) *this = MergeScratch{};
  }
};

/// Requires 2 <= n < kLargePieceBytes. Calls sink(rank) for each resulting token, in order.
template <class Sink>
inline void merge_small(const RankTable& t, const unsigned char* p, std::size_t n, Sink&& sink) {
  std::uint32_t start[kLargePieceBytes + 1];
  Rank pair[kLargePieceBytes];
  Rank tok[kLargePieceBytes];
  for (std::size_t i = 0; i < n; ++i) {
    start[i] = static_cast<std::uint32_t>(i);
    tok[i] = t.byte_rank(p[i]);
  }
  start[n] = static_cast<std::uint32_t>(n);
  for (std::size_t i = 0; i + 1 < n; ++i) pair[i] = t.find(p + i, 2);
  std::size_t m = n;  // number of parts; pair[i] = rank of parts i and i+1 joined, i < m - 1
  while (m > 1) {
    // Lowest rank, leftmost on ties: a min reduction (vectorised) and a search for its first
    // occurrence, instead of one branchy scan.
    Rank best = kNoRank;
    for (std::size_t i = 0; i + 1 < m; ++i) best = std::min(best, pair[i]);
    if (best == kNoRank) break;
    std::size_t at = 0;
    while (pair[at] != best) ++at;
    tok[at] = best;
    // Remove part at+1.
    std::memmove(start + at + 1, start + at + 2, (m - at - 1) * sizeof(start[0]));
    std::memmove(tok + at + 1, tok + at + 2, (m - at - 2) * sizeof(tok[0]));
    if (at + 3 <= m) std::memmove(pair + at + 1, pair + at + 2, (m - at - 3) * sizeof(pair[0]));
    --m;
    if (at > 0 && at + 1 < m) {
      t.find2(p + start[at], start[at + 2] - start[at], pair[at], p + start[at - 1],
              start[at + 1] - start[at - 1], pair[at - 1]);
    } else {
      pair[at] = at + 1 < m ? t.find(p + start[at], start[at + 2] - start[at]) : kNoRank;
      if (at > 0) pair[at - 1] = t.find(p + start[at - 1], start[at + 1] - start[at - 1]);
    }
  }
  for (std::size_t i = 0; i < m; ++i) sink(tok[i]);
}

/// Any n >= 2. Same result as merge_small, O(n log n): a doubly linked list of parts and a
/// min segment tree over keys (rank << 32 | start) of the pair beginning at each part start.
/// The root is the lowest rank, leftmost on ties (the smaller start wins, and positions keep
/// their order), with no stale entries to skip; a merge updates at most three leaves.
template <class Sink>
inline void merge_large(const RankTable& t, const unsigned char* p, std::size_t n, MergeScratch& s,
                        Sink&& sink) {
  constexpr std::uint64_t kNone = ~std::uint64_t{0};
  std::size_t leaves = 1;
  while (leaves < n) leaves <<= 1;
  s.next.resize(n);
  s.prev.resize(n);
  s.token.resize(n);
  s.tree.assign(2 * leaves, kNone);
  std::uint64_t* tree = s.tree.data();
  for (std::size_t i = 0; i < n; ++i) {
    s.next[i] = static_cast<std::uint32_t>(i + 1);
    s.prev[i] = static_cast<std::uint32_t>(i - 1);  // wraps for i == 0; never read then
    s.token[i] = t.byte_rank(p[i]);
    const Rank r = i + 1 < n ? t.find(p + i, 2) : kNoRank;
    if (r != kNoRank) tree[leaves + i] = (static_cast<std::uint64_t>(r) << 32) | i;
  }
  for (std::size_t i = leaves - 1; i > 0; --i) tree[i] = std::min(tree[2 * i], tree[2 * i + 1]);
  auto set = [&](std::size_t pos, Rank r) {
    std::size_t i = leaves + pos;
    tree[i] = r == kNoRank ? kNone : (static_cast<std::uint64_t>(r) << 32) | pos;
    for (i >>= 1; i > 0; i >>= 1) {
      const std::uint64_t v = std::min(tree[2 * i], tree[2 * i + 1]);
      if (tree[i] == v) break;  // unchanged here: unchanged above
      tree[i] = v;
    }
  };
  while (tree[1] != kNone) {
    const Rank r = static_cast<Rank>(tree[1] >> 32);
    const std::uint32_t i = static_cast<std::uint32_t>(tree[1]);
    const std::uint32_t j = s.next[i];
    const std::uint32_t k = s.next[j];  // j < n: a pair starts at i
    s.token[i] = r;
    s.next[i] = k;
    if (k < n) s.prev[k] = i;
    set(j, kNoRank);
    // New pairs: (i, k) and (prev(i), i).
    Rank right = kNoRank, left = kNoRank;
    const std::uint32_t h = i > 0 ? s.prev[i] : 0;
    if (k < n && i > 0) {
      t.find2(p + i, s.next[k] - i, right, p + h, k - h, left);
    } else if (k < n) {
      right = t.find(p + i, s.next[k] - i);
    } else if (i > 0) {
      left = t.find(p + h, k - h);
    }
    set(i, right);
    if (i > 0) set(h, left);
  }
  for (std::size_t i = 0; i < n; i = s.next[i]) sink(s.token[i]);
}

/// Encodes one pre-tokenizer piece (n >= 1): whole-piece lookup first, as tiktoken does.
template <class Sink>
inline void bpe_piece(const RankTable& t, const unsigned char* p, std::size_t n, MergeScratch& s,
                      Sink&& sink) {
  const Rank whole = t.find(p, n);
  if (whole != kNoRank) {
    sink(whole);
  } else if (n < kLargePieceBytes) {
    merge_small(t, p, n, sink);
  } else {
    merge_large(t, p, n, s, sink);
  }
}

}  // namespace tollgate::tokenize::detail
