#include "tollgate/routing/signals.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <ctime>

namespace tollgate::routing {

namespace {

std::string_view trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

// A plain non-negative decimal ("12", "1.5"); no sign, exponent, inf or nan.
std::optional<double> non_negative(std::string_view v) {
  v = trim(v);
  if (v.empty() || v.size() > 32) return std::nullopt;
  bool dot = false;
  for (char c : v) {
    if (c == '.') {
      if (dot) return std::nullopt;
      dot = true;
    } else if (c < '0' || c > '9') {
      return std::nullopt;
    }
  }
  if (v.front() == '.' || v.back() == '.') return std::nullopt;
  double d = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
  if (ec != std::errc{} || ptr != v.data() + v.size() || !std::isfinite(d)) return std::nullopt;
  return d;
}

constexpr double kMaxMillis = 1e12;  // ~31 years: anything longer is nonsense, not a wait

std::optional<Millis> millis(double ms) {
  if (!(ms >= 0) || ms > kMaxMillis) return std::nullopt;
  return Millis(static_cast<std::int64_t>(std::ceil(ms)));
}

int month_index(std::string_view m) {
  static constexpr std::array<std::string_view, 12> kMonths = {
      "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  for (std::size_t i = 0; i < kMonths.size(); ++i) {
    if (m == kMonths[i]) return static_cast<int>(i);
  }
  return -1;
}

bool read_int(std::string_view s, int& out) {
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && ptr == s.data() + s.size();
}

bool read_time(std::string_view s, std::tm& tm) {  // "HH:MM:SS"
  return s.size() == 8 && s[2] == ':' && s[5] == ':' && read_int(s.substr(0, 2), tm.tm_hour) &&
         read_int(s.substr(3, 2), tm.tm_min) && read_int(s.substr(6, 2), tm.tm_sec) &&
         tm.tm_hour < 24 && tm.tm_min < 60 && tm.tm_sec <= 60;
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

}  // namespace

std::optional<Millis> parse_retry_after_ms(std::string_view v) {
  auto d = non_negative(v);
  if (!d) return std::nullopt;
  return millis(*d);
}

std::optional<std::int64_t> parse_http_date(std::string_view v) {
  v = trim(v);
  // Split on spaces (and the commas and dashes of the older forms).
  std::array<std::string_view, 6> parts;
  std::size_t n = 0;
  std::size_t i = 0;
  while (i < v.size() && n < parts.size()) {
    while (i < v.size() && v[i] == ' ') ++i;
    std::size_t start = i;
    while (i < v.size() && v[i] != ' ') ++i;
    if (i > start) parts[n++] = v.substr(start, i - start);
  }
  if (i < v.size()) return std::nullopt;
  std::tm tm{};
  if (n == 6 && parts[0].size() == 4 && parts[0][3] == ',' && parts[5] == "GMT") {
    // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    tm.tm_mon = month_index(parts[2]);
    if (!read_int(parts[1], tm.tm_mday) || !read_int(parts[3], tm.tm_year) ||
        !read_time(parts[4], tm)) {
      return std::nullopt;
    }
    tm.tm_year -= 1900;
  } else if (n == 4 && !parts[0].empty() && parts[0].back() == ',' && parts[3] == "GMT" &&
             parts[1].size() == 9 && parts[1][2] == '-' && parts[1][6] == '-') {
    // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
    tm.tm_mon = month_index(parts[1].substr(3, 3));
    if (!read_int(parts[1].substr(0, 2), tm.tm_mday) || !read_int(parts[1].substr(7, 2), tm.tm_year) ||
        !read_time(parts[2], tm)) {
      return std::nullopt;
    }
    if (tm.tm_year < 70) tm.tm_year += 100;
  } else if (n == 5 && parts[0].size() == 3) {
    // asctime: Sun Nov  6 08:49:37 1994
    tm.tm_mon = month_index(parts[1]);
    if (!read_int(parts[2], tm.tm_mday) || !read_time(parts[3], tm) ||
        !read_int(parts[4], tm.tm_year)) {
      return std::nullopt;
    }
    tm.tm_year -= 1900;
  } else {
    return std::nullopt;
  }
  if (tm.tm_mon < 0 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_year < 70 || tm.tm_year > 1100) {
    return std::nullopt;
  }
  auto t = timegm(&tm);
  if (t == static_cast<std::time_t>(-1)) return std::nullopt;
  return static_cast<std::int64_t>(t) * 1000;
}

std::optional<Millis> parse_retry_after(std::string_view v, std::int64_t now_unix_ms) {
  if (auto d = non_negative(v)) return millis(*d * 1000.0);
  auto at = parse_http_date(v);
  if (!at) return std::nullopt;
  return Millis(std::max<std::int64_t>(0, *at - now_unix_ms));
}

std::optional<Millis> parse_reset(std::string_view v) {
  v = trim(v);
  if (auto d = non_negative(v)) return millis(*d * 1000.0);
  // OpenAI's Go-style durations: "6m0s", "1h2m3.5s", "17ms".
  if (v.empty() || v.size() > 32) return std::nullopt;
  double total = 0;
  std::size_t i = 0;
  while (i < v.size()) {
    std::size_t start = i;
    while (i < v.size() && ((v[i] >= '0' && v[i] <= '9') || v[i] == '.')) ++i;
    auto number = non_negative(v.substr(start, i - start));
    if (!number || i == v.size()) return std::nullopt;
    std::size_t ustart = i;
    while (i < v.size() && v[i] >= 'a' && v[i] <= 'z') ++i;
    auto unit = v.substr(ustart, i - ustart);
    if (unit == "ms") {
      total += *number;
    } else if (unit == "s") {
      total += *number * 1000;
    } else if (unit == "m") {
      total += *number * 60'000;
    } else if (unit == "h") {
      total += *number * 3'600'000;
    } else {
      return std::nullopt;
    }
  }
  return millis(total);
}

std::optional<std::int64_t> parse_count(std::string_view v) {
  v = trim(v);
  if (v.empty() || v.size() > 18) return std::nullopt;
  std::int64_t n = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc{} || ptr != v.data() + v.size() || n < 0) return std::nullopt;
  return n;
}

std::optional<double> parse_utilization(std::string_view v) {
  v = trim(v);
  if (!v.empty() && v.back() == '%') v.remove_suffix(1);
  auto d = non_negative(v);
  if (!d || *d > 100000) return std::nullopt;
  return d;
}

std::optional<Millis> parse_body_retry_after(std::string_view body) {
  // Case-insensitive search for the two phrasings Azure uses, then the number after them.
  static constexpr std::array<std::string_view, 2> kPhrases = {"retry after ", "try again in "};
  constexpr std::size_t kScan = 4096;  // error messages are short; never scan a whole body
  body = body.substr(0, kScan);
  for (std::size_t i = 0; i < body.size(); ++i) {
    for (auto phrase : kPhrases) {
      if (body.size() - i < phrase.size()) continue;
      bool match = true;
      for (std::size_t k = 0; k < phrase.size() && match; ++k) {
        match = lower(body[i + k]) == phrase[k];
      }
      if (!match) continue;
      std::size_t start = i + phrase.size();
      std::size_t end = start;
      while (end < body.size() && ((body[end] >= '0' && body[end] <= '9') || body[end] == '.')) ++end;
      auto number = non_negative(body.substr(start, end - start));
      if (!number) continue;
      auto rest = body.substr(end, 8);
      while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
      if (rest.size() >= 6 && lower(rest[0]) == 's' && lower(rest[1]) == 'e' && lower(rest[2]) == 'c') {
        return millis(*number * 1000.0);
      }
      if (rest.size() >= 2 && lower(rest[0]) == 'm' && lower(rest[1]) == 's') return millis(*number);
    }
  }
  return std::nullopt;
}

Signals read_signals(const HeaderLookup& header, std::int64_t now_unix_ms) {
  Signals s;
  if (auto v = header("retry-after-ms"); !v.empty()) s.retry_after = parse_retry_after_ms(v);
  if (!s.retry_after) {
    if (auto v = header("x-ms-retry-after-ms"); !v.empty()) s.retry_after = parse_retry_after_ms(v);
  }
  if (!s.retry_after) {
    if (auto v = header("retry-after"); !v.empty()) s.retry_after = parse_retry_after(v, now_unix_ms);
  }
  if (auto v = header("x-ratelimit-reset-tokens"); !v.empty()) s.reset_tokens = parse_reset(v);
  if (!s.reset_tokens) {  // seen on Azure with an extra hyphen
    if (auto v = header("x-rate-limit-reset-tokens"); !v.empty()) s.reset_tokens = parse_reset(v);
  }
  if (auto v = header("x-ratelimit-reset-requests"); !v.empty()) s.reset_requests = parse_reset(v);
  if (auto v = header("x-ratelimit-remaining-tokens"); !v.empty()) {
    s.remaining_tokens = parse_count(v);
  }
  if (auto v = header("x-ratelimit-remaining-requests"); !v.empty()) {
    s.remaining_requests = parse_count(v);
  }
  if (auto v = header("azure-openai-deployment-utilization"); !v.empty()) {
    s.utilization = parse_utilization(v);
  }
  return s;
}

std::optional<Millis> throttle_hint(const Signals& s, std::string_view body) {
  if (s.retry_after) return s.retry_after;
  // A reset of 0 says nothing (Azure's -1/0 placeholders on the Responses API). Tokens first:
  // the token window is what Azure's 429s are mostly about.
  if (s.reset_tokens && s.reset_tokens->count() > 0) return s.reset_tokens;
  if (s.reset_requests && s.reset_requests->count() > 0) return s.reset_requests;
  return parse_body_retry_after(body);
}

}  // namespace tollgate::routing
