// The body scanner: what it accepts (RFC 8259, lone surrogates, long numbers), what it refuses
// (bad grammar, bad UTF-8, depth, duplicate read members), the fields and spans it reports
// (equal to nlohmann's reading), and the byte splices of BodyEdits.
#include "tollgate/core/json_scan.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

using namespace tollgate::core;

namespace {

bool accepts(std::string_view body) {
  return !scan_body(body).error;
}

ScanErrorKind refusal(std::string_view body, ScanLimits limits = {}) {
  auto s = scan_body(body, limits);
  EXPECT_TRUE(s.error) << body;
  return s.error ? s.error->kind : ScanErrorKind::kSyntax;
}

std::string nested(std::size_t depth) {
  std::string s = R"({"a":)";
  for (std::size_t i = 1; i < depth; ++i) s += '[';
  s += '1';
  for (std::size_t i = 1; i < depth; ++i) s += ']';
  return s + '}';
}

TEST(JsonScan, AcceptsValidJson) {
  for (std::string_view body :
       {R"({})", R"( { } )", "\xEF\xBB\xBF{}", R"({"a":[1,-0,0.5,-1.5e+10,2E-3,true,false,null]})",
        R"({"s":"\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00"})",
        "{\"u\":\"h\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80\"}",
        R"({"lone":"\ud800","low":"\udc00x","pair_then_lone":"\ud83d\ude00\ud83d"})",
        "\t{\r\n\"a\" : { \"b\" : [ ] } }\n", R"({"a":{},"a":{}})"}) {
    EXPECT_TRUE(accepts(body)) << body;
  }
  EXPECT_TRUE(accepts("{\"n\":" + std::string(5000, '9') + "}"));
  EXPECT_TRUE(accepts(R"({"n":1e999999})"));
}

TEST(JsonScan, RefusesInvalidJson) {
  for (std::string_view body : {"",
                                " ",
                                "{",
                                "}",
                                R"({"a"})",
                                R"({"a":})",
                                R"({"a":1,})",
                                R"({,"a":1})",
                                R"({"a":1}x)",
                                R"({"a":1}{})",
                                R"({'a':1})",
                                R"({a:1})",
                                R"({"a":01})",
                                R"({"a":1.})",
                                R"({"a":.5})",
                                R"({"a":-})",
                                R"({"a":1e})",
                                R"({"a":+1})",
                                R"({"a":NaN})",
                                R"({"a":tru})",
                                R"({"a":nul})",
                                R"({"a":[1,]})",
                                R"({"a":[1 2]})",
                                R"({"a":"\x"})",
                                R"({"a":"\u12"})",
                                R"({"a":"\u12G4"})",
                                "{\"a\":\"\x01\"}",
                                "{\"a\":\"tab\there\"}",
                                R"({"a":"open)",
                                "{\"a\":\"\xC0\xAF\"}",
                                "{\"a\":\"\xED\xA0\x80\"}",
                                "{\"a\":\"\xF4\x90\x80\x80\"}",
                                "{\"a\":\"\xE2\x82\"}",
                                "{\"a\":\"\x80\"}",
                                "{\"a\":\"\xFF\"}",
                                "\xEF\xBB{}"}) {
    EXPECT_EQ(refusal(body), ScanErrorKind::kSyntax) << body;
  }
  EXPECT_EQ(refusal(std::string_view("{\"a\":1}\0", 8)), ScanErrorKind::kSyntax);
  EXPECT_EQ(refusal("[1,2]"), ScanErrorKind::kNotObject);
  EXPECT_EQ(refusal(R"("text")"), ScanErrorKind::kNotObject);
  EXPECT_EQ(refusal("null"), ScanErrorKind::kNotObject);
}

TEST(JsonScan, DepthIsBounded) {
  EXPECT_TRUE(accepts(nested(64)));
  EXPECT_EQ(refusal(nested(65)), ScanErrorKind::kTooDeep);
  EXPECT_EQ(refusal(nested(3), ScanLimits{2}), ScanErrorKind::kTooDeep);
  EXPECT_FALSE(scan_body(nested(3), ScanLimits{3}).error);
  EXPECT_EQ(refusal("{}", ScanLimits{0}), ScanErrorKind::kTooDeep);
  EXPECT_FALSE(scan_body(nested(1000), ScanLimits{1024}).error);
}

