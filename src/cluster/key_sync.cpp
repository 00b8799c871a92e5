#include "cluster/key_sync.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <charconv>
#include <unordered_set>

#include "cluster/cluster_options.hpp"
#include "tollgate/metrics/logging.hpp"

namespace tollgate::cluster {

namespace {

// KEYS: keys, revoked, version. The whole store at one instant.
const RedisScript& read_script() {
  static const RedisScript s(R"lua(
return {redis.call('GET', KEYS[3]) or '0', redis.call('HGETALL', KEYS[1]),
        redis.call('SMEMBERS', KEYS[2])}
)lua");
  return s;
}

// KEYS: keys, revoked, version. ARGV: channel, the number n of revoked ids, the n ids, then
// (id, record) pairs. Revocations first; a record whose id is revoked is not added; an id's
// record is never replaced (a key id is its digest's). Raises and publishes the version when
// anything changed. Returns {the version before, the version after}: when the one before is not
// the version the writer read, another replica changed the store in between.
const RedisScript& write_script() {
  static const RedisScript s(R"lua(
local before = tonumber(redis.call('GET', KEYS[3]) or '0')
local changed = 0
local n = tonumber(ARGV[2])
for i = 3, 2 + n do
  changed = changed + redis.call('SADD', KEYS[2], ARGV[i]) + redis.call('HDEL', KEYS[1], ARGV[i])
end
for i = 3 + n, #ARGV, 2 do
  if redis.call('SISMEMBER', KEYS[2], ARGV[i]) == 0 then
    changed = changed + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
if changed == 0 then return {before, before} end
local version = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[1], version)
return {before, version}
)lua");
  return s;
}

std::optional<std::int64_t> to_int(std::string_view s) {
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  return v;
}

bool all_strings(const RedisReply& r) {
  return r.kind == RedisReply::Kind::kArray &&
         std::all_of(r.elements.begin(), r.elements.end(),
                     [](const RedisReply& e) { return e.kind == RedisReply::Kind::kString; });
}

}  // namespace

std::optional<KeyStoreContents> parse_key_store(const RedisReply& reply) {
  if (reply.kind != RedisReply::Kind::kArray || reply.elements.size() != 3) return std::nullopt;
  const auto& e = reply.elements;
  auto version = e[0].kind == RedisReply::Kind::kString ? to_int(e[0].text) : std::nullopt;
  if (!version || !all_strings(e[1]) || e[1].elements.size() % 2 != 0 || !all_strings(e[2])) {
    return std::nullopt;
  }
  KeyStoreContents out;
  out.version = *version;
  for (std::size_t i = 0; i + 1 < e[1].elements.size(); i += 2) {
    auto k = auth::decode_runtime_key(e[1].elements[i + 1].text);
    if (k && k->id == e[1].elements[i].text) out.file.keys.push_back(std::move(*k));
  }
  for (const auto& id : e[2].elements) out.file.revoked.push_back(id.text);
  return out;
}

std::shared_ptr<KeySync> KeySync::create(net::any_io_executor ex, const config::ClusterConfig& c,
                                         LocalKeys local, std::shared_ptr<RedisObserver> observer) {
  auto pub = make_client(ex, c, observer, "keys");
  if (!pub) return nullptr;
  auto self =
      std::shared_ptr<KeySync>(new KeySync(pub, KeyStoreNames(c.key_prefix), std::move(local)));
  std::weak_ptr<KeySync> weak = self;
  auto sub = RedisSubscriber::create(
      ex, subscriber_options(c, std::move(observer)),
      [weak](std::string_view, std::string_view payload) {
        auto s = weak.lock();
        if (s && to_int(payload) != s->known_version_) s->request_sync();
      },
      [weak] {
        if (auto s = weak.lock()) s->request_sync();  // messages may have been lost meanwhile
      });
  if (!sub) return nullptr;
  self->sub_ = *sub;
  return self;
}

KeySync::KeySync(std::shared_ptr<RedisClient> pub, KeyStoreNames names, LocalKeys local)
    : pub_(std::move(pub)),
      names_(std::move(names)),
      local_(std::move(local)),
      poll_timer_(pub_->executor()) {}

void KeySync::start() {
  pub_->start();
  sub_->start();
  std::vector<std::string> channels{names_.channel};
  sub_->subscribe(channels);
  net::co_spawn(pub_->executor(), poll_loop(shared_from_this()), net::detached);
}

void KeySync::close() {
  closed_ = true;
  poll_timer_.cancel();
  pub_->close();
  sub_->close();
}

void KeySync::request_sync() {
  wanted_ = true;
  if (running_ || closed_) return;
  running_ = true;
  net::co_spawn(pub_->executor(), sync_loop(shared_from_this()), net::detached);
}

