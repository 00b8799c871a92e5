#pragma once
// A tiny append-only JSON object writer for log lines: cheaper than building a json value.

#include <cstdint>
#include <string>
#include <string_view>

#include "tollgate/core/errors.hpp"

namespace tollgate::core {

/// Nano-USD as an exact decimal amount in USD with 9 decimals ("0.000470000").
inline std::string usd_decimal(std::int64_t nano_usd) {
  std::string out;
  if (nano_usd < 0) {
    out += '-';
    nano_usd = -nano_usd;
  }
  out += std::to_string(nano_usd / 1'000'000'000);
  out += '.';
  auto frac = std::to_string(nano_usd % 1'000'000'000);
  out.append(9 - frac.size(), '0');
  out += frac;
  return out;
}

class JsonFields {
 public:
  JsonFields& add(std::string_view key, std::string_view value) {
    key_(key);
    out_ += '"';
    json_escape(out_, value);
    out_ += '"';
    return *this;
  }
  JsonFields& add(std::string_view key, const char* value) { return add(key, std::string_view(value)); }
  JsonFields& add(std::string_view key, const std::string& value) {
    return add(key, std::string_view(value));
  }
  JsonFields& add(std::string_view key, std::int64_t value) {
    key_(key);
    out_ += std::to_string(value);
    return *this;
  }
  JsonFields& add(std::string_view key, std::uint64_t value) {
    key_(key);
    out_ += std::to_string(value);
    return *this;
  }
  JsonFields& add(std::string_view key, int value) { return add(key, static_cast<std::int64_t>(value)); }
  JsonFields& add(std::string_view key, unsigned value) {
    return add(key, static_cast<std::uint64_t>(value));
  }
  JsonFields& add(std::string_view key, bool value) {
    key_(key);
    out_ += value ? "true" : "false";
    return *this;
  }
  /// Milliseconds with microsecond precision.
  JsonFields& add_ms(std::string_view key, std::int64_t micros) {
    key_(key);
    if (micros < 0) micros = 0;
    out_ += std::to_string(micros / 1000);
    out_ += '.';
    auto frac = std::to_string(micros % 1000);
    out_.append(3 - frac.size(), '0');
    out_ += frac;
    return *this;
  }
  /// An amount in USD from nano-USD, exactly (9 decimals).
  JsonFields& add_usd(std::string_view key, std::int64_t nano_usd) {
    key_(key);
    out_ += usd_decimal(nano_usd);
    return *this;
  }
  JsonFields& add_raw(std::string_view key, std::string_view json) {
    key_(key);
    out_ += json;
    return *this;
  }
  /// The fields without braces ("a":1,"b":"x").
  const std::string& fields() const { return out_; }
  std::string object() const { return "{" + out_ + "}"; }

 private:
  void key_(std::string_view key) {
    if (!out_.empty()) out_ += ',';
    out_ += '"';
    out_ += key;
    out_ += "\":";
  }
  std::string out_;
};

}  // namespace tollgate::core
