// API keys: the key log's events and fold (common/keys), the registry the API authenticates with, and
// credits-admin's argument parsing and revocation decisions.
#include <gtest/gtest.h>

#include "credits/admin/admin.hpp"
#include "credits/command_api/auth.hpp"
#include "credits/common/contract.hpp"
#include "credits/common/ids.hpp"

namespace credits {
namespace {

const std::string token_a = key_token("0123456789abcdef", std::string(64, 'a'));
const std::string token_b = key_token("fedcba9876543210", std::string(64, 'b'));

key_event created(const std::string& tenant, const std::string& token, key_scope scope = key_scope::read_write) {
  return key_event{"8d6f1f7e-0000-4000-8000-000000000001",
                   1,
                   tenant,
                   *key_id_of_token(token),
                   "credits-admin:test",
                   1'764'432'082'123,
                   api_key_created{key_token_hash(token), scope}};
}

key_event revoked(const std::string& tenant, const std::string& key_id) {
  return key_event{"8d6f1f7e-0000-4000-8000-000000000002",
                   1,
                   tenant,
                   key_id,
                   "credits-admin:test",
                   1'764'432'090'000,
                   api_key_revoked{}};
}

TEST(key_token, names_its_key_id_and_nothing_else_is_a_token) {
  EXPECT_EQ(key_id_of_token(token_a), "key_0123456789abcdef");
  EXPECT_TRUE(is_key_id("key_0123456789abcdef"));
  for (const std::string& bad :
       {std::string("ck_demo_key_123"), token_a.substr(1), token_a + "0",
        key_token("0123456789ABCDEF", std::string(64, 'a')), key_token("0123456789abcdef", std::string(63, 'a') + "g")})
    EXPECT_FALSE(key_id_of_token(bad)) << bad;
  EXPECT_FALSE(is_key_id("key_0123"));
}

TEST(key_token, hashes_compare_equal_only_when_equal) {
  EXPECT_TRUE(hashes_equal(key_token_hash(token_a), key_token_hash(token_a)));
  EXPECT_FALSE(hashes_equal(key_token_hash(token_a), key_token_hash(token_b)));
  EXPECT_FALSE(hashes_equal("abc", "abcd"));
}

TEST(key_event, round_trips_and_never_carries_the_token) {
  const auto e = created("t1", token_a, key_scope::read_only);
  const auto text = encode(e);
  EXPECT_EQ(text.find(std::string(64, 'a')), std::string::npos) << "the secret must never be in the event";
  const auto back = decode_key_event(text);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->key_id, e.key_id);
  EXPECT_EQ(back->tenant, "t1");
  EXPECT_EQ(back->occurred_at, e.occurred_at);
  EXPECT_EQ(std::get<api_key_created>(back->payload).scope, key_scope::read_only);
  EXPECT_EQ(std::get<api_key_created>(back->payload).secret_hash, key_token_hash(token_a));
  const auto r = decode_key_event(encode(revoked("t1", e.key_id)));
  ASSERT_TRUE(r);
  EXPECT_TRUE(std::holds_alternative<api_key_revoked>(r->payload));
}

TEST(key_event, malformed_records_are_refused_with_a_reason) {
  auto j = to_json(created("t1", token_a));
  std::string why;
  for (const auto& [field, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"type", "CreditsAdded"}, {"schemaVersion", 2}, {"keyId", "key_x"}, {"tenant", ""}, {"occurredAt", "now"}}) {
    auto bad = j;
    bad[field] = value;
    EXPECT_FALSE(decode_key_event(bad.dump(), &why)) << field;
    EXPECT_FALSE(why.empty()) << field;
  }
  auto bad = j;
  bad["payload"]["secretHash"] = "not-a-hash";
  EXPECT_FALSE(decode_key_event(bad.dump()));
  EXPECT_FALSE(decode_key_event("{"));
  EXPECT_FALSE(decode_key_event(std::string("{\"type\":\0}", 11)));
}

TEST(key_event, types_are_registered_on_the_key_log) {
  for (const char* name : {"ApiKeyCreated", "ApiKeyRevoked"}) {
    const auto* type = find_event_type(name);
    ASSERT_NE(type, nullptr) << name;
    EXPECT_EQ(type->topic, stream::keys);
  }
}

