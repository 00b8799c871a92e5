// The affinity table's owner records in the usage ledger, against a real SQLite file: what the
// journal saves loads back (owner, billing, remaining lifetime), an erased id is gone, expired
// records are neither loaded nor kept (purged at open and by the writer), and a ledger file from
// before the objects table gets it. Unix time comes from a fake clock.
#include <gtest/gtest.h>

#include "../disk_faults.hpp"
#include <sqlite3.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <filesystem>
#include <thread>

#include "tollgate/usage/ledger.hpp"

namespace tollgate::usage {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using routing::Billing;
using routing::ObjectOwner;
using routing::StoredObject;

constexpr core::UnixMs kT0 = 1'780'000'000'000;

// A temporary directory and a disk that refuses writes: tests/unit/disk_faults.hpp.
struct TempDir : testing::TempDir {
  TempDir() : testing::TempDir("tollgate-objects") {}
};
using testing::NoFileGrowth;

struct FakeClock : core::Clock {
  std::atomic<core::UnixMs> unix{kT0};
  core::UnixMs unix_ms() const override { return unix.load(); }
};

StoredObject object(std::string id, std::string backend, routing::TimeMs expires_in,
                    Billing billing = Billing::kSettled) {
  return StoredObject{std::move(id), ObjectOwner{std::move(backend), "gpt-4o", "app", "contoso"},
                      billing, expires_in};
}

std::vector<std::string> ids(const std::vector<StoredObject>& objects) {
  std::vector<std::string> out;
  for (const auto& o : objects) out.push_back(o.id);
  return out;
}

Options options(const std::string& path, const FakeClock& clock) {
  return Options{.path = path, .flush_interval = 10ms, .clock = &clock};
}

TEST(LedgerObjects, SavedRecordsLoadBackWithOwnerBillingAndLifetime) {
  TempDir dir;
  auto path = (dir.path / "usage.db").string();
  FakeClock clock;
  {
    Ledger ledger(options(path, clock));
    ledger.saved(object("resp_1", "east", 60'000, Billing::kPending));
    ledger.saved(object("file-1", "west", 1'000));
    ledger.saved(object("resp_2", "east", 5'000));
    ledger.saved(object("resp_2", "west", 9'000));  // the later save wins
    EXPECT_EQ(ledger.close(2s), 0u);
  }
  auto loaded = load_objects(path, kT0 + 500);
  ASSERT_EQ(ids(loaded), (std::vector<std::string>{"file-1", "resp_2", "resp_1"}));
  EXPECT_EQ(loaded[0].expires_in_ms, 500);
  EXPECT_EQ(loaded[0].billing, Billing::kSettled);
  EXPECT_EQ(loaded[1].owner.backend, "west");
  EXPECT_EQ(loaded[1].expires_in_ms, 8'500);
  const auto& r = loaded[2];
  EXPECT_EQ(r.owner.backend, "east");
  EXPECT_EQ(r.owner.deployment, "gpt-4o");
  EXPECT_EQ(r.owner.client, "app");
  EXPECT_EQ(r.owner.tenant, "contoso");
  EXPECT_EQ(r.billing, Billing::kPending);
  EXPECT_EQ(r.expires_in_ms, 59'500);
}

TEST(LedgerObjects, AnErasedIdIsGone) {
  TempDir dir;
  auto path = (dir.path / "usage.db").string();
  FakeClock clock;
  {
    Ledger ledger(options(path, clock));
    ledger.saved(object("resp_1", "east", 60'000));
    ledger.saved(object("resp_2", "east", 60'000));
    ledger.erased("resp_1");  // in the same batch: order kept
    ledger.close(2s);
  }
  EXPECT_EQ(ids(load_objects(path, kT0)), (std::vector<std::string>{"resp_2"}));
  {
    Ledger ledger(options(path, clock));  // a later run forgets one it restored
    ledger.erased("resp_2");
    ledger.close(2s);
  }
  EXPECT_TRUE(load_objects(path, kT0).empty());
}

TEST(LedgerObjects, ExpiredRecordsAreNotLoadedAndArePurgedAtOpen) {
  TempDir dir;
  auto path = (dir.path / "usage.db").string();
  FakeClock clock;
  {
    Ledger ledger(options(path, clock));
    ledger.saved(object("resp_old", "east", 1'000));
    ledger.saved(object("resp_new", "east", 100'000));
    ledger.close(2s);
  }
  EXPECT_EQ(ids(load_objects(path, kT0 + 2'000)), (std::vector<std::string>{"resp_new"}));
  EXPECT_EQ(load_objects(path, 0).size(), 2u);  // still in the file
  clock.unix = kT0 + 2'000;
  { Ledger reopened(options(path, clock)); }
  EXPECT_EQ(ids(load_objects(path, 0)), (std::vector<std::string>{"resp_new"}));
}

TEST(LedgerObjects, TheWriterPurgesExpiredRecordsPeriodically) {
  TempDir dir;
  auto path = (dir.path / "usage.db").string();
  FakeClock clock;
  auto opts = options(path, clock);
  opts.purge_every = 20ms;
  Ledger ledger(opts);
  for (int i = 0; i < 2'500; ++i) ledger.saved(object("file-" + std::to_string(i), "a", 1'000));
  ledger.saved(object("resp_keep", "a", 100'000));
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (load_objects(path, 0).size() < 2'501 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_EQ(load_objects(path, 0).size(), 2'501u);
  clock.unix = kT0 + 1'000;  // every file- record expires now (expires_ms <= now)
  // More than one chunk: the purge comes back at the next flush until none is left.
  while (load_objects(path, 0).size() > 1 && std::chrono::steady_clock::now() < deadline + 5s) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(ids(load_objects(path, 0)), (std::vector<std::string>{"resp_keep"}));
  EXPECT_EQ(ledger.close(2s), 0u);
}

TEST(LedgerObjects, ChangesWaitBoundedWhileTheDiskRefusesThem) {
  TempDir dir;
  auto path = (dir.path / "usage.db").string();
  FakeClock clock;
  auto opts = options(path, clock);
  opts.max_buffered = 10;
  Ledger ledger(opts);
  NoFileGrowth full_disk;
  for (int i = 0; i < 30; ++i) ledger.saved(object("file-" + std::to_string(i), "a", 60'000));
  auto deadline = std::chrono::steady_clock::now() + 5s;
  auto wait_for = [&](auto done) {
    while (!done() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  };
  wait_for([&] { return ledger.write_errors() > 0; });
  ASSERT_GT(ledger.write_errors(), 0u);
  // A failed batch goes back in front of the queue, still bounded.
  wait_for([&] { return ledger.objects_dropped() >= 20; });
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(ledger.objects_dropped(), 20u);  // the oldest; the newest 10 wait
  EXPECT_EQ(ledger.dropped(), 0u);           // records are counted apart
  full_disk.lift();
  EXPECT_EQ(ledger.close(5s), 0u);
  auto loaded = ids(load_objects(path, kT0));
  std::sort(loaded.begin(), loaded.end());
  std::vector<std::string> newest;
  for (int i = 20; i < 30; ++i) newest.push_back("file-" + std::to_string(i));
  EXPECT_EQ(loaded, newest);
}

// The schema of a ledger written before owner records were kept (usage table only).
constexpr const char* kOldSchema = R"sql(
PRAGMA journal_mode=WAL;
CREATE TABLE usage (
  id INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, request_id TEXT NOT NULL,
  client TEXT NOT NULL, tenant TEXT NOT NULL, deployment TEXT NOT NULL, backend TEXT NOT NULL,
  operation TEXT NOT NULL, tier INTEGER NOT NULL, status INTEGER NOT NULL,
  prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
  cached_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL, estimated INTEGER NOT NULL,
  cost_nano_usd INTEGER NOT NULL, latency_ms REAL NOT NULL, ttft_ms REAL, outcome TEXT NOT NULL);
CREATE INDEX usage_time ON usage(time_ms);
INSERT INTO usage VALUES (1, 1000, 'r1', 'alice', 't', 'gpt-4o', 'ptu', 'chat.completions', 1,
  200, 7, 10, 0, 0, 0, 5, 1.5, NULL, 'ok');
)sql";

TEST(LedgerObjects, ALedgerFromBeforeOwnerRecordsGetsTheTable) {
  TempDir dir;
  auto path = (dir.path / "usage.db").string();
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, kOldSchema, nullptr, nullptr, nullptr), SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  EXPECT_THROW(load_objects(path, kT0), std::runtime_error);  // no table yet
  FakeClock clock;
  {
    Ledger ledger(options(path, clock));
    ledger.saved(object("resp_1", "east", 60'000));
    EXPECT_EQ(ledger.close(2s), 0u);
  }
  EXPECT_EQ(ids(load_objects(path, kT0)), (std::vector<std::string>{"resp_1"}));
  auto rows = totals(path, GroupBy::kClient, 0, 10'000);  // the old records are still there
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].key, "alice");
}

}  // namespace
}  // namespace tollgate::usage
