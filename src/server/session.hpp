#pragma once
// Client sessions: a connection's request loop and each request's way through the pipeline.
// See session.cpp (read top-down) and docs/architecture.md.

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>

#include "server/connections.hpp"

namespace tollgate::server {

class Worker;

/// Starts serving an accepted connection on `w` (TLS first when `tls` is set). The session owns
/// the socket and `slot` (its source address's count); it ends when the client leaves, the
/// connection fails, or the worker drains. Thread: `w`'s own.
void spawn_session(Worker& w, boost::asio::ip::tcp::socket sock,
                   std::shared_ptr<boost::asio::ssl::context> tls, std::string remote,
                   AddressCounts::Slot slot);

}  // namespace tollgate::server
