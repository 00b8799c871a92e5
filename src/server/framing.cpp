#include "server/framing.hpp"

#include <algorithm>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>

namespace tollgate::server {

namespace http = boost::beast::http;

namespace {

// RFC 9110 §5.6.2.
bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar);
}

std::string_view trim_ows(std::string_view s) {
  auto is_ows = [](char c) { return c == ' ' || c == '\t'; };
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

Refusal bad_request(std::string_view reason, std::string message) {
  return Refusal{400, "invalid_request", reason, std::move(message)};
}

/// The codings of every Transfer-Encoding field, as RFC 9112 §6.1 lists them.
struct Codings {
  std::size_t chunked = 0;  // `chunked` without parameters
  std::size_t other = 0;    // any other well-formed coding (or chunked with parameters)
  bool malformed = false;
};

Codings read_codings(const std::vector<std::string_view>& fields) {
  Codings c;
  for (auto field : fields) {
    while (true) {
      auto comma = field.find(',');
      auto element = trim_ows(field.substr(0, comma));
      if (!element.empty()) {  // empty list elements are ignored (RFC 9110 §5.6.1)
        auto semi = element.find(';');
        auto name = trim_ows(element.substr(0, semi));
        bool params = semi != std::string_view::npos;
        if (!is_token(name) || (params && trim_ows(element.substr(semi + 1)).empty())) {
          c.malformed = true;
        } else if (!params && boost::beast::iequals(name, "chunked")) {
          ++c.chunked;
        } else {
          ++c.other;
        }
      }
      if (comma == std::string_view::npos) break;
      field.remove_prefix(comma + 1);
    }
  }
  return c;
}

// An unknown coding is 501 wherever chunked stands (§6.1); §6.3's 400 for a chunked that is not
// final is then only chunked applied twice, which §7 forbids.
std::optional<Refusal> check_transfer_encoding(const FramingView& h) {
  if (h.transfer_encoding.empty()) return std::nullopt;
  if (h.version < 11) {
    return bad_request("bad_framing", "Transfer-Encoding is not allowed in an HTTP/1.0 request");
  }
  if (h.content_length_fields > 0) {
    return bad_request("bad_framing",
                       "a request must not carry both Transfer-Encoding and Content-Length");
  }
  auto c = read_codings(h.transfer_encoding);
  if (c.malformed || c.chunked + c.other == 0) {
    return bad_request("bad_framing", "malformed Transfer-Encoding");
  }
  if (c.other > 0) {
    return Refusal{501, "unsupported_transfer_encoding", "unsupported_transfer_encoding",
                   "the only transfer coding accepted is chunked"};
  }
  if (c.chunked > 1) return bad_request("bad_framing", "chunked is applied more than once");
  return std::nullopt;
}

std::string_view first_line(std::string_view raw) {
  return raw.substr(0, raw.find('\n'));
}

// "HTTP/" DIGIT "." DIGIT (RFC 9112 §2.3).
bool is_version(std::string_view v) {
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  return v.size() == 8 && v.starts_with("HTTP/") && digit(v[5]) && v[6] == '.' && digit(v[7]);
}

// A well-formed request line (CRLF-terminated, or not yet terminated) naming a version other
// than 1.0 and 1.1.
bool unsupported_version(std::string_view raw) {
  auto line = first_line(raw);
  bool ended = line.size() < raw.size();
  if (ended) {
    if (!line.ends_with('\r')) return false;  // bare LF: malformed
    line.remove_suffix(1);
  }
  auto sp1 = line.find(' ');
  auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || sp2 == sp1 + 1) return false;
  auto version = line.substr(sp2 + 1);
  if (!is_token(line.substr(0, sp1)) || !is_version(version)) return false;
  return version != "HTTP/1.0" && version != "HTTP/1.1";
}

const boost::system::error_category& http_category() {
  return make_error_code(http::error::end_of_stream).category();
}

}  // namespace

std::optional<Refusal> check_framing(const FramingView& h) {
  if (auto refused = check_transfer_encoding(h)) return refused;
  if (h.host_fields > 1) return bad_request("bad_host", "a request must carry one Host header");
  if (h.host_fields == 0 && h.version >= 11) {
    return bad_request("bad_host", "an HTTP/1.1 request must carry a Host header");
  }
  return std::nullopt;
}

RequestLine split_request_line(std::string_view raw) {
  auto line = first_line(raw);
  auto sp1 = line.find(' ');
  if (sp1 == std::string_view::npos || !is_token(line.substr(0, sp1))) return {};
  RequestLine out{line.substr(0, sp1), {}};
  auto sp2 = line.find(' ', sp1 + 1);
  if (sp2 != std::string_view::npos) out.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  return out;
}

Refusal refuse_body_too_large(std::size_t limit) {
  return Refusal{413, "request_too_large", "body_too_large",
                 "the request body exceeds the limit of " + std::to_string(limit) + " bytes"};
}

std::optional<Refusal> refuse_unparsed(const Unparsed& u, std::size_t body_limit) {
  const auto& ec = u.ec;
  // Socket errors, timeouts (a Deadline cancels: operation_aborted), a close between requests
  // (end_of_stream) or halfway through a header (partial_message): nobody to answer.
  if (ec.category() != http_category() || ec == http::error::end_of_stream ||
      ec == http::error::partial_message) {
    return std::nullopt;
  }
  if (ec == http::error::header_limit) {
    // Beast reads the request line as soon as it ends within the limit: unread, it is longer.
    if (!u.line_read) {
      return Refusal{414, "uri_too_long", "uri_too_long", "the request line is too long"};
    }
    return Refusal{431, "header_too_large", "header_too_large", "the request header is too large"};
  }
  if (ec == http::error::body_limit) return refuse_body_too_large(body_limit);  // Content-Length
  if (!u.line_read && unsupported_version(u.raw)) {
    return Refusal{505, "http_version_not_supported", "unsupported_http_version",
                   "only HTTP/1.0 and HTTP/1.1 are supported"};
  }
  return bad_request("bad_request", "malformed HTTP request");
}

}  // namespace tollgate::server
