#include "cluster/cluster_options.hpp"

#include <unistd.h>

namespace tollgate::cluster {

RedisConnectOptions connect_options(const config::ClusterConfig& c) {
  RedisConnectOptions o;
  o.address = c.redis;
  o.ca_file = c.ca_file;
  return o;
}

std::string replica_id() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  return std::string(host) + ":" + std::to_string(getpid());
}

}  // namespace tollgate::cluster
