#pragma once
// The balancer: picks the backend for one attempt of a request from a deployment's route
// (priority tiers of weighted backends), using the shared BackendState of each. Plain C++,
// synchronous, no allocation on the common path. See docs/design/routing.md.

#include <boost/container/small_vector.hpp>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "tollgate/routing/backend_state.hpp"

namespace tollgate::routing {

struct Member {
  std::uint32_t backend = 0;  // index into the snapshot's backends
  std::uint32_t weight = 1;
};

/// A deployment's tiers, tier 0 first, already restricted to its allowed regions.
struct Route {
  std::vector<std::vector<Member>> tiers;
  bool contains(std::uint32_t backend) const;
  std::size_t size() const;
};

/// The backends one request may use, one byte per backend of the snapshot (the balancer reads it
/// as a span). Unrestricted (empty) means every backend. Owner: the request.
class BackendMask {
 public:
  BackendMask() = default;
  /// Restricted to exactly the backends `keep` is nonzero for.
  explicit BackendMask(std::span<const char> keep) : bits_(keep.begin(), keep.end()) {}
  /// Restricted to none of `count` backends (allow() adds them one by one).
  static BackendMask none(std::size_t count) {
    BackendMask m;
    m.bits_.assign(count, 0);
    return m;
  }
  bool restricted() const { return !bits_.empty(); }
  bool allows(std::uint32_t b) const { return bits_.empty() || bits_[b] != 0; }
  void allow(std::uint32_t b) { bits_[b] = 1; }
  /// Keeps only what both masks allow.
  void intersect(const BackendMask& other) {
    if (!other.restricted()) return;
    if (!restricted()) {
      bits_ = other.bits_;
      return;
    }
    for (std::size_t b = 0; b < bits_.size(); ++b) bits_[b] = bits_[b] != 0 && other.bits_[b] != 0;
  }
  std::span<const char> span() const { return {bits_.data(), bits_.size()}; }

 private:
  boost::container::small_vector<char, 32> bits_;
};

/// What one request's attempts did to each backend: the balancer skips the ones marked.
class TriedBackends {
 public:
  enum class Mark : char { kNone = 0, kFailed = 1, kThrottled = 2 };
  explicit TriedBackends(std::size_t count) : marks_(count, static_cast<char>(Mark::kNone)) {}
  void mark(std::uint32_t b, Mark m) { marks_[b] = static_cast<char>(m); }
  Mark at(std::uint32_t b) const { return static_cast<Mark>(marks_[b]); }
  std::span<const char> span() const { return {marks_.data(), marks_.size()}; }
  /// The backends a waiting request may still get: allowed, and not failed (one that throttled
  /// it is usable again after its cooldown).
  BackendMask usable(const BackendMask& allowed) const {
    auto m = BackendMask::none(marks_.size());
    for (std::uint32_t b = 0; b < marks_.size(); ++b) {
      if (allowed.allows(b) && at(b) != Mark::kFailed) m.allow(b);
    }
    return m;
  }

 private:
  boost::container::small_vector<char, 32> marks_;
};

/// What the balancer needs of each backend (indexed like the snapshot's backends).
struct Slot {
  BackendState* state = nullptr;
  std::uint32_t max_in_flight = 0;  // 0: no cap
};

/// Per-worker pseudo-random generator (xorshift64*), seeded by the worker; injectable in tests.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : s_(seed | 1) {}
  std::uint64_t next() {
    s_ ^= s_ >> 12;
    s_ ^= s_ << 25;
    s_ ^= s_ >> 27;
    return s_ * 0x2545F4914F6CDD1DULL;
  }
  std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : next() % n; }

 private:
  std::uint64_t s_;
};

struct PickRequest {
  TimeMs now = 0;
  std::int64_t need_tokens = 0;       // what the request is expected to use (0: unknown)
  std::span<const char> tried;        // tried[b] != 0: backend b already failed this request
  std::optional<std::uint32_t> only;  // pinned: this backend or nothing
  std::span<const char> allowed;      // allowed[b] == 0: not for this caller (regions); empty: all
};

/// A chosen backend with an in-flight slot taken; the caller must release the slot and report
/// the outcome (trial: this attempt is the breaker's half-open trial).
struct Lease {
  std::uint32_t backend = 0;
  std::uint32_t tier = 0;
  bool trial = false;
};

/// Picks a backend: the first tier with an available backend; within it, the backends whose
/// last remaining-quota report covers `need_tokens` are preferred, then power-of-two-choices by
/// in-flight requests per weight among them. nullopt: nothing available now.
/// Thread: any worker. Never blocks.
std::optional<Lease> pick(const Route& route, std::span<const Slot> slots, const PickRequest& req,
                          Rng& rng);

/// The earliest time any backend of the route can take work (now, if one can), or nullopt when
/// none says when (e.g. all failing their health probes). `busy_is_now`: see
/// BackendState::recovery.
std::optional<TimeMs> earliest_recovery(const Route& route, std::span<const Slot> slots, TimeMs now,
                                        std::optional<std::uint32_t> only = std::nullopt,
                                        std::span<const char> allowed = {}, bool busy_is_now = false);

/// Expected tokens of a request for the remaining-quota comparison: about 4 bytes per prompt
/// token plus the output allowance (max_tokens / max_completion_tokens / max_output_tokens, 16
/// when none) times max(n, best_of, 1).
std::int64_t expected_tokens(std::size_t body_bytes, std::int64_t max_output, std::int64_t choices);

}  // namespace tollgate::routing
