// The capacity-header parsers: every variant Azure and OpenAI send, and garbage.
#include "tollgate/routing/signals.hpp"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace tollgate::routing {
namespace {

using namespace std::chrono_literals;

TEST(RetryAfterMs, AcceptsWholeAndFractionalMilliseconds) {
  EXPECT_EQ(parse_retry_after_ms("1500"), 1500ms);
  EXPECT_EQ(parse_retry_after_ms(" 250 "), 250ms);
  EXPECT_EQ(parse_retry_after_ms("0"), 0ms);
  EXPECT_EQ(parse_retry_after_ms("12.2"), 13ms);  // rounded up: never early
}

TEST(RetryAfterMs, RejectsGarbage) {
  for (const char* v : {"", "-1", "-0.5", "abc", "1e3", "1,5", "nan", "inf", "12ms", ".5", "5.",
                        "1.2.3", "99999999999999999999999999"}) {
    EXPECT_FALSE(parse_retry_after_ms(v)) << v;
  }
}

TEST(RetryAfter, SecondsAndFractions) {
  EXPECT_EQ(parse_retry_after("2", 0), 2000ms);
  EXPECT_EQ(parse_retry_after("0.5", 0), 500ms);
  EXPECT_EQ(parse_retry_after("86400", 0), 86'400'000ms);
}

TEST(RetryAfter, HttpDatesInAllThreeForms) {
  // Sun, 06 Nov 1994 08:49:37 GMT = 784111777 s.
  const std::int64_t at = 784111777LL * 1000;
  EXPECT_EQ(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), at);
  EXPECT_EQ(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), at);
  EXPECT_EQ(parse_http_date("Sun Nov  6 08:49:37 1994"), at);
  EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at - 3000), 3000ms);
  EXPECT_EQ(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at + 3000), 0ms);  // in the past
}

TEST(RetryAfter, RejectsMalformedDates) {
  for (const char* v : {"Sun, 06 Nov 1994 08:49:37", "Sun, 06 Foo 1994 08:49:37 GMT",
                        "Sun, 32 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 25:49:37 GMT",
                        "Sun, 06 Nov 1994 08:49 GMT", "tomorrow", "-5", "Sun, 06 Nov 1994 08:49:37 GMT x"}) {
    EXPECT_FALSE(parse_retry_after(v, 0)) << v;
  }
}

TEST(Reset, AzureSecondsAndOpenAIDurations) {
  EXPECT_EQ(parse_reset("55"), 55'000ms);
  EXPECT_EQ(parse_reset("1.5"), 1500ms);
  EXPECT_EQ(parse_reset("6m0s"), 360'000ms);
  EXPECT_EQ(parse_reset("17ms"), 17ms);
  EXPECT_EQ(parse_reset("1h2m3.5s"), 3'723'500ms);
  EXPECT_EQ(parse_reset("1s"), 1000ms);
  for (const char* v : {"", "-1", "5x", "m", "s5", "1 s", "1d"}) EXPECT_FALSE(parse_reset(v)) << v;
}

TEST(Count, NonNegativeWholeNumbersOnly) {
  EXPECT_EQ(parse_count("61353"), 61353);
  EXPECT_EQ(parse_count("0"), 0);
  for (const char* v : {"-1", "", "1.5", "12a", "9999999999999999999999"}) {
    EXPECT_FALSE(parse_count(v)) << v;
  }
}

TEST(Utilization, PercentWithOrWithoutSign) {
  EXPECT_DOUBLE_EQ(*parse_utilization("87.5%"), 87.5);
  EXPECT_DOUBLE_EQ(*parse_utilization("102"), 102);
  for (const char* v : {"", "%", "-3%", "abc%", "1e2%"}) EXPECT_FALSE(parse_utilization(v)) << v;
}

TEST(BodyRetryAfter, AzureMessages) {
  EXPECT_EQ(parse_body_retry_after(
                R"({"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-08-01-preview have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 86400 seconds. Please go here: https://aka.ms/oai/quotaincrease"}})"),
            86'400'000ms);
  EXPECT_EQ(parse_body_retry_after("Rate limit is exceeded. Try again in 50 seconds."), 50'000ms);
  EXPECT_EQ(parse_body_retry_after("... Please retry after 1 second."), 1000ms);
  EXPECT_EQ(parse_body_retry_after("RETRY AFTER 6 SECONDS"), 6000ms);
  EXPECT_FALSE(parse_body_retry_after("Please retry after some time."));
  EXPECT_FALSE(parse_body_retry_after("retry after 5 minutes"));
  EXPECT_FALSE(parse_body_retry_after(""));
}

TEST(ReadSignals, PrefersRetryAfterMsAndIgnoresAzurePlaceholders) {
  std::map<std::string, std::string> h = {{"retry-after-ms", "1500"},
                                          {"retry-after", "9"},
                                          {"x-ratelimit-remaining-tokens", "-1"},
                                          {"x-ratelimit-remaining-requests", "79"},
                                          {"x-ratelimit-reset-tokens", "0"},
                                          {"azure-openai-deployment-utilization", "87.5%"}};
  auto lookup = [&h](std::string_view name) -> std::string_view {
    auto it = h.find(std::string(name));
    return it == h.end() ? std::string_view() : std::string_view(it->second);
  };
  auto s = read_signals(lookup, 0);
  EXPECT_EQ(s.retry_after, 1500ms);
  EXPECT_FALSE(s.remaining_tokens);  // -1 is "unknown", never "none left"
  EXPECT_EQ(s.remaining_requests, 79);
  EXPECT_DOUBLE_EQ(*s.utilization, 87.5);
  EXPECT_EQ(throttle_hint(s, ""), 1500ms);

  h.erase("retry-after-ms");
  s = read_signals(lookup, 0);
  EXPECT_EQ(throttle_hint(s, ""), 9000ms);

  h.erase("retry-after");
  s = read_signals(lookup, 0);
  EXPECT_FALSE(throttle_hint(s, ""));  // reset 0 says nothing
  EXPECT_EQ(throttle_hint(s, "Please retry after 4 seconds."), 4000ms);

  h["x-rate-limit-reset-tokens"] = "55";  // Azure's spelling with the extra hyphen
  h.erase("x-ratelimit-reset-tokens");
  s = read_signals(lookup, 0);
  EXPECT_EQ(throttle_hint(s, "Please retry after 4 seconds."), 55'000ms);
}

TEST(ReadSignals, BadRetryAfterMsFallsBackToRetryAfter) {
  std::map<std::string, std::string> h = {{"retry-after-ms", "-5"}, {"retry-after", "3"}};
  auto lookup = [&h](std::string_view name) -> std::string_view {
    auto it = h.find(std::string(name));
    return it == h.end() ? std::string_view() : std::string_view(it->second);
  };
  EXPECT_EQ(read_signals(lookup, 0).retry_after, 3000ms);
}

}  // namespace
}  // namespace tollgate::routing
