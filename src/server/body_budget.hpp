#pragma once
// The gateway-wide bound on request bytes held in memory (server.limits.max_buffered_bytes):
// a request takes its body's size from the budget before the body is read and gives it back when
// the request ends. Past the bound a new body is refused (503, retry-after) instead of read, so
// many slow or large uploads cannot exhaust memory.
// Thread: any (atomic counters; a take is one compare-and-swap loop). Lifetime: the gateway's; a
// BodyBudget::Hold must not outlive its budget (requests end before the gateway stops).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace tollgate::server {

class BodyBudget {
 public:
  explicit BodyBudget(std::size_t limit) : limit_(limit) {}
  BodyBudget(const BodyBudget&) = delete;
  BodyBudget& operator=(const BodyBudget&) = delete;

  /// Bytes taken from the budget; given back on destruction. Empty (bytes() == 0) when nothing
  /// was taken.
  class Hold {
   public:
    Hold() = default;
    Hold(Hold&& o) noexcept : budget_(std::exchange(o.budget_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
    Hold& operator=(Hold&& o) noexcept {
      if (this != &o) {
        release();
        budget_ = std::exchange(o.budget_, nullptr);
        bytes_ = std::exchange(o.bytes_, 0);
      }
      return *this;
    }
    ~Hold() { release(); }
    std::size_t bytes() const { return bytes_; }

   private:
    friend class BodyBudget;
    void release() {
      if (budget_ != nullptr) budget_->held_.fetch_sub(bytes_, std::memory_order_relaxed);
      budget_ = nullptr;
      bytes_ = 0;
    }
    BodyBudget* budget_ = nullptr;
    std::size_t bytes_ = 0;
  };

  /// Adds `bytes` to `into` when they fit under the limit (zero bytes always fit); counts a
  /// refusal otherwise. `into` is empty or a hold of this budget (a chunked body grows its hold).
  bool take(std::size_t bytes, Hold& into) {
    if (bytes == 0) return true;
    auto limit = limit_.load(std::memory_order_relaxed);
    auto held = held_.load(std::memory_order_relaxed);
    do {
      if (bytes > limit || held > limit - bytes) {
        refused_.fetch_add(1, std::memory_order_relaxed);
        return false;
      }
    } while (!held_.compare_exchange_weak(held, held + bytes, std::memory_order_relaxed));
    into.budget_ = this;
    into.bytes_ += bytes;
    return true;
  }

  /// Writer: the control thread (config reload). Holds taken under the old limit stay.
  void set_limit(std::size_t limit) { limit_.store(limit, std::memory_order_relaxed); }
  /// Readers: the metrics renderer (control thread).
  std::size_t held() const { return held_.load(std::memory_order_relaxed); }
  std::uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::size_t> limit_;
  std::atomic<std::size_t> held_{0};
  std::atomic<std::uint64_t> refused_{0};
};

}  // namespace tollgate::server
