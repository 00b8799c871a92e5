#include <gtest/gtest.h>

#include "proxy/forwarder.hpp"

using namespace tollgate::proxy;

namespace {

TEST(HeaderRewriteTest, ClientCredentialsAndHopByHopHeadersStayBehind) {
  http::fields f;
  f.set("Connection", "keep-alive, X-Private-Hop");
  f.set("X-Private-Hop", "1");
  for (auto name : {"api-key", "Authorization", "Host", "Content-Length", "Transfer-Encoding",
                    "Connection", "Keep-Alive", "TE", "Upgrade", "Proxy-Authorization",
                    "X-Private-Hop", "Expect", "x-request-id", "API-KEY", "x-tollgate-pin-backend",
                    "X-Tollgate-Priority"}) {
    EXPECT_TRUE(drop_request_header(f, name)) << name;
  }
  for (auto name : {"content-type", "accept", "user-agent", "x-stainless-lang", "traceparent",
                    "x-ms-client-request-id", "openai-organization", "x-ms-spillover-deployment"}) {
    EXPECT_FALSE(drop_request_header(f, name)) << name;
  }
}

TEST(HeaderRewriteTest, ResponseHeadersKeepAzureMetadata) {
  http::fields f;
  for (auto name : {"Content-Length", "Transfer-Encoding", "Connection", "x-request-id",
                    "x-tollgate-backend"}) {
    EXPECT_TRUE(drop_response_header(f, name)) << name;
  }
  for (auto name : {"content-type", "apim-request-id", "x-ratelimit-remaining-tokens",
                    "retry-after-ms", "retry-after", "x-ms-region", "azure-openai-deployment-utilization",
                    "x-should-retry"}) {
    EXPECT_FALSE(drop_response_header(f, name)) << name;
  }
}

}  // namespace
