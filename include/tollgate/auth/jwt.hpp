#pragma once
// JSON Web Tokens (RFC 7519) signed RS256, PS256 or ES256, verified with OpenSSL's EVP against a
// JWKS (RFC 7517). The algorithm must match the key's type (no "none", no HMAC, no algorithm
// confusion); the token's claims are checked only after its signature. Plain C++; thread: any.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

typedef struct evp_pkey_st EVP_PKEY;

namespace tollgate::auth {

struct Jwk {
  std::string kid;
  std::string kty;  // "RSA" or "EC"
  std::shared_ptr<EVP_PKEY> key;
};

/// A parsed key set. Keys that are not RSA or EC P-256 signing keys are skipped.
class Jwks {
 public:
  /// Parses a JWKS document; nullopt (with `error`) when it is not one.
  static std::optional<Jwks> parse(std::string_view json, std::string& error);
  const Jwk* find(std::string_view kid, std::string_view kty) const;
  std::size_t size() const { return keys_.size(); }

 private:
  std::vector<Jwk> keys_;
};

enum class JwtError : std::uint8_t {
  kMalformed,     // not three base64url JSON segments
  kAlgorithm,     // alg is not RS256/PS256/ES256 (none, HS256, ...)
  kUnknownKey,    // no key with that kid (the caller may refresh the JWKS)
  kSignature,     // the signature does not verify
  kExpired,       // exp (plus skew) passed
  kNotYetValid,   // nbf (minus skew) in the future
  kIssuer,        // iss is not the expected one
  kAudience,      // aud names none of the accepted audiences
};
std::string_view to_string(JwtError e);

/// The header and payload of a token, decoded but not verified (to choose the issuer).
struct JwtParts {
  nlohmann::json header;
  nlohmann::json payload;
  std::string signing_input;  // "header.payload" as sent
  std::string signature;      // raw bytes
};
std::optional<JwtParts> decode_jwt(std::string_view token);

/// Verifies the signature with `keys` and then the registered claims. Returns the payload.
struct JwtCheck {
  std::string_view issuer;
  const std::vector<std::string>* audiences = nullptr;
  std::int64_t now = 0;   // Unix seconds
  std::int64_t skew = 0;  // seconds
};
struct JwtResult {
  std::optional<JwtError> error;
  nlohmann::json claims;
};
JwtResult verify_jwt(const JwtParts& parts, const Jwks& keys, const JwtCheck& check);

/// The string member `key` of `obj`, or "" when it is absent or not a string (attacker-controlled
/// JSON: never nlohmann's value(), which throws on a wrong type).
std::string string_member(const nlohmann::json& obj, const char* key);

/// True when `value` looks like a compact JWT (three dot-separated segments, JSON header).
bool looks_like_jwt(std::string_view value);

}  // namespace tollgate::auth
