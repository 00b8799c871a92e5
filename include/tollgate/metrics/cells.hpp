#pragma once
// The cells a worker writes on the request path, and typed arrays of them. Every cell has exactly
// one writer (its worker) and is read by the scraper: relaxed atomics, incremented with
// load+store (no locked instruction). Labels are typed: an array of cells is indexed by the enum
// values of its label dimensions, and the scrape names them (see families.hpp).

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

namespace tollgate::metrics {

class Counter {
 public:
  void add(std::uint64_t n = 1) noexcept {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  std::uint64_t value() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

class Gauge {
 public:
  void add(std::int64_t n) noexcept {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  std::int64_t value() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> v_{0};
};

/// Latency bucket bounds in seconds (the +Inf bucket is implicit).
inline constexpr std::array<double, 17> kLatencyBounds = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};

class Histogram {
 public:
  static constexpr std::size_t kBuckets = kLatencyBounds.size() + 1;
  void observe_micros(std::int64_t us) noexcept;
  std::uint64_t bucket(std::size_t i) const noexcept { return buckets_[i].value(); }
  std::uint64_t sum_micros() const noexcept { return sum_us_.value(); }

 private:
  std::array<Counter, kBuckets> buckets_;
  Counter sum_us_;
};

/// A string usable as a template argument (a label's name).
template <std::size_t N>
struct FixedString {
  char text[N]{};
  constexpr FixedString(const char (&s)[N]) { std::copy_n(s, N, text); }  // NOLINT: implicit
  constexpr std::string_view view() const { return {text, N - 1}; }
};

/// A bounded index used as a label (a tier, a priority class rank): 0 .. N-1, named by the
/// scrape. `Tag` keeps ranks of different things apart.
template <class Tag, std::size_t N>
struct Rank {
  static constexpr std::size_t kCount = N;
  std::size_t value;
};

/// How many values a label type has: E::kCount (an enum's last enumerator, or a Rank's bound).
template <class E>
inline constexpr std::size_t kLabelSize = static_cast<std::size_t>(E::kCount);

template <class E>
constexpr std::size_t label_index(E v) noexcept {
  if constexpr (std::is_enum_v<E>) {
    return static_cast<std::size_t>(v);
  } else {
    return v.value;
  }
}

/// A label dimension: its name and the type of its values (an enum named by `to_string`, found
/// by argument-dependent lookup, or a Rank named by the scrape).
template <FixedString Name, class E>
struct Label {
  using Value = E;
  static constexpr std::string_view kName = Name.view();
  static constexpr std::size_t kSize = kLabelSize<E>;
};

/// One cell per combination of label values, indexed by typed values:
/// `cells.at(Scope::kTenant, Unit::kTokens).add()`. Thread: as the cell type.
template <class Cell, class... Labels>
class CellArray {
 public:
  static_assert(sizeof...(Labels) > 0);
  using CellType = Cell;
  static constexpr std::size_t kLabels = sizeof...(Labels);
  static constexpr std::size_t kSize = (std::size_t{1} * ... * Labels::kSize);

  Cell& at(typename Labels::Value... v) noexcept { return cells_[index(v...)]; }
  const Cell& at(typename Labels::Value... v) const noexcept { return cells_[index(v...)]; }
  using First = typename std::tuple_element_t<0, std::tuple<Labels...>>::Value;
  Cell& operator[](First v) noexcept requires(kLabels == 1) { return at(v); }
  const Cell& operator[](First v) const noexcept requires(kLabels == 1) { return at(v); }
  /// The cell at row-major position `i` (< kSize); the scrape walks them in this order.
  const Cell& flat(std::size_t i) const noexcept { return cells_[i]; }
  static constexpr std::array<std::string_view, kLabels> kNames{Labels::kName...};
  /// The names of the label values of position `i` (by `to_string`; not for Rank labels).
  static std::array<std::string_view, kLabels> value_names(std::size_t i) {
    return value_names(indices(i), std::index_sequence_for<Labels...>{});
  }
  /// The label values of position `i`, one per dimension.
  static std::array<std::size_t, kLabels> indices(std::size_t i) noexcept {
    std::array<std::size_t, kLabels> out{};
    constexpr std::array<std::size_t, kLabels> sizes{Labels::kSize...};
    for (std::size_t d = kLabels; d-- > 0;) {
      out[d] = i % sizes[d];
      i /= sizes[d];
    }
    return out;
  }

 private:
  template <std::size_t... D>
  static std::array<std::string_view, kLabels> value_names(
      const std::array<std::size_t, kLabels>& idx, std::index_sequence<D...>) {
    return {to_string(static_cast<typename Labels::Value>(idx[D]))...};
  }
  static constexpr std::size_t index(typename Labels::Value... v) noexcept {
    std::size_t i = 0;
    ((i = i * Labels::kSize + label_index(v)), ...);
    return i;
  }
  std::array<Cell, kSize> cells_{};
};

}  // namespace tollgate::metrics
