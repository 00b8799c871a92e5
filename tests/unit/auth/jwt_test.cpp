// JWT verification against keys generated here: every accepted algorithm, and every way a token
// must be refused (alg none, HMAC with the public key, tampering, time and audience checks).
#include "tollgate/auth/jwt.hpp"

#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <memory>

#include "tollgate/auth/authenticator.hpp"
#include "tollgate/crypto/crypto.hpp"

namespace tollgate::auth {

using namespace crypto;  // SHA-256, hex, base64url, RFC 3339
namespace {

using Key = std::shared_ptr<EVP_PKEY>;

Key generate(const char* type) {
  EVP_PKEY* k = std::string_view(type) == "RSA" ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");
  return Key(k, EVP_PKEY_free);
}

std::string bn_bytes(EVP_PKEY* k, const char* name) {
  BIGNUM* bn = nullptr;
  EVP_PKEY_get_bn_param(k, name, &bn);
  std::string out(static_cast<std::size_t>(BN_num_bytes(bn)), '\0');
  BN_bn2bin(bn, reinterpret_cast<unsigned char*>(out.data()));
  BN_free(bn);
  return out;
}

nlohmann::json jwk(EVP_PKEY* k, const std::string& kid) {
  if (EVP_PKEY_is_a(k, "RSA")) {
    return {{"kty", "RSA"}, {"kid", kid}, {"use", "sig"},
            {"n", base64url_encode(bn_bytes(k, OSSL_PKEY_PARAM_RSA_N))},
            {"e", base64url_encode(bn_bytes(k, OSSL_PKEY_PARAM_RSA_E))}};
  }
  unsigned char pub[65];
  std::size_t len = 0;
  EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub, &len);
  std::string p(reinterpret_cast<char*>(pub), len);
  return {{"kty", "EC"}, {"kid", kid}, {"crv", "P-256"},
          {"x", base64url_encode(p.substr(1, 32))}, {"y", base64url_encode(p.substr(33, 32))}};
}

std::string sign(EVP_PKEY* k, const std::string& alg, const std::string& input) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_PKEY_CTX* pctx = nullptr;
  EVP_DigestSignInit(ctx, &pctx, EVP_sha256(), nullptr, k);
  if (alg == "PS256") {
    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
  }
  std::size_t len = 0;
  EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()), input.size());
  std::string sig(len, '\0');
  EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                 reinterpret_cast<const unsigned char*>(input.data()), input.size());
  sig.resize(len);
  EVP_MD_CTX_free(ctx);
  if (alg != "ES256") return sig;
  const auto* der = reinterpret_cast<const unsigned char*>(sig.data());
  ECDSA_SIG* es = d2i_ECDSA_SIG(nullptr, &der, static_cast<long>(sig.size()));
  std::string raw(64, '\0');
  BN_bn2binpad(ECDSA_SIG_get0_r(es), reinterpret_cast<unsigned char*>(raw.data()), 32);
  BN_bn2binpad(ECDSA_SIG_get0_s(es), reinterpret_cast<unsigned char*>(raw.data()) + 32, 32);
  ECDSA_SIG_free(es);
  return raw;
}

constexpr std::int64_t kNow = 1'800'000'000;

nlohmann::json claims() {
  return {{"iss", "https://issuer/v2.0"}, {"aud", "api://tollgate"}, {"azp", "bot"},
          {"iat", kNow - 10}, {"nbf", kNow - 10}, {"exp", kNow + 600}};
}

std::string token(EVP_PKEY* k, const std::string& alg, const nlohmann::json& payload,
                  const std::string& kid = "k1") {
  nlohmann::json header{{"alg", alg}, {"typ", "JWT"}, {"kid", kid}};
  auto input = base64url_encode(header.dump()) + "." + base64url_encode(payload.dump());
  return input + "." + base64url_encode(sign(k, alg, input));
}

class JwtTest : public ::testing::Test {
 protected:
  void SetUp() override {
    rsa_ = generate("RSA");
    ec_ = generate("EC");
    nlohmann::json set{{"keys", {jwk(rsa_.get(), "k1"), jwk(ec_.get(), "k1")}}};
    std::string error;
    auto parsed = Jwks::parse(set.dump(), error);
    ASSERT_TRUE(parsed) << error;
    keys_ = std::move(*parsed);
  }
  JwtResult check(const std::string& t, std::int64_t now = kNow) {
    auto parts = decode_jwt(t);
    if (!parts) return JwtResult{JwtError::kMalformed, {}};
    return verify_jwt(*parts, keys_, JwtCheck{"https://issuer/v2.0", &audiences_, now, 60});
  }
  Key rsa_, ec_;
  Jwks keys_;
  std::vector<std::string> audiences_{"api://tollgate", "api://other"};
};

