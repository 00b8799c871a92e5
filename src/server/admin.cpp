#include "server/admin.hpp"

#include "proxy/net.hpp"
#include "tollgate/core/errors.hpp"
#include "tollgate/metrics/logging.hpp"

namespace tollgate::server {

using namespace proxy;

namespace {

using Handler = AdminHandler;

net::awaitable<void> admin_session(PlainStream stream, Handler handler) {
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(64 * 1024);
    stream.expires_after(std::chrono::seconds(30));
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, use_tuple);
    if (ec) co_return;
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
  boost::system::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

net::awaitable<void> admin_accept(tcp::acceptor& acceptor, Handler handler) {
  for (;;) {
    auto [ec, sock] = co_await acceptor.async_accept(use_tuple);
    if (ec) {
      if (!acceptor.is_open() || ec == net::error::operation_aborted) co_return;
      continue;
    }
    net::co_spawn(acceptor.get_executor(), admin_session(PlainStream(std::move(sock)), handler),
                  metrics::LogFailure{"admin session failed", {}, {}});
  }
}

}  // namespace

AdminResponse admin_error(int status, std::string_view code, std::string message) {
  core::HttpError e{status, std::string(code), std::move(message), {}, {}};
  return AdminResponse{status, "application/json", e.body(), {}};
}

void serve_admin(net::io_context& io, tcp::acceptor& acceptor, Handler handler) {
  net::co_spawn(io, admin_accept(acceptor, std::move(handler)), [](std::exception_ptr e) {
    if (e) metrics::log_error("admin listener stopped unexpectedly");
  });
}

}  // namespace tollgate::server
