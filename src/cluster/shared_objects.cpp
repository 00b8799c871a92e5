#include "cluster/shared_objects.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <vector>

namespace tollgate::cluster {

namespace {

// The record formats these scripts read are object_record.hpp's: "o1", then the billing byte.
// KEYS[1] = the record; ARGV = the value, its lifetime (ms). A record already there keeps its
// billing byte: a save never re-opens a claimed charge nor settles one without claim().
constexpr std::string_view kSaveScript = R"lua(
local v = ARGV[1]
local old = redis.call('GET', KEYS[1])
if old and string.sub(old, 1, 2) == 'o1' and string.sub(v, 1, 2) == 'o1' then
  local b = string.sub(old, 3, 3)
  if b == 's' or b == 'p' then v = 'o1' .. b .. string.sub(v, 4) end
end
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
return 1
)lua";

// KEYS[1] = the record. 1: it was pending and is now settled (the caller charges); 0: settled
// already; -1: no (valid) record.
constexpr std::string_view kClaimScript = R"lua(
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, 2) ~= 'o1' then return -1 end
if string.sub(v, 3, 3) ~= 'p' then return 0 end
redis.call('SET', KEYS[1], 'o1s' .. string.sub(v, 4), 'KEEPTTL')
return 1
)lua";

// EVAL with the source, not EVALSHA: its NOSCRIPT fallback would send a save again behind a
// later claim, and this worker's commands must reach the store in the order they were made
// (one pipelined connection keeps that order). Stateful calls are few; the bytes do not matter.
std::vector<std::string_view> eval_argv(std::string_view script, std::string_view key,
                                        std::span<const std::string_view> args) {
  std::vector<std::string_view> argv{"EVAL", script, "1", key};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

thread_local SharedObjects* t_bound = nullptr;  // each worker's own, set on its thread

}  // namespace

SharedObjects::SharedObjects(std::shared_ptr<RedisClient> redis, std::string key_prefix)
    : redis_(std::move(redis)), prefix_(std::move(key_prefix)) {}

std::string SharedObjects::key(std::string_view id) const {
  return prefix_ + "object:" + std::string(id);
}

SharedObjects* SharedObjects::on_this_thread() { return t_bound; }
void SharedObjects::bind_to_this_thread(SharedObjects* objects) { t_bound = objects; }

void SharedObjects::save(const routing::StoredObject& o) {
  if (o.expires_in_ms <= 0 || !redis_->up()) return;
  net::co_spawn(redis_->executor(),
                run_save(shared_from_this(), key(o.id), encode_object({o.owner, o.billing}),
                         std::to_string(o.expires_in_ms)),
                net::detached);
}

void SharedObjects::erase(std::string_view id) {
  if (!redis_->up()) return;
  net::co_spawn(redis_->executor(), run_erase(shared_from_this(), key(id)), net::detached);
}

// Failures are counted by the client's observer; a lost write leaves the object to its creator.
net::awaitable<void> SharedObjects::run_save(std::shared_ptr<SharedObjects> self, std::string key,
                                             std::string value, std::string px) {
  std::string_view args[] = {value, px};
  auto argv = eval_argv(kSaveScript, key, args);
  co_await self->redis_->call(argv);
}

net::awaitable<void> SharedObjects::run_erase(std::shared_ptr<SharedObjects> self, std::string key) {
  std::string_view argv[] = {"DEL", key};
  co_await self->redis_->call(argv);
}

net::awaitable<FetchedObjects> SharedObjects::fetch(std::span<const std::string> ids) {
  std::vector<std::string> keys;
  keys.reserve(ids.size());
  for (const auto& id : ids) keys.push_back(key(id));
  std::vector<std::string_view> argv{"MGET"};
  argv.insert(argv.end(), keys.begin(), keys.end());
  auto r = co_await redis_->call(argv);
  FetchedObjects out;
  if (!r.ok()) {
    out.failure = r.failure;
    co_return out;
  }
  if (r.reply.kind != RedisReply::Kind::kArray || r.reply.elements.size() != ids.size()) {
    out.failure = RedisFailure::kProtocol;
    co_return out;
  }
  for (const auto& e : r.reply.elements) {
    out.records.push_back(e.kind == RedisReply::Kind::kString ? decode_object(e.text) : std::nullopt);
  }
  co_return out;
}

net::awaitable<BillingClaim> SharedObjects::claim(std::string_view id) {
  auto k = key(id);
  // Saves this worker spawned before are queued on the executor: let them send first (the
  // connection then keeps the order).
  co_await net::post(redis_->executor(), net::use_awaitable);
  auto argv = eval_argv(kClaimScript, k, {});
  auto r = co_await redis_->call(argv);
  if (!r.ok() || r.reply.kind != RedisReply::Kind::kInteger) co_return BillingClaim::kUnavailable;
  if (r.reply.integer == 1) co_return BillingClaim::kWon;
  co_return r.reply.integer == 0 ? BillingClaim::kLost : BillingClaim::kUnknown;
}

void ObjectJournal::saved(const routing::StoredObject& object) {
  if (auto* objects = SharedObjects::on_this_thread()) objects->save(object);
  if (next_ != nullptr) next_->saved(object);
}

void ObjectJournal::erased(std::string_view id) {
  if (auto* objects = SharedObjects::on_this_thread()) objects->erase(id);
  if (next_ != nullptr) next_->erased(id);
}

void ObjectJournal::evicted(std::string_view id) {
  if (next_ != nullptr) next_->evicted(id);
}

}  // namespace tollgate::cluster