TEST_F(JwtTest, AcceptsRs256Ps256AndEs256) {
  for (auto [key, alg] : {std::pair{rsa_.get(), "RS256"}, {rsa_.get(), "PS256"}, {ec_.get(), "ES256"}}) {
    auto r = check(token(key, alg, claims()));
    EXPECT_FALSE(r.error) << alg << ": " << to_string(*r.error);
    EXPECT_EQ(r.claims.value("azp", ""), "bot");
  }
  auto c = claims();
  c["aud"] = {"api://x", "api://other"};  // an array naming one accepted audience
  EXPECT_FALSE(check(token(rsa_.get(), "RS256", c)).error);
}

TEST_F(JwtTest, RefusesAlgNoneAndHmacWithThePublicKey) {
  auto payload = base64url_encode(claims().dump());
  auto none = base64url_encode(R"({"alg":"none","typ":"JWT"})") + "." + payload + ".";
  EXPECT_EQ(check(none).error, JwtError::kAlgorithm);
  // HS256 keyed with the RSA public key's PEM: the classic algorithm confusion.
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(bio, rsa_.get());
  char* pem = nullptr;
  auto pem_len = BIO_get_mem_data(bio, &pem);
  auto input = base64url_encode(R"({"alg":"HS256","typ":"JWT","kid":"k1"})") + "." + payload;
  unsigned char mac[32];
  unsigned int mac_len = 0;
  HMAC(EVP_sha256(), pem, static_cast<int>(pem_len), reinterpret_cast<const unsigned char*>(input.data()),
       input.size(), mac, &mac_len);
  BIO_free(bio);
  auto hs = input + "." + base64url_encode(std::string(reinterpret_cast<char*>(mac), mac_len));
  EXPECT_EQ(check(hs).error, JwtError::kAlgorithm);
  // An ES256 header over an RSA key id finds no EC key named k2.
  EXPECT_EQ(check(token(ec_.get(), "ES256", claims(), "k2")).error, JwtError::kUnknownKey);
}

TEST_F(JwtTest, RefusesTamperingAndMalformedTokens) {
  auto t = token(rsa_.get(), "RS256", claims());
  auto dot1 = t.find('.');
  auto dot2 = t.find('.', dot1 + 1);
  auto c = claims();
  c["azp"] = "admin";
  auto forged = t.substr(0, dot1 + 1) + base64url_encode(c.dump()) + t.substr(dot2);
  EXPECT_EQ(check(forged).error, JwtError::kSignature);
  EXPECT_EQ(check("garbage").error, JwtError::kMalformed);
  EXPECT_EQ(check("a.b").error, JwtError::kMalformed);
  EXPECT_EQ(check("a.b.c.d").error, JwtError::kMalformed);
  EXPECT_EQ(check(t.substr(0, dot2) + ".!!!").error, JwtError::kMalformed);
  auto es = token(ec_.get(), "ES256", claims());
  EXPECT_EQ(check(es.substr(0, es.size() - 4) + "AAAA").error, JwtError::kSignature);
}

TEST_F(JwtTest, TimeIssuerAndAudience) {
  auto c = claims();
  c["exp"] = kNow - 61;  // beyond the 60 s skew
  EXPECT_EQ(check(token(rsa_.get(), "RS256", c)).error, JwtError::kExpired);
  c["exp"] = kNow - 30;  // within the skew
  EXPECT_FALSE(check(token(rsa_.get(), "RS256", c)).error);
  c = claims();
  c.erase("exp");
  EXPECT_EQ(check(token(rsa_.get(), "RS256", c)).error, JwtError::kExpired);  // no exp: refused
  c = claims();
  c["nbf"] = kNow + 120;
  EXPECT_EQ(check(token(rsa_.get(), "RS256", c)).error, JwtError::kNotYetValid);
  c = claims();
  c["iss"] = "https://evil/v2.0";
  EXPECT_EQ(check(token(rsa_.get(), "RS256", c)).error, JwtError::kIssuer);
  c = claims();
  c["aud"] = "api://someone-else";
  EXPECT_EQ(check(token(rsa_.get(), "RS256", c)).error, JwtError::kAudience);
  c.erase("aud");
  EXPECT_EQ(check(token(rsa_.get(), "RS256", c)).error, JwtError::kAudience);
}

