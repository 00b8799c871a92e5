#pragma once
// The admin listener (/metrics, /healthz, /readyz, the /admin API) on the control thread.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tollgate::server {

struct AdminRequest {
  std::string_view method;
  std::string_view path;           // without the query
  std::string_view query;          // after '?', still percent-encoded ("" when none)
  std::string_view authorization;  // the Authorization header
  std::string_view body;
};

struct AdminResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

/// An error answer of the admin listener, in the gateway's error shape.
AdminResponse admin_error(int status, std::string_view code, std::string message);

/// Serves `handler` on `acceptor` until the acceptor closes, over HTTPS when `tls` is set
/// (admin.tls), else plain HTTP. Thread: the io_context's thread. The handler may suspend (a
/// report computed on another thread); the request it gets lives until it completes.
using AdminHandler = std::function<boost::asio::awaitable<AdminResponse>(const AdminRequest&)>;
void serve_admin(boost::asio::io_context& io, boost::asio::ip::tcp::acceptor& acceptor,
                 std::shared_ptr<boost::asio::ssl::context> tls, AdminHandler handler);

}  // namespace tollgate::server
