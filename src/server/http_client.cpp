#include "server/http_client.hpp"

#include <boost/url/parse.hpp>
#include <memory>
#include <variant>

#include "proxy/connect.hpp"
#include "proxy/net.hpp"
#include "proxy/tls.hpp"

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

net::awaitable<FetchResult> fetch(FetchRequest r, proxy::Resolver& resolver,
                                  std::chrono::milliseconds resolve_timeout) {
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
  std::uint16_t port_number = url->has_port() ? url->port_number() : (tls ? 443 : 80);
  if (port_number == 0) {
    out.error = "bad port in the URL";
    co_return out;
  }
  std::string target(url->encoded_path());
  if (target.empty()) target = "/";
  if (url->has_query()) target += "?" + std::string(url->encoded_query());

  std::shared_ptr<net::ssl::context> tls_ctx;
  if (tls) {
    auto made = proxy::make_client_tls(proxy::CaOptions{r.ca_file});
    if (!made) {
      out.error = "CA certificates: " + made.error().message();
      co_return out;
    }
    tls_ctx = std::move(*made);
  }
  // One timeout bounds the whole request (connect, handshake, write and read).
  auto deadline = std::chrono::steady_clock::now() + r.timeout;
  auto stream = co_await proxy::connect_upstream(proxy::UpstreamTarget{.host = host,
                                                                      .port = port_number,
                                                                      .tls = tls_ctx.get(),
                                                                      .timeout = r.timeout,
                                                                      .resolve_timeout = resolve_timeout,
                                                                      .deadline = deadline},
                                                resolver);
  if (!stream) {
    out.error = host + ":" + port + ": " + stream.error().message();
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
  co_return co_await std::visit(
      [&req, deadline](auto& s) {
        beast::get_lowest_layer(s).expires_at(deadline);
        return exchange(s, req);
      },
      *stream);
}

}  // namespace tollgate::server
