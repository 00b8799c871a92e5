#include "mock/wire.hpp"

#include <array>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

namespace tollgate::mock {
namespace {

using json = nlohmann::json;
using namespace std::string_view_literals;

constexpr std::array<std::string_view, 32> kWords = {
    "This",   "is",  "a",     "mock",   "reply", "from",    "the",   "test",
    "server", "and", "each",  "word",   "is",    "one",     "token", "so",
    "that",   "the", "usage", "can",    "be",    "checked", "by",    "the",
    "client", "in",  "a",     "simple", "way",   "with",    "no",    "surprises"};

// Choice-level results as Azure sends them with released text.
constexpr std::string_view kChoiceFilter =
    R"({"hate":{"filtered":false,"severity":"safe"},)"
    R"("protected_material_code":{"filtered":false,"detected":false},)"
    R"("protected_material_text":{"filtered":false,"detected":false},)"
    R"("self_harm":{"filtered":false,"severity":"safe"},)"
    R"("sexual":{"filtered":false,"severity":"safe"},)"
    R"("violence":{"filtered":false,"severity":"safe"}})";

constexpr std::string_view kPromptFilterResults =
    R"({"hate":{"filtered":false,"severity":"safe"},)"
    R"("jailbreak":{"filtered":false,"detected":false},)"
    R"("self_harm":{"filtered":false,"severity":"safe"},)"
    R"("sexual":{"filtered":false,"severity":"safe"},)"
    R"("violence":{"filtered":false,"severity":"safe"}})";

constexpr std::string_view kStreamError =
    R"({"error":{"message":"The server had an error while processing your request. Sorry about )"
    R"(that!","type":"server_error","param":null,"code":null}})";

void append_uint(std::string& out, std::uint64_t v) {
  char buf[24];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, p);
}

void append_int(std::string& out, std::int64_t v) {
  char buf[24];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, p);
}

void append_float(std::string& out, float v) {
  char buf[32];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, p);
}

std::uint64_t ceil_div4(std::uint64_t chars) {
  return (chars + 3) / 4;
}

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::uint64_t fnv1a(std::string_view s, std::uint64_t h = 0xcbf29ce484222325ULL) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

void append_prompt_filters(std::string& out, unsigned prompts) {
  out += R"("prompt_filter_results":[)"sv;
  for (unsigned i = 0; i < prompts; ++i) {
    if (i) out += ',';
    out += R"({"prompt_index":)"sv;
    append_uint(out, i);
    out += R"(,"content_filter_results":)"sv;
    out += kPromptFilterResults;
    out += '}';
  }
  out += ']';
}

void append_chat_usage(std::string& out, std::uint64_t prompt, std::uint64_t completion) {
  out += R"({"completion_tokens":)"sv;
  append_uint(out, completion);
  out += R"(,"completion_tokens_details":{"accepted_prediction_tokens":0,"audio_tokens":0,)"
         R"("reasoning_tokens":0,"rejected_prediction_tokens":0},"prompt_tokens":)"sv;
  append_uint(out, prompt);
  out += R"(,"prompt_tokens_details":{"audio_tokens":0,"cached_tokens":0},"total_tokens":)"sv;
  append_uint(out, prompt + completion);
  out += '}';
}

void append_text_usage(std::string& out, std::uint64_t prompt, std::uint64_t completion) {
  out += R"({"completion_tokens":)"sv;
  append_uint(out, completion);
  out += R"(,"prompt_tokens":)"sv;
  append_uint(out, prompt);
  out += R"(,"total_tokens":)"sv;
  append_uint(out, prompt + completion);
  out += '}';
}

std::string_view finish_reason(const CompletionSpec& s) {
  if (s.truncated) return "length";
  return s.tool_call.empty() ? "stop" : "tool_calls";
}

// Tool-call arguments: {"text":"<the completion words>"}, streamed one word per fragment.
std::string tool_fragment(unsigned t, unsigned tokens) {
  std::string f = t == 0 ? R"({"text":")" : " ";
  f += kWords[t % kWords.size()];
  if (t + 1 == tokens) f += R"("})";
  return f;
}

// `"created":…,"id":…,"model":…,"object":…` — the common tail of a chunk / completion.
void append_identity(std::string& out, const CompletionSpec& s, std::string_view object) {
  out += R"("created":)"sv;
  append_int(out, s.created);
  out += R"(,"id":)"sv;
  append_json_string(out, s.id);
  out += R"(,"model":)"sv;
  append_json_string(out, s.model);
  out += R"(,"object":")"sv;
  out += object;
  out += '"';
}

std::string event(std::string_view json_text) {
  std::string e;
  e.reserve(json_text.size() + 8);
  e += "data: ";
  e += json_text;
  e += "\n\n";
  return e;
}

std::string prompt_filter_chunk(const CompletionSpec& s, bool include_usage) {
  std::string out = R"(data: {"choices":[],"created":0,"id":"","model":"","object":"",)";
  append_prompt_filters(out, s.prompts);
  if (include_usage) out += R"(,"usage":null)"sv;
  out += "}\n\n";
  return out;
}

WireError bad_request(std::string_view message, std::string_view param = {}) {
  return WireError{400, error_invalid_request(message, param)};
}

