// The fleet ledger's local side, against a real SQLite file: the spool the shipper reads (the
// oldest unshipped records in id order, as INSERT parameters, with their record id and replica),
// marking a batch shipped, the backlog, pruning that never deletes an unshipped row, a ledger
// file from before the fleet ledger gaining its columns (its rows unshipped, each with a record
// id), the unshipped-only totals the budget replay adds to PostgreSQL's, and the SQL the shipper
// sends (the PostgreSQL side runs in tests/integration/ledger-postgres.test.mjs).
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <set>

#include "../disk_faults.hpp"
#include "tollgate/usage/ledger.hpp"
#include "usage/postgres.hpp"
#include "usage/spool.hpp"

namespace tollgate::usage {
namespace {

using namespace std::chrono_literals;

struct TempDir : testing::TempDir {
  TempDir() : testing::TempDir("tollgate-spool") {}
};

Record record(int i, std::string client = "app") {
  Record r;
  r.time_ms = 1'000 + i;
  r.request_id = "req-" + std::to_string(i);
  r.client = std::move(client);
  r.tenant = "contoso";
  r.deployment = "gpt-4o";
  r.backend = "ptu";
  r.operation = "chat.completions";
  r.status = 200;
  r.prompt_tokens = 10 + i;
  r.completion_tokens = 5;
  r.latency_us = 1500;
  r.outcome = "ok";
  return r;
}

// Writes `n` records through a real Ledger (replica "r1") and closes it.
void write(const std::string& path, int from, int n) {
  Options o{.path = path, .flush_interval = 5ms};
  o.replica = "r1";
  Ledger ledger(std::move(o));
  for (int i = from; i < from + n; ++i) ledger.submit(record(i));
  ASSERT_EQ(ledger.close(2s), 0u);
}

std::vector<std::string> column(const pg::Params& p, std::size_t col) {
  std::vector<std::string> out;
  auto ptr = p.pointers();
  for (std::size_t i = col; i < ptr.size(); i += pg::kColumnCount) out.emplace_back(ptr[i] ? ptr[i] : "NULL");
  return out;
}

TEST(Spool, ReadsTheOldestUnshippedInOrderAndMarksThemShipped) {
  TempDir dir;
  auto path = (dir.path / "usage.db").string();
  write(path, 0, 25);
  Spool spool(path);
  auto b = spool.backlog();
  ASSERT_TRUE(b);
  EXPECT_EQ(b->unshipped, 25u);
  EXPECT_EQ(b->rows, 25u);
  EXPECT_EQ(b->oldest_ms, 1'000);

  Spool::Batch batch;
  ASSERT_TRUE(spool.read(10, batch));
  ASSERT_EQ(batch.count, 10u);
  ASSERT_EQ(batch.params.size(), 10 * pg::kColumnCount);
  auto requests = column(batch.params, 1);
  EXPECT_EQ(requests.front(), "req-0");
  EXPECT_EQ(requests.back(), "req-9");
  auto record_ids = column(batch.params, 0);
  EXPECT_EQ(std::set<std::string>(record_ids.begin(), record_ids.end()).size(), 10u);
  EXPECT_EQ(column(batch.params, 3).front(), "r1");        // replica
  EXPECT_EQ(column(batch.params, 11).back(), "19");        // prompt_tokens
  EXPECT_EQ(column(batch.params, 15).front(), "0");        // estimated
  EXPECT_EQ(column(batch.params, 18).front(), "NULL");     // ttft_ms: none

  // Read again before the mark: the same rows (a crash here re-sends them).
  Spool::Batch again;
  ASSERT_TRUE(spool.read(10, again));
  EXPECT_EQ(column(again.params, 0), record_ids);

  ASSERT_TRUE(spool.mark_shipped(batch.last_id));
  b = spool.backlog();
  EXPECT_EQ(b->unshipped, 15u);
  EXPECT_EQ(b->oldest_ms, 1'010);
  ASSERT_TRUE(spool.read(100, batch));
  EXPECT_EQ(batch.count, 15u);
  EXPECT_EQ(column(batch.params, 1).front(), "req-10");
  ASSERT_TRUE(spool.mark_shipped(batch.last_id));
  EXPECT_EQ(spool.backlog()->unshipped, 0u);
  EXPECT_EQ(spool.backlog()->oldest_ms, 0);
  ASSERT_TRUE(spool.read(100, batch));
  EXPECT_EQ(batch.count, 0u);
}

TEST(Spool, PrunesOnlyShippedRowsOldestFirst) {
  TempDir dir;
  auto path = (dir.path / "usage.db").string();
  write(path, 0, 30);
  Spool spool(path);
  Spool::Batch batch;
  ASSERT_TRUE(spool.read(12, batch));
  ASSERT_TRUE(spool.mark_shipped(batch.last_id));
  // 30 rows, 12 shipped, room for 20: the 10 oldest shipped go.
  EXPECT_EQ(spool.prune(20, 1000), 10u);
  EXPECT_EQ(spool.backlog()->rows, 20u);
  // Room for 5: only the 2 shipped rows left may go; the 18 unshipped stay.
  EXPECT_EQ(spool.prune(5, 1000), 2u);
  auto b = spool.backlog();
  EXPECT_EQ(b->rows, 18u);
  EXPECT_EQ(b->unshipped, 18u);
  EXPECT_EQ(spool.prune(5, 1000), 0u);
  // New records after pruning keep growing ids: still shipped in order.
  write(path, 30, 3);
  EXPECT_EQ(spool.backlog()->unshipped, 21u);
  ASSERT_TRUE(spool.read(100, batch));
  EXPECT_EQ(column(batch.params, 1).front(), "req-12");
  EXPECT_EQ(column(batch.params, 1).back(), "req-32");
}

TEST(Spool, UnshippedTotalsAreWhatPostgresDoesNotHaveYet) {
  TempDir dir;
  auto path = (dir.path / "usage.db").string();
  write(path, 0, 10);
  Spool spool(path);
  Spool::Batch batch;
  ASSERT_TRUE(spool.read(4, batch));
  ASSERT_TRUE(spool.mark_shipped(batch.last_id));
  auto all = totals(path, GroupBy::kReplica, 0, 1'000'000);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].key, "r1");
  EXPECT_EQ(all[0].requests, 10);
  auto rest = totals(path, GroupBy::kClient, 0, 1'000'000, Rows::kUnshipped);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].requests, 6);
  EXPECT_EQ(rest[0].prompt_tokens, 14 + 15 + 16 + 17 + 18 + 19);
}

