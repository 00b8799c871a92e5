#include "proxy/tls.hpp"

#include <openssl/ssl.h>

#include <stdexcept>

namespace tollgate::proxy {

namespace ssl = boost::asio::ssl;

namespace {

// SSLv3, TLS 1.0 and 1.1 are deprecated (RFC 8996): never negotiated, in either direction.
void require_tls12(ssl::context& ctx) {
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                  ssl::context::no_sslv3);
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
}

}  // namespace

boost::system::result<std::shared_ptr<ssl::context>> make_client_tls(const CaOptions& ca) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  require_tls12(*ctx);
  boost::system::error_code ec;
  if (ca.ca_file.empty()) {
    ctx->set_default_verify_paths(ec);
  } else {
    ctx->load_verify_file(ca.ca_file, ec);
  }
  if (!ec) ctx->set_verify_mode(ssl::verify_peer, ec);
  if (ec) return ec;
  return ctx;
}

std::shared_ptr<ssl::context> make_server_tls(const config::TlsFiles& files) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  require_tls12(*ctx);
  ctx->set_options(ssl::context::single_dh_use);
  boost::system::error_code ec;
  ctx->use_certificate_chain_file(files.cert_file, ec);
  if (ec) {
    throw std::runtime_error("cannot load TLS certificate " + files.cert_file + ": " + ec.message());
  }
  ctx->use_private_key_file(files.key_file, ssl::context::pem, ec);
  if (ec) throw std::runtime_error("cannot load TLS key " + files.key_file + ": " + ec.message());
  return ctx;
}

}  // namespace tollgate::proxy
