// Loads a config file: YAML syntax, then the schema walk (tables.cpp), which collects every error
// with its position ("file:line:col: key.path: message") instead of stopping at the first one.
// The only yaml-cpp user with values.cpp and tables.cpp.

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "config/tables.hpp"
#include "tollgate/config/config.hpp"

namespace tollgate::config {

const ClientConfig* Config::find_client(std::string_view name) const {
  for (const auto& c : clients) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

const DeploymentConfig* Config::find_deployment(std::string_view name) const {
  auto it = deployment_by_name.find(std::string(name));
  return it == deployment_by_name.end() ? nullptr : &deployments[it->second];
}

EnvLookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

std::optional<Millis> parse_duration(std::string_view text) {
  std::uint64_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc{} || ptr == text.data()) return std::nullopt;
  std::string_view unit(ptr, text.data() + text.size() - ptr);
  if (n > 10'000'000'000ULL) return std::nullopt;
  if (unit == "ms") return Millis(n);
  if (unit == "s") return Millis(n * 1000);
  if (unit == "m") return Millis(n * 60'000);
  if (unit == "h") return Millis(n * 3'600'000);
  return std::nullopt;
}

std::optional<std::size_t> parse_size(std::string_view text) {
  std::uint64_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc{} || ptr == text.data()) return std::nullopt;
  std::string_view unit(ptr, text.data() + text.size() - ptr);
  std::uint64_t mult = 0;
  if (unit.empty() || unit == "B") mult = 1;
  if (unit == "KiB") mult = 1ULL << 10;
  if (unit == "MiB") mult = 1ULL << 20;
  if (unit == "GiB") mult = 1ULL << 30;
  if (unit == "KB" || unit == "kB") mult = 1000;
  if (unit == "MB") mult = 1000 * 1000;
  if (unit == "GB") mult = 1000 * 1000 * 1000;
  if (mult == 0 || n > (1ULL << 40) / mult) return std::nullopt;
  return static_cast<std::size_t>(n * mult);
}

LoadResult load_string(const std::string& yaml, const std::string& source_name,
                       const EnvLookup& env) {
  auto c = std::make_shared<Config>();
  c->source = source_name;
  schema::Ctx ctx(source_name, env, c.get());
  try {
    auto root = YAML::Load(yaml);
    if (!root.IsMap()) {
      ctx.error(root, "", "the configuration must be a YAML mapping");
    } else {
      schema::parse_config(root, ctx);
    }
  } catch (const YAML::Exception& e) {
    ctx.error(e.mark, "", "YAML syntax error: " + e.msg);
  }
  LoadResult result;
  result.errors = ctx.take_errors();
  if (!result.errors.empty()) return result;
  if (c->server.workers == 0) c->server.workers = std::max(1u, std::thread::hardware_concurrency());
  result.config = std::move(c);
  return result;
}

LoadResult load_file(const std::string& path, const EnvLookup& env) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    LoadResult r;
    r.errors.push_back(path + ":1:1: (root): cannot read the configuration file");
    return r;
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return load_string(text, path, env);
}

}  // namespace tollgate::config
