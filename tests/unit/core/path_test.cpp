#include "tollgate/core/path.hpp"

#include <gtest/gtest.h>

#include "tollgate/core/api_call.hpp"

using namespace tollgate::core;

namespace {

std::string canon(std::string_view p) {
  auto c = canonicalize_path(p);
  return c.ok() ? c.path : "error: " + std::string(describe(c.error));
}

PathError refusal(std::string_view p) {
  return canonicalize_path(p).error;
}

TEST(PathTest, RemovesDotSegmentsAndCollapsesSlashes) {
  EXPECT_EQ(canon("/"), "/");
  EXPECT_EQ(canon("/a/b/c"), "/a/b/c");
  EXPECT_EQ(canon("/a/./b"), "/a/b");
  EXPECT_EQ(canon("/a/x/../b"), "/a/b");
  EXPECT_EQ(canon("//a///b"), "/a/b");
  EXPECT_EQ(canon("/a/b/"), "/a/b/");
  EXPECT_EQ(canon("/a/b//"), "/a/b/");
  EXPECT_EQ(canon("/a/b/."), "/a/b/");
  EXPECT_EQ(canon("/a/b/.."), "/a/");
  EXPECT_EQ(canon("/a/.."), "/");
  EXPECT_EQ(canon("/a/.b/..c"), "/a/.b/..c");  // not dot segments
}

TEST(PathTest, DecodesUnreservedEscapesOnly) {
  EXPECT_EQ(canon("/%63hat/%43ompletions"), "/chat/Completions");
  EXPECT_EQ(canon("/a%2Db%2e%5F%7E"), "/a-b._~");
  EXPECT_EQ(canon("/my%20dep"), "/my%20dep");
  EXPECT_EQ(canon("/x%3a%c3%a9"), "/x%3A%C3%A9");  // upper-case hex
  EXPECT_EQ(canon("/a/%2e%2E/b"), "/b");           // decoded before dot removal
  EXPECT_EQ(canon("/a/%2e/b"), "/a/b");
  EXPECT_EQ(canon("/a:b@c!$&'()*+,="), "/a:b@c!$&'()*+,=");
}

TEST(PathTest, RefusesHiddenSeparatorsParametersAndClimbing) {
  EXPECT_EQ(refusal("/chat%2Fcompletions"), PathError::kEncodedSlash);
  EXPECT_EQ(refusal("/chat%2fcompletions"), PathError::kEncodedSlash);
  EXPECT_EQ(refusal("/chat%5Ccompletions"), PathError::kEncodedSlash);
  EXPECT_EQ(refusal("/chat\\completions"), PathError::kBackslash);
  EXPECT_EQ(refusal("/completions;x=1"), PathError::kParameter);
  EXPECT_EQ(refusal("/a;/b"), PathError::kParameter);
  EXPECT_EQ(refusal("/a%00"), PathError::kControl);
  EXPECT_EQ(refusal("/a%0a"), PathError::kControl);
  EXPECT_EQ(refusal(std::string_view("/a\0b", 4)), PathError::kControl);
  EXPECT_EQ(refusal("/a\x7f"), PathError::kControl);
  EXPECT_EQ(refusal("/a b"), PathError::kBadCharacter);
  EXPECT_EQ(refusal("/\xc3\xa9"), PathError::kBadCharacter);
  EXPECT_EQ(refusal("/a%2"), PathError::kBadEscape);
  EXPECT_EQ(refusal("/a%zz"), PathError::kBadEscape);
  EXPECT_EQ(refusal("/.."), PathError::kAboveRoot);
  EXPECT_EQ(refusal("/a/../../b"), PathError::kAboveRoot);
  EXPECT_EQ(refusal("/%2e%2e/b"), PathError::kAboveRoot);
  EXPECT_EQ(refusal("a/b"), PathError::kNotAbsolute);
  EXPECT_EQ(refusal(""), PathError::kNotAbsolute);
}

TEST(PathTest, IsIdempotent) {
  for (std::string_view p :
       {"/a/./b//c/", "/%63hat/%2e/x/../y", "/my%20dep/%c3%a9/", "/a/b/..", "/~%7e%7E/"}) {
    auto once = canonicalize_path(p);
    ASSERT_TRUE(once.ok()) << p;
    auto twice = canonicalize_path(once.path);
    ASSERT_TRUE(twice.ok()) << p;
    EXPECT_EQ(twice.path, once.path) << p;
  }
}

constexpr std::string_view kJson = "application/json";
constexpr std::string_view kChat =
    R"({"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o","max_tokens":100000})";

// Every spelling of the probe (issue 20) is either chat on deployment d or refused with a 400.
TEST(PathTest, EverySpellingOfChatIsChatOrRefused) {
  constexpr std::string_view kBase = "/openai/deployments/d";
  for (std::string_view tail :
       {"/chat/completions/", "/Chat/Completions", "/%63hat/completions", "/./chat/completions",
        "/x/../chat/completions", "//chat//completions", "/CHAT/COMPLETIONS/"}) {
    auto target = std::string(kBase) + std::string(tail) + "?api-version=2024-10-21";
    auto c = classify("POST", target, kJson, kChat);
    ASSERT_FALSE(c.error) << target << ": " << c.error->message;
    EXPECT_EQ(c.call.op, Operation::kChatCompletions) << target;
    EXPECT_EQ(c.call.deployment, "d") << target;
    EXPECT_EQ(c.call.op_path, "chat/completions") << target;
    EXPECT_EQ(c.call.query, "api-version=2024-10-21") << target;
  }
  for (std::string_view tail :
       {"/chat/completions;x=1", "/chat%2Fcompletions", "/chat;a/completions",
        "/chat%5ccompletions", "/chat/completions%00", "/../../../../chat/completions"}) {
    auto target = std::string(kBase) + std::string(tail);
    auto c = classify("POST", target, kJson, kChat);
    ASSERT_TRUE(c.error) << target;
    EXPECT_EQ(c.error->status, 400) << target;
    EXPECT_NE(c.error->body().find("the request path"), std::string::npos) << target;
  }
}

TEST(PathTest, SurfacesAndOperationsMatchInAnyCaseDeploymentsKeepTheirs) {
  auto c = classify("POST", "/OpenAI/Deployments/My%20Dep/Embeddings/", kJson, R"({"input":"x"})");
  ASSERT_FALSE(c.error);
  EXPECT_EQ(c.call.surface, Surface::kDeployment);
  EXPECT_EQ(c.call.op, Operation::kEmbeddings);
  EXPECT_EQ(c.call.deployment, "My Dep");
  for (std::string_view target :
       {"/V1/Chat/Completions/", "/openai/V1/chat/%43ompletions", "/v1/./chat/completions"}) {
    auto v = classify("POST", target, kJson, kChat);
    ASSERT_FALSE(v.error) << target;
    EXPECT_EQ(v.call.op, Operation::kChatCompletions) << target;
    EXPECT_EQ(v.call.deployment, "gpt-4o") << target;
  }
  EXPECT_EQ(classify("GET", "/V1/Models/", "", "").call.op, Operation::kModels);
  // Stateful APIs: the words in lower case, the ids as sent.
  auto f = classify("GET", "/openai/v1/Files/file-AbC/Content", "", "");
  ASSERT_FALSE(f.error);
  EXPECT_TRUE(f.call.stateful);
  EXPECT_EQ(f.call.op_path, "files/file-AbC/content");
  auto r = classify("POST", "/openai/Responses/", kJson, R"({"model":"m","input":"x"})");
  ASSERT_FALSE(r.error);
  EXPECT_EQ(r.call.surface, Surface::kAzureOther);
  EXPECT_EQ(r.call.op, Operation::kResponses);
}

tollgate::config::BackendConfig backend(std::string deployment) {
  tollgate::config::BackendConfig b;
  b.name = "b";
  b.deployment = std::move(deployment);
  return b;
}

TEST(PathTest, TheBackendReceivesTheCanonicalPathAndTheQueryAsSent) {
  auto c = classify("POST", "/openai/deployments/d/./Chat//Completions/?api-version=1&x=%2F%3b",
                    kJson, kChat);
  ASSERT_FALSE(c.error);
  EXPECT_EQ(upstream_target(c.call, backend("real")),
            "/openai/deployments/real/chat/completions?api-version=1&x=%2F%3b");
  auto o = classify("GET", "/openai/deployments/d/Extensions/%7Ex/", "", "");
  ASSERT_FALSE(o.error);
  EXPECT_EQ(o.call.op, Operation::kOther);
  EXPECT_EQ(upstream_target(o.call, backend("real")), "/openai/deployments/real/Extensions/~x");
}

}  // namespace
