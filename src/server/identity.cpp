#include "server/identity.hpp"
#include "tollgate/core/clock.hpp"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "proxy/net.hpp"
#include "server/http_client.hpp"
#include "server/snapshot_builder.hpp"
#include "tollgate/crypto/crypto.hpp"
#include "tollgate/metrics/families.hpp"
#include "tollgate/metrics/logging.hpp"

namespace tollgate::server {

namespace net = boost::asio;
using namespace std::chrono_literals;
using metrics::log_info;
using metrics::log_warn;

struct IdentityManager::Loop {
  Loop(net::io_context& io, proxy::Resolver& resolver, std::chrono::milliseconds resolve_timeout)
      : timer(io), resolver(resolver), resolve_timeout(resolve_timeout) {}
  net::steady_timer timer;
  proxy::Resolver& resolver;  // the control thread's (outlives the loops)
  std::chrono::milliseconds resolve_timeout;  // dns.timeout
  bool stopped = false;
  std::chrono::steady_clock::time_point last_fetch{};
  // JWKS loops
  std::size_t issuer = 0;
  config::JwtIssuerConfig jwt;
  // token loops
  std::string backend;
  config::BackendTokenConfig token;
  std::shared_ptr<TokenSlot> slot;
};

namespace {

std::string token_identity(const config::BackendConfig& b) {
  const auto& t = *b.token;
  return b.name + "|" + (t.managed_identity ? "mi" : "cc") + "|" + t.endpoint + "|" + t.client_id +
         "|" + t.scope + "|" + crypto::to_hex(crypto::sha256(t.client_secret)).substr(0, 16) + "|" +
         t.ca_file;
}

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Fetches a JWKS document (URL or file). Returns the key set, or an error message.
net::awaitable<std::pair<std::shared_ptr<const auth::Jwks>, std::string>> load_jwks(
    const IdentityManager::Loop& loop) {
  const auto& j = loop.jwt;
  std::string text;
  if (!j.jwks_file.empty()) {
    auto t = read_file(j.jwks_file);
    if (!t) co_return std::pair{nullptr, "cannot read " + j.jwks_file};
    text = std::move(*t);
  } else {
    FetchRequest req;
    req.url = j.jwks_url;
    req.ca_file = j.jwks_ca_file;
    req.headers = {{"accept", "application/json"}};
    auto r = co_await fetch(std::move(req), loop.resolver, loop.resolve_timeout);
    if (r.status != 200) {
      co_return std::pair{nullptr, r.status == 0 ? r.error : "HTTP " + std::to_string(r.status)};
    }
    text = std::move(r.body);
  }
  std::string error;
  auto jwks = auth::Jwks::parse(text, error);
  if (!jwks) co_return std::pair{nullptr, error};
  co_return std::pair{std::make_shared<const auth::Jwks>(std::move(*jwks)), std::string()};
}

// One token request. Returns (token, lifetime in seconds) or an error message.
net::awaitable<std::pair<std::optional<std::pair<std::string, std::int64_t>>, std::string>> get_token(
    const IdentityManager::Loop& loop) {
  const auto& t = loop.token;
  FetchRequest req;
  req.ca_file = t.ca_file;
  req.timeout = 10s;
  std::string resource = t.scope;
  if (auto pos = resource.rfind("/.default"); pos != std::string::npos && pos + 9 == resource.size()) {
    resource.resize(pos);
  }
  if (t.managed_identity) {  // Azure IMDS
    req.url = t.endpoint + (t.endpoint.find('?') == std::string::npos ? "?" : "&") +
              "api-version=2018-02-01&resource=" + form_encode(resource);
    if (!t.client_id.empty()) req.url += "&client_id=" + form_encode(t.client_id);
    req.headers = {{"Metadata", "true"}};
  } else {  // OAuth2 client credentials
    req.method = "POST";
    req.url = t.endpoint;
    req.headers = {{"content-type", "application/x-www-form-urlencoded"}, {"accept", "application/json"}};
    req.body = "grant_type=client_credentials&client_id=" + form_encode(t.client_id) +
               "&client_secret=" + form_encode(t.client_secret) + "&scope=" + form_encode(t.scope);
  }
  auto r = co_await fetch(std::move(req), loop.resolver, loop.resolve_timeout);
  if (r.status != 200) {
    co_return std::pair{std::nullopt, r.status == 0 ? r.error : "HTTP " + std::to_string(r.status)};
  }
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (!j.is_object() || !j.contains("access_token") || !j["access_token"].is_string()) {
    co_return std::pair{std::nullopt, std::string("the answer has no access_token")};
  }
  std::int64_t lifetime = 3600;
  if (auto e = j.find("expires_in"); e != j.end()) {
    if (e->is_number()) {
      lifetime = e->get<std::int64_t>();
    } else if (e->is_string()) {
      lifetime = std::strtoll(e->get_ref<const std::string&>().c_str(), nullptr, 10);
    }
  }
  if (lifetime <= 0) co_return std::pair{std::nullopt, std::string("the token has no lifetime")};
  co_return std::pair{std::pair{j["access_token"].get<std::string>(), lifetime}, std::string()};
}

// Keeps a backend's token fresh: renews at three quarters of its lifetime; on failure keeps the
// old token (until it expires) and retries with backoff.
net::awaitable<void> token_loop(std::shared_ptr<IdentityManager::Loop> loop) {
  std::chrono::milliseconds backoff = 1s;
  while (!loop->stopped) {
    loop->last_fetch = std::chrono::steady_clock::now();
    auto [token, error] = co_await get_token(*loop);
    if (loop->stopped) break;
    std::chrono::milliseconds next;
    if (token) {
      auto now = core::unix_now_seconds();
      loop->slot->token.store(std::make_shared<const std::string>(std::move(token->first)));
      loop->slot->expires_unix.store(now + token->second);
      next = std::max<std::chrono::milliseconds>(1s, std::chrono::seconds(token->second) * 3 / 4);
      backoff = 1s;
      log_info("backend token acquired",
               core::JsonFields().add("backend", loop->backend).add("expires_in_s", token->second));
    } else {
      loop->slot->refresh_failures.fetch_add(1);
      next = backoff;
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, 30s);
      log_warn("backend token refresh failed; the current token stays in use until it expires",
               core::JsonFields().add("backend", loop->backend).add("error", error));
    }
    loop->timer.expires_after(next);
    co_await loop->timer.async_wait(proxy::use_tuple);
  }
}

void spawn(net::io_context& io, net::awaitable<void> task, std::string what) {
  net::co_spawn(io, std::move(task),
                metrics::LogFailure{"identity task failed", "task", std::move(what)});
}

}  // namespace

