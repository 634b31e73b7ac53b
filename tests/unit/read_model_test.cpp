// The read model's shared side (read-model/): the key layout and where a Redis Cluster places each key.
#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "credits/read_model/layout.hpp"
#include "credits/read_model/reads.hpp"
#include "credits/read_model/redis.hpp"

namespace credits {
namespace {

const std::string account = "acc_0123456789abcdef01234567";
const std::string account_hash = "credits:account:{acc_0123456789abcdef01234567}";
const std::string rsv_hash = "credits:reservation:{acc_0123456789abcdef01234567}:rsv_1";

TEST(read_model_keys, every_account_key_carries_the_account_as_a_hash_tag) {
  EXPECT_EQ(read_model::account_key(account), account_hash);
  EXPECT_EQ(read_model::reservation_key(account, "rsv_1"), rsv_hash);
  EXPECT_EQ(read_model::reservations_key(account), "credits:reservations:{acc_0123456789abcdef01234567}");
  EXPECT_EQ(read_model::usage_key(account, "use_1"), "credits:usage:{acc_0123456789abcdef01234567}:use_1");
  EXPECT_EQ(read_model::usage_daily_key(account, "2025-11-29"),
            "credits:usage-daily:{acc_0123456789abcdef01234567}:2025-11-29");
  EXPECT_EQ(read_model::position_field("credits.ledger", 7), "credits.ledger:7");
}

TEST(view_status, a_marker_with_an_id_is_ready_one_with_a_rebuild_notice_is_rebuilding_none_is_missing) {
  using state = read_model::view_status::state_t;
  const auto ready = read_model::view_status_of({"0123456789abcdef", std::nullopt, std::nullopt});
  EXPECT_EQ(ready.state, state::ready);
  EXPECT_EQ(ready.id, "0123456789abcdef");
  EXPECT_EQ(ready.describe(), "");
  const auto rebuilding = read_model::view_status_of({std::nullopt, "2026-11-29T19:50:01.123Z", "FLUSHALL"});
  EXPECT_EQ(rebuilding.state, state::rebuilding);
  EXPECT_NE(rebuilding.describe().find("being rebuilt from the log (since 2026-11-29T19:50:01.123Z: FLUSHALL)"),
            std::string::npos);
  EXPECT_EQ(read_model::view_status_of({std::nullopt, std::nullopt, std::nullopt}).state, state::missing);
  EXPECT_EQ(read_model::view_status_of({}).state, state::missing);
  EXPECT_NE(read_model::view_status_of({}).describe().find("no view marker"), std::string::npos);
}

TEST(cluster_slot, matches_the_values_in_the_redis_cluster_specification) {
  // CRC16-XMODEM of "123456789" is 0x31C3 (the specification's check value); 0x31C3 % 16384 = 12739.
  EXPECT_EQ(read_model::cluster_slot("123456789"), 0x31C3 % 16384);
  EXPECT_EQ(read_model::cluster_slot("foo"), 12182);  // redis-cli CLUSTER KEYSLOT foo
  EXPECT_EQ(read_model::cluster_slot(""), 0);
}

TEST(cluster_slot, a_hash_tag_places_keys_together_and_an_empty_or_open_one_hashes_the_whole_key) {
  EXPECT_EQ(read_model::hash_tag("credits:account:{acc_1}"), "acc_1");
  EXPECT_EQ(read_model::hash_tag("credits:reservation:{acc_1}:rsv_2"), "acc_1");
  EXPECT_EQ(read_model::hash_tag("a{b}{c}"), "b");  // the first '{' and the next '}'
  EXPECT_EQ(read_model::hash_tag("a{}b{c}"), "a{}b{c}");
  EXPECT_EQ(read_model::hash_tag("a{bc"), "a{bc");
  EXPECT_EQ(read_model::cluster_slot(read_model::account_key(account)),
            read_model::cluster_slot(read_model::reservation_key(account, "rsv_9")));
  EXPECT_EQ(read_model::cluster_slot(read_model::applied_key(account)),
            read_model::cluster_slot(read_model::account_key(account)));
  EXPECT_EQ(read_model::cluster_slot("{user1000}.following"), read_model::cluster_slot("{user1000}.followers"));
}

TEST(command_key, is_the_first_key_of_a_script_none_for_keyless_commands_else_the_first_argument) {
  EXPECT_EQ(read_model::command_key({"HGETALL", "k"}), "k");
  EXPECT_EQ(read_model::command_key({"evalsha", "sha", "2", "k1", "k2", "arg"}), "k1");
  EXPECT_EQ(read_model::command_key({"EVAL", "return 1", "0"}), std::nullopt);
  EXPECT_EQ(read_model::command_key({"PING"}), std::nullopt);
  EXPECT_EQ(read_model::command_key({"CLIENT", "SETNAME", "x"}), std::nullopt);
  EXPECT_EQ(read_model::command_key({"SCAN", "0", "MATCH", "credits:*"}), std::nullopt);
}

}  // namespace
}  // namespace credits
