#include "tollgate/auth/authenticator.hpp"

#include <algorithm>

namespace tollgate::auth {

namespace {

bool iequals_prefix(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    char a = s[i];
    if (a >= 'A' && a <= 'Z') a = static_cast<char>(a - 'A' + 'a');
    if (a != prefix[i]) return false;
  }
  return true;
}

std::string_view trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

Identity fail(Identity::Kind kind, std::string_view reason, bool token = false) {
  Identity id;
  id.kind = kind;
  id.reason = reason;
  id.token = token;
  return id;
}

std::string_view token_reason(JwtError e) {
  static constexpr std::string_view kNames[] = {
      "token_malformed", "token_algorithm", "token_unknown_key", "token_signature",
      "token_expired",   "token_not_yet_valid", "token_issuer",  "token_audience"};
  return kNames[static_cast<std::size_t>(e)];
}

Identity from_token(std::string_view token, const config::Config& cfg,
                    std::span<const std::shared_ptr<const Jwks>> jwks, std::int64_t now) {
  auto parts = decode_jwt(token);
  if (!parts) return fail(Identity::Kind::kUnauthenticated, "token_malformed", true);
  auto iss = string_member(parts->payload, "iss");
  std::size_t issuer = cfg.auth.jwt.size();
  for (std::size_t i = 0; i < cfg.auth.jwt.size(); ++i) {
    if (cfg.auth.jwt[i].issuer == iss) issuer = i;
  }
  if (issuer == cfg.auth.jwt.size()) return fail(Identity::Kind::kUnauthenticated, "token_issuer", true);
  const auto& ic = cfg.auth.jwt[issuer];
  if (issuer >= jwks.size() || !jwks[issuer]) {
    auto id = fail(Identity::Kind::kUnauthenticated, "token_keys_unavailable", true);
    id.refresh_issuer = issuer;
    return id;
  }
  JwtCheck check{ic.issuer, &ic.audiences, now, cfg.auth.clock_skew.count() / 1000};
  auto r = verify_jwt(*parts, *jwks[issuer], check);
  if (r.error) {
    auto id = fail(Identity::Kind::kUnauthenticated, token_reason(*r.error), true);
    if (*r.error == JwtError::kUnknownKey) id.refresh_issuer = issuer;
    return id;
  }
  Identity id;
  id.bearer_token = true;
  id.token = true;
  // The client: named by client_claim (its name or one of its principals), else by a role.
  if (auto v = r.claims.find(ic.client_claim); v != r.claims.end() && v->is_string()) {
    const auto& value = v->get_ref<const std::string&>();
    for (std::uint32_t c = 0; c < cfg.clients.size(); ++c) {
      const auto& cl = cfg.clients[c];
      if (cl.name == value ||
          std::find(cl.principals.begin(), cl.principals.end(), value) != cl.principals.end()) {
        id.kind = Identity::Kind::kClient;
        id.client = c;
        return id;
      }
    }
  }
  if (auto roles = r.claims.find(ic.roles_claim); roles != r.claims.end() && roles->is_array()) {
    for (const auto& [role, client] : ic.role_map) {
      for (const auto& r2 : *roles) {
        if (!r2.is_string() || r2.get_ref<const std::string&>() != role) continue;
        if (const auto* cl = cfg.find_client(client)) {
          id.kind = Identity::Kind::kClient;
          id.client = static_cast<std::uint32_t>(cl - cfg.clients.data());
          return id;
        }
      }
    }
  }
  id.kind = Identity::Kind::kForbidden;
  id.reason = "token_no_client";
  return id;
}

}  // namespace

namespace {
Identity identify(const Credentials& creds, const config::Config& cfg, const KeyIndex& keys,
                  std::span<const std::shared_ptr<const Jwks>> jwks, std::int64_t now);
}  // namespace

Identity authenticate(const Credentials& creds, const config::Config& cfg, const KeyIndex& keys,
                      std::span<const std::shared_ptr<const Jwks>> jwks, std::int64_t now) {
  auto id = identify(creds, cfg, keys, jwks, now);
  // An open gateway: whoever is not a known client is anonymous (SDKs always send some key).
  if (cfg.auth.allow_anonymous &&
      (id.kind == Identity::Kind::kUnauthenticated || id.kind == Identity::Kind::kForbidden)) {
    id.kind = Identity::Kind::kAnonymous;
  }
  return id;
}

namespace {

Identity identify(const Credentials& creds, const config::Config& cfg, const KeyIndex& keys,
                  std::span<const std::shared_ptr<const Jwks>> jwks, std::int64_t now) {
  std::string_view credential = trim(creds.api_key);
  bool bearer = false;
  if (credential.empty()) {
    auto auth = trim(creds.authorization);
    if (iequals_prefix(auth, "bearer ")) {
      credential = trim(auth.substr(7));
      bearer = true;
    } else if (!auth.empty()) {
      return fail(Identity::Kind::kUnauthenticated, "unsupported_scheme");
    }
  }
  if (credential.empty()) return fail(Identity::Kind::kUnauthenticated, "missing_credentials");
  if (bearer && !cfg.auth.jwt.empty() && looks_like_jwt(credential)) {
    return from_token(credential, cfg, jwks, now);
  }
  if (credential.size() > 512) return fail(Identity::Kind::kUnauthenticated, "unknown_key");
  auto client = keys.find(credential, now);
  if (!client) return fail(Identity::Kind::kUnauthenticated, "unknown_key");
  Identity id;
  id.kind = Identity::Kind::kClient;
  id.client = *client;
  return id;
}

}  // namespace

std::string_view operation_name(const core::ApiCall& call) {
  switch (call.op) {
    case core::Operation::kChatCompletions: return "chat";
    case core::Operation::kCompletions: return "completions";
    case core::Operation::kEmbeddings: return "embeddings";
    case core::Operation::kResponses: return "responses";
    case core::Operation::kModels: return "models";
    case core::Operation::kOther: break;
  }
  static constexpr std::string_view kCollections[] = {
      "responses", "files", "batches", "assistants", "threads", "vector_stores", "fine_tuning", "uploads"};
  std::string_view first(call.op_path);
  first = first.substr(0, first.find('/'));
  for (auto c : kCollections) {
    if (first == c) return c;
  }
  return "other";
}

bool allows_deployment(const config::ClientConfig& c, std::string_view deployment) {
  return std::any_of(c.deployments.begin(), c.deployments.end(),
                     [&](const std::string& d) { return d == "*" || d == deployment; });
}

bool allows_operation(const config::ClientConfig& c, std::string_view operation) {
  return c.operations.empty() ||
         std::find(c.operations.begin(), c.operations.end(), operation) != c.operations.end();
}

bool allows_region(const config::ClientConfig& c, std::string_view region) {
  return c.regions.empty() || std::find(c.regions.begin(), c.regions.end(), region) != c.regions.end();
}

}  // namespace tollgate::auth
