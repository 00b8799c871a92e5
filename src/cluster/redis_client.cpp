#include "cluster/redis_client.hpp"

#include <openssl/evp.h>

#include <boost/asio/co_spawn.hpp>
#include <new>
#include <vector>

namespace tollgate::cluster {

namespace {

std::string sha1_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha1(), nullptr) != 1) {
    throw std::bad_alloc();  // fails only when out of memory (SHA-1 is always available)
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * len);
  for (unsigned int i = 0; i < len; ++i) {
    hex.push_back(kHex[md[i] >> 4]);
    hex.push_back(kHex[md[i] & 0xf]);
  }
  return hex;
}

}  // namespace

// One call awaiting its reply. The caller waits on `timer`; the reply (or a failure) cancels it.
struct RedisClient::Pending {
  explicit Pending(const net::any_io_executor& ex) : timer(ex) {}
  net::steady_timer timer;
  std::chrono::steady_clock::time_point queued;
  std::optional<RedisReply> reply;
  std::optional<RedisFailure> failure;
  bool abandoned = false;  // the caller timed out: the reply, when it comes, is dropped
};

RedisScript::RedisScript(std::string src) : source(std::move(src)), sha1(sha1_hex(source)) {}

boost::system::result<std::shared_ptr<RedisClient>> RedisClient::create(
    net::any_io_executor ex, RedisClientOptions options) {
  std::shared_ptr<net::ssl::context> tls;
  if (options.connect.address.tls) {
    auto made = make_redis_tls(options.connect.ca_file);
    if (!made) return made.error();
    tls = *made;
  }
  return std::shared_ptr<RedisClient>(new RedisClient(std::move(ex), std::move(options), tls));
}

RedisClient::RedisClient(net::any_io_executor ex, RedisClientOptions options,
                         std::shared_ptr<net::ssl::context> tls)
    : executor_(ex),
      options_(std::move(options)),
      tls_(std::move(tls)),
      sleep_(ex),
      watchdog_(ex) {}

RedisClient::~RedisClient() = default;

void RedisClient::start() {
  if (started_ || closed_) return;
  started_ = true;
  net::co_spawn(executor_, keep_connected(shared_from_this()), rethrow_unexpected);
}

// One connection attempt; on success the link runs and the client is up.
net::awaitable<bool> RedisClient::connect_once() {
  auto opened = co_await open_redis(options_.connect, tls_.get());
  if (closed_) co_return false;
  if (auto* f = std::get_if<RedisFailure>(&opened)) {
    down_reason_ = *f;
    if (options_.observer) options_.observer->on_failure(*f);
    co_return false;
  }
  link_ = std::make_shared<RedisLink>(std::move(std::get<RedisConnection>(opened)));
  // The handlers hold `this` without owning it: run() owns the client until the link is reset,
  // and the link calls no handler after reset().
  link_->start([this](RedisReply&& r) { on_reply(std::move(r)); },
               [this](RedisFailure why) { on_down(why); });
  if (options_.observer) options_.observer->on_up(true);
  co_return true;
}

void RedisClient::on_reply(RedisReply&& reply) {
  if (pending_.empty()) {  // a reply nobody asked for: the stream is out of sync
    link_->reset(RedisFailure::kProtocol);
    return;
  }
  auto p = std::move(pending_.front());
  pending_.pop_front();
  if (p->abandoned) return;
  if (options_.observer)
    options_.observer->on_round_trip(std::chrono::steady_clock::now() - p->queued);
  p->reply = std::move(reply);
  p->timer.cancel();
}

void RedisClient::on_down(RedisFailure why) {
  down_reason_ = RedisFailure::kClosed;
  fail(why);
  if (options_.observer) options_.observer->on_up(false);
}

// Fails every call awaiting a reply on the current link with `why`.
void RedisClient::fail(RedisFailure why) {
  for (auto& p : pending_) {
    if (p->abandoned) continue;
    p->failure = why;
    p->timer.cancel();
  }
  pending_.clear();
}

bool RedisClient::stale() const {
  if (pending_.empty()) return false;
  return std::chrono::steady_clock::now() - pending_.front()->queued >
         options_.timeout * options_.stale_after_timeouts;
}

// Whether a call may go out now; the failure it gets at once when not.
std::optional<RedisFailure> RedisClient::admit() {
  if (closed_) return RedisFailure::kClosed;
  if (!up()) return down_reason_;
  if (stale()) {
    link_->reset(RedisFailure::kTimeout);
    return RedisFailure::kClosed;
  }
  if (pending_.size() >= options_.max_pending) {
    link_->reset(RedisFailure::kOverloaded);
    return RedisFailure::kOverloaded;
  }
  return std::nullopt;
}

// Abandoned calls are a prefix of pending_ (they are the oldest): while there are some, a timer
// resets the connection once the oldest is stale, so a hung server is dropped even when no new
// call comes to notice it.
void RedisClient::watch_stale() {
  if (watchdog_armed_ || pending_.empty() || !pending_.front()->abandoned) return;
  watchdog_armed_ = true;
  watchdog_.expires_at(pending_.front()->queued + options_.timeout * options_.stale_after_timeouts +
                       std::chrono::milliseconds(1));
  watchdog_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    self->watchdog_armed_ = false;
    if (ec || self->closed_ || !self->up()) return;
    if (self->stale()) {
      self->link_->reset(RedisFailure::kTimeout);
    } else {
      self->watch_stale();
    }
  });
}

net::awaitable<RedisResult> RedisClient::call(std::span<const std::string_view> argv) {
  if (auto f = admit()) {
    if (options_.observer) options_.observer->on_failure(*f);
    co_return RedisResult::failed(*f);
  }
  auto p = std::make_shared<Pending>(executor_);
  p->queued = std::chrono::steady_clock::now();
  link_->send(argv);
  pending_.push_back(p);
  p->timer.expires_after(options_.timeout);
  co_await p->timer.async_wait(use_tuple);
  if (p->reply) co_return RedisResult::of(std::move(*p->reply));
  auto why = p->failure.value_or(RedisFailure::kTimeout);
  if (!p->failure) {
    p->abandoned = true;
    watch_stale();
  }
  if (options_.observer) options_.observer->on_failure(why);
  co_return RedisResult::failed(why);
}

net::awaitable<RedisResult> RedisClient::eval_with(std::string_view verb, std::string_view script,
                                                   std::span<const std::string_view> keys,
                                                   std::span<const std::string_view> args) {
  std::string numkeys = std::to_string(keys.size());
  std::vector<std::string_view> argv;
  argv.reserve(3 + keys.size() + args.size());
  argv.push_back(verb);
  argv.push_back(script);
  argv.push_back(numkeys);
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  co_return co_await call(argv);
}

net::awaitable<RedisResult> RedisClient::eval(const RedisScript& script,
                                              std::span<const std::string_view> keys,
                                              std::span<const std::string_view> args) {
  auto r = co_await eval_with("EVALSHA", script.sha1, keys, args);
  if (!r.ok() || !r.reply.is_error("NOSCRIPT")) co_return r;
  co_return co_await eval_with("EVAL", script.source, keys, args);
}

void RedisClient::close() {
  if (closed_) return;
  closed_ = true;
  sleep_.cancel();
  watchdog_.cancel();
  if (link_) link_->reset(RedisFailure::kClosed);
}

}  // namespace tollgate::cluster
