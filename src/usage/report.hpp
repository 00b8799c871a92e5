#pragma once
// The usage report (GET /admin/usage): its query string and its CSV and JSON renderings, as pure
// functions. The admin listener reads the ledger (usage::totals) and sends what these return.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "tollgate/usage/ledger.hpp"

namespace tollgate::usage {

enum class ReportFormat : std::uint8_t { kJson, kCsv };

/// Whose records a report sums: the fleet's (PostgreSQL, when usage.postgres is set) or this
/// replica's spool.
enum class ReportScope : std::uint8_t { kFleet, kLocal };

/// GET /admin/usage?group_by=tenant|client|deployment|backend|replica&from=&to=&format=json|csv
///   &scope=fleet|local
struct ReportQuery {
  GroupBy group = GroupBy::kClient;
  std::int64_t from_ms = 0;  // unix ms, inclusive
  std::int64_t to_ms = 0;    // unix ms, exclusive
  ReportFormat format = ReportFormat::kJson;
  ReportScope scope = ReportScope::kFleet;
};

/// A query the report refuses; `message` is written for the caller (a 400's message).
struct ReportQueryError {
  std::string message;
};

/// Parses the query string (after '?', still percent-encoded). Defaults: group_by=client, from
/// the start of the UTC month of `now_ms`, to `now_ms` (included), JSON. Unknown parameters,
/// bad values and from after to are errors.
std::variant<ReportQuery, ReportQueryError> parse_report_query(std::string_view query,
                                                               std::int64_t now_ms);

/// "2026-11-01" (UTC midnight), "2026-11-01T00:00:00Z" (RFC 3339) or unix seconds -> unix ms;
/// nullopt for anything else.
std::optional<std::int64_t> parse_report_time(std::string_view text);

/// application/x-www-form-urlencoded text -> its value ('+' is a space); nullopt on a bad escape.
std::optional<std::string> percent_decode(std::string_view in);

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break.
std::string csv_field(std::string_view value);

/// The rows as CSV: a header line, then one line per row, CRLF line ends, cost in USD with 9
/// decimals.
std::string render_csv(const std::vector<Row>& rows);

/// The report as JSON: {"from", "to" (RFC 3339), "group_by", "rows": [{key, requests,
/// prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, cost_usd,
/// estimated_requests}]}.
std::string render_json(const ReportQuery& query, const std::vector<Row>& rows);

/// The report in the query's format.
struct RenderedReport {
  std::string_view content_type;
  std::string body;
};
RenderedReport render_report(const ReportQuery& query, const std::vector<Row>& rows);

}  // namespace tollgate::usage
