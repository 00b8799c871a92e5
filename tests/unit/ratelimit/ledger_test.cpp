// The usage ledger against a real SQLite file: records written in batches and read back as
// totals, close() flushing what is queued, a file that is not a ledger, and a disk that refuses
// writes (a file size limit: EFBIG, like a full disk) — records wait in bounded memory, nothing
// written is corrupted, and they are written once the disk takes them again.
#include "tollgate/usage/ledger.hpp"

#include <gtest/gtest.h>

#include "../disk_faults.hpp"
#include <sys/resource.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

namespace tollgate::usage {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// A temporary directory and a disk that refuses writes: tests/unit/disk_faults.hpp.
struct TempDir : testing::TempDir {
  TempDir() : testing::TempDir("tollgate-ledger") {}
};
using testing::NoFileGrowth;

Record record(std::string id, std::string client, std::string tenant, std::int64_t time_ms) {
  Record r;
  r.time_ms = time_ms;
  r.request_id = std::move(id);
  r.client = std::move(client);
  r.tenant = std::move(tenant);
  r.deployment = "gpt-4o";
  r.backend = "ptu";
  r.operation = "chat.completions";
  r.tier = 1;
  r.status = 200;
  r.prompt_tokens = 7;
  r.completion_tokens = 10;
  r.cached_tokens = 2;
  r.reasoning_tokens = 1;
  r.cost_nano_usd = 117500;
  r.latency_us = 1500;
  r.outcome = "ok";
  return r;
}

TEST(Ledger, WritesBatchesAndReadsTotals) {
  TempDir dir;
  auto path = (dir.path / "usage.db").string();
  {
    Ledger ledger(Options{path, 50ms, 100, 1000});
    for (int i = 0; i < 250; ++i) {
      auto r = record("r" + std::to_string(i), i % 5 == 0 ? "alice" : "bob", "t1", 1000 + i);
      r.estimated = i % 10 == 0;
      ledger.submit(std::move(r));
    }
    EXPECT_EQ(ledger.close(2s), 0u);
    EXPECT_EQ(ledger.written(), 250u);
    EXPECT_EQ(ledger.queued(), 0u);
    EXPECT_EQ(ledger.write_errors(), 0u);
  }
  auto rows = totals(path, GroupBy::kClient, 0, 1'000'000);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].key, "alice");
  EXPECT_EQ(rows[0].requests, 50);
  EXPECT_EQ(rows[0].prompt_tokens, 350);
  EXPECT_EQ(rows[0].estimated_requests, 25);
  EXPECT_EQ(rows[1].key, "bob");
  EXPECT_EQ(rows[1].requests, 200);
  EXPECT_EQ(rows[1].completion_tokens, 2000);
  EXPECT_EQ(rows[1].cached_tokens, 400);
  EXPECT_EQ(rows[1].reasoning_tokens, 200);
  EXPECT_EQ(rows[1].cost_nano_usd, 200 * 117500);
  // [from, to) on the record time.
  rows = totals(path, GroupBy::kTenant, 1100, 1200);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].requests, 100);
  EXPECT_TRUE(totals(path, GroupBy::kBackend, 5000, 6000).empty());
  // Reopening appends.
  Ledger again(Options{path, 10ms, 100, 1000});
  again.submit(record("x", "carol", "t2", 2000));
  again.close(2s);
  EXPECT_EQ(totals(path, GroupBy::kDeployment, 0, 1'000'000)[0].requests, 251);
}

TEST(Ledger, RefusesAFileThatIsNotALedger) {
  TempDir dir;
  auto path = (dir.path / "other.db").string();
  {
    std::ofstream out(path);
    out << "this is not an SQLite database, not even close, but long enough to look at it";
  }
  try {
    Ledger ledger(Options{path});
    FAIL() << "opened a non-database";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  EXPECT_THROW(Ledger(Options{(dir.path / "missing" / "usage.db").string()}), std::runtime_error);
}

TEST(Ledger, KeepsRecordsWhileTheDiskRefusesThem) {
  TempDir dir;
  auto path = (dir.path / "usage.db").string();
  Ledger ledger(Options{path, 10ms, 50, 300});
  for (int i = 0; i < 20; ++i) ledger.submit(record("a" + std::to_string(i), "alice", "t", 100 + i));
  for (int i = 0; i < 200 && ledger.written() < 20; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(ledger.written(), 20u);
  NoFileGrowth full_disk;
  for (int i = 0; i < 400; ++i) ledger.submit(record("b" + std::to_string(i), "bob", "t", 200 + i));
  // The writer counts the error before it puts the failed batch back: wait for both (bounded).
  auto settled = [&] { return ledger.write_errors() > 0 && ledger.queued() == 300u && ledger.dropped() == 100u; };
  for (int i = 0; i < 300 && !settled(); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_GT(ledger.write_errors(), 0u);
  EXPECT_FALSE(ledger.healthy());
  EXPECT_EQ(ledger.queued(), 300u);   // bounded: the oldest 100 were dropped
  EXPECT_EQ(ledger.dropped(), 100u);
  full_disk.lift();
  for (int i = 0; i < 1000 && ledger.queued() > 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(ledger.close(2s), 0u);
  EXPECT_TRUE(ledger.healthy());
  EXPECT_EQ(ledger.written(), 320u);
  auto rows = totals(path, GroupBy::kClient, 0, 1'000'000);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].requests, 20);   // alice: written before, intact
  EXPECT_EQ(rows[1].requests, 300);  // bob: the newest 300, each once
}

TEST(Ledger, CloseGivesUpAfterItsTimeoutWhenTheDiskStillRefuses) {
  TempDir dir;
  auto path = (dir.path / "usage.db").string();
  Ledger ledger(Options{path, 10ms, 50, 1000});
  NoFileGrowth full_disk;
  for (int i = 0; i < 10; ++i) ledger.submit(record("c" + std::to_string(i), "carol", "t", i));
  auto t0 = std::chrono::steady_clock::now();
  auto lost = ledger.close(300ms);
  auto took = std::chrono::steady_clock::now() - t0;
  full_disk.lift();
  EXPECT_EQ(lost, 10u);
  EXPECT_LT(took, 5s);  // bounded, not the writer's full backoff
}

}  // namespace
}  // namespace tollgate::usage
