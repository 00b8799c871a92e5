// locate_objects (stored objects live on the backend that created them) and pin.

#include <gtest/gtest.h>

#include "server/pipeline/finish.hpp"
#include "stage_env.hpp"

namespace tollgate::pipeline::testing {
namespace {

// gpt-4o on east and west; `other` serves only mini. Clients: app may pin, bot may not.
constexpr const char* kBackends = R"(
backends:
  - {name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY}
  - {name: west, endpoint: "http://127.0.0.1:2", deployment: gpt-4o, api_key: env:AOAI_KEY}
  - {name: other, endpoint: "http://127.0.0.1:3", deployment: mini, api_key: env:AOAI_KEY}
deployments:
  - {name: gpt-4o, pools: [{backends: [east, west]}]}
  - {name: mini, pools: [{backends: [other]}]}
clients:
  - {name: app, keys: [env:APP_KEY], deployments: ["*"], may_pin: true}
  - {name: bot, keys: [env:OTHER_KEY], deployments: ["*"]}
)";

// kBackends with `routing` (by default: pinning with x-tollgate-backend).
std::string objects(std::string_view routing = "{pin_header: x-tollgate-backend}") {
  return "routing: " + std::string(routing) + kBackends;
}

constexpr const char* kChat = R"({"messages":[{"role":"user","content":"hi"}]})";
constexpr const char* kChatPath =
    "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";

// An object client `app` (no tenant) made on `backend` through gpt-4o.
routing::ObjectOwner made_by_app(std::string backend) { return {std::move(backend), "gpt-4o", "app", ""}; }

using LocateObjectsTest = StageTest;

TEST_F(LocateObjectsTest, AKnownObjectGoesToItsBackendOnly) {
  auto env = StageEnv::from_yaml(objects());
  env.snapshot().affinity->remember("file-abc123", made_by_app("west"), env.clock().steady_ms());
  auto& call = env.request("GET", "/openai/v1/files/file-abc123", {{"api-key", "sk-app"}});
  EXPECT_FALSE(call.run(route));
  EXPECT_EQ(call.x().object, "file-abc123");
  EXPECT_EQ(call.x().only, 1u);
  EXPECT_EQ(call.ctx().deployment->name, "gpt-4o");
  EXPECT_FALSE(call.x().creates);
}

// Issue 13: a call naming no deployment goes to the deployment the object was made through,
// not routing.affinity.deployment.
TEST_F(LocateObjectsTest, AnObjectIsReachedFromADeploymentlessCallWhateverTheAffinityDeployment) {
  auto env = StageEnv::from_yaml(objects("{affinity: {deployment: gpt-4o}}"));
  env.snapshot().affinity->remember("resp_1", {"other", "mini", "app", ""}, env.clock().steady_ms());
  auto& call = env.request("GET", "/openai/v1/responses/resp_1", {{"api-key", "sk-app"}});
  EXPECT_FALSE(call.run_all());
  EXPECT_EQ(call.ctx().deployment->name, "mini");
  EXPECT_EQ(call.x().only, 2u);
}

TEST_F(LocateObjectsTest, AnUnknownObjectIs404OnEveryDeployment) {
  auto env = StageEnv::from_yaml(objects("{affinity: {deployment: mini}}"));
  auto reply = env.request("POST", "/openai/v1/threads/thread_1/runs", {{"api-key", "sk-app"}},
                           R"({"assistant_id":"asst_1"})")
                   .run(locate_objects);
  EXPECT_EQ(status(reply), 404);
  EXPECT_EQ(reply->reason, "unknown_object");
}

// With a cluster, ids this replica does not know are left to the locate_shared await stage,
// which fetches their owners into the table and runs locate_objects again: decided as locally.
TEST_F(LocateObjectsTest, WithAClusterUnknownIdsWaitForTheStoreThenAreDecidedAsKnownOnes) {
  auto env = StageEnv::from_yaml(objects());
  auto now = env.clock().steady_ms();
  env.snapshot().affinity->remember("file-here", made_by_app("west"), now);
  auto& call = env.request("GET", "/openai/v1/responses/resp_far", {{"api-key", "sk-app"}});
  call.x().shared = true;
  EXPECT_FALSE(call.run(locate_objects));
  EXPECT_EQ(call.x().unresolved, std::vector<std::string>{"resp_far"});
  EXPECT_FALSE(call.x().owner);
  // Fetched: another client's (404, as for an unknown id), then the caller's own (routed).
  env.snapshot().affinity->restore({"resp_far", {"east", "gpt-4o", "bot", ""}, routing::Billing::kSettled, 60'000}, now);
  call.x().looked_up = true;
  EXPECT_EQ(status(locate_objects(call.x())), 404);
  env.snapshot().affinity->restore({"resp_far", made_by_app("east"), routing::Billing::kSettled, 60'000}, now);
  EXPECT_FALSE(locate_objects(call.x()));
  EXPECT_TRUE(call.x().unresolved.empty());
  EXPECT_FALSE(run_routing_stages(call.x()));
  EXPECT_EQ(call.x().only, 0u);
  // Not in the store either: the usual 404.
  auto& gone = env.request("GET", "/openai/v1/responses/resp_gone", {{"api-key", "sk-app"}});
  gone.x().shared = true;
  EXPECT_FALSE(gone.run(locate_objects));
  gone.x().looked_up = true;
  auto reply = locate_objects(gone.x());
  EXPECT_EQ(status(reply), 404);
  EXPECT_EQ(reply->reason, "unknown_object");
  // A known id never waits.
  auto& here = env.request("GET", "/openai/v1/files/file-here", {{"api-key", "sk-app"}});
  here.x().shared = true;
  EXPECT_FALSE(here.run(locate_objects));
  EXPECT_TRUE(here.x().unresolved.empty());
  EXPECT_EQ(here.x().object, "file-here");
}

TEST_F(LocateObjectsTest, ACallNamingADeploymentThatCannotReachTheObjectIs404) {
  auto env = StageEnv::from_yaml(objects());
  env.snapshot().affinity->remember("resp_1", made_by_app("west"), env.clock().steady_ms());
  auto reply = env.request("POST", "/openai/v1/responses", {{"api-key", "sk-app"}},
                           R"({"model":"mini","input":"hi","previous_response_id":"resp_1"})")
                   .run(route);
  EXPECT_EQ(status(reply), 404);
  EXPECT_EQ(reply->reason, "object_backend_gone");
  EXPECT_EQ(error_message(reply),
            "The object 'resp_1' lives on a backend that deployment 'mini' does not use.");
}

// Objects live on an Azure resource: another deployment on the same resource reaches them.
TEST_F(LocateObjectsTest, ADeploymentOnTheObjectsResourceReachesIt) {
  auto env = StageEnv::from_yaml(R"(
backends:
  - {name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY}
  - {name: east-mini, endpoint: "http://127.0.0.1:1", deployment: mini, api_key: env:AOAI_KEY}
  - {name: west-mini, endpoint: "http://127.0.0.1:2", deployment: mini, api_key: env:AOAI_KEY}
deployments:
  - {name: gpt-4o, pools: [{backends: [east]}]}
  - {name: mini, pools: [{backends: [west-mini, east-mini]}]}
clients: [{name: app, keys: [env:APP_KEY], deployments: ["*"]}]
)");
  env.snapshot().affinity->remember("resp_1", made_by_app("east"), env.clock().steady_ms());
  auto& call = env.request("POST", "/openai/v1/responses", {{"api-key", "sk-app"}},
                           R"({"model":"mini","input":"hi","previous_response_id":"resp_1"})");
  EXPECT_FALSE(call.run_all());
  EXPECT_EQ(call.ctx().deployment->name, "mini");
  EXPECT_EQ(call.x().only, 1u);  // east-mini
}

TEST_F(LocateObjectsTest, ObjectsOnTwoBackendsCannotBeCombined) {
  auto env = StageEnv::from_yaml(objects());
  env.snapshot().affinity->remember("file-1", made_by_app("west"), env.clock().steady_ms());
  env.snapshot().affinity->remember("vs_1", made_by_app("east"), env.clock().steady_ms());
  auto reply = env.request("POST", "/openai/v1/vector_stores/vs_1/files", {{"api-key", "sk-app"}},
                           R"({"file_id":"file-1"})")
                   .run(locate_objects);
  EXPECT_EQ(status(reply), 400);
  EXPECT_EQ(reply->reason, "objects_apart");
}

TEST_F(LocateObjectsTest, AnObjectOnADeploymentTheCallerMayNoLongerUseIsUnknown) {
  ::setenv("THIRD_KEY", "sk-third", 1);
  auto env = StageEnv::from_yaml(objects() +
                                 "  - {name: mini-only, keys: [env:THIRD_KEY], deployments: [mini]}\n");
  env.snapshot().affinity->remember("resp_1", {"west", "gpt-4o", "mini-only", ""}, env.clock().steady_ms());
  auto reply = env.request("GET", "/openai/v1/responses/resp_1", {{"api-key", "sk-third"}}).run_all();
  auto unknown = env.request("GET", "/openai/v1/responses/resp_2", {{"api-key", "sk-third"}}).run_all();
  EXPECT_EQ(status(reply), 404);
  ASSERT_TRUE(unknown);
  EXPECT_EQ(error_message(reply),
            "No object 'resp_1' is known to this gateway: it was not created through it, or it "
            "expired from its affinity table.");
}

TEST_F(LocateObjectsTest, AnObjectWhoseBackendIsGoneIs404) {
  auto env = StageEnv::from_yaml(objects());
  env.snapshot().affinity->remember("file-abc123", made_by_app("removed"), env.clock().steady_ms());
  auto reply = env.request("GET", "/openai/v1/files/file-abc123", {{"api-key", "sk-app"}})
                   .run(route);
  EXPECT_EQ(status(reply), 404);
  EXPECT_EQ(reply->reason, "object_backend_gone");
}

TEST_F(LocateObjectsTest, AnExpiredObjectIsUnknown) {
  auto env = StageEnv::from_yaml(objects("{affinity: {ttl: 1h}}"));
  env.snapshot().affinity->remember("file-abc123", made_by_app("west"), env.clock().steady_ms());
  env.clock().advance(std::chrono::hours(2));
  auto reply = env.request("GET", "/openai/v1/files/file-abc123", {{"api-key", "sk-app"}})
                   .run(locate_objects);
  EXPECT_EQ(reply->reason, "unknown_object");
}

// Objects are private to the client that made them (issue 13): another client gets the answer
// of an unknown id.
TEST_F(LocateObjectsTest, AnotherClientsObjectIsAnswered404LikeAnUnknownOne) {
  auto env = StageEnv::from_yaml(objects());
  env.snapshot().affinity->remember("file-abc123", made_by_app("west"), env.clock().steady_ms());
  auto mine = env.request("GET", "/openai/v1/files/file-abc123", {{"api-key", "sk-app"}}).run(locate_objects);
  EXPECT_FALSE(mine);
  auto theirs = env.request("GET", "/openai/v1/files/file-abc123", {{"api-key", "sk-other"}}).run(locate_objects);
  auto& unknown = env.request("GET", "/openai/v1/files/file-abc123", {{"api-key", "sk-app"}});
  env.snapshot().affinity->forget("file-abc123");
  auto none = unknown.run(locate_objects);
  EXPECT_EQ(status(theirs), 404);
  EXPECT_EQ(theirs->reason, "unknown_object");
  ASSERT_TRUE(none);
  EXPECT_EQ(theirs->body, none->body) << "the same body as an unknown id";
}

// Two tenants; contoso's clients `app` and `bot`, fabrikam's `ext`.
std::string tenants(bool share) {
  return std::string(R"(
backends:
  - {name: east, endpoint: "http://127.0.0.1:1", deployment: gpt-4o, api_key: env:AOAI_KEY}
  - {name: west, endpoint: "http://127.0.0.1:2", deployment: gpt-4o, api_key: env:AOAI_KEY}
deployments:
  - {name: gpt-4o, pools: [{backends: [east, west]}]}
tenants:
  - {name: contoso, share_objects: )") + (share ? "true" : "false") + R"(}
  - {name: fabrikam, share_objects: true}
clients:
  - {name: app, keys: [env:APP_KEY], deployments: ["*"], tenant: contoso}
  - {name: bot, keys: [env:OTHER_KEY], deployments: ["*"], tenant: contoso}
  - {name: ext, keys: [env:THIRD_KEY], deployments: ["*"], tenant: fabrikam}
)";
}

StageResult fetch_as(StageEnv& env, const char* key) {
  return env.request("GET", "/openai/v1/files/file-abc123", {{"api-key", key}}).run(locate_objects);
}

TEST_F(LocateObjectsTest, ATenantThatSharesObjectsLetsItsClientsUseThem) {
  ::setenv("THIRD_KEY", "sk-third", 1);
  for (bool share : {false, true}) {
    auto env = StageEnv::from_yaml(tenants(share));
    env.snapshot().affinity->remember("file-abc123", {"west", "gpt-4o", "app", "contoso"},
                                      env.clock().steady_ms());
    EXPECT_FALSE(fetch_as(env, "sk-app"));
    auto same_tenant = fetch_as(env, "sk-other");
    if (share) {
      EXPECT_FALSE(same_tenant) << "share_objects: true";
    } else {
      EXPECT_EQ(status(same_tenant), 404) << "share_objects: false";
    }
    EXPECT_EQ(status(fetch_as(env, "sk-third")), 404) << "another tenant: never";
  }
}

TEST_F(LocateObjectsTest, AnonymousCallersOwnOnlyAnonymousObjects) {
  auto env = StageEnv::from_yaml(std::string(kBackends) + "auth: {allow_anonymous: true}\n");
  env.snapshot().affinity->remember("file-anon", {"west", "gpt-4o", "", ""}, env.clock().steady_ms());
  env.snapshot().affinity->remember("file-abc123", made_by_app("west"), env.clock().steady_ms());
  auto anon = [&](const char* id) {
    return env.request("GET", std::string("/openai/v1/files/") + id, {}).run(locate_objects);
  };
  EXPECT_FALSE(anon("file-anon"));
  EXPECT_EQ(status(anon("file-abc123")), 404) << "a client's object";
  auto app = env.request("GET", "/openai/v1/files/file-anon", {{"api-key", "sk-app"}}).run(locate_objects);
  EXPECT_EQ(status(app), 404) << "an anonymous object for a client";
}

using NoteAnswerTest = StageTest;

core::AnswerIds ids(std::string id, std::vector<std::string> derived = {}) {
  return core::AnswerIds{std::move(id), std::move(derived)};
}

// What the session does with a relayed 2xx answer: the ids as soon as the capture has them,
// then the rest once the answer ended.
void answered(Exchange& x, const core::AnswerIds& found, core::TimeMs now) {
  remember_answer(x, found, now);
  note_answer(x, found, now);
}

TEST_F(NoteAnswerTest, ACreatedObjectBelongsToItsCallerOnTheBackendThatAnswered) {
  auto env = StageEnv::from_yaml(objects());
  auto& call = env.request("POST", "/openai/v1/files", {{"api-key", "sk-app"}});
  ASSERT_FALSE(call.run_all());
  call.ctx().status = 200;
  call.ctx().backend = "west";
  answered(call.x(), ids("file-new"), env.clock().steady_ms());
  auto owner = env.snapshot().affinity->find("file-new", env.clock().steady_ms());
  ASSERT_TRUE(owner);
  EXPECT_EQ(owner->backend, "west");
  EXPECT_EQ(owner->client, "app");
  EXPECT_EQ(owner->deployment, "gpt-4o");
}

TEST_F(NoteAnswerTest, AFailedCreateRemembersNothing) {
  auto env = StageEnv::from_yaml(objects());
  auto& call = env.request("POST", "/openai/v1/files", {{"api-key", "sk-app"}});
  ASSERT_FALSE(call.run_all());
  call.ctx().status = 400;
  note_answer(call.x(), ids("file-new"), env.clock().steady_ms());
  EXPECT_FALSE(env.snapshot().affinity->find("file-new", env.clock().steady_ms()));
}

// Issue 13: a background response is billed once, by the first answer that carries its usage.
TEST_F(NoteAnswerTest, ABackgroundResponseIsChargedByTheFirstReadThatShowsItsUsage) {
  auto env = StageEnv::from_yaml(objects());
  auto& create = env.request("POST", "/openai/v1/responses", {{"api-key", "sk-app"}},
                             R"({"model":"gpt-4o","input":"hi","background":true})");
  ASSERT_FALSE(create.run_all());
  EXPECT_EQ(create.ctx().charge, Charge::kDeferred);
  EXPECT_FALSE(create.ctx().usage_expected);
  create.ctx().status = 200;
  create.ctx().backend = "east";
  answered(create.x(), ids("resp_bg"), env.clock().steady_ms());
  EXPECT_EQ(billed_usage(create.ctx()).total, 0u) << "not charged at creation";
  auto read = [&](bool with_usage) -> Charge {
    auto& call = env.request("GET", "/openai/v1/responses/resp_bg", {{"api-key", "sk-app"}});
    EXPECT_FALSE(call.run_all());
    EXPECT_EQ(call.ctx().charge, Charge::kNone);
    call.ctx().status = 200;
    call.ctx().usage.present = with_usage;
    call.ctx().usage.prompt = 10;
    answered(call.x(), ids("resp_bg"), env.clock().steady_ms());
    return call.ctx().charge;
  };
  EXPECT_EQ(read(false), Charge::kNone) << "still running";
  EXPECT_EQ(read(true), Charge::kTokens) << "the first answer with usage";
  EXPECT_EQ(read(true), Charge::kNone) << "never twice";
}

TEST_F(NoteAnswerTest, AResponseCreatedInTheForegroundIsNeverChargedAgainByAReadOrItsUsageCounted) {
  auto env = StageEnv::from_yaml(objects());
  env.snapshot().affinity->remember("resp_1", made_by_app("east"), env.clock().steady_ms());
  auto& call = env.request("GET", "/openai/v1/responses/resp_1", {{"api-key", "sk-app"}});
  ASSERT_FALSE(call.run_all());
  call.ctx().status = 200;
  call.ctx().ttfb_us = 100;
  call.ctx().usage.present = true;
  call.ctx().usage.prompt = 10;
  answered(call.x(), ids("resp_1"), env.clock().steady_ms());
  EXPECT_EQ(billed_usage(call.ctx()).total, 0u);
  EXPECT_FALSE(call.ctx().usage.present) << "neither logged nor counted as this request's tokens";
}

TEST_F(NoteAnswerTest, ABatchsOutputFilesBelongToTheBatchsOwner) {
  auto env = StageEnv::from_yaml(objects());
  env.snapshot().affinity->remember("batch_1", made_by_app("west"), env.clock().steady_ms());
  auto& call = env.request("GET", "/openai/v1/batches/batch_1", {{"api-key", "sk-app"}});
  ASSERT_FALSE(call.run_all());
  EXPECT_TRUE(call.x().capture_ids);
  call.ctx().status = 200;
  call.ctx().backend = "west";
  answered(call.x(), ids("batch_1", {"file-out"}), env.clock().steady_ms());
  auto owner = env.snapshot().affinity->find("file-out", env.clock().steady_ms());
  ASSERT_TRUE(owner);
  EXPECT_EQ(owner->backend, "west");
  EXPECT_EQ(owner->client, "app");
}

TEST_F(NoteAnswerTest, ADeletedObjectIsForgottenAChildDeleteKeepsItsParent) {
  auto env = StageEnv::from_yaml(objects());
  auto now = env.clock().steady_ms();
  env.snapshot().affinity->remember("vs_1", made_by_app("west"), now);
  env.snapshot().affinity->remember("file-1", made_by_app("west"), now);
  auto del = [&](const char* target) {
    auto& call = env.request("DELETE", target, {{"api-key", "sk-app"}});
    EXPECT_FALSE(call.run_all());
    call.ctx().status = 200;
    note_answer(call.x(), {}, now);
  };
  del("/openai/v1/vector_stores/vs_1/files/file-1");
  EXPECT_TRUE(env.snapshot().affinity->find("vs_1", now));
  del("/openai/v1/files/file-1");
  EXPECT_FALSE(env.snapshot().affinity->find("file-1", now));
}

using PinTest = StageTest;

TEST_F(PinTest, PinsTheNamedBackend) {
  auto env = StageEnv::from_yaml(objects());
  auto& call = env.request("POST", kChatPath,
                           {{"api-key", "sk-app"}, {"x-tollgate-backend", "west"}}, kChat);
  EXPECT_FALSE(call.run(pin));
  EXPECT_EQ(call.x().only, 1u);
}

TEST_F(PinTest, AClientThatMayNotPinIs403) {
  auto env = StageEnv::from_yaml(objects());
  auto reply = env.request("POST", kChatPath,
                           {{"api-key", "sk-other"}, {"x-tollgate-backend", "west"}}, kChat)
                   .run(pin);
  EXPECT_EQ(status(reply), 403);
  EXPECT_EQ(error_message(reply), "This client may not choose a backend (x-tollgate-backend).");
}

TEST_F(PinTest, ABackendOfAnotherDeploymentIs400) {
  auto env = StageEnv::from_yaml(objects());
  auto reply = env.request("POST", kChatPath,
                           {{"api-key", "sk-app"}, {"x-tollgate-backend", "other"}}, kChat)
                   .run(pin);
  EXPECT_EQ(status(reply), 400);
  EXPECT_EQ(reply->reason, "bad_pin");
  EXPECT_EQ(error_message(reply),
            "the x-tollgate-backend header names no backend of deployment 'gpt-4o'");
}

TEST_F(PinTest, AnUnknownBackendIs400) {
  auto env = StageEnv::from_yaml(objects());
  auto reply =
      env.request("POST", kChatPath, {{"api-key", "sk-app"}, {"x-tollgate-backend", "nope"}}, kChat)
          .run(pin);
  EXPECT_EQ(status(reply), 400);
  EXPECT_EQ(reply->reason, "bad_pin");
}

TEST_F(PinTest, ABackendOtherThanTheObjectsOwnerIs400) {
  auto env = StageEnv::from_yaml(objects());
  env.snapshot().affinity->remember("file-abc123", made_by_app("west"), env.clock().steady_ms());
  auto reply = env.request("GET", "/openai/v1/files/file-abc123",
                           {{"api-key", "sk-app"}, {"x-tollgate-backend", "east"}})
                   .run(pin);
  EXPECT_EQ(status(reply), 400);
  EXPECT_EQ(error_message(reply),
            "the x-tollgate-backend header conflicts with the backend that holds the object this "
            "request names");
}

TEST_F(PinTest, HidePinHeaderKeepsItFromTheBackends) {
  auto env = StageEnv::from_yaml(objects());
  auto& call = env.request("POST", kChatPath, {{"api-key", "sk-app"}}, kChat);
  call.filter(hide_pin_header);
  EXPECT_EQ(call.ctx().drop_header, "x-tollgate-backend");
}

}  // namespace
}  // namespace tollgate::pipeline::testing
