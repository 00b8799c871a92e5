#include "server/http_client.hpp"

#include <openssl/ssl.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/url/parse.hpp>

#include "proxy/net.hpp"

namespace tollgate::server {

using namespace proxy;  // net, beast, http, streams, use_tuple

namespace {

constexpr std::size_t kMaxBody = 1u << 20;

template <class Stream>
net::awaitable<FetchResult> exchange(Stream& stream, http::request<http::string_body>& req) {
  FetchResult out;
  auto [wec, wn] = co_await http::async_write(stream, req, use_tuple);
  if (wec) {
    out.error = "write: " + wec.message();
    co_return out;
  }
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxBody);
  auto [rec, rn] = co_await http::async_read(stream, buffer, parser, use_tuple);
  if (rec) {
    out.error = "read: " + rec.message();
    co_return out;
  }
  out.status = static_cast<int>(parser.get().result_int());
  out.body = std::move(parser.get().body());
  co_return out;
}

}  // namespace

std::string form_encode(std::string_view value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : value) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else if (c == ' ') {
      out += '+';
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

net::awaitable<FetchResult> fetch(FetchRequest r) {
  FetchResult out;
  auto url = boost::urls::parse_absolute_uri(r.url);
  if (!url || (url->scheme() != "http" && url->scheme() != "https")) {
    out.error = "not an http(s) URL";
    co_return out;
  }
  bool tls = url->scheme() == "https";
  std::string host(url->encoded_host_address());
  if (!host.empty() && host.front() == '[') host = host.substr(1, host.size() - 2);
  std::string port = url->has_port() ? std::string(url->port()) : (tls ? "443" : "80");
  std::string target(url->encoded_path());
  if (target.empty()) target = "/";
  if (url->has_query()) target += "?" + std::string(url->encoded_query());

  auto ex = co_await net::this_coro::executor;
  tcp::resolver resolver(ex);
  PlainStream tcp_stream(ex);
  tcp_stream.expires_after(r.timeout);  // bounds everything below (Beast's stream timer)
  auto [rec, results] = co_await resolver.async_resolve(host, port, use_tuple);
  if (rec) {
    out.error = "resolve " + host + ": " + rec.message();
    co_return out;
  }
  auto [cec, ep] = co_await tcp_stream.async_connect(results, use_tuple);
  if (cec) {
    out.error = "connect " + host + ":" + port + ": " + cec.message();
    co_return out;
  }
  http::request<http::string_body> req{http::string_to_verb(r.method), target, 11};
  req.set(http::field::host, url->has_port() ? host + ":" + port : host);
  req.set(http::field::user_agent, "tollgate/" TOLLGATE_VERSION);
  for (const auto& [k, v] : r.headers) req.set(k, v);
  req.keep_alive(false);
  if (!r.body.empty() || r.method == "POST") {
    req.body() = std::move(r.body);
    req.prepare_payload();
  }
  if (!tls) co_return co_await exchange(tcp_stream, req);

  net::ssl::context ctx(net::ssl::context::tls_client);
  boost::system::error_code ec;
  if (r.ca_file.empty()) {
    ctx.set_default_verify_paths(ec);
  } else {
    ctx.load_verify_file(r.ca_file, ec);
  }
  if (ec) {
    out.error = "CA certificates: " + ec.message();
    co_return out;
  }
  TlsStream stream(std::move(tcp_stream), ctx);
  boost::system::error_code addr_ec;
  net::ip::make_address(host, addr_ec);
  if (addr_ec) SSL_set_tlsext_host_name(stream.native_handle(), host.c_str());
  stream.set_verify_mode(net::ssl::verify_peer);
  stream.set_verify_callback(net::ssl::host_name_verification(host));
  auto [hec] = co_await stream.async_handshake(net::ssl::stream_base::client, use_tuple);
  if (hec) {
    out.error = "TLS with " + host + ": " + hec.message();
    co_return out;
  }
  co_return co_await exchange(stream, req);
}

}  // namespace tollgate::server
