#pragma once
// The pipeline's first stage: who is calling (an API key or an Entra ID / JWT bearer token), and
// what that caller may do. Synchronous, no I/O; plain C++ (the session passes header values).

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "tollgate/auth/jwt.hpp"
#include "tollgate/auth/keys.hpp"
#include "tollgate/config/config.hpp"
#include "tollgate/core/api_call.hpp"

namespace tollgate::auth {

struct Credentials {
  std::string_view api_key;        // the api-key header (wins when both are present)
  std::string_view authorization;  // the Authorization header
};

struct Identity {
  enum class Kind : std::uint8_t { kClient, kAnonymous, kUnauthenticated, kForbidden };
  Kind kind = Kind::kUnauthenticated;
  std::uint32_t client = 0;          // kClient: index into Config::clients
  bool bearer_token = false;         // the credential was a JWT
  std::string_view reason;           // static text for logs (never the credential)
  bool token = false;                // the credential was a bearer JWT (valid or not)
  std::optional<std::size_t> refresh_issuer;  // a JWT named a kid this issuer's JWKS lacks
};

/// Identifies the caller. `jwks` is parallel to cfg.auth.jwt (null: not fetched yet).
/// `now` is Unix seconds. With auth.allow_anonymous, every caller that is not a known client
/// (no credential, an unknown key, a bad token) is anonymous. Thread: any.
Identity authenticate(const Credentials& creds, const config::Config& cfg, const KeyIndex& keys,
                      std::span<const std::shared_ptr<const Jwks>> jwks, std::int64_t now);

/// The operation name used in clients[].operations for a call.
std::string_view operation_name(const core::ApiCall& call);

bool allows_deployment(const config::ClientConfig& c, std::string_view deployment);
bool allows_operation(const config::ClientConfig& c, std::string_view operation);
bool allows_region(const config::ClientConfig& c, std::string_view region);

}  // namespace tollgate::auth
