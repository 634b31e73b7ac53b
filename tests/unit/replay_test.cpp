// credits::replay: a record the fold cannot apply quarantines its account instead of stopping the process, the
// account refuses commands and its holds wait, and a void takes the record off again.
#include <gtest/gtest.h>

#include "credits/common/replay.hpp"
#include "test_ledger.hpp"

namespace credits {
namespace {

using testing::test_ledger;

constexpr std::string_view topic = "credits.ledger";

// Replays `e`, encoded, as the record at `offset` of partition 0, which every key here calls home.
replayed replay_event(ledger_state& state, const event& e, std::int64_t offset, std::string_view key = {}) {
  const auto value = encode(e);
  return replay(state, log_record{topic, stream::ledger, 0, 0, offset, key.empty() ? e.account_id : key, value});
}

event bad_deduction(const std::string& account) {
  return event{"9a1e4b2c-0000-4000-8000-000000000001",       1, "t1", account, "k", "r", "", "", 0,
               credits_deducted{"txn_bad", 5, 12345, "", {}}};
}

rejection refused(const decision& d) {
  EXPECT_TRUE(std::holds_alternative<rejection>(d));
  return std::holds_alternative<rejection>(d) ? std::get<rejection>(d) : rejection{};
}

TEST(replay, a_record_that_breaks_the_fold_quarantines_its_account_and_changes_nothing) {
  test_ledger l;
  const auto id = l.open_account("u", 100);
  const auto other = l.open_account("v", 100);
  const auto before = l.state.accounts;
  const auto r = replay_event(l.state, bad_deduction(id), 7);
  EXPECT_EQ(r.result, replayed::outcome::quarantined);
  EXPECT_NE(r.reason.find("balanceAfter"), std::string::npos) << r.reason;
  EXPECT_EQ(l.state.accounts, before);
  ASSERT_EQ(l.state.quarantined.at(id).size(), 1u);
  EXPECT_EQ(l.state.quarantined.at(id)[0].event_id, bad_deduction(id).event_id);
  EXPECT_EQ(l.state.quarantined.at(id)[0].position, "credits.ledger:0:7");

  const auto blocked = refused(l.run(deduct_credits{id, 1, "", {}, l.txn(id)}));
  EXPECT_EQ(blocked.code, error_code::account_blocked);
  EXPECT_EQ(blocked.details["eventId"], bad_deduction(id).event_id);
  EXPECT_EQ(blocked.details["position"], "credits.ledger:0:7");
  // Another tenant learns nothing: the account answers as a missing one.
  EXPECT_EQ(refused(l.run(deduct_credits{id, 1, "", {}, l.txn(id)}, "t2")).code, error_code::account_not_found);
  EXPECT_TRUE(std::holds_alternative<std::vector<event>>(l.run(deduct_credits{other, 1, "", {}, l.txn(other)})));
}

TEST(replay, an_undecodable_record_is_named_by_its_event_id_or_its_position) {
  ledger_state state;
  const auto with_id = replay(state, log_record{topic, stream::ledger, 0, 0, 3, "acc_a",
                                                R"({"eventId":"e-1","tenant":"t1","type":"Teleported"})"});
  EXPECT_EQ(with_id.result, replayed::outcome::quarantined);
  EXPECT_EQ(state.quarantined.at("acc_a")[0].event_id, "e-1");
  EXPECT_EQ(state.quarantined.at("acc_a")[0].tenant, "t1");
  replay(state, log_record{topic, stream::ledger, 0, 0, 4, "acc_b", "\xff not json"});
  EXPECT_EQ(state.quarantined.at("acc_b")[0].event_id, "credits.ledger:0:4");
  const auto unkeyed = replay(state, log_record{topic, stream::ledger, 0, 0, 5, "", "garbage"});
  EXPECT_EQ(unkeyed.result, replayed::outcome::unkeyed);
  EXPECT_EQ(state.quarantined.size(), 2u);
}

TEST(replay, a_record_in_another_partition_than_its_key_quarantines_the_key) {
  test_ledger l;
  const auto id = l.open_account("u", 100);
  const event fine{"e2", 1, "t1", id, "k", "r", "", "", 0, credits_added{"txn_x", 5, 105, "", "", {}}};
  const auto value = encode(fine);
  const auto r = replay(l.state, log_record{topic, stream::ledger, 1, 0, 9, id, value});
  EXPECT_EQ(r.result, replayed::outcome::quarantined);
  EXPECT_EQ(l.state.accounts.at(id).balance, 100);
}

TEST(replay, holds_of_a_quarantined_account_do_not_expire_until_it_is_served_again) {
  test_ledger l;
  const auto id = l.open_account("u", 100);
  l.reserve(id, 30);
  replay_event(l.state, bad_deduction(id), 7);
  EXPECT_TRUE(expire_due(l.state, l.now + 86'400'000, 10).empty());
}

TEST(void_event, takes_the_record_off_and_serves_the_account_again) {
  test_ledger l;
  const auto id = l.open_account("u", 100);
  const auto bad = bad_deduction(id);
  replay_event(l.state, bad, 7);
  EXPECT_EQ(refused(l.run(void_event{id, "no-such-id", "x"})).code, error_code::event_not_found);
  EXPECT_EQ(refused(l.run(void_event{id, bad.event_id, "x"}, "t2")).code, error_code::event_not_found);
  const auto voided = l.run(void_event{id, bad.event_id, "hand-made"});
  ASSERT_TRUE(std::holds_alternative<std::vector<event>>(voided));
  const auto& v = std::get<event_voided>(std::get<std::vector<event>>(voided)[0].payload);
  EXPECT_EQ(v.voided_position, "credits.ledger:0:7");
  EXPECT_TRUE(v.account_unblocked);
  EXPECT_FALSE(l.state.quarantined.contains(id));
  const auto after = l.run(deduct_credits{id, 10, "", {}, l.txn(id)});
  ASSERT_TRUE(std::holds_alternative<std::vector<event>>(after));
  EXPECT_EQ(l.state.accounts.at(id).balance, 90);  // the fold without the voided record
  EXPECT_EQ(refused(l.run(void_event{id, bad.event_id, "again"})).code, error_code::event_not_found);
}

TEST(void_event, unblocks_only_when_the_last_record_is_voided) {
  test_ledger l;
  const auto id = l.open_account("u", 100);
  auto first = bad_deduction(id);
  auto second = bad_deduction(id);
  second.event_id = "9a1e4b2c-0000-4000-8000-000000000002";
  replay_event(l.state, first, 7);
  replay_event(l.state, second, 8);
  const auto one = std::get<std::vector<event>>(l.run(void_event{id, first.event_id, "1"}));
  EXPECT_FALSE(std::get<event_voided>(one[0].payload).account_unblocked);
  EXPECT_EQ(refused(l.run(deduct_credits{id, 1, "", {}, l.txn(id)})).code, error_code::account_blocked);
  const auto two = std::get<std::vector<event>>(l.run(void_event{id, second.event_id, "2"}));
  EXPECT_TRUE(std::get<event_voided>(two[0].payload).account_unblocked);
}

TEST(void_event, a_replay_of_the_log_with_the_void_ends_where_the_writer_did) {
  test_ledger l;
  const auto id = l.open_account("u", 100);
  const auto bad = bad_deduction(id);
  replay_event(l.state, bad, 7);
  const auto voided = std::get<std::vector<event>>(l.run(void_event{id, bad.event_id, "x"}));
  ledger_state replayed_state = l.state;
  replayed_state.quarantined.clear();
  replay_event(replayed_state, bad, 7);
  EXPECT_EQ(replay_event(replayed_state, voided[0], 8).result, replayed::outcome::applied);
  EXPECT_TRUE(replayed_state.quarantined.empty());
  EXPECT_EQ(replayed_state.accounts, l.state.accounts);
}

}  // namespace
}  // namespace credits
