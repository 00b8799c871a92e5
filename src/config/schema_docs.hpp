#pragma once
// What the schema tables say about each key, for the test that ties them to
// docs/configuration.md. Plain C++: no yaml-cpp here.

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::config {

/// One key as the schema declares it.
struct KeyDoc {
  std::string path;       // as documented: "backends[].timeouts.connect", "limits.budget.warn_at"
  bool required = false;  // the Type column says "required"
  std::string words;      // non-empty: the Default column must contain these words
  std::string value;      // otherwise: the default (the struct's member initialiser), canonical
  /// The canonical value of a token written in the docs ("60s" -> "60000ms"); nullopt if it does
  /// not parse as this key's kind.
  std::function<std::optional<std::string>(std::string_view)> canonical;
};

/// Every key of every schema table, each shared table (limits, budget, price, retry) once.
std::vector<KeyDoc> documented_keys();

}  // namespace tollgate::config