// --- body inspection helpers (never throw: every access checks the type first) ---

struct Inspector {
  const json& j;
  std::optional<WireError> error;

  const json* find(const char* key) const {
    auto it = j.find(key);
    return it == j.end() ? nullptr : &*it;
  }

  bool fail(std::string message, std::string_view param = {}) {
    if (!error) error = bad_request(message, param);
    return false;
  }

  bool get_bool(const char* key, bool& out) {
    const json* v = find(key);
    if (!v || v->is_null()) return true;
    if (!v->is_boolean()) {
      return fail(v->dump(-1, ' ', false, json::error_handler_t::replace) +
                      " is not of type 'boolean' - '" + key + "'",
                  key);
    }
    out = v->get<bool>();
    return true;
  }

  // Unsigned integer in [min, max]; absent or null leaves `out` untouched.
  template <class T>
  bool get_uint(const char* key, T& out, std::uint64_t min, std::uint64_t max) {
    const json* v = find(key);
    if (!v || v->is_null()) return true;
    if (!v->is_number_integer() ||
        (v->is_number_integer() && !v->is_number_unsigned() && v->get<std::int64_t>() < 0)) {
      return fail("Invalid type for '" + std::string(key) + "': expected an integer.", key);
    }
    std::uint64_t x = v->get<std::uint64_t>();
    if (x < min || x > max) {
      return fail("Invalid value for '" + std::string(key) + "': must be between " +
                      std::to_string(min) + " and " + std::to_string(max) + ".",
                  key);
    }
    out = static_cast<T>(x);
    return true;
  }

  bool get_opt_uint(const char* key, std::optional<std::uint64_t>& out, std::uint64_t min) {
    std::uint64_t v = 0;
    const json* p = find(key);
    if (!p || p->is_null()) return true;
    if (!get_uint(key, v, min, std::uint64_t{1} << 40)) return false;
    out = v;
    return true;
  }

  bool get_string(const char* key, std::string& out) {
    const json* v = find(key);
    if (!v || v->is_null()) return true;
    if (!v->is_string()) {
      return fail(std::string("Invalid type for '") + key + "': expected a string.", key);
    }
    out = v->get_ref<const std::string&>();
    return true;
  }
};

// Characters of a message/item `content`: a string, or an array of parts with "text".
std::uint64_t content_chars(const json& content) {
  if (content.is_string()) return utf8_length(content.get_ref<const std::string&>());
  std::uint64_t n = 0;
  if (content.is_array()) {
    for (const auto& part : content) {
      if (part.is_string()) {
        n += utf8_length(part.get_ref<const std::string&>());
      } else if (part.is_object()) {
        auto t = part.find("text");
        if (t != part.end() && t->is_string()) n += utf8_length(t->get_ref<const std::string&>());
      }
    }
  }
  return n;
}

bool is_token_array(const json& v) {
  if (!v.is_array() || v.empty()) return false;
  for (const auto& t : v) {
    if (!t.is_number_integer()) return false;
  }
  return true;
}

std::uint64_t token_seed(const json& tokens) {
  std::uint64_t h = 0x84222325cbf29ce4ULL;
  for (const auto& t : tokens)
    h = splitmix64(h ^ static_cast<std::uint64_t>(t.get<std::int64_t>()));
  return h;
}

void inspect_chat(Inspector& in, InferenceParams& p) {
  const json* messages = in.find("messages");
  if (!messages) {
    in.fail("'messages' is a required property", "messages");
    return;
  }
  if (!messages->is_array()) {
    in.fail("Invalid type for 'messages': expected an array of objects.", "messages");
    return;
  }
  if (messages->empty()) {
    in.fail("[] is too short - 'messages'", "messages");
    return;
  }
  std::uint64_t chars = 0;
  std::uint64_t count = 0;
  for (const auto& m : *messages) {
    if (!m.is_object()) {
      in.fail("Invalid type for 'messages[" + std::to_string(count) + "]': expected an object.",
              "messages");
      return;
    }
    if (auto c = m.find("content"); c != m.end()) chars += content_chars(*c);
    ++count;
  }
  p.prompt_estimate = ceil_div4(chars);
  p.prompt_tokens = p.prompt_estimate + 3 * count + 3;
  if (!in.get_opt_uint("max_tokens", p.max_tokens, 1)) return;
  std::optional<std::uint64_t> mct;
  if (!in.get_opt_uint("max_completion_tokens", mct, 1)) return;
  if (mct) p.max_tokens = mct;
  if (!in.get_uint("n", p.n, 1, 128)) return;

  // Tools: a call is made (deterministically) when tool_choice is "required" or names a function.
  const json* tools = in.find("tools");
  if (!tools || tools->is_null()) return;
  if (!tools->is_array()) {
    in.fail("Invalid type for 'tools': expected an array.", "tools");
    return;
  }
  std::string first;
  for (const auto& t : *tools) {
    auto fn = t.is_object() ? t.find("function") : t.end();
    auto name = (fn != t.end() && fn->is_object()) ? fn->find("name") : fn;
    if (fn == t.end() || !fn->is_object() || name == fn->end() || !name->is_string()) {
      in.fail("Invalid value for 'tools': each tool needs function.name.", "tools");
      return;
    }
    if (first.empty()) first = name->get<std::string>();
  }
  const json* choice = in.find("tool_choice");
  if (!choice || choice->is_null()) return;
  if (choice->is_string()) {
    if (*choice == "required") p.tool_call = first;
  } else if (choice->is_object()) {
    auto fn = choice->find("function");
    if (fn != choice->end() && fn->is_object()) {
      auto name = fn->find("name");
      if (name != fn->end() && name->is_string()) p.tool_call = name->get<std::string>();
    }
  }
}

