// Key index (hashes only, expiry, revocation), the keys file, and the small crypto helpers.
#include "tollgate/auth/keys.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "tollgate/auth/authenticator.hpp"

namespace tollgate::auth {

using namespace crypto;  // SHA-256, hex, base64url, RFC 3339
namespace {

config::Config config_with_clients() {
  config::Config c;
  c.tenants.push_back({"marketing"});
  config::ClientConfig a;
  a.name = "campaign-bot";
  a.tenant = 0;
  a.keys.push_back({sha256("key-a1"), "key-a1", std::nullopt});
  a.keys.push_back({sha256("key-a-old"), "key-a-o", 1'000});  // expired at t=1000
  a.deployments = {"gpt-4o"};
  a.operations = {"chat", "embeddings"};
  a.regions = {"eastus"};
  a.principals = {"0000-app-guid"};
  config::ClientConfig b;
  b.name = "analytics";
  b.keys.push_back({sha256("key-b1"), "key-b1", std::nullopt});
  b.deployments = {"*"};
  c.clients = {a, b};
  return c;
}

TEST(Crypto, HexBase64urlAndTimes) {
  auto d = sha256("test");
  EXPECT_EQ(to_hex(d), "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
  EXPECT_EQ(digest_from_hex(to_hex(d)), d);
  EXPECT_FALSE(digest_from_hex("9f86"));
  EXPECT_FALSE(digest_from_hex(std::string(64, 'g')));
  for (std::string s : std::vector<std::string>{"", "f", "fo", "foo", "foob", "fooba", "foobar",
                                                std::string("\xff\xfe\x00", 3)}) {
    EXPECT_EQ(base64url_decode(base64url_encode(s)), s);
  }
  EXPECT_EQ(base64url_encode("\xfb\xff"), "-_8");
  EXPECT_FALSE(base64url_decode("a+b/"));
  EXPECT_FALSE(base64url_decode("abcde"));
  EXPECT_EQ(parse_rfc3339("2027-01-01T00:00:00Z"), 1798761600);
  EXPECT_EQ(parse_rfc3339("2027-01-01T02:00:00.123+02:00"), 1798761600);
  EXPECT_FALSE(parse_rfc3339("2027-01-01"));
  EXPECT_FALSE(parse_rfc3339("2027-13-01T00:00:00Z"));
  EXPECT_FALSE(parse_rfc3339("2027-01-01T00:00:00"));
  EXPECT_EQ(format_rfc3339(1798761600), "2027-01-01T00:00:00Z");
  auto k1 = new_key();
  auto k2 = new_key();
  EXPECT_NE(k1, k2);
  EXPECT_EQ(k1.size(), 46u);
  EXPECT_EQ(k1.substr(0, 3), "tg-");
}

TEST(KeyIndex, FindsClientsByKeyUntilExpiryOrRevocation) {
  auto cfg = config_with_clients();
  KeysFile file;
  KeyIndex idx(cfg, file);
  EXPECT_EQ(idx.find("key-a1", 500), 0u);
  EXPECT_EQ(idx.find("key-a-old", 500), 0u);
  EXPECT_FALSE(idx.find("key-a-old", 1'000));  // expired
  EXPECT_EQ(idx.find("key-b1", 500), 1u);
  EXPECT_FALSE(idx.find("key-b2", 500));
  EXPECT_FALSE(idx.find("", 500));
  // A runtime key for an existing client, one for a removed client, and a revoked config key.
  file.keys.push_back({key_id(sha256("rt-1")), "analytics", sha256("rt-1"), "rt-1", 100, std::nullopt});
  file.keys.push_back({key_id(sha256("rt-2")), "gone", sha256("rt-2"), "rt-2", 100, std::nullopt});
  file.revoked.push_back(key_id(sha256("key-a1")));
  KeyIndex next(cfg, file);
  EXPECT_EQ(next.find("rt-1", 500), 1u);
  EXPECT_FALSE(next.find("rt-2", 500));
  EXPECT_FALSE(next.find("key-a1", 500));
  ASSERT_NE(next.by_id(key_id(sha256("rt-1"))), nullptr);
  EXPECT_TRUE(next.by_id(key_id(sha256("rt-1")))->runtime);
}

TEST(KeysFile, RoundTripsAtomically) {
  auto path = ::testing::TempDir() + "tollgate-keys-test.json";
  std::remove(path.c_str());
  std::string error;
  auto empty = load_keys_file(path, error);
  EXPECT_TRUE(error.empty()) << error;  // a missing file is empty, not an error
  EXPECT_TRUE(empty.keys.empty());
  KeysFile f;
  f.keys.push_back({"key_1", "analytics", sha256("x"), "tg-abcd", 100, 2000});
  f.revoked = {"key_2"};
  ASSERT_EQ(save_keys_file(path, f), "");
  auto back = load_keys_file(path, error);
  ASSERT_TRUE(error.empty()) << error;
  ASSERT_EQ(back.keys.size(), 1u);
  EXPECT_EQ(back.keys[0].digest, sha256("x"));
  EXPECT_EQ(back.keys[0].expires, 2000);
  EXPECT_EQ(back.revoked, std::vector<std::string>{"key_2"});
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text.find("\"x\""), std::string::npos);  // digests only
  std::ofstream(path) << "{broken";
  load_keys_file(path, error);
  EXPECT_NE(error.find("not a JSON object"), std::string::npos);
  std::remove(path.c_str());
}

RuntimeKey runtime_key(std::string id, std::string client) {
  RuntimeKey k;
  k.id = std::move(id);
  k.client = std::move(client);
  k.digest = sha256("secret-of-" + k.id);
  k.prefix = "tg-" + k.id.substr(0, 4);
  k.created = 1'700'000'000;
  return k;
}

std::vector<std::string> ids_of(const KeysFile& f) {
  std::vector<std::string> out;
  for (const auto& k : f.keys) out.push_back(k.id);
  return out;
}

TEST(KeysFile, RecordsRoundTripWithTheDigestOnly) {
  auto k = runtime_key("key-1", "campaign-bot");
  k.expires = 1'800'000'000;
  auto text = encode_runtime_key(k);
  EXPECT_EQ(text.find("secret-of"), std::string::npos);
  EXPECT_NE(text.find(to_hex(k.digest)), std::string::npos);
  EXPECT_EQ(decode_runtime_key(text), k);
  k.expires.reset();
  EXPECT_EQ(decode_runtime_key(encode_runtime_key(k)), k);
  EXPECT_FALSE(decode_runtime_key("not json"));
  EXPECT_FALSE(decode_runtime_key(R"({"id":"x","client":"c","sha256":"zz"})"));
  EXPECT_FALSE(decode_runtime_key(R"({"client":"c"})"));
}

TEST(KeysMerge, UnionOfKeysAndRevocations) {
  KeysFile a{{runtime_key("k1", "c"), runtime_key("k2", "c")}, {"cfg-1"}};
  KeysFile b{{runtime_key("k2", "other"), runtime_key("k3", "c")}, {"cfg-2"}};
  auto m = merge(a, b);
  EXPECT_EQ(ids_of(m), (std::vector<std::string>{"k1", "k2", "k3"}));
  EXPECT_EQ(m.keys[1].client, "c") << "a's record wins when both hold the id";
  EXPECT_EQ(m.revoked, (std::vector<std::string>{"cfg-1", "cfg-2"}));
  EXPECT_EQ(merge(a, KeysFile{}), a) << "nothing new: the same file";
  EXPECT_EQ(merge(KeysFile{}, a), a);
}

TEST(KeysMerge, ARevocationWinsOnEitherSide) {
  KeysFile local{{runtime_key("k1", "c"), runtime_key("k2", "c")}, {}};
  KeysFile remote{{runtime_key("k1", "c")}, {"k2"}};
  auto m = merge(local, remote);
  EXPECT_EQ(ids_of(m), (std::vector<std::string>{"k1"}));
  EXPECT_EQ(m.revoked, (std::vector<std::string>{"k2"}));
  auto back = merge(remote, KeysFile{{runtime_key("k2", "c")}, {"k1"}});  // revoked here, alive there
  EXPECT_TRUE(back.keys.empty());
  EXPECT_EQ(back.revoked, (std::vector<std::string>{"k2", "k1"}));
  // The index follows: a revoked runtime key is not found.
  auto cfg = config_with_clients();
  KeysFile f{{runtime_key("k1", "campaign-bot")}, {}};
  f.keys[0].digest = sha256("runtime-secret");
  EXPECT_TRUE(KeyIndex(cfg, merge(f, KeysFile{})).find("runtime-secret", 500));
  EXPECT_FALSE(KeyIndex(cfg, merge(f, KeysFile{{}, {"k1"}})).find("runtime-secret", 500));
}

TEST(KeysMerge, IdempotentAndOrderIndependentInContent) {
  KeysFile a{{runtime_key("k1", "c"), runtime_key("k2", "c")}, {"k9"}};
  KeysFile b{{runtime_key("k3", "c"), runtime_key("k9", "c")}, {"k1"}};
  auto ab = merge(a, b);
  EXPECT_EQ(merge(ab, b), ab);
  EXPECT_EQ(merge(ab, a), ab);
  EXPECT_EQ(merge(ab, ab), ab);
  auto ba = merge(b, a);
  auto sorted = [](KeysFile f) {
    std::sort(f.keys.begin(), f.keys.end(), [](const auto& x, const auto& y) { return x.id < y.id; });
    std::sort(f.revoked.begin(), f.revoked.end());
    return f;
  };
  EXPECT_EQ(sorted(ab), sorted(ba));
  EXPECT_EQ(ids_of(sorted(ab)), (std::vector<std::string>{"k2", "k3"}));
}

TEST(Authenticator, ApiKeyWinsOverBearerAndUnknownKeysAreRefused) {
  auto cfg = config_with_clients();
  KeyIndex idx(cfg, {});
  auto id = authenticate({"key-b1", "Bearer key-a1"}, cfg, idx, {}, 500);
  EXPECT_EQ(id.kind, Identity::Kind::kClient);
  EXPECT_EQ(id.client, 1u);
  id = authenticate({"", "Bearer key-a1"}, cfg, idx, {}, 500);
  EXPECT_EQ(id.client, 0u);
  id = authenticate({"", "bearer   key-a1 "}, cfg, idx, {}, 500);
  EXPECT_EQ(id.kind, Identity::Kind::kClient);
  EXPECT_EQ(authenticate({"nope", ""}, cfg, idx, {}, 500).kind, Identity::Kind::kUnauthenticated);
  EXPECT_EQ(authenticate({"", ""}, cfg, idx, {}, 500).reason, "missing_credentials");
  EXPECT_EQ(authenticate({"", "Basic dXNlcjpwYXNz"}, cfg, idx, {}, 500).kind,
            Identity::Kind::kUnauthenticated);
  EXPECT_EQ(authenticate({"key-a-old", ""}, cfg, idx, {}, 5000).kind, Identity::Kind::kUnauthenticated);
  cfg.auth.allow_anonymous = true;
  EXPECT_EQ(authenticate({"nope", ""}, cfg, idx, {}, 500).kind, Identity::Kind::kAnonymous);
  EXPECT_EQ(authenticate({"key-a1", ""}, cfg, idx, {}, 500).kind, Identity::Kind::kClient);
}

TEST(Authorization, DeploymentsOperationsRegions) {
  auto cfg = config_with_clients();
  const auto& a = cfg.clients[0];
  const auto& b = cfg.clients[1];
  EXPECT_TRUE(allows_deployment(a, "gpt-4o"));
  EXPECT_FALSE(allows_deployment(a, "gpt-4o-mini"));
  EXPECT_TRUE(allows_deployment(b, "anything"));
  EXPECT_TRUE(allows_operation(a, "chat"));
  EXPECT_FALSE(allows_operation(a, "files"));
  EXPECT_TRUE(allows_operation(b, "files"));
  EXPECT_TRUE(allows_region(a, "eastus"));
  EXPECT_FALSE(allows_region(a, "westeurope"));
  EXPECT_TRUE(allows_region(b, "westeurope"));
  core::ApiCall call;
  call.op = core::Operation::kOther;
  call.op_path = "files/file-1/content";
  EXPECT_EQ(operation_name(call), "files");
  call.op_path = "threads/t/runs";
  EXPECT_EQ(operation_name(call), "threads");
  call.op_path = "extensions/chat";
  EXPECT_EQ(operation_name(call), "other");
  call.op = core::Operation::kEmbeddings;
  EXPECT_EQ(operation_name(call), "embeddings");
}

}  // namespace
}  // namespace tollgate::auth
