#pragma once
// Application logs (JSON lines on stderr) and the access log (one JSON line per request,
// written by spdlog's asynchronous thread so workers never block on I/O formatting).

#include <exception>
#include <memory>
#include <string>
#include <string_view>

#include "tollgate/config/config.hpp"
#include "tollgate/core/json_fields.hpp"

namespace spdlog {
class logger;
}

namespace tollgate::metrics {

/// Sets up the application logger. Thread: control thread, before workers start.
void setup_logging(std::string_view level);
/// Changes the level (on reload). Thread: any.
void set_log_level(std::string_view level);

/// Writes one application log line: {"time":…,"level":…,"msg":…, <fields>}. Thread: any.
void log_info(std::string_view msg, const core::JsonFields& fields = {});
void log_warn(std::string_view msg, const core::JsonFields& fields = {});
void log_error(std::string_view msg, const core::JsonFields& fields = {});
void log_debug(std::string_view msg, const core::JsonFields& fields = {});

/// The completion handler of a spawned coroutine (never `detached`): logs `message`, the field
/// `key: value` (when `key` is set) and the exception's text when one ended the coroutine.
/// Cheap to make per connection (static texts; a short value stays in the string's own buffer).
/// Thread: the coroutine's.
struct LogFailure {
  std::string_view message;  // static text
  std::string_view key;      // static text, or empty
  std::string value;
  void operator()(std::exception_ptr e) const;
};

/// The access log. Thread: write() from any worker.
class AccessLog {
 public:
  /// `target`: stdout, stderr, off, or a file path. Throws std::runtime_error when the file
  /// cannot be opened (start-up only).
  explicit AccessLog(const std::string& target);
  ~AccessLog();
  void write(const core::JsonFields& record);
  void flush();
  /// Reopens a file target by its name (log rotation: SIGUSR1 after the file was renamed).
  /// Returns false (and logs why) when it cannot; lines then keep going to the old file.
  /// Thread: any (the control thread on SIGUSR1).
  bool reopen();
  bool enabled() const { return logger_ != nullptr; }

 private:
  std::shared_ptr<spdlog::logger> logger_;
  std::shared_ptr<class ReopenableFileSink> file_;  // null unless the target is a file
};

}  // namespace tollgate::metrics
