#pragma once
// Command-line options of tollgate-mock (see docs/mock.md for the full CLI).

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::mock {

/// The model a deployment name maps to when no --deployment is given (chat, completions,
/// responses) and for embeddings requests in that mode.
inline constexpr std::string_view kDefaultChatModel = "gpt-4o-2024-11-20";
inline constexpr std::string_view kDefaultEmbeddingModel = "text-embedding-3-small";

struct Deployment {
  std::string name;   // as the client spells it in the path or in `model` (already decoded)
  std::string model;  // the underlying model reported in bodies
};

/// Everything the mock can be told at start. Immutable once the server starts.
struct Options {
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 0;  // 0 = ephemeral
  unsigned threads = 1;
  std::optional<std::string> api_key;   // when set, inference calls must carry it
  std::vector<Deployment> deployments;  // empty = accept any deployment name
  std::string name = "mock";            // x-mock-instance and part of generated ids
  std::string region = "East US";
  std::chrono::milliseconds pace{5};  // between SSE content chunks
  unsigned chunks = 10;               // content chunks (= completion tokens) per choice
  std::chrono::milliseconds ttft{0};  // before the first byte of a successful inference reply
  std::string tls_cert;               // both set = HTTPS
  std::string tls_key;
  std::uint64_t tpm = 0;       // 0 = no token limit
  unsigned max_in_flight = 0;  // 0 = unlimited
  bool ptu = false;            // adds azure-openai-deployment-utilization
  std::size_t capture = 1000;  // captured-request ring size; 0 disables capture

  bool tls() const { return !tls_cert.empty(); }
};

/// Result of parsing argv: either options to run with, or text to print and an exit code
/// (--help prints usage and exits 0; a usage error prints every problem and exits 2).
struct CliResult {
  std::optional<Options> options;
  std::string message;  // usage text or the error list; empty when options are set
  int exit_code = 0;
};

/// Parses the tollgate-mock command line. Never throws; reports every error, not just the first.
CliResult parse_cli(int argc, const char* const* argv);

/// The --help text.
std::string usage_text();

/// Parses `NAME[=MODEL]`; MODEL defaults to NAME when NAME contains "embedding", else to
/// kDefaultChatModel.
Deployment parse_deployment(std::string_view spec);

}  // namespace tollgate::mock
