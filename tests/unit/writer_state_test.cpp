#include <gtest/gtest.h>

#include "credits/command_api/idempotency.hpp"
#include "credits/command_api/snapshot.hpp"
#include "test_ledger.hpp"

namespace credits::api {
namespace {

using namespace std::chrono_literals;

idempotency_record at(time_ms t, std::int64_t offset = 1) {
  return idempotency_record{fingerprint_of("aa"), stream::ledger, 0, offset, t};
}

// The first answer of a command, as the writer caches it: its event and where it sits.
accepted answered_at(std::int64_t offset) {
  event e{"id", 1, "t", "acc_1", "k", "r", "", "", 0, credits_added{"txn_1", 5, 5, "", "", nlohmann::json::object()}};
  return accepted{std::move(e), account_facts{"acc_1", "", std::nullopt}, log_position{"ledger", 0, offset}, false};
}

TEST(idempotency_store, a_key_answers_until_its_window_ends) {
  idempotency_store store(1000ms, 100, 100);
  const auto slot = slot_of("t", "k");
  store.remember(slot, at(5000), answered_at(7));
  ASSERT_TRUE(store.find(slot, 5999));
  EXPECT_EQ(store.find(slot, 5999)->response->position.offset, 7);
  EXPECT_FALSE(store.find(slot, 6000)) << "expiry is occurred_at + window, whatever the store still holds";
  EXPECT_EQ(store.expire(6000), 1u);
  EXPECT_EQ(store.size(), 0u);
}

TEST(idempotency_store, keys_are_scoped_by_tenant) {
  EXPECT_NE(slot_of("a", "k"), slot_of("b", "k"));
  EXPECT_NE(slot_of("a", "k1"), slot_of("a", "k"));
  EXPECT_EQ(slot_of("a", "k"), slot_of("a", "k"));
}

TEST(idempotency_store, the_oldest_keys_are_forgotten_at_the_cap) {
  idempotency_store store(1h, 3, 0);
  for (int i = 0; i < 5; ++i) store.remember(slot_of("t", std::to_string(i)), at(i), std::nullopt);
  EXPECT_EQ(store.size(), 3u);
  EXPECT_EQ(store.evicted(), 2u);
  EXPECT_FALSE(store.find(slot_of("t", "0"), 10));
  EXPECT_FALSE(store.find(slot_of("t", "1"), 10));
  EXPECT_TRUE(store.find(slot_of("t", "4"), 10));
}

TEST(idempotency_store, only_the_newest_answers_are_kept_whole) {
  idempotency_store store(1h, 100, 2);
  for (int i = 0; i < 4; ++i) store.remember(slot_of("t", std::to_string(i)), at(i, i), answered_at(i));
  const auto old = store.find(slot_of("t", "0"), 10);
  ASSERT_TRUE(old);
  EXPECT_FALSE(old->response) << "must be re-read from the log";
  EXPECT_EQ(old->record.offset, 0);
  EXPECT_TRUE(store.find(slot_of("t", "3"), 10)->response);
}

TEST(idempotency_store, a_key_can_be_used_again_after_it_expired) {
  idempotency_store store(1000ms, 100, 100);
  const auto slot = slot_of("t", "k");
  store.remember(slot, at(0, 1), std::nullopt);
  store.remember(slot, at(2000, 2), std::nullopt);
  EXPECT_EQ(store.expire(1500), 0u) << "the newer record must survive the expiry of the older one";
  EXPECT_EQ(store.find(slot, 2500)->record.offset, 2);
}

TEST(key128, hex_round_trips) {
  const auto k = slot_of("tenant", "key");
  EXPECT_EQ(key128_from_hex(to_hex(k)), k);
  EXPECT_FALSE(key128_from_hex("xyz"));
}

ledger_state sample_state() {
  testing::test_ledger l;
  const auto a = l.open_account("a", 1000);
  const auto b = l.open_account("b", 50);
  l.reserve(a, 300);
  const auto confirmed = l.reserve(a, 100);
  l.run(confirm_reservation{confirmed, 40, l.txn(a)});
  l.reserve(b, 50);
  // Every optional field filled, so that the round trip has each of them to lose.
  const auto c = derive_account_id("t1", "c");
  l.run(create_account{c, "Carol", "c", "carol@example.com", {{"plan", "pro"}}});
  l.run(add_credits{c, 500, "top-up", "card", {{"order", 7}}, l.txn(c)});
  l.run(create_reservation{c, 200, 60'000, "chat", "gpt-4o", {{"request", "r1"}}, l.rsv(c)});
  return l.state;
}

TEST(snapshot, round_trips_the_state_and_the_keys) {
  const auto state = sample_state();
  const std::vector<std::pair<key128, idempotency_record>> keys{{slot_of("t1", "k"), at(7, 9)}};
  const std::map<std::string, std::vector<std::int64_t>> next{{"ledger", {0, 12, 3}}, {"usage", {4}}};
  std::string error;
  const auto back = decode_snapshot(encode_snapshot(42, 1000, next, state, keys), &error);
  ASSERT_TRUE(back) << error;
  EXPECT_EQ(back->id, 42u);
  EXPECT_EQ(back->next_offsets, next);
  // Whole accounts, every field of every reservation and transaction included: a restore that drops any of
  // them would answer later commands differently from a replay of the log.
  ASSERT_EQ(back->state.accounts.size(), state.accounts.size());
  for (const auto& [id, a] : state.accounts) EXPECT_TRUE(back->state.accounts.at(id) == a) << id;
  EXPECT_EQ(back->state.pending_by_expiry, state.pending_by_expiry);
  ASSERT_EQ(back->idempotency.size(), 1u);
  EXPECT_EQ(back->idempotency[0].first, keys[0].first);
  EXPECT_EQ(back->idempotency[0].second.offset, 9);
}

TEST(snapshot, encoding_gives_up_once_cancelled_and_not_before) {
  // A stopping process cancels the snapshot being encoded rather than wait for it.
  const auto state = sample_state();
  std::vector<std::pair<key128, idempotency_record>> keys;
  for (int i = 0; i < 5000; ++i) keys.emplace_back(slot_of("t1", "k" + std::to_string(i)), at(7, i));
  std::atomic<bool> cancelled{false};
  EXPECT_FALSE(encode_snapshot(1, 1000, {}, state, keys, &cancelled).empty());
  cancelled = true;
  EXPECT_THROW(encode_snapshot(1, 1000, {}, state, keys, &cancelled), snapshot_cancelled);
}

TEST(snapshot, a_snapshot_that_breaks_the_money_invariants_is_refused) {
  auto state = sample_state();
  state.accounts.begin()->second.reserved += 1;
  std::string error;
  EXPECT_FALSE(decode_snapshot(encode_snapshot(1, 0, {}, state, {}), &error));
  EXPECT_NE(error.find("invariant"), std::string::npos);
  EXPECT_FALSE(decode_snapshot("{\"format\":\"credits-writer-snapshot\",\"version\":99}", &error));
  EXPECT_FALSE(decode_snapshot("garbage", &error));
}

TEST(snapshot, chunks_reassemble_and_the_newest_complete_one_wins) {
  const std::string older(3000, 'a');
  const std::string newer(2500, 'b');
  snapshot_assembler assembler;
  for (const auto& c : split_snapshot(older, 1, 1000)) assembler.add(c);
  const auto newer_chunks = split_snapshot(newer, 2, 1000);
  ASSERT_EQ(newer_chunks.size(), 3u);
  for (const auto& c : newer_chunks) assembler.add(c);
  std::vector<std::string> problems;
  EXPECT_EQ(assembler.newest(problems), newer);
  EXPECT_TRUE(problems.empty());
}

TEST(snapshot, an_incomplete_or_corrupt_newest_snapshot_falls_back_to_an_older_one) {
  const std::string older(3000, 'a');
  snapshot_assembler assembler;
  for (const auto& c : split_snapshot(older, 1, 1000)) assembler.add(c);
  auto chunks = split_snapshot(std::string(2500, 'b'), 2, 1000);
  assembler.add(chunks[0]);  // chunk 1 and 2 of snapshot 2 are missing
  auto corrupt = split_snapshot(std::string(1500, 'c'), 3, 1000);
  corrupt[1].back() = 'X';  // one flipped byte
  for (const auto& c : corrupt) assembler.add(c);
  assembler.add("not a chunk");
  std::vector<std::string> problems;
  EXPECT_EQ(assembler.newest(problems), older);
  EXPECT_EQ(problems.size(), 3u);  // malformed, corrupt 3, incomplete 2
}

TEST(snapshot, a_partition_writer_sees_only_the_snapshots_of_its_partition) {
  // Scale out: partition writers' snapshots share the topic, each scoped to its partition.
  snapshot_assembler p1("p1"), whole;
  for (auto* a : {&p1, &whole}) {
    for (const auto& c : split_snapshot(std::string(1500, 'w'), 1, 1000)) a->add(c);
    for (const auto& c : split_snapshot(std::string(1500, '1'), 2, 1000, "p1")) a->add(c);
    for (const auto& c : split_snapshot(std::string(1500, '2'), 3, 1000, "p2")) a->add(c);
  }
  std::vector<std::string> problems;
  EXPECT_EQ(p1.newest(problems), std::string(1500, '1'));
  EXPECT_EQ(whole.newest(problems), std::string(1500, 'w'));
  EXPECT_TRUE(problems.empty());
  // Ids keep rising across scopes, so whichever writer snapshots next numbers its snapshot above every other.
  EXPECT_EQ(p1.highest_id(), 3u);
  EXPECT_EQ(whole.highest_id(), 3u);
}

TEST(snapshot, none_at_all_is_reported_as_none) {
  snapshot_assembler assembler;
  std::vector<std::string> problems;
  EXPECT_FALSE(assembler.newest(problems));
}

}  // namespace
}  // namespace credits::api
