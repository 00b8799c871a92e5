#include "tollgate/core/clock.hpp"

#include <cstdio>
#include <ctime>

namespace tollgate::core {

std::string utc_iso(UnixMs t) {
  auto secs = static_cast<std::time_t>(t / 1000);
  auto ms = static_cast<int>(t % 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

const Clock& system_clock() {
  static const Clock clock;
  return clock;
}

}  // namespace tollgate::core
