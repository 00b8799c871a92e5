#include "tollgate/core/usage.hpp"

#include <nlohmann/json.hpp>
#include <optional>

#include "tollgate/core/json_scan.hpp"

namespace tollgate::core {

namespace {
std::uint64_t uint_at(const nlohmann::json& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end() || !it->is_number_integer()) return 0;
  auto v = it->get<std::int64_t>();
  return v < 0 ? 0 : static_cast<std::uint64_t>(v);
}
std::uint64_t nested_uint(const nlohmann::json& o, const char* obj, const char* key) {
  auto it = o.find(obj);
  if (it == o.end() || !it->is_object()) return 0;
  return uint_at(*it, key);
}
bool usage_from(const nlohmann::json& u, Usage& out) {
  if (!u.is_object()) return false;
  if (u.contains("prompt_tokens") || u.contains("completion_tokens")) {
    out.prompt = uint_at(u, "prompt_tokens");
    out.completion = uint_at(u, "completion_tokens");
    out.total = uint_at(u, "total_tokens");
    out.cached = nested_uint(u, "prompt_tokens_details", "cached_tokens");
    out.reasoning = nested_uint(u, "completion_tokens_details", "reasoning_tokens");
  } else if (u.contains("input_tokens") || u.contains("output_tokens")) {
    out.prompt = uint_at(u, "input_tokens");
    out.completion = uint_at(u, "output_tokens");
    out.total = uint_at(u, "total_tokens");
    out.cached = nested_uint(u, "input_tokens_details", "cached_tokens");
    out.reasoning = nested_uint(u, "output_tokens_details", "reasoning_tokens");
  } else {
    return false;
  }
  if (out.total == 0) out.total = out.prompt + out.completion;
  out.present = true;
  return true;
}

// The members of a usage object read from the scan (the last of a repeated name, as a DOM).
struct UsageMembers {
  std::optional<JsonValue> prompt, completion, total, input, output, prompt_details,
      completion_details, input_details, output_details;
  std::optional<JsonValue>* slot(std::string_view key) {
    static constexpr std::pair<std::string_view, std::optional<JsonValue> UsageMembers::*> kNames[] = {
        {"prompt_tokens", &UsageMembers::prompt},
        {"completion_tokens", &UsageMembers::completion},
        {"total_tokens", &UsageMembers::total},
        {"input_tokens", &UsageMembers::input},
        {"output_tokens", &UsageMembers::output},
        {"prompt_tokens_details", &UsageMembers::prompt_details},
        {"completion_tokens_details", &UsageMembers::completion_details},
        {"input_tokens_details", &UsageMembers::input_details},
        {"output_tokens_details", &UsageMembers::output_details}};
    for (const auto& [name, member] : kNames) {
      if (key == name) return &(this->*member);
    }
    return nullptr;
  }
};

// uint_at over the scan: a positive integer that fits int64, else 0 (as the DOM reads it: a
// larger one is unsigned or a double there, and counts 0; as_int would saturate it).
std::uint64_t scanned_uint(std::string_view json, const std::optional<JsonValue>& v) {
  if (!v) return 0;
  auto n = as_int(json, *v);
  if (!n || *n <= 0) return 0;
  auto digits = v->span.of(json);
  constexpr std::string_view kMax = "9223372036854775807";
  if (digits.size() > kMax.size() || (digits.size() == kMax.size() && digits > kMax)) return 0;
  return static_cast<std::uint64_t>(*n);
}

std::uint64_t scanned_nested(std::string_view json, const std::optional<JsonValue>& obj,
                             std::string_view key) {
  std::optional<JsonValue> found;
  if (obj) {
    each_member(json, *obj, [&](std::string_view k, const JsonValue& v) {
      if (k == key) found = v;
      return true;
    });
  }
  return scanned_uint(json, found);
}
}  // namespace

bool parse_usage_dom(std::string_view json, Usage& out) {
  auto j = nlohmann::json::parse(json, nullptr, false);
  if (j.is_discarded()) return false;
  return usage_from(j, out);
}

