#include "cluster/backend_sync.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <charconv>

#include "cluster/cluster_options.hpp"
#include "tollgate/metrics/logging.hpp"

namespace tollgate::cluster {

namespace {

using Kind = BackendNews::Kind;

constexpr std::string_view kKindNames[] = {"throttled", "breaker_open", "probe"};

// Steady ms <-> unix ms, by the two clocks' readings now.
std::int64_t to_unix(routing::TimeMs steady) { return core::unix_now_ms() + (steady - core::steady_now_ms()); }
routing::TimeMs to_steady(std::int64_t unix_ms) { return core::steady_now_ms() + (unix_ms - core::unix_now_ms()); }

// The fields of a tab-separated message, in order.
std::vector<std::string_view> fields(std::string_view s) {
  std::vector<std::string_view> out;
  for (std::size_t start = 0;;) {
    auto tab = s.find('\t', start);
    out.push_back(s.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start));
    if (tab == std::string_view::npos) return out;
    start = tab + 1;
  }
}

}  // namespace

std::string encode(const BackendNews& n) {
  std::string out = n.origin;
  out.append("\t").append(kKindNames[static_cast<std::size_t>(n.kind)]).append("\t").append(n.backend);
  out.append("\t").append(std::to_string(n.value));
  return out;
}

std::optional<BackendNews> decode(std::string_view payload) {
  auto f = fields(payload);
  if (f.size() != 4 || f[0].empty() || f[2].empty()) return std::nullopt;
  BackendNews n;
  auto kind = std::find(std::begin(kKindNames), std::end(kKindNames), f[1]);
  if (kind == std::end(kKindNames)) return std::nullopt;
  n.kind = static_cast<Kind>(kind - std::begin(kKindNames));
  auto [end, ec] = std::from_chars(f[3].data(), f[3].data() + f[3].size(), n.value);
  if (ec != std::errc{} || end != f[3].data() + f[3].size() || n.value < 0) return std::nullopt;
  if (n.kind == Kind::kProbe && n.value > 1) return std::nullopt;
  n.origin = std::string(f[0]);
  n.backend = std::string(f[2]);
  return n;
}

std::shared_ptr<BackendSync> BackendSync::create(net::any_io_executor ex, const config::ClusterConfig& c,
                                                 std::string replica_id, std::shared_ptr<RedisObserver> observer) {
  auto pub = make_client(ex, c, observer, "backend state");
  if (!pub) return nullptr;
  auto self = std::shared_ptr<BackendSync>(new BackendSync(pub, c.key_prefix + "backends", std::move(replica_id)));
  std::weak_ptr<BackendSync> weak = self;
  auto sub = RedisSubscriber::create(
      ex, subscriber_options(c, std::move(observer)),
      [weak](std::string_view, std::string_view payload) {
        auto s = weak.lock();
        auto news = decode(payload);
        if (s && news && news->origin != s->replica_id_) s->apply(*news);
      },
      [] { metrics::log_info("cluster: subscribed to backend news"); });
  if (!sub) return nullptr;
  self->sub_ = *sub;
  return self;
}

BackendSync::BackendSync(std::shared_ptr<RedisClient> pub, std::string channel, std::string replica_id)
    : pub_(std::move(pub)), channel_(std::move(channel)), replica_id_(std::move(replica_id)) {}

void BackendSync::set_backends(std::vector<SyncedBackend> backends) {
  backends_ = std::move(backends);
  for (const auto& b : backends_) {
    auto& k = known_[b.name];  // what the state shows now is not news
    k.throttled_until = b.state->throttled_until();
    k.open_until = b.state->breaker() == routing::Breaker::kOpen ? b.state->breaker_until() : 0;
    k.probe_healthy = b.state->probe_healthy();
  }
}

void BackendSync::start() {
  pub_->start();
  sub_->start();
  std::vector<std::string> channels{channel_};
  sub_->subscribe(channels);
  net::co_spawn(pub_->executor(), poll_loop(shared_from_this()), net::detached);
}

void BackendSync::close() {
  closed_ = true;
  pub_->close();
  sub_->close();
}

net::awaitable<void> BackendSync::poll_loop(std::shared_ptr<BackendSync> self) {
  net::steady_timer pause(self->pub_->executor());
  while (!self->closed_) {
    self->poll();
    pause.expires_after(kPollEvery);
    co_await pause.async_wait(net::as_tuple(net::use_awaitable));
  }
}

void BackendSync::poll() {
  auto now = core::steady_now_ms();
  for (const auto& b : backends_) {
    auto& k = known_[b.name];
    auto throttled = b.state->throttled_until();
    if (throttled > k.throttled_until && throttled > now) {
      k.throttled_until = throttled;
      publish({Kind::kThrottled, b.name, to_unix(throttled), replica_id_});
    }
    auto open = b.state->breaker() == routing::Breaker::kOpen ? b.state->breaker_until() : 0;
    if (open > k.open_until && open > now) {
      k.open_until = open;
      publish({Kind::kBreakerOpen, b.name, to_unix(open), replica_id_});
    }
    auto healthy = b.state->probe_healthy();
    if (healthy != k.probe_healthy) {
      k.probe_healthy = healthy;
      publish({Kind::kProbe, b.name, healthy ? 1 : 0, replica_id_});
    }
  }
}

void BackendSync::publish(BackendNews news) {
  if (!pub_->up()) return;  // the others will learn it from their own requests
  auto self = shared_from_this();
  net::co_spawn(
      pub_->executor(),
      [self, payload = encode(news)]() -> net::awaitable<void> {
        std::string_view argv[] = {"PUBLISH", self->channel_, payload};
        co_await self->pub_->call(argv);
      },
      net::detached);
}

void BackendSync::apply(const BackendNews& news) {
  auto it = std::find_if(backends_.begin(), backends_.end(), [&](const SyncedBackend& b) { return b.name == news.backend; });
  if (it == backends_.end()) return;  // not a backend of this replica's config
  auto& k = known_[news.backend];
  auto& st = *it->state;
  switch (news.kind) {
    case Kind::kThrottled:
      st.throttle(to_steady(news.value));
      k.throttled_until = std::max(k.throttled_until, st.throttled_until());
      break;
    case Kind::kBreakerOpen:
      st.hold_open(to_steady(news.value));
      k.open_until = std::max(k.open_until, st.breaker_until());
      break;
    case Kind::kProbe:
      st.set_probe_healthy(news.value == 1);
      k.probe_healthy = news.value == 1;
      break;
  }
}

}  // namespace tollgate::cluster
