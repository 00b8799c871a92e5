#pragma once
// The admin listener (/metrics, /healthz, /readyz, the /admin API) on the control thread.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace tollgate::server {

struct AdminRequest {
  std::string_view method;
  std::string_view path;           // without the query
  std::string_view authorization;  // the Authorization header
  std::string_view body;
};

struct AdminResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

/// Serves `handler` on `acceptor` until the acceptor closes. Thread: the io_context's thread.
void serve_admin(boost::asio::io_context& io, boost::asio::ip::tcp::acceptor& acceptor,
                 std::function<AdminResponse(const AdminRequest&)> handler);

}  // namespace tollgate::server
