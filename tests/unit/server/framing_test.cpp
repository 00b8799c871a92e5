// The HTTP/1.1 framing check (server/framing.hpp): what Beast's parser lets through and the
// check refuses, and the statuses for requests Beast could not parse.
#include "server/framing.hpp"

#include <gtest/gtest.h>

#include <boost/asio/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <optional>
#include <string>

namespace tollgate::server {
namespace {

namespace http = boost::beast::http;

/// A request header as the session reads it: Beast's parser, fed `text` at once.
struct Parsed {
  http::request_parser<http::string_body> parser;
  boost::system::error_code ec;
  std::string unread;  // what the parser did not consume

  explicit Parsed(const std::string& text, std::uint32_t header_limit = 8192) {
    parser.header_limit(header_limit);
    parser.body_limit(1024);
    auto used = parser.put(boost::asio::buffer(text), ec);
    unread = text.substr(used);
  }
  std::optional<Refusal> framing() const { return check_framing(framing_view(parser.get())); }
  std::optional<Refusal> unparsed() const {
    return refuse_unparsed({ec, unread, !parser.get().target().empty()}, 1024);
  }
};

FramingView with_te(std::vector<std::string_view> te, unsigned version = 11) {
  FramingView v;
  v.version = version;
  v.transfer_encoding = std::move(te);
  v.host_fields = 1;
  return v;
}

int status(const std::optional<Refusal>& r) {
  return r ? r->status : 0;
}

TEST(FramingTest, ExactlyChunkedPassesInAnyCaseWithWhitespace) {
  EXPECT_EQ(status(check_framing(with_te({"chunked"}))), 0);
  EXPECT_EQ(status(check_framing(with_te({" CHUNKED\t"}))), 0);
  EXPECT_EQ(status(check_framing(with_te({", chunked ,"}))), 0);  // empty elements are ignored
  EXPECT_EQ(status(check_framing(with_te({}))), 0);
}

TEST(FramingTest, AnUnknownCodingIs501) {
  EXPECT_EQ(status(check_framing(with_te({"xchunked"}))), 501);
  EXPECT_EQ(status(check_framing(with_te({"gzip, chunked"}))), 501);
  EXPECT_EQ(status(check_framing(with_te({"gzip", "chunked"}))), 501);
  EXPECT_EQ(status(check_framing(with_te({"chunked, gzip"}))), 501);
  EXPECT_EQ(status(check_framing(with_te({"chunked;ext=1"}))), 501);
  EXPECT_EQ(check_framing(with_te({"gzip"}))->reason, "unsupported_transfer_encoding");
}

TEST(FramingTest, MalformedRepeatedOrConflictingFramingIs400) {
  EXPECT_EQ(status(check_framing(with_te({"chunked, chunked"}))), 400);
  EXPECT_EQ(status(check_framing(with_te({"chunked", "chunked"}))), 400);
  EXPECT_EQ(status(check_framing(with_te({""}))), 400);
  EXPECT_EQ(status(check_framing(with_te({" , "}))), 400);
  EXPECT_EQ(status(check_framing(with_te({"chun(ked"}))), 400);
  EXPECT_EQ(status(check_framing(with_te({"gzip;"}))), 400);
  EXPECT_EQ(status(check_framing(with_te({"chunked"}, 10))), 400);  // HTTP/1.0
  auto both = with_te({"chunked"});
  both.content_length_fields = 1;
  EXPECT_EQ(status(check_framing(both)), 400);
  EXPECT_EQ(check_framing(both)->reason, "bad_framing");
}

TEST(FramingTest, Http11NeedsExactlyOneHost) {
  FramingView v;
  v.host_fields = 0;
  EXPECT_EQ(status(check_framing(v)), 400);
  v.host_fields = 2;
  EXPECT_EQ(status(check_framing(v)), 400);
  v.version = 10;
  EXPECT_EQ(status(check_framing(v)), 400);  // two Hosts: refused on any version
  v.host_fields = 0;
  EXPECT_EQ(status(check_framing(v)), 0);  // HTTP/1.0 may omit it
  v.version = 11;
  v.host_fields = 1;
  EXPECT_EQ(status(check_framing(v)), 0);
}

// Beast frames `xchunked` next to Content-Length by the length, and `gzip, chunked` as plain
// chunked: the check refuses both from the parsed header.
TEST(FramingTest, RefusesWhatBeastAccepts) {
  Parsed xchunked(
      "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n");
  ASSERT_FALSE(xchunked.ec) << xchunked.ec.message();
  EXPECT_EQ(xchunked.parser.content_length().value_or(0), 5u);
  EXPECT_EQ(status(xchunked.framing()), 400);

  Parsed gzip("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
  ASSERT_FALSE(gzip.ec) << gzip.ec.message();
  EXPECT_TRUE(gzip.parser.chunked());
  EXPECT_EQ(status(gzip.framing()), 501);

  Parsed hosts("GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
  ASSERT_FALSE(hosts.ec);
  EXPECT_EQ(status(hosts.framing()), 400);

  Parsed fine("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
  ASSERT_FALSE(fine.ec);
  EXPECT_EQ(status(fine.framing()), 0);
}

// What Beast refuses itself still gets a status, not a silent close.
TEST(FramingTest, BeastRefusalsGetStatuses) {
  Parsed length_then_te(
      "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
  EXPECT_EQ(length_then_te.ec, http::error::bad_transfer_encoding);
  EXPECT_EQ(status(length_then_te.unparsed()), 400);

  for (const char* version : {"HTTP/1.2", "HTTP/2.0", "HTTP/0.9"}) {
    Parsed p(std::string("GET /x ") + version + "\r\nHost: a\r\n\r\n");
    EXPECT_EQ(p.ec, http::error::bad_version) << version;
    EXPECT_EQ(status(p.unparsed()), 505) << version;
    EXPECT_EQ(p.unparsed()->reason, "unsupported_http_version");
  }
  // Beast reports these as bad_version too: they are malformed (400), not a version to refuse.
  for (const char* line : {"GET /a b HTTP/1.1\r\n", "GET /x HTTP/1.1\n", "GET /x HTTP/2.0\n",
                           "GET /x HTTP/2\r\n", "GET  HTTP/2.0\r\n"}) {
    Parsed p(std::string(line) + "Host: a\r\n\r\n");
    EXPECT_TRUE(p.ec) << line;
    EXPECT_EQ(status(p.unparsed()), 400) << line;
  }
  Parsed lf_fields("GET /x HTTP/1.1\r\nHost: a\nX: 1\n\n");
  EXPECT_TRUE(lf_fields.ec);
  EXPECT_EQ(status(lf_fields.unparsed()), 400);
}

TEST(FramingTest, TooLongRequestLineIs414AndTooLargeHeaderIs431) {
  Parsed line("GET /" + std::string(10'000, 'a') + " HTTP/1.1\r\nHost: a\r\n\r\n", 4096);
  EXPECT_EQ(line.ec, http::error::header_limit);
  EXPECT_EQ(status(line.unparsed()), 414);

  Parsed fields("GET /x HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(10'000, 'b') + "\r\n\r\n",
                4096);
  EXPECT_EQ(fields.ec, http::error::header_limit);
  EXPECT_EQ(status(fields.unparsed()), 431);

  Parsed body("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n");
  EXPECT_EQ(body.ec, http::error::body_limit);
  EXPECT_EQ(status(body.unparsed()), 413);
  EXPECT_EQ(body.unparsed()->message, "the request body exceeds the limit of 1024 bytes");
}

TEST(FramingTest, AConnectionThatEndedIsNotAnswered) {
  namespace error = boost::asio::error;
  for (boost::system::error_code ec :
       {make_error_code(http::error::end_of_stream), make_error_code(http::error::partial_message),
        make_error_code(error::operation_aborted), make_error_code(error::connection_reset),
        make_error_code(error::eof)}) {
    EXPECT_FALSE(refuse_unparsed({ec, "GET / HT", false}, 1024)) << ec.message();
  }
}

TEST(FramingTest, SplitsTheRequestLineAsFarAsItCame) {
  auto full = split_request_line("POST /a/b?x=1 HTTP/2.0\r\nHost: a\r\n");
  EXPECT_EQ(full.method, "POST");
  EXPECT_EQ(full.target, "/a/b?x=1");
  auto cut = split_request_line("GET /aaaaaaaa");
  EXPECT_EQ(cut.method, "GET");
  EXPECT_EQ(cut.target, "");  // the target never ended
  EXPECT_EQ(split_request_line("\x01\x02 / HTTP/1.1\r\n").method, "");
  EXPECT_EQ(split_request_line("").method, "");
}

}  // namespace
}  // namespace tollgate::server
