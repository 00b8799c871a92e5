#pragma once
// Reconnect delays: exponential with jitter, bounded. Randomness is injected (a seed), so tests
// are exact. Thread: its owner only.

#include <chrono>
#include <cstdint>
#include <random>

namespace tollgate::cluster {

struct BackoffOptions {
  std::chrono::milliseconds initial{50};
  std::chrono::milliseconds max{2000};
};

class Backoff {
 public:
  Backoff(BackoffOptions options, std::uint64_t seed) : options_(options), rng_(seed) {}

  /// The delay before the next attempt: initial × 2^(failures so far), at most `max`, drawn
  /// uniformly from its upper half (so replicas that lost Redis together do not retry together).
  std::chrono::milliseconds next() {
    auto ceiling = options_.initial;
    for (std::uint32_t i = 0; i < attempts_ && ceiling < options_.max; ++i) ceiling *= 2;
    ceiling = std::min(ceiling, options_.max);
    if (attempts_ < kMaxDoublings) ++attempts_;
    auto low = ceiling.count() / 2;
    std::uniform_int_distribution<std::int64_t> pick(low, ceiling.count());
    return std::chrono::milliseconds(pick(rng_));
  }
  /// A connection succeeded: the next failure starts from `initial` again.
  void reset() { attempts_ = 0; }

 private:
  static constexpr std::uint32_t kMaxDoublings = 32;
  BackoffOptions options_;
  std::mt19937_64 rng_;
  std::uint32_t attempts_ = 0;
};

}  // namespace tollgate::cluster
