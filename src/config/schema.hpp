#pragma once
// The declarative config schema: one Table<T> per config struct, a Field<T> per key (key, member,
// value kind, required or not). A table drives parsing, unknown-key errors with did-you-mean and
// the documentation test. Defaults are the structs' member initialisers (config.hpp); a table's
// `init` only adds what depends on the rest of the file (a deployment inherits the top-level
// retry). Cross-field checks and cross-references run in a table's `check`, or in the value kind
// of a reference (class, deployment and tenant names), in file order. Private to src/config.

#include <yaml-cpp/yaml.h>

#include <concepts>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/schema_docs.hpp"
#include "tollgate/config/config.hpp"

namespace tollgate::config::schema {

using Node = YAML::Node;

/// The walk's state: the errors so far ("file:line:col: key.path: message"), the environment for
/// env: secrets, the config being built (for references to what was parsed before) and the names
/// claimed so far (unique names, keys).
class Ctx {
 public:
  Ctx(std::string source, const EnvLookup& env, Config* config)
      : source_(std::move(source)), env_(env), config_(config) {}

  void error(const Node& at, const std::string& path, const std::string& message);
  void error(const YAML::Mark& at, const std::string& path, const std::string& message);
  std::size_t error_count() const { return errors_.size(); }
  std::vector<std::string> take_errors() { return std::move(errors_); }

  /// The node's text, or an error ("must be a scalar value").
  std::optional<std::string> scalar(const Node& node, const std::string& path);
  /// False (with an error) unless `node` is a mapping; reports keys not in `allowed`, suggesting
  /// the closest known key.
  bool expect_map(const Node& node, const std::string& path,
                  const std::vector<std::string_view>& allowed);
  /// Records `key` in `space` for `owner`; returns the earlier owner if it was claimed before.
  std::optional<std::string> claim(const std::string& space, const std::string& key,
                                   const std::string& owner);

  std::optional<std::string> env(const std::string& name) const { return env_(name); }
  Config& config() { return *config_; }

