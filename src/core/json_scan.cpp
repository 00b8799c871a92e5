#include "tollgate/core/json_scan.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace tollgate::core {

namespace {

constexpr std::array<std::string_view, kBodyFieldCount> kFieldNames = {"model",
                                                                       "stream",
                                                                       "stream_options",
                                                                       "max_tokens",
                                                                       "max_completion_tokens",
                                                                       "max_output_tokens",
                                                                       "n",
                                                                       "best_of",
                                                                       "messages",
                                                                       "input",
                                                                       "store",
                                                                       "background",
                                                                       "tools",
                                                                       "functions",
                                                                       "response_format",
                                                                       "prompt",
                                                                       "suffix",
                                                                       "previous_response_id",
                                                                       "thread_id",
                                                                       "assistant_id",
                                                                       "file_id",
                                                                       "input_file_id",
                                                                       "vector_store_id",
                                                                       "training_file",
                                                                       "validation_file",
                                                                       "conversation",
                                                                       "file_ids",
                                                                       "vector_store_ids"};

constexpr std::string_view kIncludeUsage = "include_usage";

// Which members of an object are recorded: the top level's, stream_options', or none.
enum class Level : std::uint8_t { kTop, kStreamOptions, kOther };

bool is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Length of the well-formed UTF-8 sequence (RFC 3629 table) at s[i], a byte >= 0x80; 0 if none.
std::size_t utf8_length(std::string_view s, std::size_t i) {
  auto in = [s](std::size_t k, unsigned lo, unsigned hi) {
    if (k >= s.size()) return false;
    auto b = static_cast<unsigned char>(s[k]);
    return b >= lo && b <= hi;
  };
  auto tail = [&](std::size_t from, std::size_t n) {
    for (std::size_t k = from; k < from + n; ++k) {
      if (!in(k, 0x80, 0xBF)) return false;
    }
    return true;
  };
  auto c = static_cast<unsigned char>(s[i]);
  if (c >= 0xC2 && c <= 0xDF) return tail(i + 1, 1) ? 2 : 0;
  if (c == 0xE0) return in(i + 1, 0xA0, 0xBF) && tail(i + 2, 1) ? 3 : 0;
  if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return tail(i + 1, 2) ? 3 : 0;
  if (c == 0xED) return in(i + 1, 0x80, 0x9F) && tail(i + 2, 1) ? 3 : 0;
  if (c == 0xF0) return in(i + 1, 0x90, 0xBF) && tail(i + 2, 2) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return tail(i + 1, 3) ? 4 : 0;
  if (c == 0xF4) return in(i + 1, 0x80, 0x8F) && tail(i + 2, 2) ? 4 : 0;
  return 0;
}

// The four hex digits at s[i] (validated by the scan).
unsigned hex4(std::string_view s, std::size_t i) {
  unsigned v = 0;
  for (std::size_t k = i; k < i + 4; ++k) v = v * 16 + static_cast<unsigned>(hex_value(s[k]));
  return v;
}

bool is_high_surrogate(unsigned cp) {
  return cp >= 0xD800 && cp <= 0xDBFF;
}
bool is_low_surrogate(unsigned cp) {
  return cp >= 0xDC00 && cp <= 0xDFFF;
}

// A low surrogate escape at s[i] ("\uDC00".."\uDFFF")?
bool low_escape_at(std::string_view s, std::size_t i) {
  return i + 6 <= s.size() && s[i] == '\\' && s[i + 1] == 'u' && is_low_surrogate(hex4(s, i + 2));
}

void append_utf8(std::string& out, unsigned cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

char simple_escape(char c) {
  switch (c) {
    case 'b':
      return '\b';
    case 'f':
      return '\f';
    case 'n':
      return '\n';
    case 'r':
      return '\r';
    case 't':
      return '\t';
    default:
      return c;  // '"', '\\', '/'
  }
}

// The text of a validated string's contents (between the quotes), unescaped.
std::string unescape(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size();) {
    if (raw[i] != '\\') {
      out += raw[i++];
    } else if (raw[i + 1] != 'u') {
      out += simple_escape(raw[i + 1]);
      i += 2;
    } else {
      unsigned cp = hex4(raw, i + 2);
      i += 6;
      if (is_high_surrogate(cp) && low_escape_at(raw, i)) {
        cp = 0x10000 + ((cp - 0xD800) << 10) + (hex4(raw, i + 2) - 0xDC00);
        i += 6;
      } else if (is_high_surrogate(cp) || is_low_surrogate(cp)) {
        cp = 0xFFFD;  // a lone surrogate has no UTF-8 form
      }
      append_utf8(out, cp);
    }
  }
  return out;
}

class Scanner {
 public:
  Scanner(std::string_view s, ScanLimits limits, BodyFields* out)
      : s_(s), max_depth_(limits.max_depth), out_(out) {}

