// API keys in the domain: tokens, the key log's events and their fold (common/keys).
#include <gtest/gtest.h>

#include "credits/common/contract.hpp"
#include "credits/common/ids.hpp"
#include "credits/common/keys.hpp"
#include "key_log_fixtures.hpp"

namespace credits {
namespace {

using namespace credits::test;

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

}  // namespace
}  // namespace credits
