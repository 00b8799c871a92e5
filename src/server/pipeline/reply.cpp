#include "server/pipeline/reply.hpp"

#include <algorithm>

namespace tollgate::pipeline {

namespace {
std::int64_t whole_seconds(std::int64_t ms) { return (std::max<std::int64_t>(ms, 1) + 999) / 1000; }
}  // namespace

Reply forbidden(std::string message) {
  return Reply::error("forbidden",
                      core::HttpError{403, "PermissionDenied", std::move(message), "permission_error", {}});
}

HeaderList retry_after(std::int64_t wait_ms) {
  wait_ms = std::max<std::int64_t>(wait_ms, 1);
  HeaderList h;
  h.emplace_back("retry-after-ms", std::to_string(wait_ms));
  h.emplace_back("retry-after", std::to_string(whole_seconds(wait_ms)));
  return h;
}

std::string retry_sentence(std::int64_t wait_ms) {
  auto secs = whole_seconds(wait_ms);
  return "Please retry after " + std::to_string(secs) + " second" + (secs == 1 ? "" : "s") + ".";
}

Reply too_many_requests(std::string_view reason, const std::string& message, std::int64_t wait_ms,
                        pipeline::Outcome outcome, HeaderList extra) {
  auto headers = retry_after(wait_ms);
  for (auto& h : extra) headers.push_back(std::move(h));
  core::HttpError e{429, "429", message + " " + retry_sentence(wait_ms), "rate_limit_exceeded", {}};
  return Reply::error(reason, e, std::move(headers), outcome);
}

Reply unavailable(std::string_view reason, std::string message, std::optional<std::int64_t> wait_ms,
                  pipeline::Outcome outcome) {
  HeaderList headers;
  headers.emplace_back("x-should-retry", "false");
  if (wait_ms) headers.emplace_back("retry-after", std::to_string((std::max<std::int64_t>(*wait_ms, 0) + 999) / 1000));
  core::HttpError e{503, "503", std::move(message), "service_unavailable", {}};
  return Reply::error(reason, e, std::move(headers), outcome);
}

}  // namespace tollgate::pipeline

namespace tollgate::pipeline {

Reply buffers_full(std::int64_t wait_ms) {
  core::HttpError e{503, "503",
                    "The gateway holds as many request bodies as it may (server.limits."
                    "max_buffered_bytes). " + retry_sentence(wait_ms),
                    "service_unavailable", {}};
  return Reply::error("buffers_full", e, retry_after(wait_ms));
}

}  // namespace tollgate::pipeline