void inspect_completions(Inspector& in, InferenceParams& p) {
  const json* prompt = in.find("prompt");
  std::uint64_t estimate = 0;
  p.prompts = 1;
  if (prompt && !prompt->is_null()) {
    if (prompt->is_string()) {
      estimate = ceil_div4(utf8_length(prompt->get_ref<const std::string&>()));
    } else if (is_token_array(*prompt)) {
      estimate = prompt->size();
    } else if (prompt->is_array() && !prompt->empty()) {
      p.prompts = 0;
      for (const auto& x : *prompt) {
        if (x.is_string()) {
          estimate += ceil_div4(utf8_length(x.get_ref<const std::string&>()));
        } else if (is_token_array(x)) {
          estimate += x.size();
        } else {
          in.fail(
              "Invalid value for 'prompt': expected a string, an array of strings, an array "
              "of tokens or an array of token arrays.",
              "prompt");
          return;
        }
        ++p.prompts;
      }
    } else {
      in.fail(
          "Invalid value for 'prompt': expected a string, an array of strings, an array of "
          "tokens or an array of token arrays.",
          "prompt");
      return;
    }
  }
  p.prompt_estimate = estimate;
  p.prompt_tokens = estimate;
  p.max_tokens = 16;  // the completions API default
  if (!in.get_opt_uint("max_tokens", p.max_tokens, 1)) return;
  if (!in.get_uint("n", p.n, 1, 128)) return;
  if (!in.get_uint("best_of", p.best_of, 0, 20)) return;
  if (p.best_of > 1 && p.stream) {
    in.fail("Invalid value for 'best_of': best_of cannot be used with stream.", "best_of");
    return;
  }
  if (p.best_of != 0 && p.best_of < p.n) {
    in.fail("best_of must be greater than or equal to n.", "best_of");
    return;
  }
  if (p.prompts > 2048) in.fail("Too many prompts: at most 2048 are allowed.", "prompt");
}

void inspect_embeddings(Inspector& in, InferenceParams& p) {
  const json* input = in.find("input");
  if (!input || input->is_null()) {
    in.fail("'input' is a required property", "input");
    return;
  }
  auto invalid = [&] {
    in.fail(
        "'$.input' is invalid. Please check the API reference: "
        "https://platform.openai.com/docs/api-reference.",
        "input");
  };
  auto add_string = [&](const std::string& s) {
    if (s.empty()) return false;
    p.inputs.push_back({ceil_div4(utf8_length(s)), fnv1a(s)});
    return true;
  };
  if (input->is_string()) {
    if (!add_string(input->get_ref<const std::string&>())) return invalid();
  } else if (is_token_array(*input)) {
    p.inputs.push_back({input->size(), token_seed(*input)});
  } else if (input->is_array() && !input->empty()) {
    if (input->size() > 2048) return invalid();
    for (const auto& x : *input) {
      if (x.is_string()) {
        if (!add_string(x.get_ref<const std::string&>())) return invalid();
      } else if (is_token_array(x)) {
        p.inputs.push_back({x.size(), token_seed(x)});
      } else {
        return invalid();
      }
    }
  } else {
    return invalid();
  }
  for (const auto& i : p.inputs) p.prompt_tokens += i.tokens;
  p.prompt_estimate = p.prompt_tokens;
  if (!in.get_uint("dimensions", p.dimensions, 1, 3072)) return;
  std::string format;
  if (!in.get_string("encoding_format", format)) return;
  if (format == "base64") {
    p.base64 = true;
  } else if (!format.empty() && format != "float") {
    in.fail("Invalid value for 'encoding_format': expected 'float' or 'base64'.",
            "encoding_format");
  }
}

void inspect_responses(Inspector& in, InferenceParams& p) {
  std::uint64_t chars = 0;
  std::uint64_t items = 0;
  if (const json* input = in.find("input"); input && !input->is_null()) {
    if (input->is_string()) {
      chars = utf8_length(input->get_ref<const std::string&>());
      items = 1;
    } else if (input->is_array()) {
      for (const auto& item : *input) {
        ++items;
        if (!item.is_object()) {
          chars += content_chars(item);
          continue;
        }
        if (auto c = item.find("content"); c != item.end()) chars += content_chars(*c);
        if (auto o = item.find("output"); o != item.end() && o->is_string()) {
          chars += utf8_length(o->get_ref<const std::string&>());
        }
      }
    } else {
      in.fail("Invalid type for 'input': expected a string or an array of input items.", "input");
      return;
    }
  }
  if (const json* ins = in.find("instructions"); ins && ins->is_string()) {
    chars += utf8_length(ins->get_ref<const std::string&>());
  }
  p.prompt_estimate = ceil_div4(chars);
  p.prompt_tokens = p.prompt_estimate + 3 * items + 3;
  if (!in.get_opt_uint("max_output_tokens", p.max_tokens, 1)) return;
  if (!in.get_string("previous_response_id", p.previous_response_id)) return;
  if (!in.get_bool("store", p.store)) return;
  if (!in.get_bool("background", p.background)) return;
  if (p.stream) {
    in.fail("tollgate-mock does not implement streaming for the Responses API.", "stream");
  }
}

