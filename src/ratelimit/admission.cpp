#include "tollgate/ratelimit/admission.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "tollgate/tokenize/count_cache.hpp"
#include "tollgate/tokenize/estimate.hpp"

namespace tollgate::ratelimit {

namespace {

using core::BodyField;

std::int64_t int_field(const core::ApiCall& call, BodyField f) {
  return core::as_int(call.body, (*call.fields)[f]).value_or(0);
}

// The body field that limits the output of `call` (whether or not the request set it).
std::optional<BodyField> output_field(const core::ApiCall& call) {
  const auto& f = *call.fields;
  switch (call.op) {
    case core::Operation::kChatCompletions:
      if (f[BodyField::kMaxCompletionTokens].present()) return BodyField::kMaxCompletionTokens;
      if (f[BodyField::kMaxTokens].present()) return BodyField::kMaxTokens;
      // Neither set: max_completion_tokens where the API knows it (v1 surfaces, and the
      // deployment surface from 2024-09-01-preview on), else max_tokens.
      if (call.surface != core::Surface::kDeployment || call.api_version >= "2024-09-01") {
        return BodyField::kMaxCompletionTokens;
      }
      return BodyField::kMaxTokens;
    case core::Operation::kCompletions: return BodyField::kMaxTokens;
    case core::Operation::kResponses: return BodyField::kMaxOutputTokens;
    default: return std::nullopt;
  }
}

// Sets the body's `field` to `value`: its value's bytes replaced, or the member added.
void set_int(core::ApiCall& call, BodyField field, std::int64_t value) {
  const auto& v = (*call.fields)[field];
  if (v.present()) {
    call.edits.replace(v.span, std::to_string(value));
  } else {
    call.edits.insert_member(call.fields->object, core::field_name(field), std::to_string(value));
  }
}

// The output allowance (what the request may generate, times its choices); clamps or defaults
// the body's output limit per `client`. Sets e.error when the policy refuses the request.
void output_allowance(core::ApiCall& call, const config::ClientConfig* client,
                      const config::PolicyConfig& policy, std::int64_t choices, Estimate& e) {
  auto field = output_field(call);
  if (!field) return;
  auto name = std::string(core::field_name(*field));
  std::int64_t asked = int_field(call, *field);
  std::int64_t cap = client != nullptr ? client->limits.max_tokens_cap : 0;
  std::int64_t dflt = client != nullptr ? client->limits.default_max_tokens : 0;
  if (asked > 0 && cap > 0 && asked > cap) {
    if (policy.reject_over_cap) {
      e.error = core::bad_request(name + " " + std::to_string(asked) +
                                      " exceeds this client's limit of " + std::to_string(cap),
                                  name);
      return;
    }
    set_int(call, *field, cap);
    asked = cap;
  } else if (asked <= 0 && dflt > 0) {
    set_int(call, *field, dflt);
    asked = dflt;
  }
  bool in_body = asked > 0;  // the limit the backend will see
  if (asked <= 0) asked = call.op == core::Operation::kCompletions ? 16 : kDefaultAllowance;
  // Saturated: a request asking absurd amounts must fail the limits, not overflow them.
  constexpr std::int64_t kMaxAllowance = 1'000'000'000'000'000;
  e.allowance = asked > kMaxAllowance / choices ? kMaxAllowance : asked * choices;
  if (call.op != core::Operation::kCompletions && !in_body) e.exact = false;
}

using PlainMembers = std::vector<std::pair<std::string_view, std::string_view>>;

// The members of a message when all are strings without escapes (null ones left out, as the
// count skips them) and no name comes twice: counted straight from the body's bytes.
std::optional<PlainMembers> plain_members(std::string_view body, const core::JsonValue& message) {
  PlainMembers out;
  bool plain = message.kind == core::JsonKind::kObject;
  core::each_member(body, message, [&](std::string_view key, const core::JsonValue& v) {
    if (v.kind == core::JsonKind::kNull) return true;
    auto text = core::plain_string(body, v);
    bool repeated = std::any_of(out.begin(), out.end(), [&](const auto& m) { return m.first == key; });
    plain = text && key.find('\\') == std::string_view::npos && !repeated;
    if (plain) out.emplace_back(key, *text);
    return plain;
  });
  if (!plain) return std::nullopt;
  return out;
}

// One message: memoized, else from its bytes when plain, else from a small DOM of its own.
tokenize::Result<tokenize::TokenEstimate> count_message(const tokenize::ChatPromptCount& count,
                                                        tokenize::CountCache* cache,
                                                        std::string_view model, std::string_view body,
                                                        const core::JsonValue& message) {
  auto bytes = message.span.of(body);
  bool memo = cache != nullptr && bytes.size() >= tokenize::CountCache::kMinMessageBytes;
  if (memo) {
    if (auto hit = cache->find(model, bytes)) return *hit;
  }
  tokenize::Result<tokenize::TokenEstimate> r = tokenize::TokenEstimate{};
  if (auto plain = plain_members(body, message)) {
    r = count.count_plain(*plain);
  } else {
    r = count.count_message(core::dom_of(bytes));
  }
  if (r && memo) cache->put(model, bytes, *r);
  return r;
}

// A chat prompt, counted one message at a time (see count_message), then the tools and
// response_format from a DOM of their own.
std::optional<tokenize::TokenEstimate> chat_prompt(const core::ApiCall& call, const tokenize::Tokenizers& tokenizers,
                                                   std::string_view model) {
  const auto& f = *call.fields;
  if (f[BodyField::kMessages].kind != core::JsonKind::kArray) return std::nullopt;
  // Like estimate_chat_prompt: the body's model when the deployment names none.
  auto body_model = model.empty() ? core::as_string(call.body, f[BodyField::kModel]) : std::nullopt;
  std::string_view chosen = body_model ? std::string_view(*body_model) : model;
  const tokenize::Encoding* enc = tokenizers.find_for_model(model);
  if (enc == nullptr) return std::nullopt;
  tokenize::ChatPromptCount count(*enc, chosen);
  bool ok = true;
  core::each_element(call.body, f[BodyField::kMessages], [&](const core::JsonValue& m) {
    auto e = count_message(count, tokenizers.count_cache(), chosen, call.body, m);
    ok = e.ok();
    if (ok) count.add(*e);
    return ok;
  });
  if (!ok) return std::nullopt;
  auto rest = nlohmann::ordered_json::object();
  for (auto field : {BodyField::kTools, BodyField::kFunctions, BodyField::kResponseFormat}) {
    const auto& v = f[field];
    if (v.present()) rest[std::string(core::field_name(field))] = core::dom_of(v.span.of(call.body));
  }
  auto r = count.finish(rest);
  if (!r) return std::nullopt;
  return *r;
}

// A token id as the API takes it (and nlohmann reads it): a non-negative integer that fits 64
// bits unsigned.
bool is_token(std::string_view body, const core::JsonValue& v) {
  auto n = core::as_int(body, v);
  if (!n || *n < 0) return false;
  auto digits = v.span.of(body);
  return digits.size() < 20 || (digits.size() == 20 && digits <= "18446744073709551615");
}

std::uint64_t count_text(const tokenize::Encoding& enc, std::string_view body, const core::JsonValue& v) {
  if (auto plain = core::plain_string(body, v)) return enc.count(*plain);
  return enc.count(*core::as_string(body, v));
}

// estimate_text_or_tokens from the scan: a string, an array of strings, a token array or an
// array of token arrays. nullopt for any other shape (the ~4 bytes per token fallback).
std::optional<tokenize::TokenEstimate> text_or_tokens(const tokenize::Encoding& enc, std::string_view body,
                                                      const core::JsonValue& v) {
  using core::JsonKind;
  if (v.kind == JsonKind::kString) return tokenize::TokenEstimate{count_text(enc, body, v), true};
  if (v.kind != JsonKind::kArray) return std::nullopt;
  tokenize::TokenEstimate e{0, true};
  std::optional<JsonKind> first;
  bool tokens = false;
  bool ok = true;
  core::each_element(body, v, [&](const core::JsonValue& item) {
    if (!first) {
      first = item.kind;
      tokens = is_token(body, item);
    }
    if (*first == JsonKind::kString) {
      ok = item.kind == JsonKind::kString;
      if (ok) e.tokens += count_text(enc, body, item);
    } else if (tokens) {
      ok = is_token(body, item);
      e.tokens += 1;
    } else if (*first == JsonKind::kArray) {
      ok = item.kind == JsonKind::kArray;
      core::each_element(body, item, [&](const core::JsonValue& t) { return ok = is_token(body, t); });
      e.tokens += item.items;
    } else {
      ok = false;
    }
    return ok;
  });
  if (!ok) return std::nullopt;
  return e;
}

// estimate_completions_prompt and estimate_embeddings_input from the scan.
std::optional<tokenize::TokenEstimate> text_prompt(const core::ApiCall& call, const tokenize::Encoding& enc) {
  const auto& f = *call.fields;
  if (call.op == core::Operation::kEmbeddings) {
    const auto& input = f[BodyField::kInput];
    if (!input.present() || input.kind == core::JsonKind::kNull) return std::nullopt;
    return text_or_tokens(enc, call.body, input);
  }
  tokenize::TokenEstimate total{0, true};
  const auto& prompt = f[BodyField::kPrompt];
  if (!prompt.present() || prompt.kind == core::JsonKind::kNull) {
    total.tokens = 1;  // the API's default prompt is "<|endoftext|>"
  } else if (auto e = text_or_tokens(enc, call.body, prompt)) {
    total += *e;
  } else {
    return std::nullopt;
  }
  const auto& suffix = f[BodyField::kSuffix];
  if (suffix.present() && suffix.kind != core::JsonKind::kNull) {
    if (suffix.kind != core::JsonKind::kString) return std::nullopt;
    total += tokenize::TokenEstimate{count_text(enc, call.body, suffix), false};
  }
  return total;
}

// The prompt: exact with the tokenizer for chat, completions and embeddings, read from the
// scan of the body (no DOM of the whole body).
void prompt_estimate(const core::ApiCall& call, std::size_t body_bytes,
                     const tokenize::Tokenizers& tokenizers, std::string_view model, Estimate& e) {
  std::optional<tokenize::TokenEstimate> r;
  if (call.op == core::Operation::kChatCompletions) {
    r = chat_prompt(call, tokenizers, model);
  } else if (call.op == core::Operation::kCompletions || call.op == core::Operation::kEmbeddings) {
    if (const tokenize::Encoding* enc = tokenizers.find_for_model(model)) r = text_prompt(call, *enc);
  }
  if (r) {
    e.prompt = static_cast<std::int64_t>(r->tokens);
    e.exact = e.exact && r->exact;
    return;
  }
  // No tokenizer rule for this shape, or the encoding is not loaded: ~4 bytes per token.
  e.prompt = static_cast<std::int64_t>((body_bytes + 3) / 4);
  e.exact = false;
}

}  // namespace

Estimate admit(core::ApiCall& call, std::size_t body_bytes, const config::ClientConfig* client,
               const config::PolicyConfig& policy, const tokenize::Tokenizers& tokenizers,
               std::string_view model, PromptCount count) {
  Estimate e;
  if (!call.fields) return e;
  auto n = std::max<std::int64_t>(1, int_field(call, BodyField::kN));
  auto best_of = int_field(call, BodyField::kBestOf);
  if (policy.max_n > 0 && n > policy.max_n) {
    e.error = core::bad_request("n may be at most " + std::to_string(policy.max_n) + " on this gateway", "n");
    return e;
  }
  if (policy.max_best_of > 0 && best_of > policy.max_best_of) {
    e.error = core::bad_request(
        "best_of may be at most " + std::to_string(policy.max_best_of) + " on this gateway", "best_of");
    return e;
  }
  output_allowance(call, client, policy, std::max(n, best_of), e);
  if (e.error) return e;
  if (count == PromptCount::kCount) {
    prompt_estimate(call, body_bytes, tokenizers, model, e);
  } else {
    e.exact = false;
  }
  return e;
}

std::int64_t prompt_tokens(const core::ApiCall& call, std::size_t body_bytes,
                           const tokenize::Tokenizers& tokenizers, std::string_view model) {
  if (!call.fields || !core::is_inference(call.op)) return 0;
  Estimate e;
  prompt_estimate(call, body_bytes, tokenizers, model, e);
  return e.prompt;
}

std::int64_t count_output(const tokenize::Tokenizers& tokenizers, std::string_view model,
                          std::string_view text) {
  if (text.empty()) return 0;
  const tokenize::Encoding* enc = tokenizers.find_for_model(model);
  if (enc == nullptr) return static_cast<std::int64_t>((text.size() + 3) / 4);  // not loaded
  return static_cast<std::int64_t>(enc->count(text));
}

}  // namespace tollgate::ratelimit
