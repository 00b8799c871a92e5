// The only Beast translation unit of the mock tests: a bounded, blocking-looking HTTP client
// built on coroutines run in a private io_context.

#include "mock_client.hpp"

#include <sys/socket.h>

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 false positive on Asio's awaitable frame allocator (see src/mock/server.cpp).
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <cerrno>
#include <optional>

namespace tollgate::mock::test {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;
using boost::system::error_code;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

struct Client::Impl {
  std::uint16_t port;
  std::chrono::milliseconds timeout;
  std::unique_ptr<net::io_context> ioc = std::make_unique<net::io_context>(1);
  std::optional<tcp::socket> socket;
  beast::flat_buffer buffer;

  // What one exchange should do after the head arrived.
  enum class Mode { Full, Drop, Wait };

  net::awaitable<void> exchange(const Request& r, Response& out, Mode mode,
                                std::size_t drop_after) {
    if (!socket) {
      socket.emplace(*ioc);
      buffer.clear();
      auto [ec] = co_await socket->async_connect(
          tcp::endpoint(net::ip::make_address("127.0.0.1"), port), use_tuple);
      if (ec) {
        out.error = "connect: " + ec.message();
        socket.reset();
        co_return;
      }
    }
    http::request<http::string_body> req;
    req.method_string(r.method);
    req.target(r.target);
    req.version(11);
    req.set(http::field::host, "127.0.0.1:" + std::to_string(port));
    bool has_type = false;
    for (const auto& [k, v] : r.headers) {
      req.insert(k, v);
      has_type = has_type || lower(k) == "content-type";
    }
    if (!r.body.empty() && !has_type) req.set(http::field::content_type, "application/json");
    req.body() = r.body;
    req.prepare_payload();
    {
      auto [ec, n] = co_await http::async_write(*socket, req, use_tuple);
      if (ec) {
        out.error = "write: " + ec.message();
        socket.reset();
        co_return;
      }
    }

    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    std::string current;
    auto on_chunk = [&](std::uint64_t remain, std::string_view piece,
                        error_code& ec) -> std::size_t {
      out.body.append(piece.data(), piece.size());
      current.append(piece.data(), piece.size());
      if (remain == piece.size()) {
        out.chunks.push_back(std::move(current));
        current.clear();
        if (mode == Mode::Drop && out.chunks.size() >= drop_after)
          ec = net::error::operation_aborted;
      }
      return piece.size();
    };
    parser.on_chunk_body(on_chunk);

    auto [ec, n] = co_await http::async_read_header(*socket, buffer, parser, use_tuple);
    if (ec) {
      out.error = "read header: " + ec.message();
      if (ec != net::error::operation_aborted) socket.reset();
      co_return;
    }
    const auto& head = parser.get();
    out.status = static_cast<int>(head.result_int());
    for (const auto& f : head) {
      auto name = lower(std::string_view(f.name_string().data(), f.name_string().size()));
      auto& slot = out.headers[name];
      if (!slot.empty()) slot += ", ";
      slot.append(f.value().data(), f.value().size());
    }
    if (mode == Mode::Drop && drop_after == 0) {
      close();
      co_return;
    }
    std::tie(ec, n) = co_await http::async_read(*socket, buffer, parser, use_tuple);
    if (!parser.chunked()) out.body = parser.get().body();
    if (ec) {
      if (mode == Mode::Drop && ec == net::error::operation_aborted) {
        close();
        co_return;
      }
      out.error = "read body: " + ec.message();
      socket.reset();
      co_return;
    }
    out.complete = true;
    if (!parser.keep_alive()) socket.reset();
  }

  void close() {
    if (!socket) return;
    error_code ec;
    socket->shutdown(tcp::socket::shutdown_both, ec);
    socket->close(ec);
    socket.reset();
  }

  Response run(const Request& r, Mode mode, std::size_t drop_after,
               std::chrono::milliseconds limit) {
    Response out;
    auto start = std::chrono::steady_clock::now();
    bool done = false;
    ioc->restart();
    net::co_spawn(*ioc, exchange(r, out, mode, drop_after), [&](std::exception_ptr e) {
      done = true;
      if (e) out.error = "exception";
    });
    ioc->run_for(limit);
    if (!done) {
      // Deadline: cancel the pending operation; the connection stays open for Mode::Wait.
      error_code ec;
      if (socket) socket->cancel(ec);
      ioc->restart();
      ioc->run_for(std::chrono::seconds(1));
      if (out.error.empty() || out.error.find("Operation canceled") != std::string::npos) {
        out.error = "timeout";
      }
      if (!done) {  // never resumed: drop the io_context, and with it the frame
        socket.reset();
        ioc = std::make_unique<net::io_context>(1);
      }
    }
    out.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    return out;
  }
};

Client::Client(std::uint16_t port, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>()) {
  impl_->port = port;
  impl_->timeout = timeout;
}

Client::~Client() {
  impl_->close();
}

Response Client::send(const Request& req) {
  return impl_->run(req, Impl::Mode::Full, 0, impl_->timeout);
}

Response Client::send_and_drop(const Request& req, std::size_t chunks) {
  return impl_->run(req, Impl::Mode::Drop, chunks, impl_->timeout);
}

Response Client::send_and_wait(const Request& req, std::chrono::milliseconds wait) {
  return impl_->run(req, Impl::Mode::Wait, 0, wait);
}

void Client::close() {
  impl_->close();
}

bool Client::server_closed() {
  if (!impl_->socket) return true;
  char c;
  ssize_t n = ::recv(impl_->socket->native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return true;
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
  return n < 0;
}

Response request(std::uint16_t port, const Request& req, std::chrono::milliseconds timeout) {
  Client c(port, timeout);
  return c.send(req);
}

std::vector<std::string> sse_events(std::string_view body) {
  std::vector<std::string> out;
  while (!body.empty()) {
    auto end = body.find("\n\n");
    if (end == std::string_view::npos) {
      out.emplace_back(body);
      break;
    }
    out.emplace_back(body.substr(0, end));
    body.remove_prefix(end + 2);
  }
  return out;
}

std::string base64_decode(std::string_view s) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    int v = value(c);
    if (v < 0) continue;  // '=' and whitespace
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return out;
}

}  // namespace tollgate::mock::test
