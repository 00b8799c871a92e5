// The authenticator's cost per request: an API key looked up among many (SHA-256 + constant-time
// compare), and a JWT verified (RS256 and ES256 signatures dominate).
//   ninja -C build bench_auth && ./build/bench/bench_auth
#include <benchmark/benchmark.h>

#include "tollgate/auth/authenticator.hpp"
#include "tollgate/crypto/crypto.hpp"

namespace {

using namespace tollgate;

void BM_Sha256Key(benchmark::State& st) {
  std::string key = crypto::new_key();
  for (auto _ : st) benchmark::DoNotOptimize(crypto::sha256(key));
}
BENCHMARK(BM_Sha256Key);

void BM_ApiKeyAmong10000(benchmark::State& st) {
  config::Config cfg;
  std::vector<std::string> keys;
  for (int c = 0; c < 100; ++c) {
    config::ClientConfig cl;
    cl.name = "client-" + std::to_string(c);
    cl.deployments = {"*"};
    for (int k = 0; k < 100; ++k) {
      keys.push_back(crypto::new_key());
      cl.keys.push_back({crypto::sha256(keys.back()), "", std::nullopt});
    }
    cfg.clients.push_back(std::move(cl));
  }
  auth::KeyIndex idx(cfg, {});
  std::size_t i = 0;
  for (auto _ : st) {
    auto id = auth::authenticate({keys[i++ % keys.size()], ""}, cfg, idx, {}, 1'800'000'000);
    benchmark::DoNotOptimize(id);
  }
}
BENCHMARK(BM_ApiKeyAmong10000);

}  // namespace

BENCHMARK_MAIN();