const char* status_code_text(int status, char (&buf)[8]) {
  auto [p, ec] = std::to_chars(buf, buf + 7, status);
  *p = '\0';
  return buf;
}

}  // namespace

std::string_view operation_id(Operation op) {
  switch (op) {
    case Operation::ChatCompletions:
      return "ChatCompletions_Create";
    case Operation::Completions:
      return "Completions_Create";
    case Operation::Embeddings:
      return "Embeddings_Create";
    case Operation::ResponsesCreate:
      return "Responses_Create";
    case Operation::ResponsesGet:
      return "Responses_Get";
    case Operation::ResponsesDelete:
      return "Responses_Delete";
    case Operation::FilesCreate:
      return "Files_Upload";
    case Operation::FilesGet:
      return "Files_Get";
    case Operation::FilesDelete:
      return "Files_Delete";
    case Operation::FilesContent:
      return "Files_GetContent";
    case Operation::ResponsesCancel:
      return "Responses_Cancel";
    case Operation::BatchesCreate:
      return "Batch_Create";
    case Operation::BatchesGet:
      return "Batch_Get";
    case Operation::BatchesCancel:
      return "Batch_Cancel";
    case Operation::FilesList:
      return "Files_List";
  }
  return "Unknown";
}

std::uint64_t utf8_length(std::string_view s) {
  std::uint64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

bool json_too_deep(std::string_view body, unsigned limit) {
  unsigned depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return false;
}

namespace {

unsigned hex4_at(std::string_view s, std::size_t i) {
  unsigned v = 0;
  for (std::size_t k = i; k < i + 4 && k < s.size(); ++k) {
    char c = s[k];
    v = v * 16 + static_cast<unsigned>(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
  }
  return v;
}

// Azure's service takes JSON that nlohmann refuses: lone surrogate escapes ("\ud800") and numbers
// beyond a double. A copy nlohmann can parse: those become "\ufffd" and 0.
std::string lenient_json_copy(std::string_view body) {
  std::string out;
  out.reserve(body.size());
  bool in_string = false;
  for (std::size_t i = 0; i < body.size();) {
    char c = body[i];
    if (in_string && c == '\\' && i + 6 <= body.size() && body[i + 1] == 'u') {
      unsigned cp = hex4_at(body, i + 2);
      bool high = cp >= 0xD800 && cp <= 0xDBFF;
      bool pair = high && i + 12 <= body.size() && body[i + 6] == '\\' && body[i + 7] == 'u' &&
                  hex4_at(body, i + 8) >= 0xDC00 && hex4_at(body, i + 8) <= 0xDFFF;
      bool lone = !pair && cp >= 0xD800 && cp <= 0xDFFF;
      std::size_t n = pair ? 12 : 6;
      out.append(lone ? std::string_view("\\ufffd") : body.substr(i, n));
      i += n;
    } else if (in_string && c == '\\') {
      out.append(body.substr(i, 2));
      i += 2;
    } else if (!in_string && (c == '-' || (c >= '0' && c <= '9'))) {
      auto end = body.find_first_not_of("0123456789+-.eE", i);
      if (end == std::string_view::npos) end = body.size();
      std::string token(body.substr(i, end - i));
      out += std::isinf(std::strtod(token.c_str(), nullptr)) ? std::string("0") : token;
      i = end;
    } else {
      if (c == '"') in_string = !in_string;
      out += c;
      ++i;
    }
  }
  return out;
}

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  std::size_t i = 0;
  while (i < s.size()) {
    // Copy the longest run that needs no escaping in one append.
    std::size_t run = i;
    while (run < s.size()) {
      auto c = static_cast<unsigned char>(s[run]);
      if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') break;
      ++run;
    }
    if (run > i) {
      out.append(s.data() + i, run - i);
      i = run;
      continue;
    }
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        default:
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
      }
      ++i;
      continue;
    }
    // Multi-byte UTF-8: copy a well-formed sequence, replace anything else with U+FFFD.
    std::size_t len = (c >= 0xF0 && c <= 0xF4)  ? 4
                      : (c >= 0xE0)             ? 3
                      : (c >= 0xC2 && c < 0xE0) ? 2
                                                : 0;
    bool ok = len != 0 && i + len <= s.size();
    for (std::size_t k = 1; ok && k < len; ++k) {
      ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
    }
    if (ok && len == 3) {
      auto c1 = static_cast<unsigned char>(s[i + 1]);
      ok = !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0);
    } else if (ok && len == 4) {
      auto c1 = static_cast<unsigned char>(s[i + 1]);
      ok = !(c == 0xF0 && c1 < 0x90) && !(c == 0xF4 && c1 >= 0x90);
    }
    if (ok) {
      out.append(s.data() + i, len);
      i += len;
    } else {
      out += "\\ufffd";
      ++i;
    }
  }
  out += '"';
}

