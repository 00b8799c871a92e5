// The affinity table (LRU with a sliding TTL) and the id finders for stateful APIs.
#include "tollgate/routing/affinity.hpp"
#include "tollgate/core/objects.hpp"

#include <gtest/gtest.h>

namespace tollgate::routing {
namespace {

using Ids = std::vector<std::string>;
using core::answer_ids;
using core::creates_object;
using core::is_stateful_path;
using core::referenced_ids;

ObjectOwner on(std::string backend) { return {std::move(backend), "gpt-4o", "app", "contoso"}; }

std::optional<std::string> backend_of(AffinityTable& t, std::string_view id, TimeMs now) {
  auto o = t.find(id, now);
  return o ? std::optional(o->backend) : std::nullopt;
}

TEST(AffinityTable, RemembersUntilTheTtlPassesUnused) {
  AffinityTable t(1000, 1'000);
  t.remember("resp_1", on("east"), 0);
  auto owner = t.find("resp_1", 900);
  ASSERT_TRUE(owner);
  EXPECT_EQ(owner->backend, "east");
  EXPECT_EQ(owner->deployment, "gpt-4o");
  EXPECT_EQ(owner->client, "app");
  EXPECT_EQ(owner->tenant, "contoso");
  EXPECT_EQ(backend_of(t, "resp_1", 1'800), "east");  // the lookup at 900 extended it
  EXPECT_FALSE(t.find("resp_1", 2'900));
  EXPECT_FALSE(t.find("resp_2", 0));
  EXPECT_EQ(t.size(), 0u);
}

TEST(AffinityTable, APendingObjectIsBilledByExactlyOneClaim) {
  AffinityTable t(1000, 1'000);
  t.remember("resp_bg", on("east"), 0, Billing::kPending);
  t.remember("resp_fg", on("east"), 0);
  EXPECT_FALSE(t.claim_billing("resp_fg", 10));  // billed when it was created
  EXPECT_FALSE(t.claim_billing("resp_none", 10));
  EXPECT_TRUE(t.claim_billing("resp_bg", 10));
  EXPECT_FALSE(t.claim_billing("resp_bg", 20));  // never twice
  t.remember("resp_late", on("east"), 0, Billing::kPending);
  EXPECT_FALSE(t.claim_billing("resp_late", 5'000));  // expired: nobody bills it
}

TEST(AffinityTable, BoundedLeastRecentlyUsedFirst) {
  AffinityTable t(16 * 4, 1'000'000);  // 4 per shard
  for (int i = 0; i < 10'000; ++i) t.remember("file-" + std::to_string(i), on("b"), i);
  EXPECT_LE(t.size(), 64u);
  EXPECT_EQ(backend_of(t, "file-9999", 10'000), "b");
  EXPECT_FALSE(t.find("file-0", 10'000));
  t.forget("file-9999");
  EXPECT_FALSE(t.find("file-9999", 10'000));
}

// Records what the table reports: "saved id backend billing expires_in" and "erased id".
struct RecordingJournal : AffinityJournal {
  std::vector<std::string> calls;
  void saved(const StoredObject& o) override {
    calls.push_back("saved " + o.id + " " + o.owner.backend + " " +
                    (o.billing == Billing::kPending ? "pending" : "settled") + " " +
                    std::to_string(o.expires_in_ms));
  }
  void erased(std::string_view id) override { calls.push_back("erased " + std::string(id)); }
};

TEST(AffinityJournal, RememberForgetAndClaimAreReported) {
  AffinityTable t(1000, 8'000);
  RecordingJournal j;
  t.set_journal(&j);
  t.remember("resp_1", on("east"), 0, Billing::kPending);
  EXPECT_TRUE(t.claim_billing("resp_1", 500));
  EXPECT_FALSE(t.claim_billing("resp_1", 600));  // nothing changed: nothing reported
  t.forget("resp_1");
  t.forget("resp_unknown");
  EXPECT_EQ(j.calls, (Ids{"saved resp_1 east pending 8000", "saved resp_1 east settled 7500",
                          "erased resp_1"}));
}

TEST(AffinityJournal, AFindReportsTheSlideOnlyWhenItIsWorthAnEighthOfTheTtl) {
  AffinityTable t(1000, 8'000);
  RecordingJournal j;
  t.set_journal(&j);
  t.remember("resp_1", on("east"), 0);  // journaled expiry 8000
  for (TimeMs now = 100; now <= 1'000; now += 100) ASSERT_TRUE(t.find("resp_1", now));
  EXPECT_EQ(j.calls.size(), 1u);  // the expiry moved by 1000 = ttl/8: not yet
  ASSERT_TRUE(t.find("resp_1", 1'001));
  EXPECT_EQ(j.calls.back(), "saved resp_1 east settled 8000");  // journaled expiry 9001
  for (TimeMs now = 1'002; now <= 2'001; ++now) ASSERT_TRUE(t.find("resp_1", now));
  EXPECT_EQ(j.calls.size(), 2u);  // a thousand finds, no write
  ASSERT_TRUE(t.find("resp_1", 2'002));
  EXPECT_EQ(j.calls.size(), 3u);
}

TEST(AffinityJournal, ThePushedOutAreErasedTheExpiredAreNot) {
  AffinityTable t(16, 1'000);  // 1 per shard
  RecordingJournal j;
  t.set_journal(&j);
  std::string first = "file-0";
  // Another id in the same shard pushes the first out.
  std::string second;
  for (int i = 1; second.empty(); ++i) {
    auto id = "file-" + std::to_string(i);
    AffinityTable probe(16, 1'000);
    probe.remember(first, on("a"), 0);
    probe.remember(id, on("a"), 0);
    if (!probe.find(first, 0)) second = id;
  }
  t.remember(first, on("a"), 0);
  t.remember(second, on("a"), 10);
  EXPECT_EQ(j.calls.back(), "erased " + first);
  auto n = j.calls.size();
  EXPECT_FALSE(t.find(second, 5'000));  // expired: the journal's own expiry covers it
  t.remember(first, on("a"), 5'000);
  EXPECT_EQ(j.calls.size(), n + 1);  // only the save
}

TEST(AffinityJournal, RestoreIsNotReportedAndKeepsOwnerBillingAndLifetime) {
  AffinityTable t(1000, 8'000);
  RecordingJournal j;
  t.set_journal(&j);
  t.restore(StoredObject{"resp_1", on("west"), Billing::kPending, 3'000}, 100);
  t.restore(StoredObject{"resp_gone", on("west"), Billing::kSettled, 0}, 100);
  EXPECT_TRUE(j.calls.empty());
  EXPECT_FALSE(t.find("resp_gone", 100));
  EXPECT_EQ(t.size(), 1u);
  EXPECT_TRUE(t.claim_billing("resp_1", 3'000));  // pending survived
  EXPECT_EQ(j.calls, (Ids{"saved resp_1 west settled 100"}));
  auto owner = t.find("resp_1", 3'099);
  ASSERT_TRUE(owner);
  EXPECT_EQ(owner->tenant, "contoso");
  EXPECT_FALSE(t.find("resp_1", 20'000));
}

TEST(AffinityJournal, DetachedJournalHearsNothingMore) {
  AffinityTable t(1000, 8'000);
  RecordingJournal j;
  t.set_journal(&j);
  t.remember("resp_1", on("east"), 0);
  t.set_journal(nullptr);
  t.remember("resp_2", on("east"), 0);
  t.forget("resp_1");
  EXPECT_EQ(j.calls, (Ids{"saved resp_1 east settled 8000"}));
}

TEST(Stateful, PathsAndCreations) {
  EXPECT_TRUE(is_stateful_path("responses"));
  EXPECT_TRUE(is_stateful_path("files/file-1/content"));
  EXPECT_TRUE(is_stateful_path("threads/thread_1/runs"));
  EXPECT_FALSE(is_stateful_path("chat/completions"));
  EXPECT_FALSE(is_stateful_path("embeddings"));
  std::string_view no_store = R"({"model":"m","input":"x","store":false})";
  auto scan = core::scan_body(no_store);
  EXPECT_FALSE(creates_object("POST", "responses", no_store, &scan.fields));
  std::string_view store = R"({"model":"m","input":"x","store":true})";
  auto stored = core::scan_body(store);
  EXPECT_TRUE(creates_object("POST", "responses", store, &stored.fields));
  EXPECT_TRUE(creates_object("POST", "files", {}, nullptr));
  EXPECT_FALSE(creates_object("GET", "files/file-1", {}, nullptr));
  EXPECT_FALSE(creates_object("POST", "chat/completions", store, &stored.fields));
}

TEST(Stateful, IdsFromThePath) {
  EXPECT_EQ(referenced_ids("responses/resp_1", {}, nullptr), Ids{"resp_1"});
  EXPECT_EQ(referenced_ids("responses/resp_1/input_items", {}, nullptr), Ids{"resp_1"});
  EXPECT_EQ(referenced_ids("files/file-abc/content", {}, nullptr), Ids{"file-abc"});
  // Children are reached through their parent: only the thread is looked up.
  EXPECT_EQ(referenced_ids("threads/thread_1/runs/run_2/steps/step_3", {}, nullptr),
            (Ids{"thread_1"}));
  EXPECT_EQ(referenced_ids("vector_stores/vs_1/files/file-2", {}, nullptr), Ids{"vs_1"});
  EXPECT_EQ(referenced_ids("threads/runs", {}, nullptr), Ids{});
  EXPECT_EQ(referenced_ids("fine_tuning/jobs/ftjob-1/cancel", {}, nullptr), Ids{"ftjob-1"});
  EXPECT_EQ(referenced_ids("batches/batch_1/cancel", {}, nullptr), Ids{"batch_1"});
  EXPECT_EQ(referenced_ids("files", {}, nullptr), Ids{});
}

TEST(Stateful, IdsFromTheBody) {
  std::string_view body =
      R"({"model":"m","previous_response_id":"resp_9","input_file_id":"file-1",
          "file_ids":["file-2",3,["x"]],"vector_store_ids":["vs_1"],"thread_id":""})";
  auto scan = core::scan_body(body);
  EXPECT_EQ(referenced_ids("responses", body, &scan.fields),
            (Ids{"resp_9", "file-1", "file-2", "vs_1"}));
}

TEST(Stateful, CreatedIdFromBodiesAndStreamEvents) {
  auto created_id = [](std::string_view json) { return answer_ids(json).id; };
  EXPECT_EQ(created_id(R"({"id":"resp_1","object":"response"})"), "resp_1");
  EXPECT_EQ(created_id(R"({"type":"response.created","response":{"id":"resp_2"}})"), "resp_2");
  EXPECT_EQ(created_id(R"({"object":"list"})"), "");
  EXPECT_EQ(created_id("not json"), "");
  EXPECT_EQ(created_id(R"({"id":5})"), "");
  // A batch that has run names the files the backend wrote for it.
  auto batch = answer_ids(R"({"id":"batch_1","output_file_id":"file-out","error_file_id":null})");
  EXPECT_EQ(batch.id, "batch_1");
  EXPECT_EQ(batch.derived, (Ids{"file-out"}));
  EXPECT_TRUE(core::reveals_objects("batches/batch_1"));
  EXPECT_TRUE(core::reveals_objects("batches/batch_1/cancel"));
  EXPECT_FALSE(core::reveals_objects("batches"));
  EXPECT_FALSE(core::reveals_objects("files/file-1"));
}

}  // namespace
}  // namespace tollgate::routing
