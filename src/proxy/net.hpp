#pragma once
// Beast/Asio aliases shared by the network translation units (proxy/, server/).

#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <cerrno>
#include <cstdint>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

namespace tollgate::proxy {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;
using Request = http::request<http::string_body>;

/// What a non-blocking peek at a connection shows: nothing (open and quiet), bytes waiting, or
/// the peer gone (orderly close or error). EINTR counts as open. Thread: the socket's owner.
enum class PeerState : std::uint8_t { kQuiet, kData, kClosed };
inline PeerState peek_peer(int fd) {
  char c;
  auto n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return PeerState::kData;
  if (n == 0) return PeerState::kClosed;
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? PeerState::kQuiet : PeerState::kClosed;
}

/// Every co_await returns [ec, ...]: errors are values on the request path.
inline constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

/// Feeds `parser` from bytes already in `buffer`, without I/O. An async read that completes from
/// the buffer alone still costs a trip through the event loop; this does not. Returns the bytes
/// consumed; `ec` is set on a parse error (need_more / need_buffer are not errors here).
template <class Parser>
std::size_t parse_buffered(Parser& parser, beast::flat_buffer& buffer, boost::system::error_code& ec) {
  std::size_t total = 0;
  while (buffer.size() > 0 && !parser.is_done()) {
    auto n = parser.put(buffer.data(), ec);
    buffer.consume(n);
    total += n;
    if (ec == http::error::need_more || ec == http::error::need_buffer) {
      ec = {};
      break;
    }
    if (ec || n == 0) break;
  }
  return total;
}

}  // namespace tollgate::proxy
