// tollgate: the gateway daemon and its operator commands.

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>

#include "tollgate/crypto/crypto.hpp"
#include "tollgate/config/config.hpp"
#include "tollgate/metrics/logging.hpp"
#include "tollgate/server/gateway.hpp"
#include "tollgate/tokenize/cli.hpp"
#include "tollgate/tokenize/encoding.hpp"

namespace {

constexpr const char* kUsage = R"(tollgate — an AI gateway for Azure OpenAI

Usage:
  tollgate [--config FILE]          run the gateway (FILE defaults to $TOLLGATE_CONFIG)
  tollgate --check-config FILE      validate FILE, print every error, exit 0 (valid) or 1
  tollgate count-tokens (--encoding NAME | --model NAME) [--request chat|completions|embeddings]
                        [--ids] [--data-dir DIR]
                                    count the tokens of stdin (text, or a JSON request body)
  tollgate keys new                 print a new client key and the sha256: line for the config
  tollgate --version                print the version
  tollgate --help                   this text

Signals: SIGHUP reloads the configuration; SIGUSR1 reopens the access log file;
SIGTERM/SIGINT drain and exit.
Documentation: docs/configuration.md, docs/operations.md
)";

// The tokenizer's rank files are checked at start-up (sha256 included), so a bad install fails
// at deploy time rather than when token counting is first needed; so are the files TLS to the
// cluster's Redis needs.
std::optional<std::string> check_files(const tollgate::config::Config& cfg) {
  auto problem = tollgate::tokenize::verify_data_dir(cfg.tokenizer.data_dir);
  if (!problem) return tollgate::server::startup_problem(cfg);
  return cfg.source + ": tokenizer.data_dir: " + problem->message;
}

int check_config(const std::string& path) {
  auto result = tollgate::config::load_file(path);
  for (const auto& e : result.errors) std::cerr << e << '\n';
  if (!result.ok()) {
    std::cerr << path << ": " << result.errors.size() << " error(s)\n";
    return 1;
  }
  if (auto e = check_files(*result.config)) {
    std::cerr << *e << '\n';
    return 1;
  }
  std::cout << path << ": ok (" << result.config->backends.size() << " backends, "
            << result.config->deployments.size() << " deployments)\n";
  return 0;
}

int run(const std::string& path) {
  auto result = tollgate::config::load_file(path);
  if (!result.ok()) {
    for (const auto& e : result.errors) std::cerr << e << '\n';
    std::cerr << "tollgate: not starting: " << result.errors.size()
              << " configuration error(s)\n";
    return 1;
  }
  if (auto e = check_files(*result.config)) {
    std::cerr << *e << "\ntollgate: not starting\n";
    return 1;
  }
  tollgate::metrics::setup_logging(result.config->logging.level);
  try {
    tollgate::server::Gateway gateway(path, result.config);
    return gateway.run();
  } catch (const std::exception& e) {
    tollgate::metrics::log_error("cannot start", tollgate::core::JsonFields().add("error", e.what()));
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  if (const char* env = std::getenv("TOLLGATE_CONFIG")) config_path = env;
  if (argc >= 2 && std::strcmp(argv[1], "keys") == 0) {
    if (argc != 3 || std::strcmp(argv[2], "new") != 0) {
      std::cerr << "usage: tollgate keys new\n";
      return 2;
    }
    // The key goes to the client; only the digest goes into the configuration.
    auto key = tollgate::crypto::new_key();
    std::cout << key << '\n' << "sha256:" << tollgate::crypto::to_hex(tollgate::crypto::sha256(key)) << '\n';
    std::cerr << "Give the first line to the client; put the second in clients[].keys.\n";
    return 0;
  }
  if (argc >= 2 && std::strcmp(argv[1], "count-tokens") == 0) {
    return tollgate::tokenize::count_tokens_main(argc - 1, argv + 1);
  }
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (arg == "--version") {
      std::cout << "tollgate " << TOLLGATE_VERSION << '\n';
      return 0;
    }
    if ((arg == "--config" || arg == "-c" || arg == "--check-config") && i + 1 < argc) {
      std::string value = argv[++i];
      if (arg == "--check-config") return check_config(value);
      config_path = value;
      continue;
    }
    std::cerr << "tollgate: unknown or incomplete argument \"" << arg << "\"\n\n" << kUsage;
    return 2;
  }
  if (config_path.empty()) {
    std::cerr << "tollgate: no configuration: pass --config FILE or set TOLLGATE_CONFIG\n";
    return 2;
  }
  return run(config_path);
}