// Claims to clients: the client claim names a client (or one of its principals), else a role in
// role_map does; a valid token naming nobody is forbidden, and an unknown kid asks for a refresh.
TEST_F(JwtTest, ClaimsMapToClients) {
  config::Config cfg;
  config::ClientConfig bot;
  bot.name = "bot";
  bot.deployments = {"*"};
  config::ClientConfig app;
  app.name = "app";
  app.principals = {"11111111-2222-3333-4444-555555555555"};
  app.deployments = {"*"};
  config::ClientConfig chat;
  chat.name = "chat-users";
  chat.deployments = {"*"};
  cfg.clients = {bot, app, chat};
  config::JwtIssuerConfig issuer;
  issuer.issuer = "https://issuer/v2.0";
  issuer.audiences = {"api://tollgate"};
  issuer.role_map = {{"Tollgate.Chat", "chat-users"}};
  cfg.auth.jwt = {issuer};
  KeyIndex keys(cfg, {});
  std::vector<std::shared_ptr<const Jwks>> jwks{std::make_shared<const Jwks>(keys_)};
  auto who = [&](const nlohmann::json& c, const std::string& kid = "k1") {
    auto bearer = "Bearer " + token(rsa_.get(), "RS256", c, kid);
    return authenticate({"", bearer}, cfg, keys, jwks, kNow);
  };
  auto id = who(claims());
  EXPECT_EQ(id.kind, Identity::Kind::kClient);
  EXPECT_EQ(id.client, 0u);
  EXPECT_TRUE(id.bearer_token);
  auto c = claims();
  c["azp"] = "11111111-2222-3333-4444-555555555555";
  EXPECT_EQ(who(c).client, 1u);
  c["azp"] = "someone-else";
  c["roles"] = {"Other", "Tollgate.Chat"};
  id = who(c);
  EXPECT_EQ(id.kind, Identity::Kind::kClient);
  EXPECT_EQ(id.client, 2u);
  c.erase("roles");
  EXPECT_EQ(who(c).kind, Identity::Kind::kForbidden);
  id = who(claims(), "k9");
  EXPECT_EQ(id.kind, Identity::Kind::kUnauthenticated);
  EXPECT_EQ(id.refresh_issuer, 0u);
  // Issuer keys not fetched yet: refused, and a fetch is asked for.
  std::vector<std::shared_ptr<const Jwks>> none{nullptr};
  id = authenticate({"", "Bearer " + token(rsa_.get(), "RS256", claims())}, cfg, keys, none, kNow);
  EXPECT_EQ(id.kind, Identity::Kind::kUnauthenticated);
  EXPECT_EQ(id.refresh_issuer, 0u);
  // An expired token 61 s past exp (skew 60 s).
  cfg.auth.clock_skew = std::chrono::seconds(60);
  c = claims();
  c["exp"] = kNow - 61;
  EXPECT_EQ(who(c).reason, "token_expired");
}

// Members of the wrong type in attacker-controlled JSON are refusals, never exceptions (found by
// fuzz_parsers: "use": null in a JWKS threw).
TEST_F(JwtTest, WrongMemberTypesAreRefusedNotThrown) {
  auto input = base64url_encode(R"({"alg":5,"kid":"k1"})") + "." + base64url_encode(claims().dump());
  EXPECT_EQ(check(input + "." + base64url_encode("sig")).error, JwtError::kAlgorithm);
  auto c = claims();
  c["iss"] = nullptr;
  EXPECT_EQ(check(token(rsa_.get(), "RS256", c)).error, JwtError::kIssuer);
  std::string error;
  auto k = Jwks::parse(R"({"keys":[{"kty":null,"use":null,"kid":7,"crv":[]},{"kty":"EC","crv":5}]})", error);
  ASSERT_TRUE(k);
  EXPECT_EQ(k->size(), 0u);
}

TEST(Jwks, SkipsWhatItCannotUse) {
  std::string error;
  EXPECT_FALSE(Jwks::parse("[]", error));
  EXPECT_FALSE(Jwks::parse("not json", error));
  auto k = Jwks::parse(R"({"keys":[{"kty":"oct","k":"AAAA"},{"kty":"RSA","n":"AQAB","e":"AQAB"},
                                   {"kty":"EC","crv":"P-384","x":"AA","y":"AA"},5]})", error);
  ASSERT_TRUE(k);
  EXPECT_EQ(k->size(), 0u);  // a symmetric key, a 24-bit RSA modulus, a P-384 key, garbage
}

TEST(Jwt, LooksLikeJwt) {
  EXPECT_TRUE(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJ4IjoxfQ.c2ln"));
  EXPECT_FALSE(looks_like_jwt("tg-abcdefghijklmnop"));
  EXPECT_FALSE(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJ4IjoxfQ"));
}

}  // namespace
}  // namespace tollgate::auth
