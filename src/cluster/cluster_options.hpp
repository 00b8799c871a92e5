#pragma once
// The connection options of the `cluster` config, for every Redis connection of a replica (the
// workers' limiters, the backend-state sync and its subscriber), and who this replica is.

#include <optional>
#include <string>

#include "cluster/redis_client.hpp"
#include "cluster/redis_connection.hpp"
#include "cluster/redis_subscriber.hpp"
#include "tollgate/config/config.hpp"

namespace tollgate::cluster {

RedisConnectOptions connect_options(const config::ClusterConfig& c);

/// A client of `c`'s Redis (not started) reporting to `observer` (may be null); null when its
/// connection cannot be set up, logged naming `purpose` ("limits", "keys" ...).
std::shared_ptr<RedisClient> make_client(net::any_io_executor ex, const config::ClusterConfig& c,
                                         std::shared_ptr<RedisObserver> observer, std::string_view purpose);

/// The options of a subscriber to `c`'s Redis, reporting to `observer` (may be null).
RedisSubscriberOptions subscriber_options(const config::ClusterConfig& c, std::shared_ptr<RedisObserver> observer);

/// Why connections to `c`'s Redis cannot be set up at all (rediss:// and a CA file that does not
/// load), naming the key; nullopt when they can.
std::optional<std::string> connect_problem(const config::ClusterConfig& c);

/// This process among the cluster's replicas (heartbeats, backend news): host name and pid.
std::string replica_id();

}  // namespace tollgate::cluster