TEST(JsonScan, ReadMembersTwiceAreRefusedOthersAreNot) {
  for (std::string_view key :
       {"model", "stream", "max_tokens", "max_completion_tokens", "max_output_tokens", "n",
        "best_of", "stream_options", "messages", "previous_response_id", "file_ids"}) {
    std::string body = "{\"" + std::string(key) + "\":1,\"x\":2,\"" + std::string(key) + "\":3}";
    auto s = scan_body(body);
    ASSERT_TRUE(s.error) << body;
    EXPECT_EQ(s.error->kind, ScanErrorKind::kDuplicateKey);
    EXPECT_EQ(s.error->key, key);
  }
  // An escaped spelling is the same key.
  auto esc = scan_body(R"({"model":"a","mod\u0065l":"b"})");
  ASSERT_TRUE(esc.error);
  EXPECT_EQ(esc.error->key, "model");
  auto iu = scan_body(R"({"stream_options":{"include_usage":false,"include_usage":true}})");
  ASSERT_TRUE(iu.error);
  EXPECT_EQ(iu.error->key, "include_usage");
  // Members the gateway does not read, and read names below the top level, may repeat.
  EXPECT_TRUE(accepts(R"({"temperature":1,"temperature":2,"messages":[{"model":1,"model":2}]})"));
  EXPECT_TRUE(accepts(R"({"x":{"include_usage":1,"include_usage":2}})"));
}

TEST(JsonScan, FieldsAndSpans) {
  std::string_view body =
      R"({ "model" : "gpt-4o", "messages":[{"role":"user","content":"hi"},{"model":"no"}],)"
      R"("stream":true,"stream_options":{ "include_usage" :false },"max_tokens":100,)"
      R"("n":-3,"best_of":1e2,"file_ids":["f1",2,{"a":["x"]},"f\u0032"]})";
  auto s = scan_body(body);
  ASSERT_FALSE(s.error);
  const auto& f = s.fields;
  EXPECT_EQ(f[BodyField::kModel].span.of(body), R"("gpt-4o")");
  EXPECT_EQ(as_string(body, f[BodyField::kModel]), "gpt-4o");
  EXPECT_EQ(f[BodyField::kMessages].kind, JsonKind::kArray);
  EXPECT_EQ(f[BodyField::kMessages].items, 2u);
  EXPECT_EQ(as_bool(body, f[BodyField::kStream]), true);
  EXPECT_EQ(f[BodyField::kStreamOptions].span.of(body), R"({ "include_usage" :false })");
  EXPECT_EQ(f[BodyField::kStreamOptions].items, 1u);
  EXPECT_EQ(f.include_usage.span.of(body), "false");
  EXPECT_EQ(as_bool(body, f.include_usage), false);
  EXPECT_EQ(as_int(body, f[BodyField::kMaxTokens]), 100);
  EXPECT_EQ(as_int(body, f[BodyField::kN]), -3);
  EXPECT_EQ(as_int(body, f[BodyField::kBestOf]), std::nullopt);  // not written as an integer
  EXPECT_FALSE(f[BodyField::kInput].present());
  EXPECT_EQ(string_elements(body, f[BodyField::kFileIds]), (std::vector<std::string>{"f1", "f2"}));
  EXPECT_EQ(f.object.span.offset, 0u);
  EXPECT_EQ(f.object.span.length, body.size());
  EXPECT_EQ(body[f.object.inside() - 1], '{');
}

TEST(JsonScan, DecodedValues) {
  auto one = [](std::string_view v) {
    auto text = "{\"model\":" + std::string(v) + "}";
    auto s = scan_body(text);
    EXPECT_FALSE(s.error) << text;
    return std::pair{text, s.fields[BodyField::kModel]};
  };
  auto as_int_of = [&](std::string_view v) {
    auto [text, val] = one(v);
    return as_int(text, val);
  };
  EXPECT_EQ(as_int_of("9223372036854775807"), INT64_MAX);
  EXPECT_EQ(as_int_of("9223372036854775808"), INT64_MAX);  // saturates
  EXPECT_EQ(as_int_of(std::string(5000, '9')), INT64_MAX);
  EXPECT_EQ(as_int_of("-9223372036854775808"), INT64_MIN);
  EXPECT_EQ(as_int_of("-99999999999999999999999"), INT64_MIN);
  EXPECT_EQ(as_int_of("-0"), 0);
  EXPECT_EQ(as_int_of("\"5\""), std::nullopt);
  auto [text, val] = one(R"("\ud800|\ud83d\ude00|\u00e9\n\/")");
  EXPECT_EQ(as_string(text, val), "\xEF\xBF\xBD|\xF0\x9F\x98\x80|\xC3\xA9\n/");
  EXPECT_EQ(as_bool(text, val), std::nullopt);
}

