#include "tollgate/tokenize/estimate.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "test_support.hpp"

namespace tollgate::tokenize {
namespace {

using json = nlohmann::ordered_json;

class EstimateTest : public testing::WithTokenizers {
 protected:
  static const Encoding& enc_for(std::string_view model) {
    return testing::loaded_tokenizers()->for_model(model);
  }
};

// The OpenAI cookbook's example ("How to count tokens with tiktoken"), whose counts it verified
// against the API: 129 prompt tokens on gpt-3.5-turbo / gpt-4, 124 on gpt-4o / gpt-4o-mini.
json cookbook_messages() {
  return json::parse(R"([
    {"role": "system",
     "content": "You are a helpful, pattern-following assistant that translates corporate )"
                     R"(jargon into plain English."},
    {"role": "system", "name": "example_user",
     "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant",
     "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user",
     "content": "Let's circle back when we have more bandwidth to touch base on )"
                     R"(opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant",
     "content": "Let's talk later when we're less busy about how to do better."},
    {"role": "user",
     "content": "This late pivot means we don't have time to boil the ocean for the )"
                     R"(client deliverable."}
  ])");
}

TEST_F(EstimateTest, ChatMatchesCookbookFigures) {
  for (const auto& [model, expected] : {std::pair<const char*, std::uint64_t>{"gpt-3.5-turbo", 129},
                                        {"gpt-4", 129},
                                        {"gpt-4o", 124},
                                        {"gpt-4o-mini", 124}}) {
    const json body = {{"model", model}, {"messages", cookbook_messages()}};
    auto e = estimate_chat_prompt(enc_for(model), body);
    ASSERT_TRUE(e.ok()) << e.error().message;
    EXPECT_EQ(e->tokens, expected) << model;
    EXPECT_TRUE(e->exact) << model;
  }
}

// The cookbook's tools example: 105 on gpt-3.5-turbo / gpt-4, 101 on gpt-4o / gpt-4o-mini.
TEST_F(EstimateTest, ToolsMatchCookbookFigures) {
  const json tools = json::parse(R"([{
    "type": "function",
    "function": {
      "name": "get_current_weather",
      "description": "Get the current weather in a given location",
      "parameters": {
        "type": "object",
        "properties": {
          "location": {"type": "string",
                       "description": "The city and state, e.g. San Francisco, CA"},
          "unit": {"type": "string", "description": "The unit of temperature to return",
                   "enum": ["celsius", "fahrenheit"]}
        },
        "required": ["location"]
      }
    }
  }])");
  const json messages = json::parse(R"([
    {"role": "system",
     "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"}
  ])");
  for (const auto& [model, expected] : {std::pair<const char*, std::uint64_t>{"gpt-3.5-turbo", 105},
                                        {"gpt-4", 105},
                                        {"gpt-4o", 101},
                                        {"gpt-4o-mini", 101}}) {
    const json body = {{"model", model}, {"messages", messages}, {"tools", tools}};
    auto e = estimate_chat_prompt(enc_for(model), body);
    ASSERT_TRUE(e.ok()) << e.error().message;
    EXPECT_EQ(e->tokens, expected) << model;
    EXPECT_FALSE(e->exact) << "tools are an approximation";

    // The legacy `functions` field is counted the same way.
    const json legacy = {{"messages", messages},
                         {"functions", json::array({tools[0]["function"]})}};
    auto f = estimate_chat_prompt(enc_for(model), legacy, model);
    ASSERT_TRUE(f.ok()) << f.error().message;
    EXPECT_EQ(f->tokens, expected) << model;
  }
}

TEST_F(EstimateTest, ContentPartsAndNullContent) {
  const json body = json::parse(R"({"messages": [
    {"role": "user", "content": [{"type": "text", "text": "hello"},
                                 {"type": "text", "text": " world"}]},
    {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
      "function": {"name": "f", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "42"}
  ]})");
  auto e = estimate_chat_prompt(o200k(), body, "gpt-4o");
  ASSERT_TRUE(e.ok()) << e.error().message;
  const std::uint64_t expected =
      3 + 3 + o200k().count("user") + o200k().count("hello") + o200k().count(" world") + 3 +
      o200k().count("assistant") + o200k().count("call_1") + o200k().count("function") +
      o200k().count("f") + o200k().count("{}") + 3 + o200k().count("tool") +
      o200k().count("call_1") + o200k().count("42");
  EXPECT_EQ(e->tokens, expected);
  EXPECT_FALSE(e->exact);
}

