#pragma once
// Active health checks: one probe loop per backend that configures `health_check`, on the control
// thread. A probe costs no tokens (a GET the operator chooses, or a TCP/TLS connect); rise/fall
// thresholds flip the backend's shared probe flag, which the balancer reads.

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <unordered_map>
#include <vector>

#include <prometheus/metric_family.h>

#include "proxy/dns.hpp"
#include "server/runtime.hpp"

namespace tollgate::server {

class HealthChecker {
 public:
  /// `on_recovered` runs (on the control thread) when a backend passes its checks again:
  /// requests waiting for capacity may use it now.
  /// `resolver`: the control thread's, outliving the checker.
  HealthChecker(boost::asio::io_context& io, proxy::Resolver& resolver, std::function<void()> on_recovered)
      : io_(io), resolver_(resolver), on_recovered_(std::move(on_recovered)) {}
  ~HealthChecker();
  /// Starts, keeps or stops probes to match `snap`. Thread: control.
  void apply(const std::shared_ptr<const Snapshot>& snap);
  /// Stops every probe. Thread: control.
  void stop();
  /// tollgate_health_checks_total. Thread: control.
  void families(std::vector<prometheus::MetricFamily>& out) const;

  struct Probe;

 private:
  boost::asio::io_context& io_;
  proxy::Resolver& resolver_;
  std::function<void()> on_recovered_;
  std::unordered_map<const routing::BackendState*, std::shared_ptr<Probe>> probes_;  // owner: control
};

}  // namespace tollgate::server
