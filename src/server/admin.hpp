#pragma once
// The admin listener (/metrics, /healthz, /readyz) on the control thread.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <string>

namespace tollgate::server {

struct AdminResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

/// Serves `handler` on `acceptor` until the acceptor closes. Thread: the io_context's thread.
void serve_admin(boost::asio::io_context& io, boost::asio::ip::tcp::acceptor& acceptor,
                 std::function<AdminResponse(std::string_view method, std::string_view path)> handler);

}  // namespace tollgate::server