TEST_F(EstimateTest, SingleTextPartIsExact) {
  const json body = json::parse(
      R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "hello world"}]}]})");
  auto e = estimate_chat_prompt(cl100k(), body, "gpt-4");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->tokens, 9u);
  EXPECT_TRUE(e->exact);
}

std::string base64(const std::string& bytes) {
  static constexpr char k[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const unsigned w = (static_cast<unsigned char>(bytes[i]) << 16) |
                       (static_cast<unsigned char>(bytes[i + 1]) << 8) |
                       static_cast<unsigned char>(bytes[i + 2]);
    out += {k[w >> 18], k[(w >> 12) & 63], k[(w >> 6) & 63], k[w & 63]};
  }
  if (i + 1 == bytes.size()) {
    const unsigned w = static_cast<unsigned char>(bytes[i]) << 16;
    out += {k[w >> 18], k[(w >> 12) & 63], '=', '='};
  } else if (i + 2 == bytes.size()) {
    const unsigned w = (static_cast<unsigned char>(bytes[i]) << 16) |
                       (static_cast<unsigned char>(bytes[i + 1]) << 8);
    out += {k[w >> 18], k[(w >> 12) & 63], k[(w >> 6) & 63], '='};
  }
  return out;
}

std::string be32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}
std::string le16(std::uint32_t v) {
  return {static_cast<char>(v), static_cast<char>(v >> 8)};
}
std::string le24(std::uint32_t v) {
  return {static_cast<char>(v), static_cast<char>(v >> 8), static_cast<char>(v >> 16)};
}

std::string png(std::uint32_t w, std::uint32_t h) {
  return std::string("\x89PNG\r\n\x1a\n", 8) + be32(13) + "IHDR" + be32(w) + be32(h) +
         std::string("\x08\x06\x00\x00\x00", 5);
}
std::string gif(std::uint32_t w, std::uint32_t h) {
  return "GIF89a" + le16(w) + le16(h) + "\0\0";
}
std::string jpeg(std::uint32_t w, std::uint32_t h) {
  std::string app0 =
      std::string("\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00", 18);
  std::string exif = std::string("\xFF\xE1\x01\x02", 4) + std::string(0x100, 'x');  // skipped
  std::string sof = std::string("\xFF\xC2\x00\x11\x08", 5) +
                    std::string{static_cast<char>(h >> 8), static_cast<char>(h),
                                static_cast<char>(w >> 8), static_cast<char>(w)} +
                    std::string(12, '\x01');
  return std::string("\xFF\xD8", 2) + app0 + exif + sof;
}
std::string webp_vp8x(std::uint32_t w, std::uint32_t h) {
  return "RIFF" + std::string(4, '\0') + "WEBPVP8X" + std::string(4, '\x0a') +
         std::string(4, '\0') + le24(w - 1) + le24(h - 1);
}
std::string webp_vp8(std::uint32_t w, std::uint32_t h) {
  return "RIFF" + std::string(4, '\0') + "WEBPVP8 " + std::string(4, '\0') + std::string(3, '\0') +
         std::string("\x9d\x01\x2a", 3) + le16(w) + le16(h);
}
std::string webp_vp8l(std::uint32_t w, std::uint32_t h) {
  const std::uint32_t bits = (w - 1) | ((h - 1) << 14);
  return "RIFF" + std::string(4, '\0') + "WEBPVP8L" + std::string(4, '\0') + "\x2f" +
         le16(bits & 0xFFFF) + le16(bits >> 16);
}

TEST(ImageSniff, ReadsDimensionsOfEveryFormat) {
  struct Case {
    const char* name;
    std::string bytes;
  };
  for (const Case& c :
       {Case{"png", png(1024, 768)}, Case{"gif", gif(1024, 768)}, Case{"jpeg", jpeg(1024, 768)},
        Case{"webp-vp8x", webp_vp8x(1024, 768)}, Case{"webp-vp8", webp_vp8(1024, 768)},
        Case{"webp-vp8l", webp_vp8l(1024, 768)}}) {
    const auto raw = sniff_image_size(c.bytes);
    ASSERT_TRUE(raw.has_value()) << c.name;
    EXPECT_EQ(raw->width, 1024u) << c.name;
    EXPECT_EQ(raw->height, 768u) << c.name;
    const auto url = image_size_from_url("data:image/x;base64," + base64(c.bytes) + "AAAA");
    ASSERT_TRUE(url.has_value()) << c.name;
    EXPECT_EQ(url->width, 1024u) << c.name;
    EXPECT_EQ(url->height, 768u) << c.name;
  }
  EXPECT_FALSE(image_size_from_url("https://example.com/cat.png").has_value());
  EXPECT_FALSE(image_size_from_url("data:image/png;base64,!!!!").has_value());
  EXPECT_FALSE(image_size_from_url("data:text/plain,hello").has_value());
  EXPECT_FALSE(sniff_image_size(png(1, 1).substr(0, 20)).has_value());
  EXPECT_FALSE(sniff_image_size("").has_value());
}

