#pragma once
// Value kinds of the config schema: how one key's text becomes a typed value, and the message
// when it does not. Scalar kinds have `read(text, ctx)`; node kinds (lists, mappings) have
// `read(node, path, ctx)`. Kinds with `canonical` can compare a default with the docs.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/schema.hpp"

namespace tollgate::config::schema {

/// A positive duration: 250ms, 10s, 5m, 2h.
struct Duration {
  using Value = Millis;
  Read<Millis> read(std::string_view text, Ctx&) const;
  std::string canonical(const Millis& v) const { return std::to_string(v.count()) + "ms"; }
};

/// A wait from 0 to `max`: "0" or a duration.
struct Wait {
  using Value = Millis;
  Millis max;
  std::string_view expect;  // "a duration from 0 to 10m, like 5s"
  Read<Millis> read(std::string_view text, Ctx&) const;
  std::string canonical(const Millis& v) const { return std::to_string(v.count()) + "ms"; }
};

/// A positive size: 512KiB, 8MiB, 1000.
struct Size {
  using Value = std::size_t;
  bool zero_allowed = false;  // 0 means "none" (a cache turned off)
  Read<std::size_t> read(std::string_view text, Ctx&) const;
  std::string canonical(const std::size_t& v) const { return std::to_string(v); }
};

/// A whole number from `min` to `max`.
struct UInt {
  using Value = std::uint64_t;
  std::uint64_t min;
  std::uint64_t max;
  Read<std::uint64_t> read(std::string_view text, Ctx&) const;
  std::string canonical(const std::uint64_t& v) const { return std::to_string(v); }
};

/// A number from `min` to `max`; `what` names the range in the message.
struct Number {
  using Value = double;
  double min;
  double max;
  std::string_view what;
  Read<double> read(std::string_view text, Ctx&) const;
  std::string canonical(const double& v) const;
};
inline constexpr Number kFraction{0, 1, "a number from 0 to 1"};

/// true or false (only these spellings).
struct Bool {
  using Value = bool;
  Read<bool> read(std::string_view text, Ctx&) const;
  std::string canonical(const bool& v) const { return v ? "true" : "false"; }
};

/// Free text. `non_empty` for required strings; `lower` for header names.
struct Text {
  using Value = std::string;
  bool non_empty = false;
  bool lower = false;
  Read<std::string> read(std::string_view text, Ctx&) const;
  std::string canonical(const std::string& v) const { return v; }
};

/// A path whose text must start with "/".
struct AbsPath {
  using Value = std::string;
  Read<std::string> read(std::string_view text, Ctx&) const;
  std::string canonical(const std::string& v) const { return v; }
};

/// A path in a directory that exists (the usage ledger).
struct PathInExistingDir {
  using Value = std::string;
  Read<std::string> read(std::string_view text, Ctx&) const;
};

/// The unique name of a list item: not empty, not reserved, not taken by an earlier item.
struct Name {
  using Value = std::string;
  std::string what;  // "backend name": `duplicate backend name "a"`
  std::vector<std::string_view> reserved = {};
  Read<std::string> read(std::string_view text, Ctx& ctx) const;
};

/// One of a fixed set of words, each standing for a value.
template <typename V>
struct Enum {
  using Value = V;
  std::vector<std::pair<std::string_view, V>> words;
  std::string_view expect;  // "http or tcp": `must be http or tcp (got "udp")`
  Read<V> read(std::string_view text, Ctx&) const {
    for (const auto& [word, v] : words) {
      if (word == text) return v;
    }
    return Fail{"must be " + std::string(expect) + " (got \"" + std::string(text) + "\")"};
  }
  std::string canonical(const V& v) const {
    for (const auto& [word, value] : words) {
      if (value == v) return std::string(word);
    }
    return {};
  }
};

/// `env:NAME` or `file:/path`, resolved; the value never appears in messages.
struct Secret {
  using Value = std::string;
  Read<std::string> read(std::string_view text, Ctx& ctx) const;
};

/// `file:/path` (or a bare path) to a file that must exist and be readable.
struct FileRef {
  using Value = std::string;
  Read<std::string> read(std::string_view text, Ctx&) const;
};

/// host:port or [ipv6]:port to listen on; the host must be an IP literal or localhost.
struct Address {
  struct Value {
    std::string host;
    std::uint16_t port = 0;
    std::string text;
  };
  Read<Value> read(std::string_view text, Ctx&) const;
  std::string canonical(const Value& v) const { return v.text; }
};

/// redis://[user@]host[:port][/db] or rediss://: literal (no password in it: secrets are
/// references), or an env:/file: reference to a URL that may carry user:password.
struct RedisUrl {
  using Value = RedisAddress;
  Read<RedisAddress> read(std::string_view text, Ctx& ctx) const;
  std::string canonical(const RedisAddress& v) const { return display_url(v); }
};

/// postgresql://[user@]host[:port][/db][?param=value...] (or postgres://) as libpq takes it:
/// literal without a password, or an env:/file: reference to a URL that may carry one.
struct PostgresUrl {
  struct Value {
    std::string url;    // as libpq gets it (may carry the password)
    std::string where;  // the same without its password, for logs
  };
  Read<Value> read(std::string_view text, Ctx& ctx) const;
  std::string canonical(const Value& v) const { return v.where; }
};

/// A PostgreSQL table name: a lower-case SQL identifier (letters, digits, '_'), at most 50
/// characters (its companion tables add a suffix), optionally schema-qualified ("ledger.usage").
struct SqlTableName {
  using Value = std::string;
  Read<std::string> read(std::string_view text, Ctx&) const;
  std::string canonical(const std::string& v) const { return v; }
};

/// An http:// or https:// URL of a backend.
struct EndpointUrl {
  using Value = Endpoint;
  Read<Endpoint> read(std::string_view text, Ctx&) const;
};

/// https://, or http:// to a loopback address or to `also_plain`.
bool secure_url(const std::string& text, std::string_view also_plain = {});

/// A non-empty list of strings (empty items dropped); `allow_empty` accepts [].
struct StringList {
  using Value = std::vector<std::string>;
  bool allow_empty = false;
  bool lower = false;
  std::optional<Value> read(const Node& node, const std::string& path, Ctx& ctx) const;
  std::string canonical(const Value& v) const;  // "[a, b]"
};

/// A non-empty list of words from `words`: `unknown <what> "x" (<expect>)`.
struct WordList {
  using Value = std::vector<std::string>;
  std::vector<std::string_view> words;
  std::string_view what;
  std::string_view expect;
  std::optional<Value> read(const Node& node, const std::string& path, Ctx& ctx) const;
};

/// A scalar of kind K, or nothing when it is empty (an empty reference means "not set").
template <ScalarKind K>
struct SkipEmpty {
  using Value = typename K::Value;
  K kind;
  std::optional<Value> read(const Node& node, const std::string& path, Ctx& ctx) const {
    auto text = ctx.scalar(node, path);
    if (!text || text->empty()) return std::nullopt;
    auto r = kind.read(*text, ctx);
    if (!r.ok()) {
      ctx.error(node, path, r.error());
      return std::nullopt;
    }
    return std::move(*r);
  }
};

// ---- References to what was read before ----------------------------------------------------

/// A priority class name -> its index (priority is read before everything that names classes).
struct ClassRef {
  using Value = std::size_t;
  Read<std::size_t> read(std::string_view text, Ctx& ctx) const;
};

/// A non-empty list of priority class names -> their indices.
struct ClassList {
  using Value = std::vector<std::size_t>;
  std::optional<Value> read(const Node& node, const std::string& path, Ctx& ctx) const;
};

/// A deployment name -> its index.
struct DeploymentRef {
  using Value = std::size_t;
  Read<std::size_t> read(std::string_view text, Ctx& ctx) const;
};

/// A non-empty list of deployment names, each known or "*".
struct DeploymentList {
  using Value = std::vector<std::string>;
  std::optional<Value> read(const Node& node, const std::string& path, Ctx& ctx) const;
};

/// A tenant name -> its index.
struct TenantRef {
  using Value = std::size_t;
  Read<std::size_t> read(std::string_view text, Ctx& ctx) const;
};

}  // namespace tollgate::config::schema