net::awaitable<void> KeySync::sync_loop(std::shared_ptr<KeySync> self) {
  while (self->wanted_ && !self->closed_) {
    self->wanted_ = false;
    bool synced = co_await self->sync_once();
    if (!synced) break;  // dirty_: the poll retries
  }
  self->running_ = false;
}

net::awaitable<void> KeySync::poll_loop(std::shared_ptr<KeySync> self) {
  while (!self->closed_) {
    self->poll_timer_.expires_after(kPollEvery);
    co_await self->poll_timer_.async_wait(net::as_tuple(net::use_awaitable));
    if (self->closed_) break;
    if (self->dirty_) {
      self->request_sync();
    } else if (!self->running_) {
      co_await self->check_version();
    }
  }
}

net::awaitable<void> KeySync::check_version() {
  std::string_view argv[] = {"GET", names_.version};
  auto r = co_await pub_->call(argv);
  if (closed_ || !r.ok()) co_return;  // Redis away: nothing to learn; the file serves
  auto version = r.reply.kind == RedisReply::Kind::kNil ? std::optional<std::int64_t>(0)
                                                        : to_int(r.reply.text);
  if (version && *version != known_version_) request_sync();
}

net::awaitable<bool> KeySync::sync_once() {
  dirty_ = true;
  std::string_view keys[] = {names_.keys, names_.revoked, names_.version};
  std::span<const std::string_view> no_args;
  auto r = co_await pub_->eval(read_script(), keys, no_args);
  if (closed_) co_return false;
  std::optional<KeyStoreContents> remote;
  if (r.ok()) remote = parse_key_store(r.reply);
  if (!remote) {
    failed("read", r.ok() ? (r.reply.is_error() ? r.reply.text : "a malformed reply")
                          : to_string(*r.failure));
    co_return false;
  }
  auto merged = auth::merge(local_.read(), remote->file);
  if (!(merged == local_.read())) {
    metrics::log_info("cluster: keys merged from Redis",
                      core::JsonFields{}
                          .add("keys", static_cast<std::uint64_t>(merged.keys.size()))
                          .add("revoked", static_cast<std::uint64_t>(merged.revoked.size())));
    local_.adopt(merged);
  }
  auto version = co_await push(merged, *remote);
  if (closed_ || !version) co_return false;
  known_version_ = *version;
  dirty_ = false;
  if (failing_) metrics::log_info("cluster: keys in sync with Redis again");
  failing_ = false;
  co_return true;
}

net::awaitable<std::optional<std::int64_t>> KeySync::push(const auth::KeysFile& merged,
                                                          const KeyStoreContents& remote) {
  std::unordered_set<std::string_view> revoked(remote.file.revoked.begin(),
                                               remote.file.revoked.end());
  std::unordered_set<std::string_view> present;
  for (const auto& k : remote.file.keys) present.insert(k.id);
  std::vector<std::string> args{names_.channel, ""};
  for (const auto& id : merged.revoked) {
    if (revoked.count(id) == 0) args.push_back(id);
  }
  args[1] = std::to_string(args.size() - 2);
  for (const auto& k : merged.keys) {
    if (present.count(k.id) != 0) continue;
    args.push_back(k.id);
    args.push_back(auth::encode_runtime_key(k));
  }
  // Redis holds everything already: its version is the one read (a change since the read raised
  // it, and its message or the poll brings it).
  if (args.size() == 2) co_return remote.version;
  std::vector<std::string_view> argv(args.begin(), args.end());
  std::string_view keys[] = {names_.keys, names_.revoked, names_.version};
  auto r = co_await pub_->eval(write_script(), keys, argv);
  const auto& e = r.reply.elements;
  bool versions = r.ok() && e.size() == 2 && e[0].kind == RedisReply::Kind::kInteger &&
                  e[1].kind == RedisReply::Kind::kInteger;
  if (!versions) {
    if (!closed_) failed("write", r.ok() ? r.reply.text : to_string(*r.failure));
    co_return std::nullopt;
  }
  if (e[0].integer == remote.version) co_return e[1].integer;
  // Another replica's change came between the read and the write: this replica has not seen
  // it yet. Read again (its message may have been judged known already).
  wanted_ = true;
  co_return remote.version;
}

void KeySync::failed(std::string_view what, std::string_view why) {
  if (failing_) return;  // once per outage
  failing_ = true;
  metrics::log_warn(
      "cluster: keys cannot be synced with Redis; the keys file serves, and the sync is retried",
      core::JsonFields{}.add("step", what).add("error", why));
}

}  // namespace tollgate::cluster
