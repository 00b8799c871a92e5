// Request token estimation. Rules: OpenAI cookbook "How to count tokens with tiktoken"
// (messages, tools), OpenAI vision docs (images); see docs/design/tokenizer.md.
#include "tollgate/tokenize/estimate.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>

namespace tollgate::tokenize {
namespace {

using json = nlohmann::ordered_json;  // the gateway parses request bodies so (key order kept)

constexpr std::uint64_t kTokensPerMessage = 3;
constexpr std::uint64_t kTokensPerName = 1;
constexpr std::uint64_t kReplyPriming = 3;
// Cookbook num_tokens_for_tools constants.
constexpr std::int64_t kPropInit = 3, kPropKey = 3, kEnumInit = -3, kEnumItem = 3, kFuncEnd = 12;

Error type_error(const std::string& path, std::string_view expected) {
  return Error{path + ": expected " + std::string(expected)};
}

std::string strip_trailing_dot(std::string s) {
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

// JSON text that never throws (a programmatically built value may hold invalid UTF-8).
std::string dump(const json& v) {
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

// A string as-is, anything else as its JSON text (for approximations only).
std::string text_of(const json& v) {
  if (v.is_string()) return v.get_ref<const std::string&>();
  if (v.is_null()) return {};
  return dump(v);
}

const json* find(const json& obj, std::string_view key) {
  if (!obj.is_object()) return nullptr;
  const auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

// Counts the string leaves of an arbitrary value (keys excluded): an approximation used for
// fields the published rules do not cover (tool_calls, audio, unknown parts).
std::uint64_t count_string_leaves(const Encoding& enc, const json& v, int depth = 0) {
  if (depth > 64) return 0;
  if (v.is_string()) return enc.count(v.get_ref<const std::string&>());
  std::uint64_t n = 0;
  if (v.is_array() || v.is_object()) {
    for (const auto& item : v) n += count_string_leaves(enc, item, depth + 1);
  } else if (!v.is_null()) {
    n += enc.count(dump(v));
  }
  return n;
}

ImageDetail parse_detail(const json* d) {
  if (d != nullptr && d->is_string()) {
    const auto& s = d->get_ref<const std::string&>();
    if (s == "low") return ImageDetail::kLow;
    if (s == "high") return ImageDetail::kHigh;
  }
  return ImageDetail::kAuto;
}

Result<TokenEstimate> estimate_content_part(const Encoding& enc, const json& part,
                                            std::string_view model, const std::string& path) {
  if (!part.is_object()) return type_error(path, "an object");
  const json* type = find(part, "type");
  if (type == nullptr || !type->is_string()) return type_error(path + ".type", "a string");
  const auto& t = type->get_ref<const std::string&>();
  if (t == "text" || t == "refusal") {
    const json* text = find(part, t);
    if (text == nullptr || !text->is_string()) return type_error(path + "." + t, "a string");
    return TokenEstimate{enc.count(text->get_ref<const std::string&>()), true};
  }
  if (t == "image_url") {
    const json* image = find(part, "image_url");
    std::string_view url;
    const json* detail = nullptr;
    if (image != nullptr && image->is_string()) {
      url = image->get_ref<const std::string&>();
    } else if (image != nullptr && image->is_object()) {
      const json* u = find(*image, "url");
      if (u == nullptr || !u->is_string()) return type_error(path + ".image_url.url", "a string");
      url = u->get_ref<const std::string&>();
      detail = find(*image, "detail");
    } else {
      return type_error(path + ".image_url", "an object");
    }
    return TokenEstimate{image_tokens(model, image_size_from_url(url), parse_detail(detail)),
                         false};
  }
  // input_audio, file, and part types added later: not modelled. Count their string leaves
  // except bulky base64 payloads, and mark the result as an estimate.
  if (t == "input_audio" || t == "file") return TokenEstimate{0, false};
  return TokenEstimate{count_string_leaves(enc, part), false};
}

Result<TokenEstimate> estimate_message(const Encoding& enc, const json& m, std::string_view model,
                                       const std::string& path) {
  if (!m.is_object()) return type_error(path, "an object");
  TokenEstimate e{kTokensPerMessage, true};
  for (const auto& [key, value] : m.items()) {
    const std::string field = path + "." + key;
    if (key == "content") {
      if (value.is_string()) {
        e.tokens += enc.count(value.get_ref<const std::string&>());
      } else if (value.is_array()) {
        if (value.size() != 1) e.exact = false;  // how parts are joined is not published
        std::size_t i = 0;
        for (const auto& part : value) {
          auto p = estimate_content_part(enc, part, model, field + "[" + std::to_string(i++) + "]");
          if (!p) return p.error();
          e += *p;
        }
      } else if (!value.is_null()) {
        return type_error(field, "a string, an array or null");
      }
    } else if (key == "role" || key == "name") {
      if (!value.is_string()) return type_error(field, "a string");
      e.tokens += enc.count(value.get_ref<const std::string&>());
      if (key == "name") e.tokens += kTokensPerName;
    } else if (value.is_string()) {
      // The cookbook counts every field's value (tool_call_id, refusal, ...).
      e.tokens += enc.count(value.get_ref<const std::string&>());
    } else if (!value.is_null()) {
      // tool_calls, function_call, audio: not covered by the published formula.
      e.tokens += count_string_leaves(enc, value);
      e.exact = false;
    }
  }
  return e;
}

// One function definition, per the cookbook's num_tokens_for_tools.
Result<std::int64_t> function_tokens(const Encoding& enc, const json& f, std::int64_t func_init,
                                     const std::string& path) {
  if (!f.is_object()) return type_error(path, "an object");
  const json* name = find(f, "name");
  if (name == nullptr || !name->is_string()) return type_error(path + ".name", "a string");
  std::int64_t n = func_init;
  const json* desc = find(f, "description");
  n += static_cast<std::int64_t>(enc.count(name->get_ref<const std::string&>() + ":" +
                                           strip_trailing_dot(desc ? text_of(*desc) : "")));
  const json* params = find(f, "parameters");
  const json* props = params != nullptr ? find(*params, "properties") : nullptr;
  if (props != nullptr && props->is_object() && !props->empty()) {
    n += kPropInit;
    for (const auto& [key, prop] : props->items()) {
      n += kPropKey;
      const json* type = find(prop, "type");
      const json* pdesc = find(prop, "description");
      if (const json* items = find(prop, "enum"); items != nullptr && items->is_array()) {
        n += kEnumInit;
        for (const auto& item : *items) {
          n += kEnumItem + static_cast<std::int64_t>(enc.count(text_of(item)));
        }
      }
      n += static_cast<std::int64_t>(enc.count(key + ":" + (type ? text_of(*type) : "") + ":" +
                                               strip_trailing_dot(pdesc ? text_of(*pdesc) : "")));
    }
  }
  return n;
}

Result<TokenEstimate> estimate_tools(const Encoding& enc, const json& body) {
  // 7 for the gpt-4o family (o200k models), 10 for gpt-3.5 / gpt-4 (cookbook).
  const std::int64_t func_init = enc.kind() == EncodingKind::kO200kBase ? 7 : 10;
  std::int64_t total = 0;
  bool any = false;
  if (const json* tools = find(body, "tools"); tools != nullptr && !tools->is_null()) {
    if (!tools->is_array()) return type_error("tools", "an array");
    std::size_t i = 0;
    for (const auto& tool : *tools) {
      const std::string path = "tools[" + std::to_string(i++) + "]";
      if (!tool.is_object()) return type_error(path, "an object");
      const json* fn = find(tool, "function");
      if (fn != nullptr) {
        auto n = function_tokens(enc, *fn, func_init, path + ".function");
        if (!n) return n.error();
        total += *n;
      } else {
        // Built-in or custom tools: no published rule.
        total += func_init + static_cast<std::int64_t>(count_string_leaves(enc, tool));
      }
      any = true;
    }
  }
  if (const json* fns = find(body, "functions"); fns != nullptr && !fns->is_null()) {
    if (!fns->is_array()) return type_error("functions", "an array");
    std::size_t i = 0;
    for (const auto& fn : *fns) {
      auto n = function_tokens(enc, fn, func_init, "functions[" + std::to_string(i++) + "]");
      if (!n) return n.error();
      total += *n;
      any = true;
    }
  }
  if (!any) return TokenEstimate{0, true};
  total += kFuncEnd;
  return TokenEstimate{static_cast<std::uint64_t>(std::max<std::int64_t>(total, 0)), false};
}

// Appends the count of `v` (string, array of strings, token array, array of token arrays).
Result<TokenEstimate> estimate_text_or_tokens(const Encoding& enc, const json& v,
                                              const std::string& path) {
  auto is_token = [](const json& x) {
    return x.is_number_unsigned() || (x.is_number_integer() && x.get<std::int64_t>() >= 0);
  };
  if (v.is_string()) return TokenEstimate{enc.count(v.get_ref<const std::string&>()), true};
  if (!v.is_array()) return type_error(path, "a string or an array");
  TokenEstimate e{0, true};
  if (v.empty()) return e;
  const json& first = v.front();
  std::size_t i = 0;
  for (const auto& item : v) {
    const std::string ipath = path + "[" + std::to_string(i++) + "]";
    if (first.is_string()) {
      if (!item.is_string()) return type_error(ipath, "a string");
      e.tokens += enc.count(item.get_ref<const std::string&>());
    } else if (is_token(first)) {
      if (!is_token(item)) return type_error(ipath, "a token id (a non-negative integer)");
      e.tokens += 1;
    } else if (first.is_array()) {
      if (!item.is_array()) return type_error(ipath, "an array of token ids");
      for (const auto& t : item) {
        if (!is_token(t)) return type_error(ipath, "an array of token ids");
      }
      e.tokens += item.size();
    } else {
      return type_error(ipath, "a string, a token id or an array of token ids");
    }
  }
  return e;
}

}  // namespace

std::optional<RequestKind> parse_request_kind(std::string_view name) noexcept {
  if (name == "chat") return RequestKind::kChat;
  if (name == "completions") return RequestKind::kCompletions;
  if (name == "embeddings") return RequestKind::kEmbeddings;
  return std::nullopt;
}

ChatPromptCount::ChatPromptCount(const Encoding& enc, std::string_view model)
    : enc_(enc), model_(model), total_{kReplyPriming, true} {}

std::optional<Error> ChatPromptCount::add_message(const json& message) {
  auto e = count_message(message);
  if (!e) return e.error();
  add(*e);
  return std::nullopt;
}

Result<TokenEstimate> ChatPromptCount::count_message(const json& message) const {
  return estimate_message(enc_, message, model_, "messages[" + std::to_string(index_) + "]");
}

// estimate_message for a message of string members: 3, each value's tokens, 1 for a name.
TokenEstimate ChatPromptCount::count_plain(
    std::span<const std::pair<std::string_view, std::string_view>> members) const {
  TokenEstimate e{kTokensPerMessage, true};
  for (const auto& [key, value] : members) {
    e.tokens += enc_.count(value);
    if (key == "name") e.tokens += kTokensPerName;
  }
  return e;
}

Result<TokenEstimate> ChatPromptCount::finish(const json& body) const {
  if (!body.is_object()) return type_error("body", "a JSON object");
  TokenEstimate total = total_;
  auto tools = estimate_tools(enc_, body);
  if (!tools) return tools.error();
  total += *tools;
  // Structured output schemas are part of the prompt; no published rule: count their text.
  if (const json* rf = find(body, "response_format"); rf != nullptr && rf->is_object()) {
    if (const json* schema = find(*rf, "json_schema"); schema != nullptr && !schema->is_null()) {
      total += TokenEstimate{enc_.count(dump(*schema)), false};
    }
  }
  return total;
}

Result<TokenEstimate> estimate_chat_prompt(const Encoding& enc, const json& body,
                                           std::string_view model) {
  if (!body.is_object()) return type_error("body", "a JSON object");
  if (model.empty()) {
    if (const json* m = find(body, "model"); m != nullptr && m->is_string()) {
      model = m->get_ref<const std::string&>();
    }
  }
  const json* messages = find(body, "messages");
  if (messages == nullptr || !messages->is_array()) return type_error("messages", "an array");
  ChatPromptCount count(enc, model);
  for (const auto& m : *messages) {
    if (auto error = count.add_message(m)) return *error;
  }
  return count.finish(body);
}

Result<TokenEstimate> estimate_completions_prompt(const Encoding& enc, const json& body) {
  if (!body.is_object()) return type_error("body", "a JSON object");
  TokenEstimate total{0, true};
  const json* prompt = find(body, "prompt");
  if (prompt == nullptr || prompt->is_null()) {
    total.tokens = 1;  // the API's default prompt is "<|endoftext|>"
  } else {
    auto e = estimate_text_or_tokens(enc, *prompt, "prompt");
    if (!e) return e.error();
    total += *e;
  }
  if (const json* suffix = find(body, "suffix"); suffix != nullptr && !suffix->is_null()) {
    if (!suffix->is_string()) return type_error("suffix", "a string");
    total += TokenEstimate{enc.count(suffix->get_ref<const std::string&>()), false};
  }
  return total;
}

Result<TokenEstimate> estimate_embeddings_input(const Encoding& enc, const json& body) {
  if (!body.is_object()) return type_error("body", "a JSON object");
  const json* input = find(body, "input");
  if (input == nullptr || input->is_null()) return Error{"input: required"};
  return estimate_text_or_tokens(enc, *input, "input");
}

Result<TokenEstimate> estimate_output_allowance(RequestKind kind, const json& body,
                                                std::uint64_t default_max_tokens) {
  if (!body.is_object()) return type_error("body", "a JSON object");
  if (kind == RequestKind::kEmbeddings) return TokenEstimate{0, true};
  auto non_negative = [&](const char* key,
                          std::optional<std::uint64_t>& out) -> std::optional<Error> {
    const json* v = find(body, key);
    if (v == nullptr || v->is_null()) return std::nullopt;
    if (v->is_number_unsigned()) {
      out = v->get<std::uint64_t>();
    } else if (v->is_number_integer() && v->get<std::int64_t>() >= 0) {
      out = static_cast<std::uint64_t>(v->get<std::int64_t>());
    } else {
      return type_error(key, "a non-negative integer");
    }
    return std::nullopt;
  };
  std::optional<std::uint64_t> max_completion, max_tokens, n, best_of;
  for (auto [key, slot] : {std::pair<const char*, std::optional<std::uint64_t>*>{
                               "max_completion_tokens", &max_completion},
                           {"max_tokens", &max_tokens},
                           {"n", &n},
                           {"best_of", &best_of}}) {
    if (auto err = non_negative(key, *slot)) return *err;
  }
  TokenEstimate e{default_max_tokens, false};
  if (max_completion) {
    e = TokenEstimate{*max_completion, true};
  } else if (max_tokens) {
    e = TokenEstimate{*max_tokens, true};
  }
  const std::uint64_t mult = std::max<std::uint64_t>({1, n.value_or(1), best_of.value_or(1)});
  // Saturate instead of wrapping on absurd values.
  constexpr std::uint64_t kCap = std::uint64_t{1} << 48;
  e.tokens = std::min(e.tokens, kCap) * std::min(mult, std::uint64_t{1} << 15);
  return e;
}

Result<TokenEstimate> estimate_prompt(RequestKind kind, const Encoding& enc, const json& body,
                                      std::string_view model) {
  switch (kind) {
    case RequestKind::kChat:
      return estimate_chat_prompt(enc, body, model);
    case RequestKind::kCompletions:
      return estimate_completions_prompt(enc, body);
    case RequestKind::kEmbeddings:
      return estimate_embeddings_input(enc, body);
  }
  return Error{"unknown request kind"};
}

}  // namespace tollgate::tokenize
