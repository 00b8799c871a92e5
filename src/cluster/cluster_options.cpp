#include "cluster/cluster_options.hpp"

#include <unistd.h>

#include "tollgate/metrics/logging.hpp"

namespace tollgate::cluster {

RedisConnectOptions connect_options(const config::ClusterConfig& c) {
  RedisConnectOptions o;
  o.address = c.redis;
  o.ca_file = c.ca_file;
  return o;
}

std::shared_ptr<RedisClient> make_client(net::any_io_executor ex, const config::ClusterConfig& c,
                                         std::shared_ptr<RedisObserver> observer, std::string_view purpose) {
  RedisClientOptions o;
  o.connect = connect_options(c);
  o.timeout = c.timeout;
  o.observer = std::move(observer);
  auto client = RedisClient::create(std::move(ex), std::move(o));
  if (client) return *client;
  metrics::log_error("cluster: cannot set up the Redis connection", core::JsonFields{}
                                                                         .add("for", purpose)
                                                                         .add("redis", config::display_url(c.redis))
                                                                         .add("error", client.error().message()));
  return nullptr;
}

RedisSubscriberOptions subscriber_options(const config::ClusterConfig& c, std::shared_ptr<RedisObserver> observer) {
  RedisSubscriberOptions o;
  o.connect = connect_options(c);
  o.observer = std::move(observer);
  return o;
}

std::optional<std::string> connect_problem(const config::ClusterConfig& c) {
  if (!c.enabled() || !c.redis.tls) return std::nullopt;
  auto tls = make_redis_tls(c.ca_file);
  if (tls) return std::nullopt;
  if (c.ca_file.empty()) return "cluster.redis.url: the system's CA certificates cannot be loaded: " + tls.error().message();
  return "cluster.redis.ca_file: cannot load " + c.ca_file + " as PEM CA certificates: " + tls.error().message();
}

std::string replica_id() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  return std::string(host) + ":" + std::to_string(getpid());
}

}  // namespace tollgate::cluster
