#include "tollgate/auth/jwt.hpp"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include <algorithm>

#include "tollgate/crypto/crypto.hpp"

namespace tollgate::auth {

using namespace crypto;  // SHA-256, hex, base64url, RFC 3339

namespace {

struct BnFree {
  void operator()(BIGNUM* b) const { BN_free(b); }
};
using Bn = std::unique_ptr<BIGNUM, BnFree>;

std::shared_ptr<EVP_PKEY> make_key(const char* type, OSSL_PARAM_BLD* bld) {
  std::shared_ptr<EVP_PKEY> out;
  OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(bld);
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr);
  EVP_PKEY* pkey = nullptr;
  if (params != nullptr && ctx != nullptr && EVP_PKEY_fromdata_init(ctx) == 1 &&
      EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) == 1) {
    out.reset(pkey, EVP_PKEY_free);
  }
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  return out;
}

std::shared_ptr<EVP_PKEY> rsa_key(const std::string& n, const std::string& e) {
  if (n.size() < 256 || n.size() > 1024 || e.empty() || e.size() > 8) return nullptr;  // ≥ 2048 bits
  Bn bn_n(BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()), static_cast<int>(n.size()), nullptr));
  Bn bn_e(BN_bin2bn(reinterpret_cast<const unsigned char*>(e.data()), static_cast<int>(e.size()), nullptr));
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  std::shared_ptr<EVP_PKEY> key;
  if (bld != nullptr && bn_n && bn_e && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n.get()) == 1 &&
      OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e.get()) == 1) {
    key = make_key("RSA", bld);
  }
  OSSL_PARAM_BLD_free(bld);
  return key;
}

std::shared_ptr<EVP_PKEY> ec_key(const std::string& x, const std::string& y) {
  if (x.size() != 32 || y.size() != 32) return nullptr;  // P-256 only
  std::string point = "\x04" + x + y;
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  std::shared_ptr<EVP_PKEY> key;
  if (bld != nullptr &&
      OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) == 1 &&
      OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) == 1) {
    key = make_key("EC", bld);
  }
  OSSL_PARAM_BLD_free(bld);
  return key;
}

std::string b64_field(const nlohmann::json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end() || !it->is_string()) return {};
  auto v = base64url_decode(it->get_ref<const std::string&>());
  return v ? *v : std::string();
}

// ES256 signatures are r||s (32 bytes each); OpenSSL verifies DER.
std::optional<std::string> ecdsa_der(std::string_view raw) {
  if (raw.size() != 64) return std::nullopt;
  ECDSA_SIG* sig = ECDSA_SIG_new();
  BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()), 32, nullptr);
  BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data() + 32), 32, nullptr);
  if (sig == nullptr || r == nullptr || s == nullptr || ECDSA_SIG_set0(sig, r, s) != 1) {
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return std::nullopt;
  }
  unsigned char* der = nullptr;
  int len = i2d_ECDSA_SIG(sig, &der);
  ECDSA_SIG_free(sig);
  if (len <= 0) return std::nullopt;
  std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  return out;
}

bool verify_signature(std::string_view alg, EVP_PKEY* key, std::string_view input,
                      std::string_view signature) {
  std::string der;
  if (alg == "ES256") {
    auto d = ecdsa_der(signature);
    if (!d) return false;
    der = std::move(*d);
    signature = der;
  }
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_PKEY_CTX* pctx = nullptr;
  bool ok = ctx != nullptr && EVP_DigestVerifyInit(ctx, &pctx, EVP_sha256(), nullptr, key) == 1;
  if (ok && alg == "PS256") {
    ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1;
  }
  ok = ok && EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(signature.data()),
                              signature.size(), reinterpret_cast<const unsigned char*>(input.data()),
                              input.size()) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

std::optional<std::int64_t> numeric_date(const nlohmann::json& claims, const char* name) {
  auto it = claims.find(name);
  if (it == claims.end() || !it->is_number()) return std::nullopt;
  double v = it->get<double>();
  if (!(v >= 0 && v < 1e12)) return std::nullopt;  // not a time (and no overflow below)
  return static_cast<std::int64_t>(v);
}

}  // namespace

std::string_view to_string(JwtError e) {
  static constexpr std::string_view kNames[] = {"malformed", "algorithm", "unknown_key", "signature",
                                                "expired",   "not_yet_valid", "issuer", "audience"};
  return kNames[static_cast<std::size_t>(e)];
}