  // The whole text: one value, whitespace around it.
  bool document() {
    if (s_.starts_with("\xEF\xBB\xBF")) i_ = 3;
    skip_ws();
    if (!value(0, Level::kTop, &out_->object)) return false;
    skip_ws();
    return i_ == s_.size() || fail();
  }

  // Calls f(element) for each element of the (validated) array at `open` while it returns true.
  void each_element(std::size_t open, const std::function<bool(const JsonValue&)>& f) {
    i_ = open + 1;
    skip_ws();
    if (peek() == ']') return;
    while (true) {
      skip_ws();
      JsonValue v;
      if (!value(0, Level::kOther, &v) || !f(v)) return;
      skip_ws();
      if (peek() != ',') return;
      ++i_;
    }
  }

  // Calls f(raw key, value) for each member of the (validated) object at `open` while it returns
  // true.
  void each_member(std::size_t open,
                   const std::function<bool(std::string_view, const JsonValue&)>& f) {
    i_ = open + 1;
    skip_ws();
    if (peek() == '}') return;
    while (true) {
      skip_ws();
      auto key_start = i_ + 1;
      if (!string()) return;
      auto key = s_.substr(key_start, i_ - 1 - key_start);
      skip_ws();
      ++i_;  // ':'
      skip_ws();
      JsonValue v;
      if (!value(0, Level::kOther, &v) || !f(key, v)) return;
      skip_ws();
      if (peek() != ',') return;
      ++i_;
    }
  }

  std::optional<ScanError> error;

 private:
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  bool fail(ScanErrorKind kind = ScanErrorKind::kSyntax, std::string_view key = {}) {
    if (!error) error = ScanError{kind, i_, key};
    return false;
  }
  void skip_ws() {
    while (i_ < s_.size() && is_ws(s_[i_])) ++i_;
  }

  // `depth`: the containers around this value. `inner`: how an object value records members.
  bool value(std::uint32_t depth, Level inner, JsonValue* slot) {
    auto start = i_;
    JsonKind kind = JsonKind::kNumber;
    bool ok = false;
    switch (peek()) {
      case '{':
      case '[': {
        bool obj = peek() == '{';
        if (depth + 1 > max_depth_) return fail(ScanErrorKind::kTooDeep);
        kind = obj ? JsonKind::kObject : JsonKind::kArray;
        auto items = obj ? object(depth + 1, inner) : array(depth + 1);
        ok = items.has_value();
        if (ok && slot != nullptr) slot->items = *items;
        break;
      }
      case '"':
        kind = JsonKind::kString;
        ok = string();
        break;
      case 't':
        kind = JsonKind::kBool;
        ok = literal("true");
        break;
      case 'f':
        kind = JsonKind::kBool;
        ok = literal("false");
        break;
      case 'n':
        kind = JsonKind::kNull;
        ok = literal("null");
        break;
      default:
        ok = number();
        break;
    }
    if (!ok) return false;
    if (slot != nullptr) {
      slot->kind = kind;
      slot->span = Span{start, i_ - start};
    }
    return true;
  }

  // The members of the object at '{'; returns their count.
  std::optional<std::size_t> object(std::uint32_t depth, Level level) {
    ++i_;
    skip_ws();
    std::size_t items = 0;
    if (peek() == '}') {
      ++i_;
      return items;
    }
    while (true) {
      skip_ws();
      auto key_start = i_ + 1;
      if (peek() != '"' || !string()) return fail_none();
      Level inner = Level::kOther;
      JsonValue* slot = nullptr;
      if (level != Level::kOther) {
        slot = member_slot(level, s_.substr(key_start, i_ - 1 - key_start), inner);
        if (error) return std::nullopt;
      }
      skip_ws();
      if (peek() != ':') return fail_none();
      ++i_;
      skip_ws();
      if (!value(depth, inner, slot)) return std::nullopt;
      ++items;
      skip_ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      if (peek() != '}') return fail_none();
      ++i_;
      return items;
    }
  }

  std::optional<std::size_t> array(std::uint32_t depth) {
    ++i_;
    skip_ws();
    std::size_t items = 0;
    if (peek() == ']') {
      ++i_;
      return items;
    }
    while (true) {
      skip_ws();
      if (!value(depth, Level::kOther, nullptr)) return std::nullopt;
      ++items;
      skip_ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      if (peek() != ']') return fail_none();
      ++i_;
      return items;
    }
  }

  std::optional<std::size_t> fail_none() {
    fail();
    return std::nullopt;
  }

