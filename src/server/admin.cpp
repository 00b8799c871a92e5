#include "server/admin.hpp"

#include <boost/asio/steady_timer.hpp>
#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <optional>

#include "proxy/net.hpp"
#include "server/framing.hpp"
#include "server/refuse_io.hpp"
#include "tollgate/core/errors.hpp"
#include "tollgate/metrics/logging.hpp"

namespace tollgate::server {

using namespace proxy;

namespace {

using Handler = AdminHandler;

constexpr std::uint32_t kHeaderLimit = 16 * 1024;  // larger headers get 431
constexpr std::size_t kBodyLimit = 64 * 1024;       // larger bodies get 413
constexpr std::chrono::seconds kReadTimeout{30};

// What server/framing.hpp needs to answer a request that could not be read.
Unparsed unparsed(boost::system::error_code ec, const beast::flat_buffer& buffer,
                  const http::request_parser<http::string_body>& parser) {
  return {ec, {static_cast<const char*>(buffer.data().data()), buffer.size()},
          !parser.get().target().empty()};  // Beast stores the request line once it is whole
}

// Reads one request into `parser`. False when the connection ended or the request was refused
// (answered; the connection is closed).
template <class Stream>
net::awaitable<bool> read_admin_request(Stream& stream, beast::flat_buffer& buffer,
                                        http::request_parser<http::string_body>& parser) {
  parser.header_limit(kHeaderLimit);
  parser.body_limit(kBodyLimit);
  beast::get_lowest_layer(stream).expires_after(kReadTimeout);
  auto [ec, n] = co_await http::async_read_header(stream, buffer, parser, use_tuple);
  std::optional<Refusal> refusal;
  if (ec) {
    refusal = refuse_unparsed(unparsed(ec, buffer, parser), kBodyLimit);
  } else {
    refusal = check_framing(framing_view(parser.get()));
    if (!refusal) {
      auto [bec, bn] = co_await http::async_read(stream, buffer, parser, use_tuple);
      if (!bec) co_return true;
      refusal = refuse_unparsed(unparsed(bec, buffer, parser), kBodyLimit);
    }
  }
  if (refusal) co_await answer_and_linger(stream, *refusal);
  co_return false;
}

template <class Stream>
net::awaitable<void> admin_session(Stream stream, Handler handler) {
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    if (!co_await read_admin_request(stream, buffer, parser)) co_return;
    auto& req = parser.get();
    std::string_view target = req.target();
    auto q = target.find('?');
    auto path = target.substr(0, q);
    auto query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
    auto out = co_await handler(
        AdminRequest{req.method_string(), path, query, req[http::field::authorization], req.body()});
    http::response<http::string_body> res{static_cast<http::status>(out.status), req.version()};
    res.set(http::field::content_type, out.content_type);
    for (const auto& [k, v] : out.headers) res.set(k, v);
    res.keep_alive(req.keep_alive());
    res.body() = std::move(out.body);
    res.prepare_payload();
    auto [wec, wn] = co_await http::async_write(stream, res, use_tuple);
    if (wec || !res.keep_alive()) break;
  }
  if constexpr (std::is_same_v<Stream, TlsStream>) {  // close_notify, bounded
    beast::get_lowest_layer(stream).expires_after(kLingerTime);
    co_await stream.async_shutdown(use_tuple);
  }
  boost::system::error_code ignored;
  beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_send, ignored);
}

// HTTPS (admin.tls): the handshake within the read timeout, then the same session.
net::awaitable<void> admin_tls_session(PlainStream plain, std::shared_ptr<net::ssl::context> tls,
                                       Handler handler) {
  TlsStream stream(std::move(plain), *tls);
  beast::get_lowest_layer(stream).expires_after(kReadTimeout);
  auto [ec] = co_await stream.async_handshake(net::ssl::stream_base::server, use_tuple);
  if (ec) co_return;
  co_await admin_session(std::move(stream), std::move(handler));
}

/// One descriptor held in reserve, so /readyz and /metrics still answer while the process is out
/// of descriptors: a failed accept gives it up for the connection, and it is taken back after
/// the next accept that leaves one free. Owner: the admin listener's thread.
class DescriptorReserve {
 public:
  DescriptorReserve() { take(); }
  ~DescriptorReserve() { give_up(); }
  DescriptorReserve(const DescriptorReserve&) = delete;
  DescriptorReserve& operator=(const DescriptorReserve&) = delete;
  /// True when one was held (and is free now).
  bool give_up() {
    if (fd_ < 0) return false;
    ::close(fd_);
    fd_ = -1;
    return true;
  }
  void take() {
    if (fd_ < 0) fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }

 private:
  int fd_ = -1;
};

bool out_of_descriptors(const boost::system::error_code& ec) {
  return ec == boost::system::errc::too_many_files_open ||
         ec == boost::system::errc::too_many_files_open_in_system;
}

net::awaitable<void> admin_accept(tcp::acceptor& acceptor, std::shared_ptr<net::ssl::context> tls,
                                  Handler handler) {
  DescriptorReserve reserve;
  for (;;) {
    auto [ec, sock] = co_await acceptor.async_accept(use_tuple);
    if (ec) {
      if (!acceptor.is_open() || ec == net::error::operation_aborted) co_return;
      if (out_of_descriptors(ec) && reserve.give_up()) continue;  // accept again at once
      net::steady_timer t(acceptor.get_executor(), kAcceptBackoff);
      co_await t.async_wait(use_tuple);
      continue;
    }
    if (tls) {
      net::co_spawn(acceptor.get_executor(), admin_tls_session(PlainStream(std::move(sock)), tls, handler),
                    metrics::LogFailure{"admin session failed", {}, {}});
    } else {
      net::co_spawn(acceptor.get_executor(), admin_session(PlainStream(std::move(sock)), handler),
                    metrics::LogFailure{"admin session failed", {}, {}});
    }
    reserve.take();
  }
}

}  // namespace

AdminResponse admin_error(int status, std::string_view code, std::string message) {
  core::HttpError e{status, std::string(code), std::move(message), {}, {}};
  return AdminResponse{status, "application/json", e.body(), {}};
}

void serve_admin(net::io_context& io, tcp::acceptor& acceptor,
                 std::shared_ptr<boost::asio::ssl::context> tls, Handler handler) {
  net::co_spawn(io, admin_accept(acceptor, std::move(tls), std::move(handler)), [](std::exception_ptr e) {
    if (e) metrics::log_error("admin listener stopped unexpectedly");
  });
}

}  // namespace tollgate::server