// usage_from without a DOM: the usage object is scanned (core/json_scan.hpp). An escaped name
// or a body the scanner refuses (too deep, a repeated request field) takes the DOM path, so the
// result is the same either way.
bool parse_usage(std::string_view json, Usage& out) {
  auto scan = json.find('\\') == std::string_view::npos ? scan_body(json) : BodyScan{{}, ScanError{}};
  if (scan.error) return parse_usage_dom(json, out);
  UsageMembers m;
  each_member(json, scan.fields.object, [&](std::string_view key, const JsonValue& v) {
    if (auto* slot = m.slot(key)) *slot = v;
    return true;
  });
  bool chat = m.prompt || m.completion;
  if (chat) {
    out.prompt = scanned_uint(json, m.prompt);
    out.completion = scanned_uint(json, m.completion);
    out.cached = scanned_nested(json, m.prompt_details, "cached_tokens");
    out.reasoning = scanned_nested(json, m.completion_details, "reasoning_tokens");
  } else if (m.input || m.output) {
    out.prompt = scanned_uint(json, m.input);
    out.completion = scanned_uint(json, m.output);
    out.cached = scanned_nested(json, m.input_details, "cached_tokens");
    out.reasoning = scanned_nested(json, m.output_details, "reasoning_tokens");
  } else {
    return false;
  }
  out.total = scanned_uint(json, m.total);
  if (out.total == 0) out.total = out.prompt + out.completion;
  out.present = true;
  return true;
}

void StreamObserver::capture_text(const nlohmann::json& j) {
  auto add = [this](const nlohmann::json& v) {
    if (v.is_string() && output_->size() < capture_max_) *output_ += v.get_ref<const std::string&>();
  };
  if (auto choices = j.find("choices"); choices != j.end() && choices->is_array()) {
    for (const auto& c : *choices) {
      if (!c.is_object()) continue;
      if (auto t = c.find("text"); t != c.end()) add(*t);  // completions
      auto d = c.find("delta");
      if (d == c.end() || !d->is_object()) continue;
      if (auto t = d->find("content"); t != d->end()) add(*t);
      if (auto tc = d->find("tool_calls"); tc != d->end() && tc->is_array()) {
        for (const auto& call : *tc) {
          if (!call.is_object()) continue;
          if (auto f = call.find("function"); f != call.end() && f->is_object()) {
            if (auto a = f->find("arguments"); a != f->end()) add(*a);
          }
        }
      }
    }
  }
  if (auto delta = j.find("delta"); delta != j.end()) add(*delta);  // Responses: *.delta events
}

namespace {

// One whole SSE event (its terminating blank line included) as the client should see it.
void strip_event(std::string_view event, std::string& out) {
  bool usage_only = event.find("\"choices\":[]") != std::string_view::npos &&
                    event.find("\"usage\":{") != std::string_view::npos;
  if (usage_only) return;  // the chunk the client did not ask for
  static constexpr std::string_view kMember = "\"usage\":null";
  std::size_t from = 0;
  for (;;) {
    auto at = event.find(kMember, from);
    if (at == std::string_view::npos) break;
    if (at > 0 && event[at - 1] == ',') {  // ...,"usage":null}
      out.append(event.substr(from, at - 1 - from));
      from = at + kMember.size();
    } else if (at + kMember.size() < event.size() && event[at + kMember.size()] == ',') {
      out.append(event.substr(from, at - from));  // {"usage":null,...
      from = at + kMember.size() + 1;
    } else {
      out.append(event.substr(from, at + kMember.size() - from));
      from = at + kMember.size();
    }
  }
  out.append(event.substr(from));
}

}  // namespace

std::string UsageStripper::feed(std::string_view bytes) {
  pending_.append(bytes);
  std::string out;
  std::size_t start = 0;
  for (;;) {
    // An event ends with a blank line: "\n\n" or "\r\n\r\n".
    auto lf = pending_.find("\n\n", start);
    auto crlf = pending_.find("\r\n\r\n", start);
    std::size_t end;
    if (lf == std::string::npos && crlf == std::string::npos) break;
    if (crlf != std::string::npos && (lf == std::string::npos || crlf < lf)) {
      end = crlf + 4;
    } else {
      end = lf + 2;
    }
    strip_event(std::string_view(pending_).substr(start, end - start), out);
    start = end;
  }
  pending_.erase(0, start);
  return out;
}