  // Where the member `raw_key` of an object at `level` is recorded (null: not read); a second
  // occurrence is a kDuplicateKey error. `inner`: the level of the member's value.
  JsonValue* member_slot(Level level, std::string_view raw_key, Level& inner) {
    std::string decoded;
    std::string_view key = raw_key;
    if (raw_key.find('\\') != std::string_view::npos) {
      decoded = unescape(raw_key);
      key = decoded;
    }
    JsonValue* slot = nullptr;
    std::string_view name;
    if (level == Level::kStreamOptions) {
      if (key != kIncludeUsage) return nullptr;
      slot = &out_->include_usage;
      name = kIncludeUsage;
    } else {
      auto it = std::find(kFieldNames.begin(), kFieldNames.end(), key);
      if (it == kFieldNames.end()) return nullptr;
      slot = &out_->values[static_cast<std::size_t>(it - kFieldNames.begin())];
      name = *it;
      if (name == field_name(BodyField::kStreamOptions)) inner = Level::kStreamOptions;
    }
    if (slot->present()) {
      fail(ScanErrorKind::kDuplicateKey, name);
      return nullptr;
    }
    return slot;
  }

  bool string() {
    ++i_;  // '"'
    while (i_ < s_.size()) {
      auto c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return true;
      }
      if (c < 0x20) return fail();
      if (c == '\\') {
        if (!escape()) return false;
      } else if (c < 0x80) {
        ++i_;
      } else {
        auto n = utf8_length(s_, i_);
        if (n == 0) return fail();
        i_ += n;
      }
    }
    return fail();
  }

  bool escape() {
    ++i_;  // '\\'
    char c = peek();
    if (c == 'u') {
      for (std::size_t k = 1; k <= 4; ++k) {
        if (i_ + k >= s_.size() || hex_value(s_[i_ + k]) < 0) return fail();
      }
      i_ += 5;
      return true;
    }
    if (c == '\0' || std::string_view("\"\\/bfnrt").find(c) == std::string_view::npos)
      return fail();
    ++i_;
    return true;
  }

  std::size_t digits() {
    auto start = i_;
    while (i_ < s_.size() && is_digit(s_[i_])) ++i_;
    return i_ - start;
  }

  bool number() {
    if (peek() == '-') ++i_;
    if (peek() == '0') {
      ++i_;
    } else if (!is_digit(peek()) || digits() == 0) {
      return fail();
    }
    if (peek() == '.') {
      ++i_;
      if (digits() == 0) return fail();
    }
    if (peek() == 'e' || peek() == 'E') {
      ++i_;
      if (peek() == '+' || peek() == '-') ++i_;
      if (digits() == 0) return fail();
    }
    return true;
  }

  bool literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return fail();
    i_ += word.size();
    return true;
  }

  std::string_view s_;
  std::size_t i_ = 0;
  std::uint32_t max_depth_;
  BodyFields* out_;
};

// The number token at s[i] of a validated text ends where its characters end.
std::size_t number_end(std::string_view s, std::size_t i) {
  while (i < s.size() && std::string_view("0123456789+-.eE").find(s[i]) != std::string_view::npos)
    ++i;
  return i;
}

bool overflows_double(std::string_view token) {
  std::string copy(token);
  return std::isinf(std::strtod(copy.c_str(), nullptr));
}

}  // namespace

std::string_view field_name(BodyField f) {
  return kFieldNames[static_cast<std::size_t>(f)];
}

BodyScan scan_body(std::string_view body, ScanLimits limits) {
  BodyScan out;
  Scanner scanner(body, limits, &out.fields);
  if (!scanner.document()) {
    out.error = scanner.error;
  } else if (out.fields.object.kind != JsonKind::kObject) {
    out.error = ScanError{ScanErrorKind::kNotObject, 0, {}};
  }
  return out;
}

std::optional<bool> as_bool(std::string_view body, const JsonValue& v) {
  if (v.kind != JsonKind::kBool) return std::nullopt;
  return v.span.of(body) == "true";
}

std::optional<std::int64_t> as_int(std::string_view body, const JsonValue& v) {
  if (v.kind != JsonKind::kNumber) return std::nullopt;
  auto text = v.span.of(body);
  if (text.find_first_of(".eE") != std::string_view::npos) return std::nullopt;
  bool negative = text.starts_with('-');
  if (negative) text.remove_prefix(1);
  // Magnitude up to 2^63 (INT64_MIN's), saturating beyond.
  constexpr std::uint64_t kLimit = std::uint64_t{1} << 63;
  std::uint64_t magnitude = 0;
  for (char c : text) {
    auto d = static_cast<std::uint64_t>(c - '0');
    if (magnitude > (kLimit - d) / 10) {
      magnitude = kLimit;
      break;
    }
    magnitude = magnitude * 10 + d;
  }
  if (negative) {
    return magnitude == kLimit ? std::numeric_limits<std::int64_t>::min()
                               : -static_cast<std::int64_t>(magnitude);
  }
  return magnitude >= kLimit ? std::numeric_limits<std::int64_t>::max()
                             : static_cast<std::int64_t>(magnitude);
}

