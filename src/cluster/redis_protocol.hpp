#pragma once
// RESP, the Redis protocol: replies as value types, commands encoded and replies decoded by
// hiredis (used as a codec only; all I/O is ours, see redis_client.hpp). hiredis stays out of
// this header.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::cluster {

/// One Redis reply (RESP2). A Redis error (`-ERR ...`) is a reply of kind kError, not a failure.
struct RedisReply {
  enum class Kind : std::uint8_t { kNil, kInteger, kString, kStatus, kError, kArray };

  Kind kind = Kind::kNil;
  std::int64_t integer = 0;          // kInteger
  std::string text;                  // kString (bulk), kStatus, kError
  std::vector<RedisReply> elements;  // kArray

  static RedisReply nil() { return {}; }
  static RedisReply of_integer(std::int64_t v) { return {Kind::kInteger, v, {}, {}}; }
  static RedisReply of_string(std::string s) { return {Kind::kString, 0, std::move(s), {}}; }
  static RedisReply of_status(std::string s) { return {Kind::kStatus, 0, std::move(s), {}}; }
  static RedisReply of_error(std::string s) { return {Kind::kError, 0, std::move(s), {}}; }
  static RedisReply of_array(std::vector<RedisReply> e) {
    return {Kind::kArray, 0, {}, std::move(e)};
  }

  bool is_error() const { return kind == Kind::kError; }
  /// An error reply whose code (its first word) is `code`, as in "NOSCRIPT No matching script".
  bool is_error(std::string_view code) const;
  bool operator==(const RedisReply&) const = default;
};
std::string_view to_string(RedisReply::Kind k);

/// Appends the RESP encoding of the command `argv` (binary-safe) to `out`.
void append_command(std::string& out, std::span<const std::string_view> argv);

/// An incremental reply decoder: feed bytes as they arrive, take whole replies out.
/// Thread: its owner only. Movable, not copyable.
class RedisDecoder {
 public:
  enum class Status : std::uint8_t { kReply, kNeedMore, kError };

  RedisDecoder();
  ~RedisDecoder();
  RedisDecoder(RedisDecoder&&) noexcept;
  RedisDecoder& operator=(RedisDecoder&&) noexcept;

  /// Appends received bytes. False when the decoder is in error (the stream is out of sync).
  bool feed(std::string_view bytes);
  /// The next whole reply into `out` (kReply), or kNeedMore, or kError (a protocol error: the
  /// connection must be dropped; error() says why).
  Status next(RedisReply& out);
  std::string error() const;

 private:
  struct Reader;
  std::unique_ptr<Reader> reader_;
};

}  // namespace tollgate::cluster
