#include "tollgate/metrics/stats.hpp"

#include <algorithm>
#include <limits>

namespace tollgate::metrics {

void Histogram::observe_micros(std::int64_t us) noexcept {
  if (us < 0) us = 0;
  double s = static_cast<double>(us) / 1e6;
  auto it = std::lower_bound(kLatencyBounds.begin(), kLatencyBounds.end(), s);
  buckets_[static_cast<std::size_t>(it - kLatencyBounds.begin())].add();
  sum_us_.add(static_cast<std::uint64_t>(us));
}

StatusClass status_class(int status) {
  if (status >= 100 && status < 600) return static_cast<StatusClass>(status / 100 - 1);
  return StatusClass::kNone;
}

std::string_view to_string(StatusClass c) {
  static constexpr std::string_view kNames[] = {"1xx", "2xx", "3xx", "4xx", "5xx", "none"};
  return kNames[static_cast<std::size_t>(c)];
}

std::string_view to_string(UpstreamError e) {
  static constexpr std::string_view kNames[] = {"resolve",      "connect",   "connect_timeout",
                                                "tls",          "write",     "first_byte_timeout",
                                                "idle_timeout", "reset",     "protocol",
                                                "client_gone",  "credential"};
  return kNames[static_cast<std::size_t>(e)];
}

std::string_view to_string(RetryReason r) {
  static constexpr std::string_view kNames[] = {"throttled", "server_error", "timeout", "connect"};
  return kNames[static_cast<std::size_t>(r)];
}

std::string_view to_string(TokenType t) {
  static constexpr std::string_view kNames[] = {"prompt", "completion", "cached", "reasoning"};
  return kNames[static_cast<std::size_t>(t)];
}

void WorkerStats::ensure(std::uint32_t count) {
  std::uint32_t blocks = (count + kBlockSize - 1) >> kBlockShift;
  for (std::uint32_t b = 0; b < blocks && b < kMaxBlocks; ++b) {
    if (!blocks_[b]) blocks_[b] = std::make_unique<RouteCells[]>(kBlockSize);
  }
}

std::uint32_t SeriesRegistry::intern(std::string_view deployment, std::string_view backend) {
  std::string key;
  key.reserve(deployment.size() + backend.size() + 1);
  key.append(deployment).append(1, '\0').append(backend);
  if (auto it = index_.find(key); it != index_.end()) return it->second;
  if (labels_.size() >= std::size_t{kMaxBlocks} * kBlockSize) {
    return std::numeric_limits<std::uint32_t>::max();
  }
  auto id = static_cast<std::uint32_t>(labels_.size());
  labels_.emplace_back(std::string(deployment), std::string(backend));
  tiers_.push_back(0);
  index_.emplace(std::move(key), id);
  for (auto* w : workers_) w->ensure(id + 1);
  return id;
}

std::uint32_t SeriesRegistry::intern_client(std::string_view client, std::string_view tenant) {
  std::string key;
  key.append(client).append(1, '\0').append(tenant);
  if (auto it = client_index_.find(key); it != client_index_.end()) return it->second;
  if (client_labels_.size() >= kMaxClientSeries - 1) {  // the last id: every client beyond
    if (client_labels_.size() == kMaxClientSeries - 1)
      client_labels_.emplace_back("other", "other");
    return kMaxClientSeries - 1;
  }
  auto id = static_cast<std::uint32_t>(client_labels_.size());
  client_labels_.emplace_back(std::string(client), std::string(tenant));
  client_index_.emplace(std::move(key), id);
  return id;
}

void SeriesRegistry::add_worker(WorkerStats* w) {
  w->ensure(size());
  workers_.push_back(w);
}

std::string_view to_string(ShedReason r) {
  static constexpr std::string_view kNames[] = {"queue_full", "deadline", "unreachable",
                                                "client_gone"};
  return kNames[static_cast<std::size_t>(r)];
}

std::string_view to_string(NoBackendCode c) {
  static constexpr std::string_view kNames[] = {"429", "503"};
  return kNames[static_cast<std::size_t>(c)];
}

std::string_view to_string(AcceptError e) {
  static constexpr std::string_view kNames[] = {"emfile", "enfile", "enobufs", "enomem", "other"};
  return kNames[static_cast<std::size_t>(e)];
}

std::string_view to_string(RedisError e) {
  static constexpr std::string_view kNames[] = {"timeout", "connect", "tls", "auth", "closed", "protocol", "overloaded"};
  return kNames[static_cast<std::size_t>(e)];
}

}  // namespace tollgate::metrics