 private:
  std::string source_;
  const EnvLookup& env_;
  Config* config_;
  std::vector<std::string> errors_;
  std::map<std::pair<std::string, std::string>, std::string> claims_;
};

/// "a.b" from "a" and "b"; the root's keys are their own path.
inline std::string join(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}
inline std::string index(const std::string& path, std::size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

/// What a value kind's read returns: the value, or the message of why the text is not one.
struct Fail {
  std::string message;
};
template <typename V>
class Read {
 public:
  Read(V value) : value_(std::move(value)) {}           // NOLINT: implicit on purpose
  Read(Fail fail) : error_(std::move(fail.message)) {}  // NOLINT
  bool ok() const { return value_.has_value(); }
  V& operator*() { return *value_; }
  const std::string& error() const { return error_; }

 private:
  std::optional<V> value_;
  std::string error_;
};

/// A value kind read from one scalar: `Read<Value> read(std::string_view, Ctx&) const`.
template <typename K>
concept ScalarKind = requires(const K& k, std::string_view text, Ctx& ctx) {
  { k.read(text, ctx) } -> std::same_as<Read<typename K::Value>>;
};
/// A value kind read from a node (lists, mappings): `optional<Value> read(node, path, ctx)`.
template <typename K>
concept NodeKind = requires(const K& k, const Node& n, const std::string& p, Ctx& ctx) {
  { k.read(n, p, ctx) } -> std::same_as<std::optional<typename K::Value>>;
};
/// A kind whose values have a canonical text (for comparing defaults with the docs).
template <typename K>
concept Canonical = requires(const K& k, const typename K::Value& v) {
  { k.canonical(v) } -> std::same_as<std::string>;
};

template <ScalarKind K>
std::optional<typename K::Value> read_value(const K& kind, const Node& node,
                                            const std::string& path, Ctx& ctx) {
  auto text = ctx.scalar(node, path);
  if (!text) return std::nullopt;
  auto r = kind.read(*text, ctx);
  if (!r.ok()) {
    ctx.error(node, path, r.error());
    return std::nullopt;
  }
  return std::move(*r);
}
template <NodeKind K>
std::optional<typename K::Value> read_value(const K& kind, const Node& node,
                                            const std::string& path, Ctx& ctx) {
  return kind.read(node, path, ctx);
}

/// A kind's reading of a documented token, canonical; nullopt when it does not parse.
Ctx& docs_ctx();
template <typename K>
std::function<std::optional<std::string>(std::string_view)> canonical_reader(K kind) {
  if constexpr (ScalarKind<K> && Canonical<K>) {
    return [kind](std::string_view text) -> std::optional<std::string> {
      auto r = kind.read(text, docs_ctx());
      if (!r.ok()) return std::nullopt;
      return kind.canonical(*r);
    };
  } else {
    return [](std::string_view text) -> std::optional<std::string> { return std::string(text); };
  }
}

template <typename T>
using ParseFn = std::function<void(T& obj, const Node& value, const std::string& path, Ctx&)>;

/// One key of a table.
template <typename T>
struct Field {
  std::string key;
  ParseFn<T> parse;
  /// The key's own row in the docs (value and canonical reader); empty: the key holds a mapping
  /// whose keys are documented instead.
  std::function<KeyDoc(const T& proto)> row;
  /// The keys of a nested table, documented under the given path.
  std::function<void(const std::string& path, std::vector<KeyDoc>& out)> nested;
  /// Runs first, present or not, with the enclosing mapping: a check that belongs before this key
  /// in reading order, or a default computed from keys read before.
  std::function<void(T& obj, const Node& map, const std::string& map_path, Ctx&)> before;
  bool required = false;
  bool stop_on_error = false;   // an error here skips the rest of the mapping
  std::string missing_hint;     // appended to `missing required key "k"`
  std::string missing_message;  // instead of it, reported at the key's own path
  std::string words;            // what the Default column says when the default is not a literal

  Field need(std::string hint = {}) const {
    auto f = *this;
    f.required = true;
    f.missing_hint = std::move(hint);
    return f;
  }
  Field need_as(std::string message) const {
    auto f = *this;
    f.required = true;
    f.missing_message = std::move(message);
    return f;
  }
  Field preceded_by(decltype(before) fn) const {
    auto f = *this;
    f.before = std::move(fn);
    return f;
  }
  Field stops_on_error() const {
    auto f = *this;
    f.stop_on_error = true;
    return f;
  }
  Field doc(std::string default_words) const {
    auto f = *this;
    f.words = std::move(default_words);
    return f;
  }
};

/// The keys of one mapping, in the order they are read (which is the order of their errors).
template <typename T>
struct Table {
  std::vector<Field<T>> fields;
  std::function<void(T&, Ctx&)> init = {};  // a fresh object beyond T{}: context-dependent parts
  std::function<void(T&, const Node& map, const std::string& path, Ctx&)> check = {};
  std::string doc_root = {};  // a shared table is documented once under this path ("retry")

  T make(Ctx& ctx) const {
    T obj{};
    if (init) init(obj, ctx);
    return obj;
  }
};

/// Reads mapping `node` into `obj`: unknown keys, then each field in order, then the check.
/// False when `node` is not a mapping.
template <typename T>
bool parse_table(const Table<T>& table, T& obj, const Node& node, const std::string& path,
                 Ctx& ctx) {
  std::vector<std::string_view> keys;
  for (const auto& f : table.fields) keys.push_back(f.key);
  if (!ctx.expect_map(node, path, keys)) return false;
  for (const auto& f : table.fields) {
    if (f.before) f.before(obj, node, path, ctx);
    const auto errors_before = ctx.error_count();
    const Node value = node[f.key];
    if (!value) {
      if (!f.missing_message.empty()) {
        ctx.error(node, join(path, f.key), f.missing_message);
      } else if (f.required) {
        ctx.error(node, path, "missing required key \"" + f.key + "\"" + f.missing_hint);
      }
    } else {
      f.parse(obj, value, join(path, f.key), ctx);
    }
    if (f.stop_on_error && ctx.error_count() != errors_before) return true;
  }
  if (table.check) table.check(obj, node, path, ctx);
  return true;
}

/// Appends the rows of `table` (recursively) under `prefix`.
template <typename T>
void document(const Table<T>& table, const std::string& prefix, std::vector<KeyDoc>& out) {
  const std::string base = table.doc_root.empty() ? prefix : table.doc_root;
  const T proto = table.make(docs_ctx());
  for (const auto& f : table.fields) {
    const std::string path = join(base, f.key);
    if (f.row) {
      KeyDoc d = f.row(proto);
      d.path = path;
      d.required = f.required;
      d.words = f.words;
      out.push_back(std::move(d));
    }
    if (f.nested) f.nested(path, out);
  }
}

// ---- Field builders -------------------------------------------------------------------------

/// A value of `kind` stored in member `m`.
template <typename T, typename M, typename K>
Field<T> value(std::string key, M T::*m, K kind) {
  Field<T> f;
  f.key = std::move(key);
  f.parse = [m, kind](T& obj, const Node& n, const std::string& path, Ctx& ctx) {
    if (auto v = read_value(kind, n, path, ctx)) obj.*m = static_cast<M>(std::move(*v));
  };
  f.row = [m, kind](const T& proto) {
    KeyDoc d;
    if constexpr (Canonical<K> && std::is_convertible_v<M, typename K::Value>) {
      d.value = kind.canonical(static_cast<typename K::Value>(proto.*m));
    } else {
      (void)m;  // (clang: a capture used only in one branch of the if constexpr)
      (void)proto;
    }
    d.canonical = canonical_reader(kind);
    return d;
  };
  return f;
}

/// A value of `kind` handed to `set(obj, value)` (one key filling several members).
template <typename T, typename K, typename Set, typename Get>
Field<T> value_with(std::string key, K kind, Set set, Get get) {
  Field<T> f;
  f.key = std::move(key);
  f.parse = [kind, set](T& obj, const Node& n, const std::string& path, Ctx& ctx) {
    if (auto v = read_value(kind, n, path, ctx)) set(obj, std::move(*v));
  };
  f.row = [kind, get](const T& proto) {
    KeyDoc d;
    d.value = get(proto);
    d.canonical = canonical_reader(kind);
    return d;
  };
  return f;
}

/// A key parsed by hand (shapes no kind covers); documented with `.doc(words)` or `.need()`.
template <typename T>
Field<T> custom(std::string key, ParseFn<T> parse) {
  Field<T> f;
  f.key = std::move(key);
  f.parse = std::move(parse);
  f.row = [](const T&) {
    KeyDoc d;
    d.canonical = [](std::string_view text) -> std::optional<std::string> {
      return std::string(text);
    };
    return d;
  };
  return f;
}

/// A mapping read into `obj` itself (`routing.cooldown` fills RoutingConfig's cooldown_*).
template <typename T>
Field<T> section(std::string key, const Table<T>& table) {
  Field<T> f;
  f.key = std::move(key);
  f.parse = [&table](T& obj, const Node& n, const std::string& path, Ctx& ctx) {
    parse_table(table, obj, n, path, ctx);
  };
  f.nested = [&table](const std::string& path, std::vector<KeyDoc>& out) {
    document(table, path, out);
  };
  return f;
}

/// A mapping read into member `m` (a struct, or an optional one that it then sets).
template <typename T, typename M, typename U>
Field<T> nested(std::string key, M T::*m, const Table<U>& table) {
  Field<T> f;
  f.key = std::move(key);
  f.parse = [m, &table](T& obj, const Node& n, const std::string& path, Ctx& ctx) {
    if constexpr (std::is_same_v<M, U>) {
      parse_table(table, obj.*m, n, path, ctx);
    } else {  // std::optional<U>: set when the mapping reads without errors
      U sub = table.make(ctx);
      auto before = ctx.error_count();
      if (parse_table(table, sub, n, path, ctx) && ctx.error_count() == before) {
        obj.*m = std::move(sub);
      }
    }
  };
  f.nested = [&table](const std::string& path, std::vector<KeyDoc>& out) {
    document(table, path, out);
  };
  return f;
}

/// A list of mappings appended to member `m`; `shape` is the error when it is not a list
/// (or, with `non_empty`, an empty one).
template <typename T, typename U>
Field<T> list(std::string key, std::vector<U> T::*m, const Table<U>& table, std::string shape,
              bool non_empty = true) {
  Field<T> f = custom<T>(
      std::move(key),
      [m, &table, shape, non_empty](T& obj, const Node& n, const std::string& path, Ctx& ctx) {
        if (!n.IsSequence() || (non_empty && n.size() == 0)) {
          ctx.error(n, path, shape);
          return;
        }
        for (std::size_t i = 0; i < n.size(); ++i) {
          U item = table.make(ctx);
          if (parse_table(table, item, n[i], index(path, i), ctx))
            (obj.*m).push_back(std::move(item));
        }
      });
  f.nested = [&table](const std::string& path, std::vector<KeyDoc>& out) {
    document(table, path + "[]", out);
  };
  return f;
}

}  // namespace tollgate::config::schema