InspectResult inspect_body(Operation op, std::string_view body) {
  InspectResult r;
  static const std::string kUnparsable =
      "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
      "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
      "sent was not valid JSON. If you have trouble figuring out how to fix this, please contact "
      "us through our help center at help.openai.com.)";
  if (json_too_deep(body, 256)) {
    r.error = bad_request(kUnparsable);
    return r;
  }
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) j = json::parse(lenient_json_copy(body), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    r.error = bad_request(kUnparsable);
    return r;
  }
  if (!j.is_object()) {
    r.error = bad_request("Invalid request body: expected a JSON object.");
    return r;
  }
  Inspector in{j, std::nullopt};
  InferenceParams& p = r.params;
  in.get_string("model", p.model);
  in.get_bool("stream", p.stream);
  if (const json* so = in.find("stream_options"); so && !so->is_null()) {
    if (!p.stream) {
      in.fail("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
              "stream_options");
    } else if (!so->is_object()) {
      in.fail("Invalid type for 'stream_options': expected an object.", "stream_options");
    } else if (auto iu = so->find("include_usage"); iu != so->end() && !iu->is_null()) {
      if (iu->is_boolean()) {
        p.include_usage = iu->get<bool>();
      } else {
        in.fail("Invalid type for 'stream_options.include_usage': expected a boolean.",
                "stream_options.include_usage");
      }
    }
  }
  if (!in.error) {
    switch (op) {
      case Operation::ChatCompletions:
        inspect_chat(in, p);
        break;
      case Operation::Completions:
        inspect_completions(in, p);
        break;
      case Operation::Embeddings:
        inspect_embeddings(in, p);
        break;
      case Operation::ResponsesCreate:
        inspect_responses(in, p);
        break;
      default:
        break;
    }
  }
  r.error = std::move(in.error);
  return r;
}

std::uint64_t tpm_estimate(Operation op, const InferenceParams& p) {
  if (op == Operation::Embeddings) return p.prompt_estimate;
  std::uint64_t out = p.max_tokens.value_or(16);
  std::uint64_t mult = std::max<std::uint64_t>({p.n, p.best_of, 1});
  return p.prompt_estimate + out * mult * std::max(1u, p.prompts);
}

std::string completion_text(unsigned tokens) {
  std::string s;
  s.reserve(tokens * 6);
  for (unsigned i = 0; i < tokens; ++i) {
    if (i) s += ' ';
    s += kWords[i % kWords.size()];
  }
  return s;
}

// {"content_filter_results":…,"finish_reason":"…","index":c  — the start of a finished choice.
void append_choice_head(std::string& out, const CompletionSpec& s, unsigned c) {
  out += R"({"content_filter_results":)"sv;
  out += kChoiceFilter;
  out += R"(,"finish_reason":")"sv;
  out += finish_reason(s);
  out += R"(","index":)"sv;
  append_uint(out, c);
}

std::string chat_completion_body(const CompletionSpec& s) {
  std::string out;
  out.reserve(900 + s.choices * (kChoiceFilter.size() + 160 + s.tokens * 7));
  std::string text = completion_text(s.tokens);
  out += R"({"choices":[)"sv;
  for (unsigned c = 0; c < s.choices; ++c) {
    if (c) out += ',';
    append_choice_head(out, s, c);
    if (s.tool_call.empty()) {
      out += R"(,"logprobs":null,"message":{"content":")"sv;
      out += text;  // plain ASCII words: nothing to escape
      out += R"(","refusal":null,"role":"assistant"}})"sv;
    } else {
      out += R"(,"logprobs":null,"message":{"content":null,"refusal":null,"role":"assistant",)"sv;
      out += R"("tool_calls":[{"function":{"arguments":)"sv;
      std::string args;
      for (unsigned t = 0; t < s.tokens; ++t) args += tool_fragment(t, s.tokens);
      append_json_string(out, args);
      out += R"(,"name":)"sv;
      append_json_string(out, s.tool_call);
      out += R"(},"id":)"sv;
      append_json_string(out, s.tool_call_id);
      out += R"(,"type":"function"}]}})"sv;
    }
  }
  out += "],";
  append_identity(out, s, "chat.completion");
  out += ',';
  append_prompt_filters(out, s.prompts);
  out += R"(,"system_fingerprint":)"sv;
  append_json_string(out, s.fingerprint);
  out += R"(,"usage":)"sv;
  append_chat_usage(out, s.prompt_tokens, std::uint64_t{s.tokens} * s.choices);
  out += '}';
  return out;
}

std::string text_completion_body(const CompletionSpec& s) {
  std::string out;
  out.reserve(700 + s.choices * (kChoiceFilter.size() + 120 + s.tokens * 7));
  std::string text = completion_text(s.tokens);
  out += R"({"choices":[)"sv;
  for (unsigned c = 0; c < s.choices; ++c) {
    if (c) out += ',';
    append_choice_head(out, s, c);
    out += R"(,"logprobs":null,"text":")"sv;
    out += text;
    out += R"("})"sv;
  }
  out += "],";
  append_identity(out, s, "text_completion");
  out += ',';
  append_prompt_filters(out, s.prompts);
  out += R"(,"usage":)"sv;
  append_text_usage(out, s.prompt_tokens, std::uint64_t{s.tokens} * s.choices);
  out += '}';
  return out;
}

