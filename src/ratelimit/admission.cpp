#include "tollgate/ratelimit/admission.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "tollgate/tokenize/estimate.hpp"

namespace tollgate::ratelimit {

namespace {

std::int64_t int_field(const nlohmann::ordered_json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<std::int64_t>() : 0;
}

// The body field that limits the output of `call`, and whether the request set it.
const char* output_field(const core::ApiCall& call, const nlohmann::ordered_json& j) {
  switch (call.op) {
    case core::Operation::kChatCompletions:
      if (j.contains("max_completion_tokens")) return "max_completion_tokens";
      if (j.contains("max_tokens")) return "max_tokens";
      // Neither set: max_completion_tokens where the API knows it (v1 surfaces, and the
      // deployment surface from 2024-09-01-preview on), else max_tokens.
      if (call.surface != core::Surface::kDeployment || call.api_version >= "2024-09-01") {
        return "max_completion_tokens";
      }
      return "max_tokens";
    case core::Operation::kCompletions: return "max_tokens";
    case core::Operation::kResponses: return "max_output_tokens";
    default: return nullptr;
  }
}

}  // namespace

Estimate admit(core::ApiCall& call, std::size_t body_bytes, const config::ClientConfig* client,
               const config::PolicyConfig& policy, const tokenize::Tokenizers& tokenizers,
               std::string_view model) {
  Estimate e;
  if (!call.json) return e;
  auto& j = *call.json;
  auto n = std::max<std::int64_t>(1, int_field(j, "n"));
  auto best_of = int_field(j, "best_of");
  if (policy.max_n > 0 && n > policy.max_n) {
    e.error = core::bad_request("n may be at most " + std::to_string(policy.max_n) + " on this gateway", "n");
    return e;
  }
  if (policy.max_best_of > 0 && best_of > policy.max_best_of) {
    e.error = core::bad_request(
        "best_of may be at most " + std::to_string(policy.max_best_of) + " on this gateway", "best_of");
    return e;
  }
  auto choices = std::max(n, best_of);

  // The output allowance: what the request asks, capped and defaulted by its client.
  if (const char* field = output_field(call, j)) {
    std::int64_t asked = int_field(j, field);
    std::int64_t cap = client != nullptr ? client->limits.max_tokens_cap : 0;
    std::int64_t dflt = client != nullptr ? client->limits.default_max_tokens : 0;
    if (asked > 0 && cap > 0 && asked > cap) {
      if (policy.reject_over_cap) {
        e.error = core::bad_request(std::string(field) + " " + std::to_string(asked) +
                                        " exceeds this client's limit of " + std::to_string(cap),
                                    field);
        return e;
      }
      j[field] = cap;
      call.body_modified = true;
      asked = cap;
    } else if (asked <= 0 && dflt > 0) {
      j[field] = dflt;
      call.body_modified = true;
      asked = dflt;
    }
    if (asked <= 0) asked = call.op == core::Operation::kCompletions ? 16 : kDefaultAllowance;
    // Saturated: a request asking absurd amounts must fail the limits, not overflow them.
    constexpr std::int64_t kMaxAllowance = 1'000'000'000'000'000;
    e.allowance = asked > kMaxAllowance / choices ? kMaxAllowance : asked * choices;
    if (call.op != core::Operation::kCompletions && int_field(j, field) <= 0) e.exact = false;
  }

  // The prompt: exact with the tokenizer for chat, completions and embeddings.
  std::optional<tokenize::RequestKind> kind;
  if (call.op == core::Operation::kChatCompletions) kind = tokenize::RequestKind::kChat;
  if (call.op == core::Operation::kCompletions) kind = tokenize::RequestKind::kCompletions;
  if (call.op == core::Operation::kEmbeddings) kind = tokenize::RequestKind::kEmbeddings;
  if (kind) {
    const auto& enc = tokenizers.for_model(model);
    auto r = tokenize::estimate_prompt(*kind, enc, j, model);
    if (r) {
      e.prompt = static_cast<std::int64_t>(r->tokens);
      e.exact = e.exact && r->exact;
      return e;
    }
  }
  e.prompt = static_cast<std::int64_t>((body_bytes + 3) / 4);  // no tokenizer rule: ~4 bytes/token
  e.exact = false;
  return e;
}

std::int64_t count_output(const tokenize::Tokenizers& tokenizers, std::string_view model,
                          std::string_view text) {
  if (text.empty()) return 0;
  return static_cast<std::int64_t>(tokenizers.for_model(model).count(text));
}

}  // namespace tollgate::ratelimit
