#pragma once
// The TLS contexts: one factory for client contexts (backends, health checks, JWKS and token
// fetches) and one for server contexts (the gateway's listeners). Both refuse anything older
// than TLS 1.2; that rule lives in tls.cpp only.

#include <boost/asio/ssl/context.hpp>
#include <boost/system/result.hpp>
#include <memory>
#include <string>

#include "tollgate/config/config.hpp"

namespace tollgate::proxy {

/// Which certificate authorities a client trusts.
struct CaOptions {
  std::string ca_file;  // PEM bundle; empty: the system's trust store
};

/// A client context: TLS 1.2 or later, peer certificates verified against `ca` (host names are
/// verified per connection, see connect_upstream()). Errors: the CA certificates cannot be
/// loaded. Thread: any.
boost::system::result<std::shared_ptr<boost::asio::ssl::context>> make_client_tls(
    const CaOptions& ca);

/// A server context: TLS 1.2 or later, with `files`' certificate chain and private key.
/// Throws std::runtime_error naming the file that cannot be loaded (start-up only).
std::shared_ptr<boost::asio::ssl::context> make_server_tls(const config::TlsFiles& files);

}  // namespace tollgate::proxy
