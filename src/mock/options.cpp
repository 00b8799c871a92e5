#include "mock/options.hpp"

#include <charconv>
#include <limits>

namespace tollgate::mock {
namespace {

template <class T>
bool parse_uint(std::string_view s, T& out, T max = std::numeric_limits<T>::max()) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size() || s.empty() || v > max) return false;
  out = static_cast<T>(v);
  return true;
}

// "HOST:PORT" or "[V6]:PORT"; HOST may be empty (= 0.0.0.0).
bool parse_listen(std::string_view s, std::string& host, std::uint16_t& port) {
  std::string_view h;
  std::string_view p;
  if (!s.empty() && s.front() == '[') {
    auto close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':')
      return false;
    h = s.substr(1, close - 1);
    p = s.substr(close + 2);
  } else {
    auto colon = s.rfind(':');
    if (colon == std::string_view::npos) return false;
    h = s.substr(0, colon);
    p = s.substr(colon + 1);
    if (h.find(':') != std::string_view::npos) return false;  // bare IPv6 needs brackets
  }
  if (!parse_uint<std::uint16_t>(p, port)) return false;
  host = h.empty() ? std::string("0.0.0.0") : std::string(h);
  return true;
}

}  // namespace

Deployment parse_deployment(std::string_view spec) {
  Deployment d;
  auto eq = spec.find('=');
  d.name = std::string(spec.substr(0, eq));
  if (eq != std::string_view::npos && eq + 1 < spec.size()) {
    d.model = std::string(spec.substr(eq + 1));
  } else if (d.name.find("embedding") != std::string::npos) {
    d.model = d.name;
  } else {
    d.model = std::string(kDefaultChatModel);
  }
  return d;
}

std::string usage_text() {
  return R"(tollgate-mock: a mock Azure OpenAI backend (see docs/mock.md)

Usage: tollgate-mock --listen HOST:PORT [options]

  --listen HOST:PORT       address to serve on; port 0 picks a free port ([::1]:0 for IPv6)
  --threads N              worker threads, each with its own SO_REUSEPORT acceptor (default 1)
  --api-key KEY            require `api-key: KEY` or `Authorization: Bearer KEY` (else 401)
  --deployment NAME[=MODEL]  accept this deployment (repeatable); MODEL defaults to NAME when
                           NAME contains "embedding", else gpt-4o-2024-11-20. Without any
                           --deployment every name is accepted.
  --name INSTANCE          instance name: x-mock-instance header and generated ids (default mock)
  --region REGION          x-ms-region header (default "East US")
  --pace-ms N              delay between SSE content chunks (default 5)
  --chunks N               content chunks = completion tokens per choice (default 10)
  --ttft-ms N              delay before the first byte of a successful reply (default 0)
  --tls-cert FILE --tls-key FILE   serve HTTPS (PEM files)
  --tpm N                  tokens-per-minute limit (60 s sliding window, Azure-style 429)
  --max-in-flight N        reject requests beyond N concurrent ones with 429 (retry-after-ms: 100)
  --ptu                    add azure-openai-deployment-utilization: NN.N%
  --capture N              size of the captured-request ring (default 1000; 0 disables capture)
  --help                   print this text

On start it prints one line to stdout:
  {"level":"info","msg":"listening","listener":"mock","address":"HOST:PORT"}
SIGTERM/SIGINT stop it (exit 0). Control API: /_mock/{stats,requests,faults,reset,health}.
)";
}

CliResult parse_cli(int argc, const char* const* argv) {
  Options o;
  std::string errors;
  bool listen_seen = false;
  auto error = [&](std::string msg) { errors += "tollgate-mock: " + msg + "\n"; };

  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view value;
    bool has_inline = false;
    if (arg.starts_with("--")) {
      if (auto eq = arg.find('='); eq != std::string_view::npos) {
        value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
        has_inline = true;
      }
    }
    auto take = [&]() -> bool {
      if (has_inline) return true;
      if (i + 1 >= argc) {
        error(std::string(arg) + ": missing value");
        return false;
      }
      value = argv[++i];
      return true;
    };
    auto uint_opt = [&]<class T>(T& out, T max) {
      if (!take()) return;
      if (!parse_uint<T>(value, out, max)) {
        error(std::string(arg) + ": expected a non-negative integer (got \"" + std::string(value) +
              "\")");
      }
    };

    if (arg == "--help" || arg == "-h") {
      return CliResult{std::nullopt, usage_text(), 0};
    } else if (arg == "--listen") {
      if (!take()) continue;
      listen_seen = true;
      if (!parse_listen(value, o.listen_host, o.listen_port)) {
        error("--listen: expected HOST:PORT or [IPV6]:PORT (got \"" + std::string(value) + "\")");
      }
    } else if (arg == "--threads") {
      uint_opt(o.threads, 256u);
      if (o.threads == 0) error("--threads: must be at least 1");
    } else if (arg == "--api-key") {
      if (!take()) continue;
      if (value.empty()) error("--api-key: must not be empty");
      o.api_key = std::string(value);
    } else if (arg == "--deployment") {
      if (!take()) continue;
      Deployment d = parse_deployment(value);
      if (d.name.empty()) {
        error("--deployment: expected NAME[=MODEL] (got \"" + std::string(value) + "\")");
      } else {
        o.deployments.push_back(std::move(d));
      }
    } else if (arg == "--name") {
      if (!take()) continue;
      if (value.empty()) error("--name: must not be empty");
      o.name = std::string(value);
    } else if (arg == "--region") {
      if (!take()) continue;
      o.region = std::string(value);
    } else if (arg == "--pace-ms") {
      unsigned v = 0;
      uint_opt(v, 3'600'000u);
      o.pace = std::chrono::milliseconds(v);
    } else if (arg == "--chunks") {
      uint_opt(o.chunks, 100'000u);
    } else if (arg == "--ttft-ms") {
      unsigned v = 0;
      uint_opt(v, 3'600'000u);
      o.ttft = std::chrono::milliseconds(v);
    } else if (arg == "--tls-cert") {
      if (take()) o.tls_cert = std::string(value);
    } else if (arg == "--tls-key") {
      if (take()) o.tls_key = std::string(value);
    } else if (arg == "--tpm") {
      uint_opt(o.tpm, std::uint64_t{1} << 40);
    } else if (arg == "--max-in-flight") {
      uint_opt(o.max_in_flight, 1'000'000u);
    } else if (arg == "--ptu") {
      if (has_inline) error("--ptu: takes no value");
      o.ptu = true;
    } else if (arg == "--capture") {
      uint_opt(o.capture, std::size_t{1'000'000});
    } else {
      error("unknown argument \"" + std::string(argv[i]) + "\" (see --help)");
    }
  }
  if (!listen_seen) error("--listen HOST:PORT is required");
  if (o.tls_cert.empty() != o.tls_key.empty()) error("--tls-cert and --tls-key go together");
  if (!errors.empty()) return CliResult{std::nullopt, errors, 2};
  return CliResult{std::move(o), {}, 0};
}

}  // namespace tollgate::mock
