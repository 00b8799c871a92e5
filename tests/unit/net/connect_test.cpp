// connect_upstream() and the TLS client context against in-process servers on 127.0.0.1: the
// TLS handshake with peer and host name verification, the refusal of TLS 1.1, and the errors of
// each step.

#include "proxy/connect.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <boost/asio/io_context.hpp>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <unistd.h>

#include "proxy/tls.hpp"

namespace tollgate::proxy {
namespace {

using namespace std::chrono_literals;
using Connected = boost::system::result<UpstreamStream, ConnectError>;

// A self-signed certificate for IP 127.0.0.1 (and the name "localhost"), written as PEM files.
struct SelfSigned {
  std::filesystem::path dir;
  std::string cert_file, key_file;

  SelfSigned() {
    dir = std::filesystem::temp_directory_path() /
          ("tollgate-connect-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    cert_file = (dir / "cert.pem").string();
    key_file = (dir / "key.pem").string();
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    auto* name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, nullptr, nullptr, 0);
    for (auto [nid, value] : {std::pair{NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost"},
                              std::pair{NID_basic_constraints, "critical,CA:TRUE"}}) {
      X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value);
      X509_add_ext(x, ext, -1);
      X509_EXTENSION_free(ext);
    }
    X509_sign(x, key, EVP_sha256());
    FILE* f = std::fopen(cert_file.c_str(), "w");
    PEM_write_X509(f, x);
    std::fclose(f);
    f = std::fopen(key_file.c_str(), "w");
    PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
    std::fclose(f);
    X509_free(x);
    EVP_PKEY_free(key);
  }
  ~SelfSigned() { std::filesystem::remove_all(dir); }
};

// A server context that speaks TLS 1.1 at most (OpenSSL 3 allows 1.1 only at security level 0).
std::shared_ptr<net::ssl::context> tls11_server(const SelfSigned& cert) {
  auto ctx = std::make_shared<net::ssl::context>(net::ssl::context::tls_server);
  SSL_CTX_set_security_level(ctx->native_handle(), 0);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_1_VERSION);
  SSL_CTX_set_max_proto_version(ctx->native_handle(), TLS1_1_VERSION);
  SSL_CTX_set_cipher_list(ctx->native_handle(), "DEFAULT@SECLEVEL=0");
  ctx->use_certificate_chain_file(cert.cert_file);
  ctx->use_private_key_file(cert.key_file, net::ssl::context::pem);
  return ctx;
}

// Accepts one connection on `acceptor` and performs the server side of the handshake (its
// outcome is not the test's concern: the client's is).
net::awaitable<void> serve_one(tcp::acceptor& acceptor, net::ssl::context* tls) {
  auto [ec, socket] = co_await acceptor.async_accept(use_tuple);
  if (ec || tls == nullptr) co_return;
  TlsStream stream(PlainStream(std::move(socket)), *tls);
  beast::get_lowest_layer(stream).expires_after(5s);
  co_await stream.async_handshake(net::ssl::stream_base::server, use_tuple);
}

// What connect_upstream() returned, with the io_context its stream belongs to.
struct Outcome {
  std::unique_ptr<net::io_context> io = std::make_unique<net::io_context>();
  std::unique_ptr<Resolver> resolver = std::make_unique<Resolver>(io->get_executor(), DnsSettings{});
  std::optional<Connected> result;  // destroyed before `io`