std::optional<std::string> as_string(std::string_view body, const JsonValue& v) {
  if (v.kind != JsonKind::kString) return std::nullopt;
  return unescape(body.substr(v.span.offset + 1, v.span.length - 2));
}

std::vector<std::string> string_elements(std::string_view body, const JsonValue& v) {
  std::vector<std::string> out;
  each_element(body, v, [&](const JsonValue& e) {
    if (auto s = as_string(body, e)) out.push_back(std::move(*s));
    return true;
  });
  return out;
}

void each_element(std::string_view body, const JsonValue& v,
                  const std::function<bool(const JsonValue&)>& f) {
  if (v.kind != JsonKind::kArray) return;
  // Validated already: no depth bound needed again.
  Scanner scanner(body, ScanLimits{std::numeric_limits<std::uint32_t>::max()}, nullptr);
  scanner.each_element(v.span.offset, f);
}

void each_member(std::string_view body, const JsonValue& v,
                 const std::function<bool(std::string_view, const JsonValue&)>& f) {
  if (v.kind != JsonKind::kObject) return;
  Scanner scanner(body, ScanLimits{std::numeric_limits<std::uint32_t>::max()}, nullptr);
  scanner.each_member(v.span.offset, f);
}

std::optional<std::string_view> plain_string(std::string_view body, const JsonValue& v) {
  if (v.kind != JsonKind::kString) return std::nullopt;
  auto raw = body.substr(v.span.offset + 1, v.span.length - 2);
  if (raw.find('\\') != std::string_view::npos) return std::nullopt;
  return raw;
}

std::string sanitize_for_dom(std::string_view body) {
  std::string out;
  out.reserve(body.size());
  bool in_string = false;
  for (std::size_t i = 0; i < body.size();) {
    char c = body[i];
    if (in_string) {
      if (c == '"') in_string = false;
      if (c != '\\') {
        out += body[i++];
      } else if (body[i + 1] != 'u') {
        out.append(body.substr(i, 2));
        i += 2;
      } else {
        unsigned cp = hex4(body, i + 2);
        bool pair = is_high_surrogate(cp) && low_escape_at(body, i + 6);
        bool lone = !pair && (is_high_surrogate(cp) || is_low_surrogate(cp));
        auto n = pair ? std::size_t{12} : std::size_t{6};
        out.append(lone ? std::string_view("\\ufffd") : body.substr(i, n));
        i += n;
      }
    } else if (c == '-' || is_digit(c)) {
      auto end = number_end(body, i);
      auto token = body.substr(i, end - i);
      out.append(overflows_double(token) ? std::string_view("0") : token);
      i = end;
    } else {
      in_string = c == '"';
      out += body[i++];
    }
  }
  return out;
}

void BodyEdits::replace(Span span, std::string json) {
  for (auto& e : edits_) {
    if (!e.member && e.span.offset == span.offset && e.span.length == span.length) {
      e.text = std::move(json);
      return;
    }
  }
  edits_.push_back(Edit{span, std::move(json), false, false});
}

void BodyEdits::insert_member(const JsonValue& object, std::string_view key, std::string json) {
  std::string text = "\"";
  text += key;  // the gateway's own member names: nothing to escape
  text += "\":";
  text += json;
  edits_.push_back(Edit{Span{object.inside(), 0}, std::move(text), true, object.items == 0});
}

std::string BodyEdits::apply(std::string_view body) const {
  std::vector<const Edit*> order;
  order.reserve(edits_.size());
  std::size_t grow = 0;
  for (const auto& e : edits_) {
    order.push_back(&e);
    grow += e.text.size() + 1;
  }
  std::stable_sort(order.begin(), order.end(),
                   [](const Edit* a, const Edit* b) { return a->span.offset < b->span.offset; });
  std::string out;
  out.reserve(body.size() + grow);
  std::size_t pos = 0;
  for (std::size_t k = 0; k < order.size();) {
    const Edit& e = *order[k];
    if (e.span.offset < pos) {  // overlaps the previous edit: the gateway never makes such edits
      ++k;
      continue;
    }
    out.append(body.substr(pos, e.span.offset - pos));
    if (!e.member) {
      out += e.text;
      pos = e.span.end();
      ++k;
      continue;
    }
    // Members inserted at one place are joined by commas, and one separates them from the
    // object's own members.
    for (bool first = true;
         k < order.size() && order[k]->member && order[k]->span.offset == e.span.offset;
         ++k, first = false) {
      if (!first) out += ',';
      out += order[k]->text;
    }
    if (!e.object_empty) out += ',';
    pos = e.span.offset;
  }
  out.append(body.substr(pos));
  return out;
}

}  // namespace tollgate::core