IdentityManager::IdentityManager(net::io_context& io, proxy::Resolver& resolver,
                                 metrics::SeriesRegistry& series, Publish publish,
                                 bool admin_loopback, ratelimit::BucketRegistry& buckets,
                                 ratelimit::BudgetRegistry& budgets)
    : io_(io),
      resolver_(resolver),
      series_(series),
      publish_(std::move(publish)),
      admin_loopback_(admin_loopback),
      buckets_(buckets),
      budgets_(budgets) {}

IdentityManager::~IdentityManager() { stop(); }

void IdentityManager::stop() {
  for (auto& l : jwks_loops_) {
    l->stopped = true;
    l->timer.cancel();
  }
  for (auto& [k, l] : token_loops_) {
    l->stopped = true;
    l->timer.cancel();
  }
}

std::shared_ptr<TokenSlot> IdentityManager::token_slot(const config::BackendConfig& b) {
  auto& slot = token_slots_[token_identity(b)];
  if (!slot) slot = std::make_shared<TokenSlot>();
  return slot;
}

std::shared_ptr<const AuthState> IdentityManager::apply(std::shared_ptr<const config::Config> cfg,
                                                        const Snapshot& snap) {
  auth::KeysFile keys;
  if (!cfg->auth.keys_file.empty()) {
    std::string error;
    keys = auth::load_keys_file(cfg->auth.keys_file, error);
    if (!error.empty()) throw std::runtime_error(error);
  }
  keys_file_ = std::move(keys);

  // JWKS: keep the keys of issuers whose source is unchanged; restart every loop.
  std::vector<std::shared_ptr<const auth::Jwks>> jwks(cfg->auth.jwt.size());
  for (std::size_t i = 0; i < cfg->auth.jwt.size(); ++i) {
    const auto& j = cfg->auth.jwt[i];
    for (std::size_t k = 0; config_ && k < config_->auth.jwt.size() && k < jwks_.size(); ++k) {
      const auto& o = config_->auth.jwt[k];
      if (o.issuer == j.issuer && o.jwks_url == j.jwks_url && o.jwks_file == j.jwks_file) jwks[i] = jwks_[k];
    }
  }
  for (auto& l : jwks_loops_) {
    l->stopped = true;
    l->timer.cancel();
  }
  jwks_loops_.clear();
  jwks_ = std::move(jwks);
  config_ = std::move(cfg);
  for (std::size_t i = 0; i < config_->auth.jwt.size(); ++i) {
    auto loop = std::make_shared<Loop>(io_, resolver_, config_->dns.timeout);
    loop->issuer = i;
    loop->jwt = config_->auth.jwt[i];
    jwks_loops_.push_back(loop);
    spawn(io_, jwks_loop(this, loop), "jwks");
  }

  // Backend tokens: one refresher per backend credential in use; others stop.
  std::unordered_map<std::string, std::shared_ptr<Loop>> loops;
  for (const auto& rt : snap.backends) {
    if (!rt.config->token) continue;
    auto id = token_identity(*rt.config);
    if (auto it = token_loops_.find(id); it != token_loops_.end()) {
      loops.emplace(id, it->second);
      continue;
    }
    auto loop = std::make_shared<Loop>(io_, resolver_, config_->dns.timeout);
    loop->backend = rt.config->name;
    loop->token = *rt.config->token;
    loop->slot = rt.token;
    loops.emplace(id, loop);
    spawn(io_, token_loop(loop), "backend token");
  }
  for (auto& [id, l] : token_loops_) {
    if (loops.count(id) == 0) {
      l->stopped = true;
      l->timer.cancel();
    }
  }
  token_loops_ = std::move(loops);
  publish();
  if (key_sync_) key_sync_->local_changed();  // the file may have been edited
  return state_;
}