TEST(key_log, ids_are_never_reused_and_revocations_only_by_the_owner) {
  key_log_state s;
  EXPECT_TRUE(apply(s, created("t1", token_a)));
  EXPECT_FALSE(apply(s, created("t2", token_a))) << "a second create of an id is ignored";
  EXPECT_EQ(s.keys.at("key_0123456789abcdef").tenant, "t1");
  std::string why;
  EXPECT_FALSE(apply(s, revoked("t2", "key_0123456789abcdef"), &why));
  EXPECT_NE(why.find("another tenant"), std::string::npos);
  EXPECT_FALSE(s.keys.at("key_0123456789abcdef").revoked_at);
  EXPECT_TRUE(apply(s, revoked("t1", "key_0123456789abcdef")));
  EXPECT_TRUE(s.keys.at("key_0123456789abcdef").revoked_at);
  EXPECT_FALSE(apply(s, revoked("t1", "key_0123456789abcdef"))) << "revoked already";
}

TEST(key_registry, accepts_log_keys_with_their_scope_until_revoked) {
  const std::map<std::string, api::api_key> bootstrap;
  api::key_registry r(bootstrap);
  EXPECT_FALSE(r.authenticate(token_a));
  r.apply(created("t1", token_a, key_scope::read_only));
  const auto ok = r.authenticate(token_a);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->tenant, "t1");
  EXPECT_EQ(ok->key_id, "key_0123456789abcdef");
  EXPECT_EQ(ok->scope, key_scope::read_only);
  // Same id, another secret: refused.
  const auto forged = key_token("0123456789abcdef", std::string(64, 'c'));
  EXPECT_FALSE(r.authenticate(forged));
  r.apply(revoked("t1", "key_0123456789abcdef"));
  EXPECT_FALSE(r.authenticate(token_a));
}

TEST(key_registry, bootstrap_keys_work_until_their_id_is_revoked_for_their_tenant) {
  const auto bootstrap = api::parse_api_keys("demo:ck_demo_key_123");
  const auto id = bootstrap.begin()->second.key_id;
  api::key_registry r(bootstrap);
  ASSERT_TRUE(r.authenticate("ck_demo_key_123"));
  EXPECT_FALSE(r.authenticate("ck_demo_key_124"));
  r.apply(revoked("other", id));  // names another tenant: revokes nothing
  EXPECT_TRUE(r.authenticate("ck_demo_key_123"));
  api::key_registry r2(bootstrap);
  r2.apply(revoked("demo", id));
  EXPECT_FALSE(r2.authenticate("ck_demo_key_123"));
}

TEST(admin_args, parses_the_three_commands_and_refuses_the_rest) {
  using admin::command;
  const auto c = admin::parse_args({"keys", "create", "--tenant", "t1", "--scope", "read-only"});
  EXPECT_EQ(c.what, command::verb::create);
  EXPECT_EQ(c.tenant, "t1");
  EXPECT_EQ(c.scope, key_scope::read_only);
  EXPECT_EQ(admin::parse_args({"keys", "list"}).what, command::verb::list);
  const auto r = admin::parse_args({"keys", "revoke", "--tenant", "t1", "--key", "key_0123456789abcdef"});
  EXPECT_EQ(r.key_id, "key_0123456789abcdef");
  for (const std::vector<std::string>& bad : {std::vector<std::string>{},
                                              {"keys"},
                                              {"keys", "delete"},
                                              {"keys", "create"},
                                              {"keys", "create", "--tenant"},
                                              {"keys", "create", "--tenant", "t", "--scope", "admin"},
                                              {"keys", "revoke", "--tenant", "t"},
                                              {"keys", "revoke", "--tenant", "t", "--key", token_a},
                                              {"keys", "list", "--key", "key_0123456789abcdef"}})
    EXPECT_THROW(admin::parse_args(bad), std::invalid_argument) << bad.size();
}

TEST(admin_revoke, refuses_unknown_foreign_and_revoked_keys) {
  key_log_state s;
  apply(s, created("t1", token_a));
  admin::command c;
  c.what = admin::command::verb::revoke;
  c.tenant = "t2";
  c.key_id = "key_0123456789abcdef";
  EXPECT_TRUE(std::holds_alternative<admin::refusal>(admin::decide_revoke(s, c)));
  c.tenant = "t1";
  const auto decided = admin::decide_revoke(s, c);
  ASSERT_TRUE(std::holds_alternative<key_event>(decided));
  apply(s, std::get<key_event>(decided));
  EXPECT_TRUE(std::holds_alternative<admin::refusal>(admin::decide_revoke(s, c)));
  c.key_id = "key_1111111111111111";
  EXPECT_TRUE(std::holds_alternative<admin::refusal>(admin::decide_revoke(s, c)));
  c.bootstrap = true;
  EXPECT_TRUE(std::holds_alternative<key_event>(admin::decide_revoke(s, c)));
}

}  // namespace
}  // namespace credits
