// Lists across backends: which calls fan_out_lists takes (and what it reads of the query), and
// the plain part of answering them — a backend's page, whether its next page matters, the merge.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "stage_env.hpp"

namespace tollgate::pipeline::testing {
namespace {

// gpt-4o (the stateful deployment) on east (eastus) and west (westeurope); `eu` may use
// westeurope only.
constexpr const char* kConfig = R"(
backends:
  - {name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY, region: eastus}
  - {name: west, endpoint: "http://127.0.0.1:2", deployment: gpt-4o, api_key: env:AOAI_KEY, region: westeurope}
deployments:
  - {name: gpt-4o, pools: [{backends: [east]}, {backends: [west]}]}
routing: {affinity: {deployment: gpt-4o}}
clients:
  - {name: app, keys: [env:APP_KEY], deployments: ["*"]}
  - {name: eu, keys: [env:OTHER_KEY], deployments: ["*"], regions: [westeurope]}
)";

using FanOutListsTest = StageTest;

const std::optional<ListPlan>& plan_of(StageEnv& env, std::string method, std::string target,
                                       std::string key = "sk-app") {
  auto& call = env.request(std::move(method), std::move(target), {{"api-key", std::move(key)}});
  EXPECT_FALSE(call.run(fan_out_lists));
  return call.x().list;
}

TEST_F(FanOutListsTest, GetOnACollectionOfTheV1AndOpenAISurfacesIsAList) {
  auto env = StageEnv::from_yaml(kConfig);
  for (const char* target :
       {"/v1/files", "/openai/v1/batches", "/openai/files?api-version=2024-10-21",
        "/v1/vector_stores", "/v1/assistants", "/openai/v1/fine_tuning/jobs"}) {
    const auto& plan = plan_of(env, "GET", target);
    ASSERT_TRUE(plan) << target;
    EXPECT_EQ(plan->backends, (std::vector<std::uint32_t>{0, 1})) << target;
  }
}

TEST_F(FanOutListsTest, OtherCallsOnStoredObjectsAreNot) {
  auto env = StageEnv::from_yaml(kConfig);
  for (const char* id : {"file-1", "ftjob-1", "thread_1", "resp_1"}) {  // app's, on east
    env.snapshot().affinity->remember(id, {"east", "gpt-4o", "app", ""}, env.clock().steady_ms());
  }
  EXPECT_FALSE(plan_of(env, "GET", "/v1/files/file-1"));
  EXPECT_FALSE(plan_of(env, "DELETE", "/v1/files/file-1"));
  EXPECT_FALSE(plan_of(env, "GET", "/v1/fine_tuning/jobs/ftjob-1/events"));
  EXPECT_FALSE(plan_of(env, "GET", "/v1/threads/thread_1/messages"));
  EXPECT_FALSE(plan_of(env, "GET", "/v1/responses/resp_1"));
  auto& upload = env.request(
      "POST", "/v1/files",
      {{"api-key", "sk-app"}, {"content-type", "multipart/form-data; boundary=b"}}, "--b--\r\n");
  EXPECT_FALSE(upload.run(fan_out_lists));
  EXPECT_FALSE(upload.x().list);
}

TEST_F(FanOutListsTest, DefaultsAreOpenAIsFilesAllAtOnceOthersTwenty) {
  auto env = StageEnv::from_yaml(kConfig);
  const auto& files = plan_of(env, "GET", "/v1/files");
  EXPECT_EQ(files->query.limit, 10'000u);
  EXPECT_FALSE(files->query.ascending);
  EXPECT_EQ(files->query.after, "");
  EXPECT_EQ(plan_of(env, "GET", "/v1/batches")->query.limit, 20u);
}

TEST_F(FanOutListsTest, ReadsLimitOrderAfterAndKeepsTheOtherParametersForTheBackends) {
  auto env = StageEnv::from_yaml(kConfig);
  const auto& plan = plan_of(
      env, "GET",
      "/openai/files?api-version=2024-10-21&limit=2&order=asc&after=file%2Dab&purpose=batch");
  EXPECT_EQ(plan->query.limit, 2u);
  EXPECT_TRUE(plan->query.ascending);
  EXPECT_EQ(plan->query.after, "file-ab");
  EXPECT_EQ(plan->upstream_query, "api-version=2024-10-21&purpose=batch");
}

TEST_F(FanOutListsTest, ALimitOverTheMaximumIsClamped) {
  auto env = StageEnv::from_yaml(kConfig);
  EXPECT_EQ(plan_of(env, "GET", "/v1/batches?limit=500")->query.limit, 100u);
  EXPECT_EQ(plan_of(env, "GET", "/v1/files?limit=20000")->query.limit, 10'000u);
  EXPECT_EQ(plan_of(env, "GET", "/v1/files?limit=99999999999999999999999")->query.limit, 10'000u);
}

TEST_F(FanOutListsTest, ABadLimitOrOrderAndBeforeAre400) {
  auto env = StageEnv::from_yaml(kConfig);
  for (const char* target : {"/v1/files?limit=0", "/v1/files?limit=two", "/v1/files?limit=-1",
                             "/v1/batches?order=newest", "/v1/assistants?before=asst_1"}) {
    auto reply = env.request("GET", target, {{"api-key", "sk-app"}}).run(fan_out_lists);
    EXPECT_EQ(status(reply), 400) << target;
    EXPECT_EQ(reply->reason, "bad_list_query") << target;
  }
  auto reply =
      env.request("GET", "/v1/batches?limit=0", {{"api-key", "sk-app"}}).run(fan_out_lists);
  EXPECT_EQ(error_message(reply), "limit must be an integer from 1 to 100");
  EXPECT_EQ(error_field(reply, "param"), "limit");
}

TEST_F(FanOutListsTest, OnlyTheBackendsInTheCallersRegionsAreAsked) {
  auto env = StageEnv::from_yaml(kConfig);
  EXPECT_EQ(plan_of(env, "GET", "/v1/files", "sk-other")->backends,
            (std::vector<std::uint32_t>{1}));
}

// --- the plain part: pages, next pages, merge

ListItem item(std::string id, std::int64_t created) {
  std::string json = R"({"id":")" + id + R"(","created_at":)" + std::to_string(created) + "}";
  return ListItem{std::move(id), created, std::move(json)};
}

ListPage page(std::vector<ListItem> items, bool has_more = false) {
  return ListPage{std::move(items), has_more};
}

const KeepObject kKeepAll = [](std::string_view) { return true; };

BackendList listed(std::vector<ListItem> items, bool has_more = false) {
  BackendList l;
  absorb(l, page(std::move(items), has_more), kKeepAll);
  return l;
}

ListQuery query(std::size_t limit, std::string after = {}, bool ascending = false) {
  return ListQuery{limit, ascending, std::move(after)};
}

struct Merged {
  std::vector<std::string> ids;
  bool has_more;
  nlohmann::json first_id, last_id;
};

Merged merged(const std::vector<BackendList>& lists, const ListQuery& q) {
  auto j = nlohmann::json::parse(merge_lists(lists, q));
  EXPECT_EQ(j["object"], "list");
  Merged m{{}, j["has_more"].get<bool>(), j["first_id"], j["last_id"]};
  for (const auto& o : j["data"]) m.ids.push_back(o["id"].get<std::string>());
  return m;
}

using Ids = std::vector<std::string>;

TEST(MergeListsTest, NewestFirstAcrossBackendsTiesById) {
  std::vector<BackendList> lists{listed({item("a1", 30), item("a2", 10)}),
                                 listed({item("b1", 20), item("b0", 10)})};
  auto m = merged(lists, query(20));
  EXPECT_EQ(m.ids, (Ids{"a1", "b1", "b0", "a2"}));
  EXPECT_FALSE(m.has_more);
  EXPECT_EQ(m.first_id, "a1");
  EXPECT_EQ(m.last_id, "a2");
}

TEST(MergeListsTest, AscendingIsTheExactReverse) {
  std::vector<BackendList> lists{listed({item("a2", 10), item("a1", 30)}),
                                 listed({item("b0", 10), item("b1", 20)})};
  EXPECT_EQ(merged(lists, query(20, {}, true)).ids, (Ids{"a2", "b0", "b1", "a1"}));
}

TEST(MergeListsTest, LimitAndAfterWalkThePages) {
  std::vector<BackendList> lists{listed({item("a3", 50), item("a2", 30), item("a1", 10)}),
                                 listed({item("b2", 40), item("b1", 20)})};
  auto first = merged(lists, query(2));
  EXPECT_EQ(first.ids, (Ids{"a3", "b2"}));
  EXPECT_TRUE(first.has_more);
  auto second = merged(lists, query(2, "b2"));
  EXPECT_EQ(second.ids, (Ids{"a2", "b1"}));
  EXPECT_TRUE(second.has_more);
  auto last = merged(lists, query(2, "b1"));
  EXPECT_EQ(last.ids, (Ids{"a1"}));
  EXPECT_FALSE(last.has_more);
}

// OpenAI's own answer to an unknown cursor is not documented; the gateway cannot tell an id
// that is not the caller's from one that never existed, and answers both with an empty page.
TEST(MergeListsTest, AnAfterIdNotInTheListIsAnEmptyLastPage) {
  std::vector<BackendList> lists{listed({item("a1", 10)})};
  auto m = merged(lists, query(20, "file-elsewhere"));
  EXPECT_TRUE(m.ids.empty());
  EXPECT_FALSE(m.has_more);
  EXPECT_TRUE(m.first_id.is_null());
  EXPECT_TRUE(m.last_id.is_null());
}

TEST(MergeListsTest, OnlyTheCallersObjectsAreKept) {
  BackendList l;
  absorb(l, page({item("mine-2", 20), item("theirs", 15), item("mine-1", 10)}),
         [](std::string_view id) { return id.starts_with("mine"); });
  EXPECT_EQ(merged({l}, query(20)).ids, (Ids{"mine-2", "mine-1"}));
  EXPECT_EQ(l.cursor, "mine-1");  // the next page starts after the backend's last, kept or not
  // Another caller's id is no cursor for this caller.
  EXPECT_TRUE(merged({l}, query(20, "theirs")).ids.empty());
}

TEST(MergeListsTest, ABackendCutShortMakesHasMoreConservativeButNeverLoops) {
  std::vector<BackendList> lists{listed({item("a2", 20), item("a1", 10)}, /*has_more=*/true)};
  auto m = merged(lists, query(5));
  EXPECT_EQ(m.ids, (Ids{"a2", "a1"}));
  EXPECT_TRUE(m.has_more);  // the backend had more when paging stopped
  auto next = merged(lists, query(5, "a1"));
  EXPECT_TRUE(next.ids.empty());
  EXPECT_FALSE(next.has_more);
}

TEST(ParseListPageTest, ReadsTheItemsAndHasMore) {
  auto p = parse_list_page(
      R"({"object":"list","data":[{"id":"file-1","object":"file","created_at":7,"bytes":3}],"has_more":true})");
  ASSERT_TRUE(p);
  ASSERT_EQ(p->items.size(), 1u);
  EXPECT_EQ(p->items[0].id, "file-1");
  EXPECT_EQ(p->items[0].created_at, 7);
  EXPECT_EQ(p->items[0].json, R"({"id":"file-1","object":"file","created_at":7,"bytes":3})");
  EXPECT_TRUE(p->has_more);
  EXPECT_FALSE(parse_list_page(R"({"object":"list","data":[]})")->has_more);
}

TEST(ParseListPageTest, AnythingElseIsNoPage) {
  for (const char* body :
       {"", "not json", "[]", R"({"object":"list"})", R"({"data":{}})", R"({"data":[1]})",
        R"({"data":[{"created_at":1}]})", R"({"data":[{"id":"x","created_at":"1"}]})",
        R"({"data":[{"id":7,"created_at":1}]})"}) {
    EXPECT_FALSE(parse_list_page(body)) << body;
  }
}

TEST(WantsMoreTest, EveryBackendIsAskedOnceThenWhileItsNextPageMatters) {
  std::vector<BackendList> lists(1);
  EXPECT_TRUE(wants_more(lists, 0, query(2)));
  lists[0] = listed({item("a1", 10)});  // no more
  EXPECT_FALSE(wants_more(lists, 0, query(2)));
  // limit + 1 objects strictly newer than the page's last: later pages cannot change the answer.
  lists[0] = listed({item("a4", 40), item("a3", 30), item("a2", 20), item("a1", 10)}, true);
  EXPECT_FALSE(wants_more(lists, 0, query(2)));
  EXPECT_TRUE(wants_more(lists, 0, query(3)));
  // Past a cursor only what follows it counts; a cursor not seen yet may be further on.
  EXPECT_TRUE(wants_more(lists, 0, query(1, "a3")));
  EXPECT_FALSE(wants_more(lists, 0, query(1, "a4")));
  EXPECT_TRUE(wants_more(lists, 0, query(1, "elsewhere")));
}

TEST(WantsMoreTest, PagingStopsAtTheBound) {
  std::vector<BackendList> lists(1);
  for (unsigned i = 0; i < kMaxListPages; ++i) {
    ASSERT_TRUE(wants_more(lists, 0, query(10'000)));
    absorb(lists[0], page({item("x" + std::to_string(i), 100 - i)}, true), kKeepAll);
  }
  EXPECT_FALSE(wants_more(lists, 0, query(10'000)));
  EXPECT_TRUE(merged(lists, query(10'000)).has_more);
}

TEST(PageQueryTest, TheClientsParametersThenThePage) {
  ListPlan plan;
  plan.upstream_query = "api-version=2024-10-21";
  plan.query = query(5, "ignored-here", true);
  BackendList l;
  EXPECT_EQ(page_query(plan, l), "api-version=2024-10-21&limit=100&order=asc");
  absorb(l, page({item("file a", 1)}, true), kKeepAll);
  EXPECT_EQ(page_query(plan, l), "api-version=2024-10-21&limit=100&order=asc&after=file%20a");
  plan.upstream_query.clear();
  EXPECT_EQ(page_query(plan, BackendList{}), "limit=100&order=asc");
}

}  // namespace
}  // namespace tollgate::pipeline::testing