  explicit operator bool() const { return result && result->has_value(); }
  ConnectError error() const { return result->error(); }
  UpstreamStream& stream() { return **result; }
};

// Runs connect_upstream() to `target` (port 0: a listener of this test's, served by
// `server_tls` when set, by a bare accept otherwise; `listen` false: nothing listens there).
Outcome run(UpstreamTarget target, net::ssl::context* server_tls = nullptr, bool listen = true) {
  Outcome out;
  tcp::acceptor acceptor(*out.io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  if (target.port == 0) target.port = acceptor.local_endpoint().port();
  if (listen) {
    net::co_spawn(*out.io, serve_one(acceptor, server_tls), [](std::exception_ptr) {});
  } else {
    acceptor.close();
  }
  auto client = [&]() -> net::awaitable<void> {
    if (target.resolve_timeout.count() == 0) target.resolve_timeout = target.timeout;
    out.result.emplace(co_await connect_upstream(target, *out.resolver));
    acceptor.close();
  };
  net::co_spawn(*out.io, client(), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  out.io->run_for(20s);
  if (!out.result) out.result.emplace(ConnectError{ConnectStep::kConnect, net::error::timed_out});
  return out;
}

TEST(ConnectTest, PlainTcpToAListeningPort) {
  auto r = run(UpstreamTarget{"127.0.0.1", 0, nullptr, 2s});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(std::holds_alternative<PlainStream>(r.stream()));
}

TEST(ConnectTest, RefusedConnectIsAConnectError) {
  auto r = run(UpstreamTarget{"127.0.0.1", 0, nullptr, 2s}, nullptr, false);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().step, ConnectStep::kConnect);
  EXPECT_EQ(to_upstream_error(r.error()), metrics::UpstreamError::kConnect);
  EXPECT_EQ(r.error().message().rfind("connect: ", 0), 0u) << r.error().message();
}

TEST(ConnectTest, AnUnknownNameIsAResolveError) {
  auto r = run(UpstreamTarget{"no-such-host.invalid", 443, nullptr, 3s}, nullptr, false);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().step, ConnectStep::kResolve);
  EXPECT_EQ(to_upstream_error(r.error()), metrics::UpstreamError::kResolve);
}

TEST(ConnectTest, TlsHandshakeVerifiesThePeerAndItsAddress) {
  SelfSigned cert;
  auto server = make_server_tls(config::TlsFiles{cert.cert_file, cert.key_file});
  auto client = make_client_tls(CaOptions{cert.cert_file});
  ASSERT_TRUE(client) << client.error().message();
  auto r = run(UpstreamTarget{"127.0.0.1", 0, client->get(), 5s}, server.get());
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_TRUE(std::holds_alternative<TlsStream>(r.stream()));
  EXPECT_GE(SSL_version(std::get<TlsStream>(r.stream()).native_handle()), TLS1_2_VERSION);
}

TEST(ConnectTest, TlsRefusesAnUntrustedCertificate) {
  SelfSigned cert;
  auto server = make_server_tls(config::TlsFiles{cert.cert_file, cert.key_file});
  auto client = make_client_tls(CaOptions{});  // the system's trust store
  ASSERT_TRUE(client) << client.error().message();
  auto r = run(UpstreamTarget{"127.0.0.1", 0, client->get(), 5s}, server.get());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().step, ConnectStep::kTls);
  EXPECT_EQ(to_upstream_error(r.error()), metrics::UpstreamError::kTls);
}

TEST(ConnectTest, TlsRefusesAServerThatOffersOnlyTls11) {
  SelfSigned cert;
  auto server = tls11_server(cert);
  // Control: a client that still allows TLS 1.1 completes the handshake with this server.
  auto old_client = std::make_shared<net::ssl::context>(net::ssl::context::tls_client);
  SSL_CTX_set_security_level(old_client->native_handle(), 0);
  SSL_CTX_set_min_proto_version(old_client->native_handle(), TLS1_1_VERSION);
  SSL_CTX_set_cipher_list(old_client->native_handle(), "DEFAULT@SECLEVEL=0");
  old_client->load_verify_file(cert.cert_file);
  auto control = run(UpstreamTarget{"127.0.0.1", 0, old_client.get(), 5s}, server.get());
  ASSERT_TRUE(control) << control.error().message();
  EXPECT_EQ(SSL_version(std::get<TlsStream>(control.stream()).native_handle()), TLS1_1_VERSION);

  auto client = make_client_tls(CaOptions{cert.cert_file});
  ASSERT_TRUE(client) << client.error().message();
  // OpenSSL 3 refuses TLS 1.1 at its default security level already: lowered here, so that the
  // factory's minimum version is what refuses it.
  SSL_CTX_set_security_level((*client)->native_handle(), 0);
  SSL_CTX_set_cipher_list((*client)->native_handle(), "DEFAULT@SECLEVEL=0");
  auto r = run(UpstreamTarget{"127.0.0.1", 0, client->get(), 5s}, server.get());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().step, ConnectStep::kTls);
  EXPECT_EQ(to_upstream_error(r.error()), metrics::UpstreamError::kTls);
}

TEST(ConnectTest, ClientContextReportsAnUnreadableCaFile) {
  auto client = make_client_tls(CaOptions{"/nonexistent/ca.pem"});
  EXPECT_FALSE(client);
}

}  // namespace
}  // namespace tollgate::proxy
