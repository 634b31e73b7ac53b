// credits-admin: argument parsing and revocation decisions.
#include <gtest/gtest.h>

#include "credits/admin/admin.hpp"
#include "key_log_fixtures.hpp"

namespace credits {
namespace {

using namespace credits::test;

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
                                              {"keys", "create", "--tenant", "t", "--scope", "owner"},
                                              {"events", "void", "--event-id", "e"},
                                              {"events", "void", "--reason", "r"},
                                              {"events", "delete"},
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

TEST(admin_args, parses_events_void_and_an_admin_scope) {
  const auto v =
      admin::parse_args({"events", "void", "--event-id", "e1", "--reason", "bad record", "--account-id", "a"});
  EXPECT_EQ(v.what, admin::command::verb::void_event);
  EXPECT_EQ(v.event_id, "e1");
  EXPECT_EQ(v.reason, "bad record");
  EXPECT_EQ(v.account_id, "a");
  EXPECT_EQ(admin::parse_args({"keys", "create", "--tenant", "t", "--scope", "admin"}).scope, key_scope::admin);
}

}  // namespace
}  // namespace credits
