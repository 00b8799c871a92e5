// The usage report's query parser and renderings (GET /admin/usage), without a ledger.

#include "usage/report.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace tollgate::usage {
namespace {

// 2026-11-15T12:30:00Z
constexpr std::int64_t kNow = 1'794'745'800'000;
constexpr std::int64_t kNovember = 1'793'491'200'000;   // 2026-11-01T00:00:00Z
constexpr std::int64_t kDecember = 1'796'083'200'000;   // 2026-12-01T00:00:00Z

ReportQuery parsed(std::string_view query) {
  auto r = parse_report_query(query, kNow);
  if (auto* e = std::get_if<ReportQueryError>(&r)) ADD_FAILURE() << query << ": " << e->message;
  return std::holds_alternative<ReportQuery>(r) ? std::get<ReportQuery>(r) : ReportQuery{};
}

std::string refused(std::string_view query) {
  auto r = parse_report_query(query, kNow);
  if (auto* e = std::get_if<ReportQueryError>(&r)) return e->message;
  ADD_FAILURE() << query << ": accepted";
  return {};
}

TEST(ReportQueryTest, DefaultsToClientsAsJsonFromTheStartOfTheUtcMonthToNow) {
  auto q = parsed("");
  EXPECT_EQ(q.group, GroupBy::kClient);
  EXPECT_EQ(q.format, ReportFormat::kJson);
  EXPECT_EQ(q.from_ms, kNovember);
  EXPECT_EQ(q.to_ms, kNow + 1);  // now is included
}

TEST(ReportQueryTest, ReadsEveryGroupBy) {
  EXPECT_EQ(parsed("group_by=tenant").group, GroupBy::kTenant);
  EXPECT_EQ(parsed("group_by=client").group, GroupBy::kClient);
  EXPECT_EQ(parsed("group_by=deployment").group, GroupBy::kDeployment);
  EXPECT_EQ(parsed("group_by=backend").group, GroupBy::kBackend);
  EXPECT_EQ(parsed("group_by=replica").group, GroupBy::kReplica);
  EXPECT_EQ(refused("group_by=model"), "group_by must be tenant, client, deployment, backend or replica.");
}

TEST(ReportQueryTest, ReadsTheScopeFleetByDefault) {
  EXPECT_EQ(parsed("").scope, ReportScope::kFleet);
  EXPECT_EQ(parsed("scope=fleet").scope, ReportScope::kFleet);
  EXPECT_EQ(parsed("scope=local&group_by=replica").scope, ReportScope::kLocal);
  EXPECT_EQ(refused("scope=all"), "scope must be fleet or local.");
}

TEST(ReportQueryTest, ReadsDatesRfc3339AndUnixSeconds) {
  for (auto query : {"from=2026-11-01&to=2026-12-01",
                     "from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z",
                     "from=1793491200&to=1796083200"}) {
    auto q = parsed(query);
    EXPECT_EQ(q.from_ms, kNovember) << query;
    EXPECT_EQ(q.to_ms, kDecember) << query;
  }
}

TEST(ReportQueryTest, DecodesPercentEscapesAndPlus) {
  auto q = parsed("group%5Fby=deployment&from=2026-11-01T00%3A00%3A00Z&%66ormat=csv");
  EXPECT_EQ(q.group, GroupBy::kDeployment);
  EXPECT_EQ(q.from_ms, kNovember);
  EXPECT_EQ(q.format, ReportFormat::kCsv);
  EXPECT_EQ(percent_decode("a+b%20c%2b"), "a b c+");
}

TEST(ReportQueryTest, SkipsEmptyPairs) {
  EXPECT_EQ(parsed("&&group_by=tenant&").group, GroupBy::kTenant);
}

TEST(ReportQueryTest, RefusesBadInputWithAClearMessage) {
  EXPECT_EQ(refused("from=yesterday"),
            "from must be a date (2026-11-01), an RFC 3339 time (2026-11-01T00:00:00Z) or unix "
            "seconds.");
  EXPECT_EQ(refused("to=2026-13-01"),
            "to must be a date (2026-11-01), an RFC 3339 time (2026-11-01T00:00:00Z) or unix "
            "seconds.");
  EXPECT_EQ(refused("format=xml"), "format must be json or csv.");
  EXPECT_EQ(refused("limit=10"), "Unknown parameter 'limit'.");
  EXPECT_EQ(refused("group_by"), "group_by must be tenant, client, deployment, backend or replica.");
  EXPECT_EQ(refused("from=2026-12-01&to=2026-11-01"), "from must not be after to.");
  EXPECT_EQ(refused("group_by=%zz"), "The query string is malformed.");
  EXPECT_EQ(refused("group_by=client%2"), "The query string is malformed.");
}

TEST(ReportQueryTest, ParseReportTimeRefusesWhatIsNotATime) {
  EXPECT_EQ(parse_report_time("0"), 0);
  EXPECT_EQ(parse_report_time("2026-11-01"), kNovember);
  EXPECT_EQ(parse_report_time(""), std::nullopt);
  EXPECT_EQ(parse_report_time("1234567890123"), std::nullopt);  // 13 digits: not seconds
  EXPECT_EQ(parse_report_time("-1"), std::nullopt);
  EXPECT_EQ(parse_report_time("2026-11-01T00:00:00"), std::nullopt);  // no offset
}

TEST(PercentDecodeTest, RefusesTruncatedOrNonHexEscapes) {
  EXPECT_EQ(percent_decode("%"), std::nullopt);
  EXPECT_EQ(percent_decode("%4"), std::nullopt);
  EXPECT_EQ(percent_decode("%g0"), std::nullopt);
  EXPECT_EQ(percent_decode("%41%42"), "AB");
}

Row row(std::string key, std::int64_t requests, std::int64_t cost_nano_usd) {
  Row r;
  r.key = std::move(key);
  r.requests = requests;
  r.prompt_tokens = 28;
  r.completion_tokens = 40;
  r.cached_tokens = 4;
  r.reasoning_tokens = 2;
  r.cost_nano_usd = cost_nano_usd;
  r.estimated_requests = 1;
  return r;
}

TEST(ReportCsvTest, QuotesFieldsWithCommasQuotesAndLineBreaks) {
  EXPECT_EQ(csv_field("plain"), "plain");
  EXPECT_EQ(csv_field("a,b"), "\"a,b\"");
  EXPECT_EQ(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(csv_field("two\r\nlines"), "\"two\r\nlines\"");
  EXPECT_EQ(csv_field("lf\nonly"), "\"lf\nonly\"");
  EXPECT_EQ(csv_field(""), "");
}

TEST(ReportCsvTest, WritesTheHeaderAndOneCrlfLinePerRow) {
  auto csv = render_csv({row("ana", 4, 470'000), row("team, \"x\"", 1, 9'352'500)});
  EXPECT_EQ(csv,
            "key,requests,prompt_tokens,completion_tokens,cached_tokens,reasoning_tokens,cost_usd,"
            "estimated_requests\r\n"
            "ana,4,28,40,4,2,0.000470000,1\r\n"
            "\"team, \"\"x\"\"\",1,28,40,4,2,0.009352500,1\r\n");
  EXPECT_EQ(render_csv({}),
            "key,requests,prompt_tokens,completion_tokens,cached_tokens,reasoning_tokens,cost_usd,"
            "estimated_requests\r\n");
}

TEST(ReportJsonTest, HasTheWindowTheGroupingAndOneObjectPerRow) {
  ReportQuery q{GroupBy::kTenant, kNovember, kDecember, ReportFormat::kJson};
  auto body = nlohmann::json::parse(render_json(q, {row("eng", 4, 470'000)}));
  EXPECT_EQ(body, nlohmann::json::parse(R"({
    "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "group_by": "tenant",
    "rows": [{"key": "eng", "requests": 4, "prompt_tokens": 28, "completion_tokens": 40,
              "cached_tokens": 4, "reasoning_tokens": 2, "cost_usd": 0.00047,
              "estimated_requests": 1}]})"));
  EXPECT_EQ(nlohmann::json::parse(render_json(q, {}))["rows"], nlohmann::json::array());
}

TEST(ReportRenderTest, ChoosesTheContentTypeByFormat) {
  ReportQuery q{GroupBy::kClient, kNovember, kDecember, ReportFormat::kCsv};
  auto csv = render_report(q, {});
  EXPECT_EQ(csv.content_type, "text/csv; charset=utf-8");
  EXPECT_EQ(csv.body, render_csv({}));
  q.format = ReportFormat::kJson;
  auto json = render_report(q, {});
  EXPECT_EQ(json.content_type, "application/json");
  EXPECT_EQ(json.body, render_json(q, {}));
}

}  // namespace
}  // namespace tollgate::usage
