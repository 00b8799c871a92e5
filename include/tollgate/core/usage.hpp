#pragma once
// Token usage as reported by a backend, and the incremental scanners that find it in a relayed
// response without buffering it: SseScanner (event boundaries only; parses just the usage event)
// and JsonUsageScanner (finds the top-level "usage" object of a JSON body).
// See docs/design/streaming.md.

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

namespace tollgate::core {

struct Usage {
  std::uint64_t prompt = 0;
  std::uint64_t completion = 0;
  std::uint64_t total = 0;
  std::uint64_t cached = 0;
  std::uint64_t reasoning = 0;
  bool present = false;
};

/// Parses a usage object (chat/completions/embeddings names, or the Responses API's
/// input_tokens/output_tokens). Returns false when `json` is not such an object.
bool parse_usage(std::string_view json, Usage& out);
/// parse_usage through an nlohmann DOM: the reference the scan is fuzzed against.
bool parse_usage_dom(std::string_view json, Usage& out);

/// Splits an SSE byte stream into events (WHATWG rules: LF, CRLF or CR line ends; `data:` lines
/// joined with '\n'; comments ignored). Memory is bounded by `max_event`: a longer event is
/// skipped (counted in oversized()). Thread: one owner.
class SseScanner {
 public:
  explicit SseScanner(std::size_t max_event = 1u << 20) : max_event_(max_event) {}

  /// Feeds bytes in any split; calls on_data(std::string_view) per complete event with data.
  template <typename OnData>
  void feed(std::string_view bytes, OnData&& on_data) {
    for (char c : bytes) {
      if (c == '\n' && last_cr_) {
        last_cr_ = false;
        continue;
      }
      last_cr_ = c == '\r';
      if (c == '\r' || c == '\n') {
        end_line(on_data);
      } else if (line_.size() < max_event_) {
        line_ += c;
      } else {
        overflow_ = true;
      }
    }
  }
  std::size_t oversized() const { return oversized_; }

 private:
  template <typename OnData>
  void end_line(OnData& on_data) {
    if (line_.empty()) {
      if (has_data_ && !overflow_) {
        if (!data_.empty() && data_.back() == '\n') data_.pop_back();
        on_data(std::string_view(data_));
      }
      if (overflow_) ++oversized_;
      data_.clear();
      has_data_ = false;
      overflow_ = false;
      return;
    }
    std::string_view line(line_);
    if (line.substr(0, 5) == "data:" || line == "data") {
      auto value = line.size() > 5 ? line.substr(5) : std::string_view{};
      if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      if (data_.size() + value.size() + 1 > max_event_) {
        overflow_ = true;
      } else {
        data_.append(value);
        data_ += '\n';
      }
      has_data_ = true;
    }
    line_.clear();
  }

  std::size_t max_event_;
  std::string line_;
  std::string data_;
  bool has_data_ = false;
  bool overflow_ = false;
  bool last_cr_ = false;
  std::size_t oversized_ = 0;
};

/// Observes a relayed SSE stream: usage (from the event carrying a non-null "usage"),
/// whether [DONE] arrived, and how many error events passed.
class StreamObserver {
 public:
  /// Also keep the generated text (choices' delta content, tool-call arguments, completions
  /// text, Responses output_text deltas), up to `max_bytes`, appended to `*sink` as each event
  /// passes, to count it when a stream ends without usage (however it ends: the sink is the
  /// request's, so even a request cut off by a stop keeps what was relayed).
  void capture_output(std::string* sink, std::size_t max_bytes = 4u << 20) {
    output_ = sink;
    capture_max_ = max_bytes;
  }
  void feed(std::string_view bytes);
  const Usage& usage() const { return usage_; }
  bool done() const { return done_; }
  std::uint32_t events() const { return events_; }
  std::uint32_t error_events() const { return error_events_; }

 private:
  void on_event(std::string_view data);
  void capture_text(const nlohmann::json& j);
  SseScanner scanner_;
  Usage usage_;
  bool done_ = false;
  std::uint32_t events_ = 0;
  std::uint32_t error_events_ = 0;
  std::size_t capture_max_ = 0;
  std::string* output_ = nullptr;
};

/// Takes back what the gateway added to a stream by asking for usage on the client's behalf
/// (`stream_options.include_usage`): the final usage-only chunk is dropped and the `"usage":null`
/// members of the other chunks are removed, so the client receives the stream it asked for.
/// Works on whole events (a partial event waits for its end). Thread: one owner.
class UsageStripper {
 public:
  /// Returns the bytes to send for `bytes` (possibly none yet).
  std::string feed(std::string_view bytes);
  /// The bytes still held at the end of the stream (an unterminated last event), as they are.
  std::string finish() { return std::move(pending_); }

 private:
  std::string pending_;
};

/// Finds the top-level "usage" object in a JSON body fed in any split, keeping at most
/// `max_capture` bytes (the usage object only). Thread: one owner.
class JsonUsageScanner {
 public:
  explicit JsonUsageScanner(std::size_t max_capture = 64u << 10) : max_capture_(max_capture) {}
  void feed(std::string_view bytes);
  /// Call once the body is complete.
  const Usage& usage();

 private:
  std::size_t max_capture_;
  int depth_ = 0;
  bool in_string_ = false;
  bool escape_ = false;
  bool key_position_ = false;  // at depth 1, the next string is a key
  bool reading_key_ = false;
  bool after_key_ = false;      // a key just ended; waiting for ':'
  bool armed_ = false;          // the value of "usage" comes next
  bool capturing_ = false;
  bool done_ = false;
  std::string key_;
  std::string captured_;
  Usage usage_;
  bool parsed_ = false;
};

}  // namespace tollgate::core
