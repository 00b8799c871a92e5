#pragma once
// Writing a refusal (server/framing.hpp) on a connection that will not be read again: the JSON
// error with `Connection: close`, then a lingering close — the client may still be sending, and
// closing on unread bytes would reset the answer before the client read it. Used by the admin
// listener and the per-address connection cap (the client sessions linger through their own
// Deadline, see session.cpp).
// Thread: the stream's executor. Lifetime: `stream` outlives the coroutine.

#include <array>

#include "proxy/net.hpp"
#include "server/framing.hpp"

namespace tollgate::server {

template <class Stream>
boost::asio::awaitable<void> answer_and_linger(Stream& stream, const Refusal& r) {
  namespace http = proxy::http;
  http::response<http::string_body> res{static_cast<http::status>(r.status), 11};
  res.set(http::field::content_type, "application/json");
  res.keep_alive(false);
  res.body() = http_error(r).body();
  res.prepare_payload();
  auto& lowest = proxy::beast::get_lowest_layer(stream);
  lowest.expires_after(kLingerTime);
  auto [ec, n] = co_await http::async_write(stream, res, proxy::use_tuple);
  if (ec) co_return;
  lowest.socket().shutdown(proxy::tcp::socket::shutdown_send, ec);
  std::array<char, 4096> sink;
  for (std::size_t total = 0; total < kLingerBytes;) {
    auto [rec, rn] = co_await lowest.async_read_some(boost::asio::buffer(sink), proxy::use_tuple);
    if (rec) break;
    total += rn;
  }
}

}  // namespace tollgate::server
