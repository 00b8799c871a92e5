#include "proxy/connect.hpp"

#include <openssl/ssl.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/steady_timer.hpp>
#include <algorithm>
#include <memory>
#include <utility>

namespace tollgate::proxy {

namespace {

using Connected = boost::system::result<UpstreamStream, ConnectError>;

bool is_ip_literal(std::string_view host) {
  boost::system::error_code ec;
  net::ip::make_address(host, ec);
  return !ec;
}

net::awaitable<Connected> handshake(PlainStream tcp_stream, const UpstreamTarget& target) {
  TlsStream tls(std::move(tcp_stream), *target.tls);
  std::string host(target.host);
  if (!is_ip_literal(host)) SSL_set_tlsext_host_name(tls.native_handle(), host.c_str());
  boost::system::error_code ec;
  tls.set_verify_mode(net::ssl::verify_peer, ec);
  if (!ec) tls.set_verify_callback(net::ssl::host_name_verification(host), ec);
  if (ec) co_return ConnectError{ConnectStep::kTls, ec};
  beast::get_lowest_layer(tls).expires_at(target.step_end(target.timeout));
  auto [hec] = co_await tls.async_handshake(net::ssl::stream_base::client, use_tuple);
  if (hec) co_return ConnectError{ConnectStep::kTls, hec};
  beast::get_lowest_layer(tls).expires_never();
  co_return UpstreamStream(std::in_place_type<TlsStream>, std::move(tls));
}

}  // namespace

std::chrono::steady_clock::time_point UpstreamTarget::step_end(std::chrono::milliseconds step) const {
  auto end = std::chrono::steady_clock::now() + step;
  return deadline ? std::min(end, *deadline) : end;
}

std::string_view to_string(ConnectStep s) {
  switch (s) {
    case ConnectStep::kResolve:
      return "resolve";
    case ConnectStep::kConnect:
      return "connect";
    case ConnectStep::kTls:
      return "tls";
  }
  return "connect";
}

bool ConnectError::timed_out() const {
  return ec == beast::error::timeout || ec == net::error::timed_out;
}

std::string ConnectError::message() const {
  return std::string(to_string(step)) + ": " + ec.message();
}

metrics::UpstreamError to_upstream_error(const ConnectError& e) {
  using metrics::UpstreamError;
  switch (e.step) {
    case ConnectStep::kResolve:
      return UpstreamError::kResolve;
    case ConnectStep::kConnect:
      return e.timed_out() ? UpstreamError::kConnectTimeout : UpstreamError::kConnect;
    case ConnectStep::kTls:
      return e.timed_out() ? UpstreamError::kConnectTimeout : UpstreamError::kTls;
  }
  return UpstreamError::kConnect;
}

net::awaitable<Connected> connect_upstream(UpstreamTarget target, Resolver& resolver) {
  auto [rec, endpoints] = co_await resolver.resolve(target.host, target.port,
                                                     target.step_end(target.resolve_timeout));
  if (rec) co_return ConnectError{ConnectStep::kResolve, rec};
  PlainStream tcp_stream(co_await net::this_coro::executor);
  tcp_stream.expires_at(target.step_end(target.timeout));
  auto [ec, ep] = co_await tcp_stream.async_connect(endpoints, use_tuple);
  if (ec) {
    resolver.forget(target.host);  // the next connection looks the name up again
    co_return ConnectError{ConnectStep::kConnect, ec};
  }
  tcp_stream.expires_never();
  boost::system::error_code ignored;  // Nagle only delays: a failure here costs latency, not data
  tcp_stream.socket().set_option(tcp::no_delay(true), ignored);
  if (target.tls == nullptr) {
    co_return UpstreamStream(std::in_place_type<PlainStream>, std::move(tcp_stream));
  }
  co_return co_await handshake(std::move(tcp_stream), target);
}

}  // namespace tollgate::proxy