void IdentityManager::adopt_keys(auth::KeysFile merged) {
  if (config_->auth.keys_file.empty()) return;  // a reload dropped it: nothing is kept
  if (auto error = auth::save_keys_file(config_->auth.keys_file, merged); !error.empty()) {
    metrics::log_error("cannot save the keys file; the shared keys apply in memory",
                       core::JsonFields().add("error", error));
  }
  keys_file_ = std::move(merged);
  publish();
}

// Not a lambda: a coroutine lambda's captures die with the temporary closure.
net::awaitable<void> IdentityManager::jwks_loop(IdentityManager* self, std::shared_ptr<Loop> loop) {
  while (!loop->stopped) {
    loop->last_fetch = std::chrono::steady_clock::now();
    auto [keys, error] = co_await load_jwks(*loop);
    if (loop->stopped) break;
    std::chrono::milliseconds next = loop->jwt.jwks_refresh;
    if (keys) {
      self->jwks_[loop->issuer] = keys;
      self->publish();
    } else {
      ++self->jwks_fetch_failures_;
      next = std::min<std::chrono::milliseconds>(next, 30s);  // the last good keys stay
      log_warn("JWKS refresh failed; keeping the last good keys",
               core::JsonFields().add("issuer", loop->jwt.issuer).add("error", error));
    }
    loop->timer.expires_after(next);
    co_await loop->timer.async_wait(proxy::use_tuple);
  }
}

void IdentityManager::publish() {
  state_ = build_auth_state(config_, std::make_shared<const auth::KeyIndex>(*config_, keys_file_),
                            jwks_, AuthSources{series_, buckets_, budgets_});
  publish_(state_);
}

bool IdentityManager::keys_ready() const {
  return std::all_of(jwks_.begin(), jwks_.end(), [](const auto& k) { return k != nullptr; }) &&
         std::all_of(token_loops_.begin(), token_loops_.end(),
                     [](const auto& kv) { return kv.second->slot->token.load() != nullptr; });
}

void IdentityManager::unknown_kid(std::size_t issuer) {
  if (issuer >= jwks_loops_.size()) return;
  auto& loop = jwks_loops_[issuer];
  if (std::chrono::steady_clock::now() - loop->last_fetch < 1s) return;  // rate limit
  loop->timer.cancel();  // wakes the loop: it fetches now
}

std::optional<AdminResponse> IdentityManager::refuse_admin(const AdminRequest& req) const {
  const auto& a = config_;
  // The listener's address, not the reloaded file's: a reload does not move the listener.
  if (a->admin.token.empty() && !(a->admin.allow_unauthenticated && admin_loopback_)) {
    return admin_error(404, "404", "The admin API is disabled: set admin.token.");
  }
  if (!a->admin.token.empty()) {
    std::string_view presented = req.authorization;
    bool bearer = false;
    if (presented.size() > 7) {
      std::string scheme(presented.substr(0, 7));
      for (auto& ch : scheme) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      bearer = scheme == "bearer ";
    }
    bool ok = bearer && crypto::equal_ct(crypto::sha256(presented.substr(7)), crypto::sha256(a->admin.token));
    if (!ok) {
      auto r = admin_error(401, "401", "The admin API needs the admin token as a bearer token.");
      r.headers.emplace_back("www-authenticate", "Bearer realm=\"tollgate-admin\"");
      return r;
    }
  }
  return std::nullopt;
}

