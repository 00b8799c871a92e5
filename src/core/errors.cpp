#include "tollgate/core/errors.hpp"

namespace tollgate::core {

namespace {
std::string_view type_for(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

// Length of the valid UTF-8 sequence at s[i], or 0 when invalid.
std::size_t utf8_len(std::string_view s, std::size_t i) {
  auto b = static_cast<unsigned char>(s[i]);
  std::size_t n = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
  }
  if (n == 2 && b < 0xC2) return 0;
  auto b1 = static_cast<unsigned char>(s[i + 1]);
  if (n == 3 && ((b == 0xE0 && b1 < 0xA0) || (b == 0xED && b1 >= 0xA0))) return 0;
  if (n == 4 && ((b == 0xF0 && b1 < 0x90) || b > 0xF4 || (b == 0xF4 && b1 >= 0x90))) return 0;
  return n;
}
}  // namespace

void json_escape(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (std::size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      auto n = utf8_len(s, i);
      if (n == 0) {
        out += "\xEF\xBF\xBD";
        ++i;
      } else {
        out.append(s.substr(i, n));
        i += n;
      }
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
}

std::string json_quote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  json_escape(out, s);
  out += '"';
  return out;
}

std::string HttpError::body() const {
  std::string out = "{\"error\":{\"code\":";
  out += json_quote(code.empty() ? std::to_string(status) : code);
  out += ",\"message\":";
  out += json_quote(message);
  out += ",\"type\":";
  out += json_quote(type.empty() ? type_for(status) : std::string_view(type));
  out += ",\"param\":";
  out += param.empty() ? std::string("null") : json_quote(param);
  out += "}}";
  return out;
}

HttpError bad_request(std::string message, std::string param) {
  return HttpError{400, "invalid_request", std::move(message), {}, std::move(param)};
}

HttpError not_found(std::string code, std::string message) {
  return HttpError{404, std::move(code), std::move(message), {}, {}};
}

}  // namespace tollgate::core