StreamPlan chat_stream(const CompletionSpec& s, bool include_usage, StreamEnd end) {
  StreamPlan plan;
  plan.events.reserve(4 + s.choices * (s.tokens + 2));
  plan.events.push_back(prompt_filter_chunk(s, include_usage));

  // Everything after `choices` is the same for every chunk of this completion.
  std::string tail = "],";
  append_identity(tail, s, "chat.completion.chunk");
  tail += R"(,"system_fingerprint":)"sv;
  append_json_string(tail, s.fingerprint);
  if (include_usage) tail += R"(,"usage":null)"sv;
  tail += "}\n\n";

  auto chunk = [&](unsigned index, std::string_view filter, std::string_view delta,
                   std::string_view finish) {
    std::string e;
    e.reserve(tail.size() + filter.size() + delta.size() + 120);
    e += R"(data: {"choices":[{"content_filter_results":)"sv;
    e += filter;
    e += R"(,"delta":)"sv;
    e += delta;
    e += R"(,"finish_reason":)"sv;
    e += finish;
    e += R"(,"index":)"sv;
    append_uint(e, index);
    e += R"(,"logprobs":null})"sv;
    e += tail;
    return e;
  };

  const bool tool = !s.tool_call.empty();
  std::string role = R"({"content":"","refusal":null,"role":"assistant"})";
  if (tool) {
    role = R"({"content":null,"refusal":null,"role":"assistant","tool_calls":[{"function":)"
           R"({"arguments":"","name":)";
    append_json_string(role, s.tool_call);
    role += R"(},"id":)"sv;
    append_json_string(role, s.tool_call_id);
    role += R"(,"index":0,"type":"function"}]})"sv;
  }
  for (unsigned c = 0; c < s.choices; ++c) plan.events.push_back(chunk(c, "{}", role, "null"));
  plan.first_content = plan.events.size();
  std::string delta;
  for (unsigned t = 0; t < s.tokens; ++t) {
    if (tool) {
      delta = R"({"tool_calls":[{"function":{"arguments":)";
      append_json_string(delta, tool_fragment(t, s.tokens));
      delta += R"(},"index":0}]})"sv;
    } else {
      delta = R"({"content":")";
      if (t) delta += ' ';
      delta += kWords[t % kWords.size()];
      delta += R"("})"sv;
    }
    for (unsigned c = 0; c < s.choices; ++c) {
      plan.events.push_back(chunk(c, tool ? std::string_view("{}") : kChoiceFilter, delta, "null"));
    }
  }
  plan.content_events = plan.events.size() - plan.first_content;

  if (end == StreamEnd::ErrorEvent) {
    plan.events.push_back(event(kStreamError));
    return plan;
  }
  std::string finish = std::string("\"") + std::string(finish_reason(s)) + "\"";
  for (unsigned c = 0; c < s.choices; ++c) plan.events.push_back(chunk(c, "{}", "{}", finish));
  if (include_usage) {
    std::string u = R"(data: {"choices":[],)";
    append_identity(u, s, "chat.completion.chunk");
    u += R"(,"system_fingerprint":)"sv;
    append_json_string(u, s.fingerprint);
    u += R"(,"usage":)"sv;
    append_chat_usage(u, s.prompt_tokens, std::uint64_t{s.tokens} * s.choices);
    u += "}\n\n";
    plan.events.push_back(std::move(u));
  }
  plan.events.emplace_back("data: [DONE]\n\n");
  return plan;
}

StreamPlan text_completion_stream(const CompletionSpec& s, bool include_usage, StreamEnd end) {
  StreamPlan plan;
  plan.events.reserve(3 + s.choices * (s.tokens + 1));
  plan.events.push_back(prompt_filter_chunk(s, include_usage));

  std::string tail = "],";
  append_identity(tail, s, "text_completion");
  if (include_usage) tail += R"(,"usage":null)"sv;
  tail += "}\n\n";

  auto chunk = [&](unsigned index, std::string_view filter, std::string_view text,
                   std::string_view finish) {
    std::string e;
    e.reserve(tail.size() + filter.size() + text.size() + 120);
    e += R"(data: {"choices":[{"content_filter_results":)"sv;
    e += filter;
    e += R"(,"finish_reason":)"sv;
    e += finish;
    e += R"(,"index":)"sv;
    append_uint(e, index);
    e += R"(,"logprobs":null,"text":")"sv;
    e += text;
    e += R"("})"sv;
    e += tail;
    return e;
  };

  plan.first_content = plan.events.size();
  std::string word;
  for (unsigned t = 0; t < s.tokens; ++t) {
    word = t ? " " : "";
    word += kWords[t % kWords.size()];
    for (unsigned c = 0; c < s.choices; ++c)
      plan.events.push_back(chunk(c, kChoiceFilter, word, "null"));
  }
  plan.content_events = plan.events.size() - plan.first_content;

  if (end == StreamEnd::ErrorEvent) {
    plan.events.push_back(event(kStreamError));
    return plan;
  }
  std::string finish = std::string("\"") + std::string(finish_reason(s)) + "\"";
  for (unsigned c = 0; c < s.choices; ++c) plan.events.push_back(chunk(c, "{}", "", finish));
  if (include_usage) {
    std::string u = R"(data: {"choices":[],)";
    append_identity(u, s, "text_completion");
    u += R"(,"usage":)"sv;
    append_text_usage(u, s.prompt_tokens, std::uint64_t{s.tokens} * s.choices);
    u += "}\n\n";
    plan.events.push_back(std::move(u));
  }
  plan.events.emplace_back("data: [DONE]\n\n");
  return plan;
}