AdminResponse IdentityManager::admin(const AdminRequest& req) {
  if (auto refused = refuse_admin(req)) return std::move(*refused);
  const auto& a = config_;
  // Routes: /admin/clients, /admin/clients/{c}/keys, /admin/keys/{id}
  std::vector<std::string_view> segs;
  std::string_view p = req.path;
  while (!p.empty()) {
    auto slash = p.find('/');
    auto seg = p.substr(0, slash);
    if (!seg.empty()) segs.push_back(seg);
    if (slash == std::string_view::npos) break;
    p.remove_prefix(slash + 1);
  }
  if (segs.size() == 2 && segs[1] == "clients") {
    if (req.method != "GET") return admin_error(405, "405", "use GET");
    nlohmann::json list = nlohmann::json::array();
    for (std::size_t c = 0; c < a->clients.size(); ++c) {
      const auto& cl = a->clients[c];
      std::size_t keys = 0;
      for (const auto& e : state_->keys->entries()) keys += e.client == c ? 1 : 0;
      list.push_back({{"name", cl.name},
                      {"tenant", cl.tenant == config::ClientConfig::kNoTenant ? nullptr
                                                                              : nlohmann::json(a->tenants[cl.tenant].name)},
                      {"deployments", cl.deployments},
                      {"operations", cl.operations},
                      {"regions", cl.regions},
                      {"may_pin", cl.may_pin},
                      {"keys", keys}});
    }
    return AdminResponse{200, "application/json", nlohmann::json{{"clients", list}}.dump(), {}};
  }
  if (segs.size() == 4 && segs[1] == "clients" && segs[3] == "keys") {
    std::string client(segs[2]);
    if (a->find_client(client) == nullptr) return admin_error(404, "404", "No client '" + client + "'.");
    if (req.method == "GET") return keys_of(client);
    if (req.method == "POST") return create_key(client, req.body);
    return admin_error(405, "405", "use GET or POST");
  }
  if (segs.size() == 3 && segs[1] == "keys") {
    if (req.method != "DELETE") return admin_error(405, "405", "use DELETE");
    return revoke_key(std::string(segs[2]));
  }
  return admin_error(404, "404", "Resource not found");
}

AdminResponse IdentityManager::keys_of(const std::string& client) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& e : state_->keys->entries()) {
    if (config_->clients[e.client].name != client) continue;
    list.push_back({{"id", e.id},
                    {"prefix", e.prefix.empty() ? nullptr : nlohmann::json(e.prefix)},
                    {"expires", e.expires ? nlohmann::json(crypto::format_rfc3339(*e.expires)) : nullptr},
                    {"created", e.created != 0 ? nlohmann::json(crypto::format_rfc3339(e.created)) : nullptr},
                    {"source", e.runtime ? "runtime" : "config"}});
  }
  return AdminResponse{200, "application/json", nlohmann::json{{"client", client}, {"keys", list}}.dump(), {}};
}

AdminResponse IdentityManager::create_key(const std::string& client, std::string_view body) {
  if (config_->auth.keys_file.empty()) {
    return admin_error(409, "KeysFileNotConfigured",
                      "Set auth.keys_file: keys created at runtime are kept there.");
  }
  std::optional<std::int64_t> expires;
  if (!body.empty()) {
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (!j.is_object()) return admin_error(400, "invalid_request", "The body must be a JSON object.");
    if (auto e = j.find("expires"); e != j.end() && !e->is_null()) {
      auto t = e->is_string() ? crypto::parse_rfc3339(e->get<std::string>()) : std::nullopt;
      if (!t) return admin_error(400, "invalid_request", "expires must be an RFC 3339 time like 2027-01-01T00:00:00Z.");
      if (*t <= core::unix_now_seconds()) return admin_error(400, "invalid_request", "expires is in the past.");
      expires = t;
    }
  }
  auto key = crypto::new_key();
  auth::RuntimeKey rk;
  rk.digest = crypto::sha256(key);
  rk.id = crypto::key_id(rk.digest);
  rk.client = client;
  rk.prefix = crypto::key_prefix(key);
  rk.created = core::unix_now_seconds();
  rk.expires = expires;
  auto next = keys_file_;
  next.keys.push_back(rk);
  if (auto error = auth::save_keys_file(config_->auth.keys_file, next); !error.empty()) {
    metrics::log_error("cannot save the keys file", core::JsonFields().add("error", error));
    return admin_error(500, "KeysFileWriteFailed", "The key could not be saved; nothing changed.");
  }
  keys_file_ = std::move(next);
  publish();
  if (key_sync_) key_sync_->local_changed();
  log_info("client key created", core::JsonFields().add("client", client).add("key_id", rk.id));
  nlohmann::json out{{"id", rk.id}, {"key", key}, {"client", client},
                     {"expires", expires ? nlohmann::json(crypto::format_rfc3339(*expires)) : nullptr}};
  return AdminResponse{201, "application/json", out.dump(), {}};
}

