#pragma once
// Strict HTTP/1.1 request framing (RFC 9112) on both listeners: which requests the gateway
// refuses before reading a body, and with which status. A refusal is always answered with a
// status line and `Connection: close`, then the connection closes lingering (the client may
// still be sending), so the client sees the answer instead of a reset.
//
// Beast's parser already refuses a Content-Length next to chunked, conflicting Content-Lengths,
// a repeated `Transfer-Encoding: chunked` and malformed lines; it accepts what this check
// refuses: a Transfer-Encoding that is not exactly `chunked` (it frames `xchunked` by the
// Content-Length and `gzip, chunked` as plain chunked), a Transfer-Encoding on HTTP/1.0, and a
// missing or repeated Host. It also reports an unsupported version, a bare LF and a space in the
// target alike (bad_version); refuse_unparsed tells them apart from the bytes received.
//
// Plain C++: the header is read through any Beast-like header type (framing_view), the parse
// error through its boost::system::error_code.

#include <boost/system/error_code.hpp>
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tollgate/core/errors.hpp"

namespace tollgate::server {

/// Why and how a request is refused while it is read.
struct Refusal {
  int status = 400;
  std::string_view code;    // the error body's code
  std::string_view reason;  // the access log's `error`
  std::string message;      // for the client
};

/// The OpenAI-style error body of `r`.
inline core::HttpError http_error(const Refusal& r) {
  return {r.status, std::string(r.code), r.message, {}, {}};
}

/// What the framing check reads of a parsed request header.
struct FramingView {
  unsigned version = 11;                            // 10 or 11 (Beast refuses the others)
  std::vector<std::string_view> transfer_encoding;  // each Transfer-Encoding field, in order
  std::size_t content_length_fields = 0;
  std::size_t host_fields = 0;
};

/// The framing fields of a Beast request header (any type with version(), count(name) and
/// equal_range(name)).
template <class Header>
FramingView framing_view(const Header& h) {
  FramingView v;
  v.version = h.version();
  auto [first, last] = h.equal_range("transfer-encoding");
  for (auto it = first; it != last; ++it) v.transfer_encoding.push_back(it->value());
  v.content_length_fields = h.count("content-length");
  v.host_fields = h.count("host");
  return v;
}

/// The refusal of a parsed header whose framing RFC 9112 says to refuse, or nothing:
/// a Transfer-Encoding that is not exactly `chunked` (case-insensitive, optional whitespace) is
/// 501 for a well-formed list naming another coding, else 400; Transfer-Encoding with
/// Content-Length, or on HTTP/1.0, is 400 (§6.1, §6.3: a gateway should refuse); HTTP/1.1
/// without exactly one Host is 400 (§3.2). Thread: any.
std::optional<Refusal> check_framing(const FramingView& h);

/// The method and target of a request line as far as they were received (empty when not).
struct RequestLine {
  std::string_view method;
  std::string_view target;  // set only when the target ended (a space followed it)
};
RequestLine split_request_line(std::string_view raw);

/// A request that could not be read: the error, the bytes received and not consumed by the
/// parser (from the request line on, unless the parser read that line), whether it read it.
struct Unparsed {
  boost::system::error_code ec;
  std::string_view raw;
  bool line_read = false;
};

/// The answer to a request that could not be read, or nothing when the connection ended without
/// a request to answer (closed, reset, timed out, or closed halfway through a header).
/// `body_limit`: for the 413 message. Thread: any.
std::optional<Refusal> refuse_unparsed(const Unparsed& u, std::size_t body_limit);

/// The answer to a body over the limit (413).
Refusal refuse_body_too_large(std::size_t limit);

/// A lingering close after a refusal (nginx's lingering_close): read and discard what the client
/// still sends for at most this long and this many bytes, so the answer is not lost to a reset.
inline constexpr std::chrono::seconds kLingerTime{2};
inline constexpr std::size_t kLingerBytes = 8u << 20;
/// After a failed accept (out of descriptors), both listeners wait this long before the next: no
/// spinning.
inline constexpr std::chrono::milliseconds kAcceptBackoff{50};

}  // namespace tollgate::server
