#pragma once
// A value or an error message: how the tokenizer module reports failures (no exceptions cross
// its interface on the request path).

#include <string>
#include <utility>
#include <variant>

namespace tollgate::tokenize {

/// A human-readable failure description, ready to be logged or printed as-is.
struct Error {
  std::string message;
};

/// Holds either a `T` or an `Error`. Accessing the wrong alternative is a programming error
/// (checked by std::get, which throws std::bad_variant_access).
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit on purpose
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

}  // namespace tollgate::tokenize