std::vector<float> embedding_values(std::uint64_t seed, unsigned dimensions) {
  std::vector<float> v(dimensions);
  double norm = 0;
  for (unsigned i = 0; i < dimensions; ++i) {
    std::uint64_t r = splitmix64(seed + 0x9e3779b97f4a7c15ULL * (i + 1));
    double x = static_cast<double>(r >> 11) / static_cast<double>(1ULL << 53) * 2.0 - 1.0;
    v[i] = static_cast<float>(x);
    norm += x * x;
  }
  norm = std::sqrt(norm);
  if (norm > 0) {
    for (auto& x : v) x = static_cast<float>(x / norm);
  }
  return v;
}

std::string base64_encode(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  auto b = [&](std::size_t k) { return static_cast<unsigned char>(bytes[k]); };
  for (; i + 3 <= bytes.size(); i += 3) {
    std::uint32_t v = (b(i) << 16) | (b(i + 1) << 8) | b(i + 2);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (std::size_t rest = bytes.size() - i; rest > 0) {
    std::uint32_t v = b(i) << 16;
    if (rest == 2) v |= b(i + 1) << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string embeddings_body(const InferenceParams& p, std::string_view model) {
  std::string out;
  out.reserve(120 + p.inputs.size() * (60 + p.dimensions * (p.base64 ? 6 : 12)));
  out += R"({"data":[)"sv;
  std::string raw;
  for (std::size_t i = 0; i < p.inputs.size(); ++i) {
    if (i) out += ',';
    std::vector<float> v = embedding_values(p.inputs[i].seed, p.dimensions);
    out += R"({"embedding":)"sv;
    if (p.base64) {
      raw.resize(v.size() * 4);
      for (std::size_t k = 0; k < v.size(); ++k) {
        std::uint32_t bits;
        std::memcpy(&bits, &v[k], 4);
        for (int byte = 0; byte < 4; ++byte)
          raw[k * 4 + byte] = static_cast<char>(bits >> (8 * byte));
      }
      out += '"';
      out += base64_encode(raw);
      out += '"';
    } else {
      out += '[';
      for (std::size_t k = 0; k < v.size(); ++k) {
        if (k) out += ',';
        append_float(out, v[k]);
      }
      out += ']';
    }
    out += R"(,"index":)"sv;
    append_uint(out, i);
    out += R"(,"object":"embedding"})"sv;
  }
  out += R"(],"model":)"sv;
  append_json_string(out, model);
  out += R"(,"object":"list","usage":{"prompt_tokens":)"sv;
  append_uint(out, p.prompt_tokens);
  out += R"(,"total_tokens":)"sv;
  append_uint(out, p.prompt_tokens);
  out += "}}";
  return out;
}

std::string response_object(std::string_view id, std::string_view message_id, std::int64_t created,
                            std::string_view model, const InferenceParams& p, unsigned tokens,
                            bool truncated) {
  nlohmann::ordered_json r;
  r["id"] = id;
  r["object"] = "response";
  r["created_at"] = created;
  r["status"] = truncated ? "incomplete" : "completed";
  r["error"] = nullptr;
  r["incomplete_details"] = truncated ? nlohmann::ordered_json{{"reason", "max_output_tokens"}}
                                      : nlohmann::ordered_json();
  r["instructions"] = nullptr;
  r["max_output_tokens"] =
      p.max_tokens ? nlohmann::ordered_json(*p.max_tokens) : nlohmann::ordered_json();
  r["model"] = model;
  r["output"] = nlohmann::ordered_json::array(
      {{{"type", "message"},
        {"id", message_id},
        {"status", truncated ? "incomplete" : "completed"},
        {"role", "assistant"},
        {"content",
         nlohmann::ordered_json::array({{{"type", "output_text"},
                                         {"text", completion_text(tokens)},
                                         {"annotations", nlohmann::ordered_json::array()}}})}}});
  r["parallel_tool_calls"] = true;
  r["previous_response_id"] = p.previous_response_id.empty()
                                  ? nlohmann::ordered_json()
                                  : nlohmann::ordered_json(p.previous_response_id);
  r["reasoning"] = {{"effort", nullptr}, {"summary", nullptr}};
  r["store"] = p.store;
  r["temperature"] = 1.0;
  r["text"] = {{"format", {{"type", "text"}}}};
  r["tool_choice"] = "auto";
  r["tools"] = nlohmann::ordered_json::array();
  r["top_p"] = 1.0;
  r["truncation"] = "disabled";
  r["usage"] = {{"input_tokens", p.prompt_tokens},
                {"input_tokens_details", {{"cached_tokens", 0}}},
                {"output_tokens", tokens},
                {"output_tokens_details", {{"reasoning_tokens", 0}}},
                {"total_tokens", p.prompt_tokens + tokens}};
  r["user"] = nullptr;
  r["metadata"] = nlohmann::ordered_json::object();
  return r.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

// --- errors ---

std::string error_invalid_request(std::string_view message, std::string_view param,
                                  std::string_view code) {
  std::string out = R"({"error":{"message":)";
  append_json_string(out, message);
  out += R"(,"type":"invalid_request_error","param":)"sv;
  if (param.empty()) {
    out += "null";
  } else {
    append_json_string(out, param);
  }
  out += R"(,"code":)"sv;
  if (code.empty()) {
    out += "null";
  } else {
    append_json_string(out, code);
  }
  out += "}}";
  return out;
}

std::string error_resource_not_found() {
  return R"({"error":{"code":"404","message":"Resource not found"}})";
}

std::string error_deployment_not_found() {
  return R"({"error":{"code":"DeploymentNotFound","message":"The API deployment for this )"
         R"(resource does not exist. If you created the deployment within the last 5 minutes, )"
         R"(please wait a moment and try again."}})";
}