// On bodies both accept, the scanner reads what nlohmann reads.
TEST(JsonScan, AgreesWithNlohmann) {
  for (
      std::string_view body :
      {R"({"model":"m","stream":false,"max_tokens":7,"n":2,"best_of":3,"stream_options":{"include_usage":true}})",
       R"({"messages":[],"input":"x","max_output_tokens":-5,"model":"caf\u00e9"})",
       R"({"stream_options":null,"stream":"yes","model":5})"}) {
    auto s = scan_body(body);
    ASSERT_FALSE(s.error) << body;
    auto j = nlohmann::ordered_json::parse(body);
    for (std::size_t i = 0; i < kBodyFieldCount; ++i) {
      auto f = static_cast<BodyField>(i);
      auto name = std::string(field_name(f));
      const auto& v = s.fields[f];
      ASSERT_EQ(v.present(), j.contains(name)) << name;
      if (!v.present()) continue;
      EXPECT_EQ(nlohmann::ordered_json::parse(v.span.of(body)), j[name]) << name;
      if (j[name].is_string()) {
        EXPECT_EQ(as_string(body, v), j[name].get<std::string>());
      }
      if (j[name].is_boolean()) {
        EXPECT_EQ(as_bool(body, v), j[name].get<bool>());
      }
      if (j[name].is_number_integer()) {
        EXPECT_EQ(as_int(body, v), j[name].get<std::int64_t>());
      }
    }
  }
}

TEST(JsonScan, SanitizedCopyParsesWithNlohmann) {
  std::string body = R"({"a":"\ud800 \udfff \ud83d\ude00","b":)" + std::string(5000, '7') +
                     R"(,"c":-1e400,"d":1e-400,"e":"1e400","f":12.5})";
  ASSERT_FALSE(scan_body(body).error);
  EXPECT_TRUE(nlohmann::ordered_json::parse(body, nullptr, false).is_discarded());
  auto clean = sanitize_for_dom(body);
  auto j = nlohmann::ordered_json::parse(clean, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << clean;
  EXPECT_EQ(j["a"], "\xEF\xBF\xBD \xEF\xBF\xBD \xF0\x9F\x98\x80");
  EXPECT_EQ(j["b"], 0);
  EXPECT_EQ(j["c"], 0);
  EXPECT_EQ(j["e"], "1e400");
  EXPECT_EQ(j["f"], 12.5);
}

std::string edit(std::string_view body, auto&& make) {
  auto s = scan_body(body);
  EXPECT_FALSE(s.error) << body;
  BodyEdits edits;
  make(s.fields, edits);
  auto out = edits.apply(body);
  EXPECT_FALSE(scan_body(out).error) << out;
  return out;
}

TEST(JsonScan, EditsSpliceBytesAndKeepTheRest) {
  std::string_view body = R"({"model" : "a", "x":"\ud800", "max_tokens":99, "big":1)"
                          R"(23456789012345678901234567890})";
  auto out = edit(body, [](const BodyFields& f, BodyEdits& e) {
    e.replace(f[BodyField::kModel].span, R"("prod")");
    e.replace(f[BodyField::kMaxTokens].span, "50");
    e.insert_member(f.object, "stream_options", R"({"include_usage":true})");
  });
  EXPECT_EQ(out, R"({"stream_options":{"include_usage":true},"model" : "prod", "x":"\ud800", )"
                 R"("max_tokens":50, "big":123456789012345678901234567890})");
  // Into empty objects, several members at one place.
  EXPECT_EQ(edit("{ }",
                 [](const BodyFields& f, BodyEdits& e) {
                   e.insert_member(f.object, "max_tokens", "5");
                   e.insert_member(f.object, "stream_options", "{}");
                 }),
            R"({"max_tokens":5,"stream_options":{} })");
  EXPECT_EQ(edit(R"({"stream_options":{}})",
                 [](const BodyFields& f, BodyEdits& e) {
                   e.insert_member(f[BodyField::kStreamOptions], "include_usage", "true");
                 }),
            R"({"stream_options":{"include_usage":true}})");
  EXPECT_EQ(edit(R"({"stream_options":{"x":1}})",
                 [](const BodyFields& f, BodyEdits& e) {
                   e.insert_member(f[BodyField::kStreamOptions], "include_usage", "true");
                 }),
            R"({"stream_options":{"include_usage":true,"x":1}})");
  // A second replacement of a span wins; no edit leaves the body as it was.
  EXPECT_EQ(edit(R"({"n":1})",
                 [](const BodyFields& f, BodyEdits& e) {
                   e.replace(f[BodyField::kN].span, "2");
                   e.replace(f[BodyField::kN].span, "3");
                 }),
            R"({"n":3})");
  BodyEdits none;
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(none.apply(body), body);
}

}  // namespace
