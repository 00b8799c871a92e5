// The schema tables and docs/configuration.md agree: every key the loader accepts has a row
// ("| `key.path` | Type | Default | Meaning |") whose Default column holds the key's default (the
// struct's member initialiser, compared by value: `60s` and `1m` are the same), or whose Type
// column says "required".

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "config/schema_docs.hpp"

using tollgate::config::documented_keys;
using tollgate::config::KeyDoc;

namespace {

struct Row {
  std::string type;
  std::string default_value;
};

std::string trim(const std::string& s) {
  auto b = s.find_first_not_of(' ');
  auto e = s.find_last_not_of(' ');
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

std::vector<std::string> cells(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream in(line);
  std::string cell;
  std::getline(in, cell, '|');  // before the first bar
  while (std::getline(in, cell, '|')) out.push_back(trim(cell));
  if (!out.empty() && out.back().empty()) out.pop_back();
  return out;
}

std::vector<std::string> backticked(const std::string& text) {
  std::vector<std::string> out;
  for (auto open = text.find('`'); open != std::string::npos; open = text.find('`', open + 1)) {
    auto close = text.find('`', open + 1);
    if (close == std::string::npos) break;
    out.push_back(text.substr(open + 1, close - open - 1));
    open = close;
  }
  return out;
}

/// The key rows of every "| Key | ... |" table, by key path.
std::map<std::string, Row> key_rows(std::istream& markdown) {
  std::map<std::string, Row> rows;
  bool in_key_table = false;
  std::ptrdiff_t type_col = -1;
  std::ptrdiff_t default_col = -1;
  for (std::string line; std::getline(markdown, line);) {
    if (line.rfind("|", 0) != 0) in_key_table = false;  // a table ends at its first other line
    if (line.rfind("| Key |", 0) == 0) {
      in_key_table = true;
      auto head = cells(line);
      auto col = [&](const char* name) -> std::ptrdiff_t {
        auto it = std::find(head.begin(), head.end(), name);
        return it == head.end() ? -1 : it - head.begin();
      };
      type_col = col("Type");
      default_col = col("Default");
    } else if (in_key_table && line.rfind("| `", 0) == 0) {
      auto c = cells(line);
      auto keys = backticked(c[0]);
      if (keys.empty()) continue;
      auto at = [&](std::ptrdiff_t i) {
        return i >= 0 && i < std::ssize(c) ? c[i] : std::string();
      };
      rows.emplace(keys[0], Row{at(type_col), at(default_col)});
    }
  }
  return rows;
}

/// What is wrong with the docs of `keys`, one line per problem.
std::vector<std::string> problems(const std::vector<KeyDoc>& keys,
                                  const std::map<std::string, Row>& rows) {
  std::vector<std::string> out;
  for (const auto& k : keys) {
    auto it = rows.find(k.path);
    if (it == rows.end()) {
      out.push_back(k.path + ": no row");
      continue;
    }
    const Row& row = it->second;
    if (k.required) {
      if (row.type.find("required") == std::string::npos)
        out.push_back(k.path + ": not marked required");
    } else if (!k.words.empty()) {
      if (row.default_value.find(k.words) == std::string::npos) {
        out.push_back(k.path + ": Default should say " + k.words);
      }
    } else if (k.value.empty()) {
      out.push_back(k.path + ": the schema records no default (give the field .doc(words))");
    } else {
      auto tokens = backticked(row.default_value);
      bool same = std::any_of(tokens.begin(), tokens.end(),
                              [&](const std::string& t) { return k.canonical(t) == k.value; });
      if (!same) out.push_back(k.path + ": Default should be " + k.value);
    }
  }
  return out;
}

std::map<std::string, Row> rows_of(const std::string& markdown) {
  std::istringstream in(markdown);
  return key_rows(in);
}

KeyDoc find_key(const std::vector<KeyDoc>& keys, const std::string& path) {
  auto it = std::find_if(keys.begin(), keys.end(), [&](const KeyDoc& k) { return k.path == path; });
  EXPECT_NE(it, keys.end()) << path;
  return it == keys.end() ? KeyDoc{} : *it;
}

TEST(ConfigSchemaTest, EveryKeyIsDocumentedWithItsDefault) {
  std::ifstream docs(TOLLGATE_FIXTURES "/../../docs/configuration.md");
  ASSERT_TRUE(docs) << "docs/configuration.md";
  auto keys = documented_keys();
  ASSERT_GT(keys.size(), 100u);
  auto rows = key_rows(docs);
  EXPECT_EQ(problems(keys, rows), std::vector<std::string>{});
}

TEST(ConfigSchemaTest, DefaultsComeFromTheStructsAndCompareByValue) {
  auto keys = documented_keys();
  EXPECT_EQ(find_key(keys, "server.limits.max_request_body").value, "8388608");  // 8MiB
  EXPECT_EQ(find_key(keys, "routing.cooldown.max").value, "60000ms");
  EXPECT_EQ(find_key(keys, "retry.budget").value, "0.2");
  EXPECT_EQ(find_key(keys, "backends[].health_check.type").value, "http");
  EXPECT_EQ(find_key(keys, "priority.classes").value, "[high, normal, low]");
  EXPECT_TRUE(find_key(keys, "backends[].name").required);
  auto connect = find_key(keys, "backends[].timeouts.connect");
  EXPECT_EQ(connect.canonical("5s"), "5000ms");
  EXPECT_EQ(connect.canonical("5000ms"), "5000ms");
  EXPECT_FALSE(connect.canonical("soon"));
}

TEST(ConfigSchemaTest, TheDocsCheckFailsOnAMissingKeyOrAWrongDefault) {
  std::vector<KeyDoc> keys = {
      find_key(documented_keys(), "routing.cooldown.max"),
      find_key(documented_keys(), "routing.breaker.failures"),
      find_key(documented_keys(), "backends[].name"),
      find_key(documented_keys(), "backends[].region"),
  };
  auto rows = rows_of(R"(| Key | Type | Default | Meaning |
|---|---|---|---|
| `routing.cooldown.max` | duration | `1m` | Same value as 60s. |
| `routing.breaker.failures` | integer | `6` | Wrong. |
| `backends[].name` | string | | Not marked. |
| `backends[].region` | string | | No words. |
)");
  EXPECT_EQ(problems(keys, rows),
            (std::vector<std::string>{"routing.breaker.failures: Default should be 5",
                                      "backends[].name: not marked required",
                                      "backends[].region: Default should say none"}));
  rows.erase("routing.cooldown.max");
  EXPECT_EQ(problems(keys, rows).front(), "routing.cooldown.max: no row");
}

}  // namespace
