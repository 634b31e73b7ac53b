// The registry the API authenticates requests with: keys from the log and from CREDITS_API_KEYS.
#include <gtest/gtest.h>

#include "credits/command_api/auth.hpp"
#include "key_log_fixtures.hpp"

namespace credits {
namespace {

using namespace credits::test;

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

}  // namespace
}  // namespace credits
