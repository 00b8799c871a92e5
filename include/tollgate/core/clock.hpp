#pragma once
// The one place for time. Every module reads the clocks through these functions, and the request
// pipeline through a `Clock` it is given, so tests run on a fake clock without sleeping.
// Thread: any. No state.

#include <chrono>
#include <cstdint>
#include <string>

namespace tollgate::core {

using SteadyClock = std::chrono::steady_clock;
using TimeMs = std::int64_t;  // steady-clock milliseconds (routing, queues, cooldowns)
using Nanos = std::int64_t;   // steady-clock nanoseconds (token buckets)
using UnixMs = std::int64_t;  // wall-clock milliseconds since the epoch, UTC (budgets, ledger)

inline TimeMs steady_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now().time_since_epoch())
      .count();
}
inline Nanos steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now().time_since_epoch())
      .count();
}
inline UnixMs unix_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
inline std::int64_t unix_now_seconds() { return unix_now_ms() / 1000; }
inline std::int64_t micros_since(SteadyClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(SteadyClock::now() - t).count();
}

/// "2026-12-03T09:05:07.123Z" for a wall-clock time.
std::string utc_iso(UnixMs t);

/// The clocks a request's pipeline reads, injectable. The system clock is the default; tests
/// pass a FakeClock (tests/unit/pipeline/stage_env.hpp) and move time by hand.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimeMs steady_ms() const { return steady_now_ms(); }
  virtual Nanos steady_ns() const { return steady_now_ns(); }
  virtual UnixMs unix_ms() const { return unix_now_ms(); }
  std::int64_t unix_seconds() const { return unix_ms() / 1000; }
};

/// The process's real clock.
const Clock& system_clock();

}  // namespace tollgate::core