void StreamObserver::feed(std::string_view bytes) {
  scanner_.feed(bytes, [this](std::string_view data) { on_event(data); });
}

void StreamObserver::on_event(std::string_view data) {
  ++events_;
  if (data.starts_with("[DONE]")) {
    done_ = true;
    return;
  }
  // Parse only events that can carry usage or an error: most chunks are skipped by this scan
  // (unless the generated text is wanted).
  bool maybe_usage = data.find("\"usage\"") != std::string_view::npos;
  bool maybe_error = data.find("\"error\"") != std::string_view::npos;
  bool capture = output_ != nullptr && capture_max_ > output_->size();
  if (!maybe_usage && !maybe_error && !capture) return;
  auto j = nlohmann::json::parse(data, nullptr, false);
  if (!j.is_object()) return;
  if (capture) capture_text(j);
  if (maybe_error && j.contains("error")) ++error_events_;
  if (auto it = j.find("usage"); it != j.end() && it->is_object()) usage_from(*it, usage_);
  // The Responses API nests usage in response.completed events.
  if (auto r = j.find("response"); r != j.end() && r->is_object()) {
    if (auto it = r->find("usage"); it != r->end() && it->is_object()) usage_from(*it, usage_);
  }
}

void JsonUsageScanner::feed(std::string_view bytes) {
  const char* p = bytes.data();
  const char* const end = p + bytes.size();
  auto append_key = [this](const char* from, const char* to) {  // keys we compare are short
    auto room = key_.size() < 16 ? 16 - key_.size() : 0;
    key_.append(from, std::min<std::size_t>(static_cast<std::size_t>(to - from), room));
  };
  while (p < end && !done_) {
    const char* begin = p;  // for the capture of this run
    if (in_string_) {
      if (escape_) {
        escape_ = false;
        ++p;
      } else {
        // Jump to the next quote or backslash: most of a body is string content.
        while (p < end && *p != '"' && *p != '\\') ++p;
        if (p == end) {
          if (reading_key_) append_key(begin, p);
        } else if (*p == '\\') {
          if (reading_key_) append_key(begin, p);
          escape_ = true;
          ++p;
        } else {
          if (reading_key_) {
            append_key(begin, p);
            reading_key_ = false;
            after_key_ = true;
          }
          in_string_ = false;
          ++p;
        }
      }
    } else {
      char c = *p++;
      if (armed_ && c != ' ' && c != '\t' && c != '\n' && c != '\r') {
        armed_ = false;
        if (c == '{') {
          capturing_ = true;
          captured_.clear();
          begin = p - 1;
        }
      }
      switch (c) {
        case '"':
          in_string_ = true;
          if (depth_ == 1 && key_position_) {
            reading_key_ = true;
            key_position_ = false;
            key_.clear();
          }
          break;
        case '{':
        case '[':
          ++depth_;
          if (depth_ == 1 && c == '{') key_position_ = true;
          break;
        case '}':
        case ']':
          --depth_;
          if (capturing_ && depth_ == 1) {
            capturing_ = false;
            done_ = true;
            if (captured_.size() + (p - begin) > max_capture_) {
              captured_.clear();  // too large: the same verdict whatever the split
            } else {
              captured_.append(begin, p);
            }
            return;
          }
          break;
        case ':':
          if (depth_ == 1 && after_key_) {
            after_key_ = false;
            armed_ = key_ == "usage";
          }
          break;
        case ',':
          if (depth_ == 1) key_position_ = true;
          break;
        default:
          // Numbers, literals and white space: skip the run.
          while (p < end && *p != '"' && *p != '{' && *p != '[' && *p != '}' && *p != ']' &&
                 *p != ':' && *p != ',') {
            ++p;
          }
          break;
      }
    }
    if (capturing_) {
      if (captured_.size() + (p - begin) > max_capture_) {
        capturing_ = false;
        done_ = true;
        captured_.clear();
        return;
      }
      captured_.append(begin, p);
    }
  }
}

const Usage& JsonUsageScanner::usage() {
  if (!parsed_) {
    parsed_ = true;
    if (done_ && !captured_.empty()) parse_usage(captured_, usage_);
  }
  return usage_;
}

}  // namespace tollgate::core