TEST(ImageTokens, FollowsTheTileFormula) {
  EXPECT_EQ(image_tokens("gpt-4o", ImageSize{1024, 1024}, ImageDetail::kHigh), 765u);
  EXPECT_EQ(image_tokens("gpt-4o", ImageSize{2048, 4096}, ImageDetail::kHigh), 1105u);
  EXPECT_EQ(image_tokens("gpt-4o", ImageSize{2048, 4096}, ImageDetail::kLow), 85u);
  EXPECT_EQ(image_tokens("gpt-4o", ImageSize{512, 512}, ImageDetail::kAuto), 255u);
  EXPECT_EQ(image_tokens("gpt-4o", std::nullopt, ImageDetail::kHigh), 1445u);  // 8 tiles
  EXPECT_EQ(image_tokens("gpt-4o-mini", ImageSize{1024, 1024}, ImageDetail::kHigh),
            2833u + 4 * 5667u);
  EXPECT_EQ(image_tokens("o1", ImageSize{1024, 1024}, ImageDetail::kHigh), 75u + 4 * 150u);
  EXPECT_EQ(image_tokens("gpt-5", std::nullopt, ImageDetail::kLow), 70u);
}

TEST(ImageTokens, FollowsThePatchFormula) {
  // 1024x1024: 32x32 = 1024 patches; x1.62 for gpt-4.1-mini.
  EXPECT_EQ(image_tokens("gpt-4.1-mini", ImageSize{1024, 1024}, ImageDetail::kLow), 1659u);
  // 1800x2400: scaled down to at most 1536 patches.
  EXPECT_LE(image_tokens("gpt-4.1-nano", ImageSize{1800, 2400}, ImageDetail::kHigh),
            static_cast<std::uint64_t>(1536 * 2.46 + 1));
  EXPECT_EQ(image_tokens("o4-mini", std::nullopt, ImageDetail::kHigh), 2642u);  // 1536 x 1.72
}

TEST_F(EstimateTest, ImagePartsUseDataUrlSizeOrWorstCase) {
  const std::string url = "data:image/png;base64," + base64(png(1024, 1024));
  const json body = {
      {"messages",
       {{{"role", "user"},
         {"content",
          {{{"type", "image_url"}, {"image_url", {{"url", url}, {"detail", "high"}}}},
           {{"type", "image_url"}, {"image_url", {{"url", "https://x.test/a.png"}}}}}}}}}};
  auto e = estimate_chat_prompt(o200k(), body, "gpt-4o");
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_EQ(e->tokens, 3 + 3 + o200k().count("user") + 765 + 1445);
  EXPECT_FALSE(e->exact);
}

TEST_F(EstimateTest, CompletionsPromptShapes) {
  auto count = [&](const char* body) {
    auto e = estimate_completions_prompt(cl100k(), json::parse(body));
    EXPECT_TRUE(e.ok()) << body << ": " << (e.ok() ? "" : e.error().message);
    return e.ok() ? e->tokens : ~std::uint64_t{0};
  };
  EXPECT_EQ(count(R"({"prompt": "hello world"})"), 2u);
  EXPECT_EQ(count(R"({"prompt": ["hello world", "hello"]})"), 3u);
  EXPECT_EQ(count(R"({"prompt": [15339, 1917, 0]})"), 3u);
  EXPECT_EQ(count(R"({"prompt": [[15339, 1917], [0]]})"), 3u);
  EXPECT_EQ(count(R"({"prompt": []})"), 0u);
  EXPECT_EQ(count(R"({})"), 1u);  // the default prompt "<|endoftext|>"
  for (const char* bad : {R"({"prompt": 5})", R"({"prompt": ["a", 1]})", R"({"prompt": [1, -2]})",
                          R"({"prompt": [[1], "a"]})", R"({"prompt": [1.5]})", R"([1])",
                          R"({"prompt": "a", "suffix": 3})"}) {
    EXPECT_FALSE(estimate_completions_prompt(cl100k(), json::parse(bad)).ok()) << bad;
  }
}

