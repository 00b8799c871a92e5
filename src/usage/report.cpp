#include "usage/report.hpp"

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>

#include "tollgate/crypto/crypto.hpp"
#include "tollgate/core/json_fields.hpp"
#include "tollgate/ratelimit/budget.hpp"

namespace tollgate::usage {

namespace {

constexpr std::size_t kMaxUnixSecondsDigits = 12;  // beyond year 30000: not a report window
constexpr std::string_view kCsvHeader =
    "key,requests,prompt_tokens,completion_tokens,cached_tokens,reasoning_tokens,cost_usd,"
    "estimated_requests\r\n";

bool all_digits(std::string_view t) {
  return !t.empty() && std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Applies one decoded parameter to `q`; returns the error message when it is refused.
std::optional<std::string> apply(ReportQuery& q, const std::string& key, const std::string& value) {
  if (key == "group_by") {
    auto g = parse_group_by(value);
    if (!g) return "group_by must be tenant, client, deployment, backend or replica.";
    q.group = *g;
  } else if (key == "scope") {
    if (value != "fleet" && value != "local") return "scope must be fleet or local.";
    q.scope = value == "local" ? ReportScope::kLocal : ReportScope::kFleet;
  } else if (key == "from" || key == "to") {
    auto t = parse_report_time(value);
    if (!t) {
      return key +
             " must be a date (2026-11-01), an RFC 3339 time (2026-11-01T00:00:00Z) or unix "
             "seconds.";
    }
    (key == "from" ? q.from_ms : q.to_ms) = *t;
  } else if (key == "format") {
    if (value != "json" && value != "csv") return "format must be json or csv.";
    q.format = value == "csv" ? ReportFormat::kCsv : ReportFormat::kJson;
  } else {
    return "Unknown parameter '" + key + "'.";
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::int64_t> parse_report_time(std::string_view text) {
  if (all_digits(text) && text.size() <= kMaxUnixSecondsDigits) {
    std::int64_t secs = 0;
    if (std::from_chars(text.data(), text.data() + text.size(), secs).ec != std::errc{}) {
      return std::nullopt;
    }
    return secs * 1000;
  }
  std::string t(text);
  if (t.size() == std::string_view("2026-11-01").size()) t += "T00:00:00Z";
  auto secs = crypto::parse_rfc3339(t);
  if (!secs) return std::nullopt;
  return *secs * 1000;
}

// Not Boost.URL's params views: with Debian's libboost-url 1.81 their decoded values came out
// wrong here and params_view's converting constructor is missing from the shared library.
std::optional<std::string> percent_decode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '+') {
      out += ' ';
    } else if (c == '%') {
      unsigned v = 0;
      if (i + 2 >= in.size()) return std::nullopt;
      auto [p, ec] = std::from_chars(in.data() + i + 1, in.data() + i + 3, v, 16);
      if (ec != std::errc{} || p != in.data() + i + 3) return std::nullopt;
      out += static_cast<char>(v);
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

std::variant<ReportQuery, ReportQueryError> parse_report_query(std::string_view query,
                                                               std::int64_t now_ms) {
  ReportQuery q;
  q.from_ms = ratelimit::period_start(ratelimit::Period::kMonth, now_ms);
  q.to_ms = now_ms + 1;
  while (!query.empty()) {
    auto amp = query.find('&');
    auto pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    auto eq = pair.find('=');
    auto key = percent_decode(pair.substr(0, eq));
    auto value = eq == std::string_view::npos ? std::optional<std::string>("")
                                              : percent_decode(pair.substr(eq + 1));
    if (!key || !value) return ReportQueryError{"The query string is malformed."};
    if (auto refused = apply(q, *key, *value)) return ReportQueryError{std::move(*refused)};
  }
  if (q.from_ms > q.to_ms) return ReportQueryError{"from must not be after to."};
  return q;
}

std::string csv_field(std::string_view value) {
  if (value.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(value);
  std::string out = "\"";
  for (char c : value) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string render_csv(const std::vector<Row>& rows) {
  std::string out(kCsvHeader);
  for (const auto& r : rows) {
    out += csv_field(r.key) + "," + std::to_string(r.requests) + "," +
           std::to_string(r.prompt_tokens) + "," + std::to_string(r.completion_tokens) + "," +
           std::to_string(r.cached_tokens) + "," + std::to_string(r.reasoning_tokens) + "," +
           core::usd_decimal(r.cost_nano_usd) + "," + std::to_string(r.estimated_requests) + "\r\n";
  }
  return out;
}

std::string render_json(const ReportQuery& query, const std::vector<Row>& rows) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& r : rows) {
    list.push_back({{"key", r.key},
                    {"requests", r.requests},
                    {"prompt_tokens", r.prompt_tokens},
                    {"completion_tokens", r.completion_tokens},
                    {"cached_tokens", r.cached_tokens},
                    {"reasoning_tokens", r.reasoning_tokens},
                    {"cost_usd", static_cast<double>(r.cost_nano_usd) / 1e9},
                    {"estimated_requests", r.estimated_requests}});
  }
  nlohmann::json body{{"from", crypto::format_rfc3339(query.from_ms / 1000)},
                      {"to", crypto::format_rfc3339(query.to_ms / 1000)},
                      {"group_by", to_string(query.group)},
                      {"rows", std::move(list)}};
  return body.dump();
}

RenderedReport render_report(const ReportQuery& query, const std::vector<Row>& rows) {
  if (query.format == ReportFormat::kCsv) return {"text/csv; charset=utf-8", render_csv(rows)};
  return {"application/json", render_json(query, rows)};
}

}  // namespace tollgate::usage
