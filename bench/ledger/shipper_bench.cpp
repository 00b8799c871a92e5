// The fleet ledger's shipper, measured against a real PostgreSQL (bench/ledger/run.sh starts
// one): N records written to a fresh spool through the real Ledger, then the real Shipper drains
// that backlog into a fresh table. Prints the spool's write rate and the shipper's sustained
// rate (records/s) per batch size, and the records PostgreSQL already held (0 expected).
//
//   bench_shipper --pg-url postgresql://... [--records 200000] [--batches 100,1000,3000]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "tollgate/usage/ledger.hpp"
#include "tollgate/usage/shipper.hpp"

namespace {

using namespace std::chrono;
using tollgate::usage::Ledger;
using tollgate::usage::Record;
using tollgate::usage::Shipper;

Record record(int i) {
  Record r;
  r.time_ms = 1'790'000'000'000 + i;
  r.request_id = "bench-" + std::to_string(i);
  r.client = "client-" + std::to_string(i % 50);
  r.tenant = "tenant-" + std::to_string(i % 7);
  r.deployment = "gpt-4o";
  r.backend = "aoai-eastus";
  r.operation = "chat.completions";
  r.tier = 1;
  r.status = 200;
  r.prompt_tokens = 900 + i % 300;
  r.completion_tokens = 150 + i % 90;
  r.cost_nano_usd = 3'750'000;
  r.latency_us = 850'000;
  r.ttft_us = 310'000;
  r.outcome = "ok";
  return r;
}

std::vector<std::size_t> parse_list(const std::string& s) {
  std::vector<std::size_t> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoul(item));
  return out;
}

double seconds_since(steady_clock::time_point t0) {
  return duration<double>(steady_clock::now() - t0).count();
}

// One run: a fresh spool of `n` records, drained by a shipper with `batch`. False on a timeout.
bool run(const std::string& url, int n, std::size_t batch) {
  auto dir = std::filesystem::temp_directory_path() / ("tollgate-shipbench-" + std::to_string(getpid()) + "-" + std::to_string(batch));
  std::filesystem::create_directories(dir);
  auto spool = (dir / "usage.db").string();
  auto t0 = steady_clock::now();
  {
    tollgate::usage::Options o{.path = spool, .flush_interval = milliseconds(50), .batch_size = 5000};
    o.replica = "bench";
    Ledger ledger(std::move(o));
    for (int i = 0; i < n; ++i) ledger.submit(record(i));
    ledger.close(seconds(60));
  }
  double write_s = seconds_since(t0);
  tollgate::config::PostgresLedgerConfig pg;
  pg.url = url;
  pg.where = "bench";
  pg.table = "bench_" + std::to_string(getpid()) + "_" + std::to_string(batch);
  pg.batch_size = batch;
  pg.flush_interval = milliseconds(20);
  pg.timeout = seconds(30);
  auto t1 = steady_clock::now();
  Shipper shipper(spool, pg);
  bool done = false;
  while (seconds_since(t1) < 600) {
    if (shipper.shipped() >= static_cast<std::uint64_t>(n)) {
      done = true;
      break;
    }
    std::this_thread::sleep_for(milliseconds(2));
  }
  double ship_s = seconds_since(t1);
  shipper.close(seconds(1));
  std::printf("| %zu | %d | %.0f | %.2f | %.0f | %llu |\n", batch, n, n / write_s, ship_s,
              done ? n / ship_s : 0.0, static_cast<unsigned long long>(shipper.duplicates()));
  std::filesystem::remove_all(dir);
  return done;
}

}  // namespace

int main(int argc, char** argv) {
  std::string url;
  int records = 200'000;
  std::vector<std::size_t> batches{100, 1000, 3000};
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--pg-url") url = argv[i + 1];
    else if (a == "--records") records = std::atoi(argv[i + 1]);
    else if (a == "--batches") batches = parse_list(argv[i + 1]);
  }
  if (url.empty()) {
    std::fprintf(stderr, "usage: bench_shipper --pg-url URL [--records N] [--batches 100,1000]\n");
    return 2;
  }
  std::printf("| batch_size | records | spool writes/s | ship time s | shipped records/s | duplicates |\n");
  std::printf("|---|---|---|---|---|---|\n");
  bool ok = true;
  for (auto b : batches) ok = run(url, records, b) && ok;
  return ok ? 0 : 1;
}
