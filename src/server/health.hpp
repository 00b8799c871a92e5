#pragma once
// Active health checks: one probe loop per backend that configures `health_check`, on the control
// thread. A probe costs no tokens (a GET the operator chooses, or a TCP/TLS connect); rise/fall
// thresholds flip the backend's shared probe flag, which the balancer reads.

#include <boost/asio/io_context.hpp>
#include <memory>
#include <unordered_map>
#include <vector>

#include <prometheus/metric_family.h>

#include "server/snapshot.hpp"

namespace tollgate::server {

class HealthChecker {
 public:
  explicit HealthChecker(boost::asio::io_context& io) : io_(io) {}
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
  std::unordered_map<const routing::BackendState*, std::shared_ptr<Probe>> probes_;  // owner: control
};

}  // namespace tollgate::server