TEST_F(EstimateTest, EmbeddingsInputShapes) {
  auto e = estimate_embeddings_input(cl100k(), json::parse(R"({"input": ["hello world", "x"]})"));
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->tokens, 3u);
  EXPECT_TRUE(e->exact);
  e = estimate_embeddings_input(cl100k(), json::parse(R"({"input": [[1, 2, 3], [4]]})"));
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->tokens, 4u);
  e = estimate_embeddings_input(cl100k(), json::parse(R"({"model": "x"})"));
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().message, "input: required");
  e = estimate_embeddings_input(cl100k(), json::parse(R"({"input": {"a": 1}})"));
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().message, "input: expected a string or an array");
}

TEST(OutputAllowance, UsesMaxTokensTimesChoices) {
  auto allowance = [](RequestKind kind, const char* body) {
    auto e = estimate_output_allowance(kind, json::parse(body), 4096);
    EXPECT_TRUE(e.ok()) << body;
    return e.ok() ? *e : TokenEstimate{};
  };
  EXPECT_EQ(allowance(RequestKind::kChat, R"({"max_tokens": 100})").tokens, 100u);
  EXPECT_TRUE(allowance(RequestKind::kChat, R"({"max_tokens": 100})").exact);
  EXPECT_EQ(
      allowance(RequestKind::kChat, R"({"max_completion_tokens": 50, "max_tokens": 9})").tokens,
      50u);
  EXPECT_EQ(allowance(RequestKind::kChat, R"({"max_tokens": 100, "n": 3})").tokens, 300u);
  EXPECT_EQ(
      allowance(RequestKind::kCompletions, R"({"max_tokens": 10, "n": 2, "best_of": 5})").tokens,
      50u);
  EXPECT_EQ(allowance(RequestKind::kChat, R"({})").tokens, 4096u);
  EXPECT_FALSE(allowance(RequestKind::kChat, R"({})").exact);
  EXPECT_EQ(allowance(RequestKind::kChat, R"({"n": null, "max_tokens": null})").tokens, 4096u);
  EXPECT_EQ(allowance(RequestKind::kEmbeddings, R"({"max_tokens": 10})").tokens, 0u);
  for (const char* bad : {R"({"max_tokens": -1})", R"({"max_tokens": "10"})", R"({"n": 1.5})"}) {
    EXPECT_FALSE(estimate_output_allowance(RequestKind::kChat, json::parse(bad), 1).ok()) << bad;
  }
}

TEST_F(EstimateTest, MalformedChatBodiesAreErrorsNamingThePath) {
  const std::pair<const char*, const char*> cases[] = {
      {R"([])", "body: expected a JSON object"},
      {R"({})", "messages: expected an array"},
      {R"({"messages": {}})", "messages: expected an array"},
      {R"({"messages": [1]})", "messages[0]: expected an object"},
      {R"({"messages": [{"role": 1}]})", "messages[0].role: expected a string"},
      {R"({"messages": [{"role": "user", "content": 5}]})",
       "messages[0].content: expected a string, an array or null"},
      {R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})",
       "messages[0].content[0].text: expected a string"},
      {R"({"messages": [{"role": "user", "content": [{"text": "x"}]}]})",
       "messages[0].content[0].type: expected a string"},
      {R"({"messages": [], "tools": {}})", "tools: expected an array"},
      {R"({"messages": [], "tools": [{"type": "function", "function": {"description": "x"}}]})",
       "tools[0].function.name: expected a string"},
  };
  for (const auto& [body, message] : cases) {
    auto e = estimate_chat_prompt(o200k(), json::parse(body));
    ASSERT_FALSE(e.ok()) << body;
    EXPECT_EQ(e.error().message, message) << body;
  }
}

TEST_F(EstimateTest, NeverThrowsOnProgrammaticBodiesWithInvalidUtf8) {
  json body = {{"messages", {{{"role", "user"}, {"content", "a\xff"}}}}};
  body["response_format"] = {{"type", "json_schema"}, {"json_schema", {{"name", "bad\xfe"}}}};
  body["tools"] = {{{"type", "web_search"}, {"note", {1, "x\xc0"}}}};
  TokenEstimate e;
  EXPECT_NO_THROW({
    auto r = estimate_chat_prompt(o200k(), body, "gpt-4o");
    ASSERT_TRUE(r.ok());
    e = *r;
  });
  EXPECT_GT(e.tokens, 10u);
  EXPECT_FALSE(e.exact);
}

TEST(RequestKind, Parses) {
  EXPECT_EQ(parse_request_kind("chat"), RequestKind::kChat);
  EXPECT_EQ(parse_request_kind("completions"), RequestKind::kCompletions);
  EXPECT_EQ(parse_request_kind("embeddings"), RequestKind::kEmbeddings);
  EXPECT_FALSE(parse_request_kind("responses").has_value());
}

}  // namespace
}  // namespace tollgate::tokenize