TEST(Spool, ALedgerFromBeforeTheFleetLedgerGainsItsColumns) {
  TempDir dir;
  auto path = (dir.path / "usage.db").string();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, R"sql(
    CREATE TABLE usage (id INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, request_id TEXT NOT NULL,
      client TEXT NOT NULL, tenant TEXT NOT NULL, deployment TEXT NOT NULL, backend TEXT NOT NULL,
      operation TEXT NOT NULL, tier INTEGER NOT NULL, status INTEGER NOT NULL,
      prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
      cached_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL, estimated INTEGER NOT NULL,
      cost_nano_usd INTEGER NOT NULL, latency_ms REAL NOT NULL, ttft_ms REAL, outcome TEXT NOT NULL);
    INSERT INTO usage VALUES (1, 500, 'old-1', 'app', 't', 'd', 'b', 'chat', 1, 200, 3, 4, 0, 0, 0, 0, 1.5, NULL, 'ok');
    INSERT INTO usage VALUES (2, 600, 'old-2', 'app', 't', 'd', 'b', 'chat', 1, 200, 3, 4, 0, 0, 1, 0, 1.5, 0.5, 'ok');
  )sql", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  write(path, 0, 2);  // opens it as a ledger: migrates, then appends
  Spool spool(path);
  EXPECT_EQ(spool.backlog()->unshipped, 4u);
  Spool::Batch batch;
  ASSERT_TRUE(spool.read(10, batch));
  ASSERT_EQ(batch.count, 4u);
  auto record_ids = column(batch.params, 0);
  EXPECT_EQ(std::set<std::string>(record_ids.begin(), record_ids.end()).size(), 4u);
  for (const auto& id : record_ids) EXPECT_NE(id, "NULL");
  EXPECT_EQ(column(batch.params, 1), (std::vector<std::string>{"old-1", "old-2", "req-0", "req-1"}));
  EXPECT_EQ(column(batch.params, 3), (std::vector<std::string>{"", "", "r1", "r1"}));
  EXPECT_EQ(column(batch.params, 15)[1], "1");
}

TEST(FleetSql, QuotesTheTableAndNumbersEveryParameter) {
  pg::TableNames plain("tollgate_usage");
  EXPECT_EQ(plain.table, "\"tollgate_usage\"");
  EXPECT_EQ(plain.versions, "\"tollgate_usage_schema\"");
  pg::TableNames qualified("billing.usage");
  EXPECT_EQ(qualified.table, "\"billing\".\"usage\"");
  EXPECT_EQ(qualified.versions, "\"billing\".\"usage_schema\"");
  EXPECT_EQ(qualified.bare, "usage");
  auto sql = pg::insert_sql(plain, 2);
  EXPECT_EQ(sql.rfind("INSERT INTO \"tollgate_usage\" (record_id, request_id,", 0), 0u) << sql;
  EXPECT_NE(sql.find("($1,$2,"), std::string::npos);
  EXPECT_NE(sql.find(",$20),($21,"), std::string::npos) << sql;
  EXPECT_NE(sql.find("$40) ON CONFLICT (record_id) DO NOTHING"), std::string::npos) << sql;
  EXPECT_EQ(sql.find("$41"), std::string::npos);
}

}  // namespace
}  // namespace tollgate::usage