std::optional<Jwks> Jwks::parse(std::string_view json, std::string& error) {
  auto j = nlohmann::json::parse(json, nullptr, false);
  if (!j.is_object() || !j.contains("keys") || !j["keys"].is_array()) {
    error = "not a JWKS document (an object with a \"keys\" array)";
    return std::nullopt;
  }
  Jwks out;
  for (const auto& k : j["keys"]) {
    if (!k.is_object()) continue;
    if (k.contains("use") && string_member(k, "use") != "sig") continue;
    Jwk jwk;
    jwk.kid = string_member(k, "kid");
    jwk.kty = string_member(k, "kty");
    if (jwk.kty == "RSA") {
      jwk.key = rsa_key(b64_field(k, "n"), b64_field(k, "e"));
    } else if (jwk.kty == "EC" && string_member(k, "crv") == "P-256") {
      jwk.key = ec_key(b64_field(k, "x"), b64_field(k, "y"));
    }
    if (jwk.key) out.keys_.push_back(std::move(jwk));
  }
  return out;
}

const Jwk* Jwks::find(std::string_view kid, std::string_view kty) const {
  for (const auto& k : keys_) {
    if (k.kty == kty && (kid.empty() || k.kid == kid)) return &k;
  }
  return nullptr;
}

std::string string_member(const nlohmann::json& obj, const char* key) {
  if (!obj.is_object()) return {};
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool looks_like_jwt(std::string_view v) {
  return v.size() > 10 && v.substr(0, 3) == "eyJ" && std::count(v.begin(), v.end(), '.') == 2;
}

std::optional<JwtParts> decode_jwt(std::string_view token) {
  if (token.size() > 16 * 1024) return std::nullopt;
  auto dot1 = token.find('.');
  if (dot1 == std::string_view::npos) return std::nullopt;
  auto dot2 = token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return std::nullopt;
  }
  auto header = base64url_decode(token.substr(0, dot1));
  auto payload = base64url_decode(token.substr(dot1 + 1, dot2 - dot1 - 1));
  auto signature = base64url_decode(token.substr(dot2 + 1));
  if (!header || !payload || !signature) return std::nullopt;
  JwtParts parts;
  parts.header = nlohmann::json::parse(*header, nullptr, false);
  parts.payload = nlohmann::json::parse(*payload, nullptr, false);
  if (!parts.header.is_object() || !parts.payload.is_object()) return std::nullopt;
  parts.signing_input = std::string(token.substr(0, dot2));
  parts.signature = std::move(*signature);
  return parts;
}

JwtResult verify_jwt(const JwtParts& parts, const Jwks& keys, const JwtCheck& check) {
  JwtResult out;
  auto alg = string_member(parts.header, "alg");
  std::string_view kty;
  if (alg == "RS256" || alg == "PS256") {
    kty = "RSA";
  } else if (alg == "ES256") {
    kty = "EC";
  } else {
    out.error = JwtError::kAlgorithm;  // none, HS256 (public key as HMAC secret), anything else
    return out;
  }
  const auto& kid_field = parts.header.find("kid");
  std::string kid = kid_field != parts.header.end() && kid_field->is_string() ? kid_field->get<std::string>() : "";
  const Jwk* key = keys.find(kid, kty);
  if (key == nullptr) {
    out.error = JwtError::kUnknownKey;
    return out;
  }
  if (!verify_signature(alg, key->key.get(), parts.signing_input, parts.signature)) {
    out.error = JwtError::kSignature;
    return out;
  }
  const auto& c = parts.payload;
  auto exp = numeric_date(c, "exp");
  if (!exp || check.now > *exp + check.skew) {  // a token without exp never expires: refused
    out.error = JwtError::kExpired;
    return out;
  }
  if (auto nbf = numeric_date(c, "nbf"); nbf && check.now + check.skew < *nbf) {
    out.error = JwtError::kNotYetValid;
    return out;
  }
  if (string_member(c, "iss") != check.issuer) {
    out.error = JwtError::kIssuer;
    return out;
  }
  bool audience = false;
  auto accepted = [&](const nlohmann::json& a) {
    return a.is_string() && check.audiences != nullptr &&
           std::find(check.audiences->begin(), check.audiences->end(), a.get<std::string>()) !=
               check.audiences->end();
  };
  if (auto aud = c.find("aud"); aud != c.end()) {
    if (aud->is_array()) {
      for (const auto& a : *aud) audience = audience || accepted(a);
    } else {
      audience = accepted(*aud);
    }
  }
  if (!audience) {
    out.error = JwtError::kAudience;
    return out;
  }
  out.claims = c;
  return out;
}

}  // namespace tollgate::auth