std::string error_invalid_key() {
  return R"({"error":{"code":"401","message":"Access denied due to invalid subscription key or )"
         R"(wrong API endpoint. Make sure to provide a valid key for an active subscription and )"
         R"(use a correct regional API endpoint for your resource."}})";
}

std::string error_invalid_token() {
  return R"({"statusCode":401,"message":"Unauthorized. Access token is missing, invalid, audience )"
         R"(is incorrect (https://cognitiveservices.azure.com), or have expired."})";
}

std::string error_method_not_allowed() {
  return R"({"error":{"code":"405","message":"Method not allowed"}})";
}

std::string error_tpm_exceeded(Operation op, std::string_view api_version,
                               std::uint64_t retry_after_s) {
  std::string msg = "Requests to the ";
  msg += operation_id(op);
  msg += " Operation under Azure OpenAI API version ";
  msg += api_version;
  msg +=
      " have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry "
      "after ";
  msg += std::to_string(retry_after_s);
  msg +=
      " seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to "
      "further increase the default rate limit.";
  std::string out = R"({"error":{"code":"429","message":)";
  append_json_string(out, msg);
  out += "}}";
  return out;
}

std::string error_too_many_in_flight() {
  return R"({"error":{"code":"429","message":"The system is currently experiencing high demand )"
         R"(and cannot process your request. Your request exceeds the maximum usage size allowed )"
         R"(during peak load. Please retry after 1 seconds. For improved latency reliability, )"
         R"(consider switching to Provisioned Throughput."}})";
}

std::string error_server() {
  return R"j({"error":{"message":"The server had an error while processing your request. )j"
         R"j(Sorry about that! You can retry your request, or contact us through an Azure )j"
         R"j(support request at: https://go.microsoft.com/fwlink/?linkid=2213926 if you keep )j"
         R"j(seeing this )j"
         R"j(error. (Please include the request ID in your message.)","type":"server_error",)j"
         R"j("param":null,"code":null}})j";
}

std::string error_operation_not_supported(Operation op) {
  std::string_view what = op == Operation::Embeddings        ? "embeddings"
                          : op == Operation::Completions     ? "completion"
                          : op == Operation::ResponsesCreate ? "responses"
                                                             : "chatCompletion";
  std::string msg = "The ";
  msg += what;
  msg +=
      " operation does not work with the specified model. Please choose different model and "
      "try again. You can learn more about which models can be used with each operation here: "
      "https://go.microsoft.com/fwlink/?linkid=2197993.";
  std::string out = R"({"error":{"code":"OperationNotSupported","message":)";
  append_json_string(out, msg);
  out += "}}";
  return out;
}

std::string error_for_status(int status, Operation op, std::string_view api_version,
                             std::uint64_t retry_after_s) {
  switch (status) {
    case 400:
      return error_invalid_request("Invalid request (injected by tollgate-mock).");
    case 401:
      return error_invalid_key();
    case 403:
      return R"({"error":{"code":"403","message":"Access denied due to Virtual Network/Firewall )"
             R"(rules."}})";
    case 404:
      return error_resource_not_found();
    case 408:
      return R"({"error":{"code":"Timeout","message":"The operation was timeout."}})";
    case 429:
      return error_tpm_exceeded(op, api_version, retry_after_s);
    case 500:
      return error_server();
    case 502:
    case 503:
    case 504: {
      std::string out = R"({"error":{"message":)";
      append_json_string(out, status == 503 ? "The service is temporarily unable to process your "
                                              "request. Please try again later."
                                            : std::string(reason_phrase(status)));
      out += R"(,"type":"server_error","param":null,"code":")"sv;
      char buf[8];
      out += status_code_text(status, buf);
      out += "\"}}";
      return out;
    }
    default: {
      std::string out = R"({"error":{"code":")";
      char buf[8];
      out += status_code_text(status, buf);
      out += R"(","message":)"sv;
      append_json_string(out, reason_phrase(status));
      out += "}}";
      return out;
    }
  }
}

std::string_view stream_error_json() {
  return kStreamError;
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 413:
      return "Payload Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Entity";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Unknown";
  }
}

}  // namespace tollgate::mock