AdminResponse IdentityManager::revoke_key(const std::string& id) {
  const auto* entry = state_->keys->by_id(id);
  if (entry == nullptr) return admin_error(404, "404", "No key '" + id + "'.");
  auto next = keys_file_;
  if (entry->runtime) {
    std::erase_if(next.keys, [&](const auth::RuntimeKey& k) { return k.id == id; });
    // Shared keys: the id is remembered, or the next merge would bring the key back.
    if (key_sync_) next.revoked.push_back(id);
  } else {
    next.revoked.push_back(id);  // a config key: remembered as revoked across restarts
  }
  if (config_->auth.keys_file.empty()) {
    if (entry->runtime) return admin_error(500, "KeysFileNotConfigured", "No keys file.");
    return admin_error(409, "KeysFileNotConfigured",
                      "Set auth.keys_file to revoke a configured key at runtime (or remove it from the configuration).");
  }
  if (auto error = auth::save_keys_file(config_->auth.keys_file, next); !error.empty()) {
    metrics::log_error("cannot save the keys file", core::JsonFields().add("error", error));
    return admin_error(500, "KeysFileWriteFailed", "The key could not be revoked; nothing changed.");
  }
  keys_file_ = std::move(next);
  publish();
  if (key_sync_) key_sync_->local_changed();
  log_info("client key revoked", core::JsonFields().add("key_id", id));
  return AdminResponse{204, "application/json", "", {}};
}

void IdentityManager::families(std::vector<prometheus::MetricFamily>& out, const Snapshot* snap) const {
  namespace fam = metrics::families;
  auto now = ratelimit::steady_now_ns();
  metrics::FamilyBuilder<3> fill(fam::kRateLimitAvailable), limit(fam::kRateLimitPerMinute);
  std::set<const void*> seen;
  auto export_limit = [&](const ratelimit::Limit& l) {
    if (!seen.insert(l.bucket).second) return;
    std::array<std::string_view, 3> labels{ratelimit::to_string(l.scope), l.name,
                                           ratelimit::to_string(l.unit)};
    fill.add(labels, static_cast<double>(l.bucket->available(now, l.per_minute)));
    limit.add(labels, static_cast<double>(l.per_minute));
  };
  metrics::FamilyBuilder<4> used(fam::kBudgetUsed), budget(fam::kBudgetLimit),
      warning(fam::kBudgetWarning);
  auto wall = ratelimit::unix_now_ms();
  auto export_budget = [&](const ratelimit::BudgetLimit& b) {
    if (!seen.insert(b.budget).second) return;
    std::array<std::string_view, 4> labels{ratelimit::to_string(b.scope), b.name,
                                           ratelimit::to_string(b.period),
                                           ratelimit::to_string(b.measure)};
    double scale = b.measure == ratelimit::Measure::kNanoUsd ? 1e9 : 1;
    auto u = b.budget->used(b.period, wall);
    used.add(labels, static_cast<double>(u) / scale);
    budget.add(labels, static_cast<double>(b.limit) / scale);
    warning.add(labels, u >= b.warn_level ? 1 : 0);
  };
  if (state_) {
    for (const auto& ls : state_->client_limits) {
      for (const auto& l : ls) export_limit(l);
    }
    for (const auto& bs : state_->client_budgets) {
      for (const auto& b : bs) export_budget(b);
    }
  }
  if (snap != nullptr) {
    for (const auto& d : snap->deployments) {
      for (const auto& l : d.limits) export_limit(l);
    }
  }
  for (auto* f : {&fill, &limit}) out.push_back(f->take());
  for (auto* f : {&used, &budget, &warning}) out.push_back(f->take());
  metrics::FamilyBuilder<1> refresh(fam::kTokenRefreshFailures);
  for (const auto& [id, l] : token_loops_) {
    refresh.add({l->backend}, static_cast<double>(l->slot->refresh_failures.load()));
  }
  out.push_back(refresh.take());
  out.push_back(
      metrics::single(fam::kJwksFetchFailures, static_cast<double>(jwks_fetch_failures_)));
  out.push_back(metrics::single(
      fam::kClientKeys, state_ ? static_cast<double>(state_->keys->entries().size()) : 0));
}

}  // namespace tollgate::server
