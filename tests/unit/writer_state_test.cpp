#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <random>

#include "credits/command_api/idempotency.hpp"
#include "credits/command_api/snapshot.hpp"
#include "test_ledger.hpp"

namespace credits::api {
namespace {

using namespace std::chrono_literals;

idempotency_record at(time_ms t, std::int64_t offset = 1) { return idempotency_record{stream::ledger, 0, offset, t}; }

// The first answer of a command, as the writer caches it: its event and where it sits.
accepted answered_at(std::int64_t offset) {
  event e{"id", 1, "t", "acc_1", "k", "r", "", "", 0, credits_added{"txn_1", 5, 5, "", "", nlohmann::json::object()}};
  return accepted{std::move(e), account_facts{"acc_1", "", std::nullopt}, log_position{"ledger", 0, offset}, false};
}

std::vector<std::int64_t> offsets_found(const idempotency_store& store, const key128& slot, time_ms now) {
  std::vector<std::int64_t> out;
  for (const auto& c : store.find(slot, now)) out.push_back(c.record.offset);
  return out;
}

TEST(idempotency_store, a_key_is_found_until_its_second_plus_the_window_has_passed) {
  // The store keeps seconds: it keeps a key up to a second longer, and the writer decides from the event's
  // occurred_at, to the millisecond, whether a key found here has expired.
  idempotency_store store(1000ms, 100, 100);
  const auto slot = slot_of("t", "k");
  ASSERT_TRUE(store.remember(slot, at(5'400, 7)));
  EXPECT_EQ(offsets_found(store, slot, 6'999), std::vector<std::int64_t>{7});
  EXPECT_EQ(store.find(slot, 6'999)[0].record.occurred_at, 5'000) << "the start of its second";
  EXPECT_TRUE(store.find(slot, 7'000).empty());
  EXPECT_EQ(store.expire(6'999), 0u);
  EXPECT_EQ(store.expire(7'000), 1u);
  EXPECT_EQ(store.size(), 0u);
}

TEST(idempotency_store, keys_are_scoped_by_tenant) {
  EXPECT_NE(slot_of("a", "k"), slot_of("b", "k"));
  EXPECT_NE(slot_of("a", "k1"), slot_of("a", "k"));
  EXPECT_EQ(slot_of("a", "k"), slot_of("a", "k"));
}

TEST(idempotency_store, the_oldest_keys_are_forgotten_at_the_cap) {
  idempotency_store store(1h, 3, 0);
  for (int i = 0; i < 5; ++i) store.remember(slot_of("t", std::to_string(i)), at(i * 1000));
  EXPECT_EQ(store.size(), 3u);
  EXPECT_EQ(store.evicted(), 2u);
  EXPECT_TRUE(store.find(slot_of("t", "0"), 10'000).empty());
  EXPECT_TRUE(store.find(slot_of("t", "1"), 10'000).empty());
  EXPECT_EQ(offsets_found(store, slot_of("t", "4"), 10'000), std::vector<std::int64_t>{1});
  EXPECT_EQ(store.forgotten_until(), 1'999) << "key 1 may have occurred until the end of its second";
}

TEST(idempotency_store, the_window_held_is_whole_until_a_key_inside_it_is_forgotten) {
  idempotency_store store(1h, 2, 0);
  EXPECT_EQ(store.window_held(50'000'000), 1h);
  for (int i = 0; i < 3; ++i) store.remember(slot_of("t", std::to_string(i)), at(10'000'000 + i * 60'000));
  EXPECT_EQ(store.window_held(10'200'000), std::chrono::milliseconds(10'200'000 - 10'000'999));
  EXPECT_EQ(store.window_held(10'000'999 + 3'600'000), 1h) << "what was forgotten would have expired by now";
}

TEST(idempotency_store, only_the_newest_answers_are_kept_whole) {
  idempotency_store store(1h, 100, 2);
  std::vector<std::uint64_t> sequences;
  for (int i = 0; i < 4; ++i) {
    sequences.push_back(*store.remember(slot_of("t", std::to_string(i)), at(i, i)));
    store.keep_answer(sequences.back(), answered_at(i));
  }
  const auto old = store.find(slot_of("t", "0"), 10);
  ASSERT_EQ(old.size(), 1u);
  EXPECT_EQ(old[0].sequence, sequences[0]);
  EXPECT_FALSE(store.answer(old[0].sequence)) << "must be re-read from the log";
  ASSERT_TRUE(store.answer(sequences[3]));
  EXPECT_EQ(store.answer(sequences[3])->position.offset, 3);
}

TEST(idempotency_store, a_key_can_be_used_again_after_it_expired) {
  idempotency_store store(1000ms, 100, 100);
  const auto slot = slot_of("t", "k");
  store.remember(slot, at(0, 1));
  store.remember(slot, at(1'500, 2));
  EXPECT_EQ(offsets_found(store, slot, 1'900), (std::vector<std::int64_t>{2, 1})) << "newest first";
  EXPECT_EQ(store.expire(1'900), 0u);
  EXPECT_EQ(store.expire(2'000), 1u) << "the newer record survives the expiry of the older one";
  EXPECT_EQ(offsets_found(store, slot, 2'500), std::vector<std::int64_t>{2});
}

TEST(idempotency_store, keys_that_share_a_fingerprint_are_all_candidates_newest_first) {
  // 40 bits of the slot are kept: two keys can share them, and the writer tells them apart by their events.
  idempotency_store store(1h, 100, 0);
  const key128 a{0xabcdef0123456789ULL, 1}, b{0xabcdef0123000000ULL, 2};
  store.remember(a, at(1'000, 10));
  store.remember(slot_of("t", "other"), at(1'000, 11));
  store.remember(b, at(2'000, 12));
  EXPECT_EQ(offsets_found(store, a, 3'000), (std::vector<std::int64_t>{12, 10}));
  EXPECT_EQ(offsets_found(store, b, 3'000), (std::vector<std::int64_t>{12, 10}));
}

TEST(idempotency_store, a_position_is_kept_exactly_within_its_limits_and_refused_beyond) {
  idempotency_store store(1h, 100, 0);
  const auto slot = slot_of("t", "k");
  const idempotency_record last{stream::usage, idempotency_partitions_max - 1, idempotency_offset_max - 1, 7'000};
  ASSERT_TRUE(store.remember(slot, last));
  const auto found = store.find(slot, 8'000);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].record.topic, stream::usage);
  EXPECT_EQ(found[0].record.partition, last.partition);
  EXPECT_EQ(found[0].record.offset, last.offset);
  EXPECT_FALSE(store.remember(slot_of("t", "p"), {stream::ledger, idempotency_partitions_max, 0, 7'000}));
  EXPECT_FALSE(store.remember(slot_of("t", "o"), {stream::ledger, 0, idempotency_offset_max, 7'000}));
  EXPECT_FALSE(store.remember(slot_of("t", "n"), {stream::ledger, -1, 0, 7'000}));
  EXPECT_EQ(store.size(), 1u);
}

TEST(idempotency_store, a_key_from_a_clock_ahead_of_now_is_young_not_expired) {
  idempotency_store store(1000ms, 100, 0);
  const auto slot = slot_of("t", "k");
  store.remember(slot, at(10'000'000));
  EXPECT_EQ(store.find(slot, 9'000'000).size(), 1u);
  EXPECT_EQ(store.expire(9'000'000), 0u);
}

TEST(idempotency_store, every_kept_key_is_found_through_growth_eviction_and_expiry) {
  // The index shifts slots back on every removal: a model (the keys in order) says what must be found.
  constexpr std::size_t cap = 3'000;
  idempotency_store store(60s, cap, 0);
  std::mt19937_64 rng(42);
  struct kept {
    key128 slot;
    time_ms at;
    std::int64_t offset;
  };
  std::deque<kept> model;
  time_ms now = 1'000'000;
  for (std::int64_t i = 0; i < 20'000; ++i) {
    now += static_cast<time_ms>(rng() % 20);
    const key128 slot{rng() & 0xfff00000000fffffULL, rng()};  // 12 bits of fingerprint: many keys share one
    ASSERT_TRUE(store.remember(slot, at(now, i)));
    model.push_back({slot, now, i});
    if (model.size() > cap) model.pop_front();
    store.expire(now);
    while (!model.empty() && (model.front().at / 1000 + 1) * 1000 + 60'000 <= now) model.pop_front();
    ASSERT_EQ(store.size(), model.size()) << i;
    if (i % 97 != 0) continue;
    for (std::size_t k = 0; k < model.size(); k += 13) {
      const auto found = offsets_found(store, model[k].slot, now);
      ASSERT_NE(std::find(found.begin(), found.end(), model[k].offset), found.end()) << i << " " << k;
    }
  }
  EXPECT_GT(store.evicted(), 0u);
}

TEST(idempotency_store, the_ring_and_index_take_at_most_24_bytes_a_key_at_the_cap) {
  constexpr std::size_t cap = 100'000;
  idempotency_store store(24h, cap, 0);
  for (std::size_t i = 0; i < cap; ++i) store.remember(slot_of("t", std::to_string(i)), at(1'000'000));
  EXPECT_LE(store.bytes(), 24 * cap);
}

TEST(idempotency_store, a_restored_image_keeps_the_order_and_the_cap) {
  idempotency_store big(1h, 100, 0);
  for (int i = 0; i < 10; ++i) big.remember(slot_of("t", std::to_string(i)), at(i * 1000, i));
  const auto image = big.image();
  ASSERT_EQ(image.keys.size(), 10u);
  idempotency_store small(1h, 4, 0);
  small.restore(image, 20'000, 20'000);
  EXPECT_EQ(small.size(), 4u);
  EXPECT_EQ(small.forgotten_until(), 5'999);
  EXPECT_TRUE(small.find(slot_of("t", "5"), 20'000).empty());
  EXPECT_EQ(offsets_found(small, slot_of("t", "6"), 20'000), std::vector<std::int64_t>{6});
  idempotency_store same(1h, 100, 0);
  same.restore(image, 20'000, 20'000);
  EXPECT_EQ(same.image().keys, image.keys);
}

TEST(idempotency_store, a_restored_image_drops_the_keys_whose_window_has_passed) {
  // Taken at 3,000 s, restored 200 days later (beyond what 24 bits of seconds tell apart): every key is gone.
  idempotency_store taken(1h, 100, 0);
  for (int i = 0; i < 3; ++i) taken.remember(slot_of("t", std::to_string(i)), at(i * 1'000'000, i));
  constexpr time_ms day = 86'400'000;
  idempotency_store late(1h, 100, 0);
  late.restore(taken.image(), 3'000'000, 200 * day);
  EXPECT_EQ(late.size(), 0u);
  idempotency_store soon(1h, 100, 0);
  soon.restore(taken.image(), 3'000'000, 3'600'000 + 1'000'000 + 999);
  EXPECT_EQ(soon.size(), 1u) << "keys 0 and 1 have expired, key 2 has not";
}

TEST(match_retry, only_the_same_tenant_key_and_request_within_the_window_replay) {
  // The store finds candidates by 40 bits of (tenant, key): the first event decides.
  event first = answered_at(1).e;
  first.tenant = "t";
  first.idempotency_key = "k";
  first.request_hash = "r";
  first.occurred_at = 5'000;
  EXPECT_EQ(match_retry(first, "t", "k", "r", 1000ms, 5'999), retry_match::replay);
  EXPECT_EQ(match_retry(first, "t", "k", "other body", 1000ms, 5'999), retry_match::reused);
  EXPECT_EQ(match_retry(first, "t", "k", "r", 1000ms, 6'000), retry_match::expired) << "to the millisecond";
  EXPECT_EQ(match_retry(first, "t", "k2", "r", 1000ms, 5'999), retry_match::other_key) << "a shared fingerprint";
  EXPECT_EQ(match_retry(first, "u", "k", "r", 1000ms, 5'999), retry_match::other_key) << "another tenant's key";
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
  // A grant with every term, partly held, and a voided one (issue 21).
  add_credits trial{c, 70, "trial", "", {}, l.txn(c)};
  trial.expires_at = l.now + 3'600'000;
  trial.priority = 10;
  trial.category = grant_category::promotional;
  trial.cost = cost_basis{0, "USD"};
  l.run(trial);
  const auto voided = l.txn(c);
  l.run(add_credits{c, 5, "", "", {}, voided});
  l.run(void_grant{grant_id_of(voided), l.txn(c)});
  l.run(create_reservation{c, 50, 60'000, "", "", {}, l.rsv(c)});  // 50 of the trial held, 20 left
  return l.state;
}

TEST(snapshot, round_trips_the_state_and_the_keys) {
  const auto state = sample_state();
  idempotency_image keys;
  keys.keys = {*pack_key(slot_of("t1", "k"), at(7'000, 9)), *pack_key(slot_of("t1", "j"), {stream::usage, 3, 4, 0})};
  keys.forgotten_until = 6'999;
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
  EXPECT_EQ(back->state.grants_by_expiry, state.grants_by_expiry);
  EXPECT_EQ(back->state.grants_by_expiry.size(), 1u);
  EXPECT_EQ(back->idempotency.keys, keys.keys);
  EXPECT_EQ(back->idempotency.forgotten_until, 6'999);
}

TEST(snapshot, the_keys_take_16_bytes_each) {
  idempotency_image keys;
  for (int i = 0; i < 1000; ++i) keys.keys.push_back(*pack_key(slot_of("t", std::to_string(i)), at(7'000, i)));
  const auto payload = encode_snapshot(1, 0, {}, sample_state(), keys);
  EXPECT_EQ(payload.size() - payload.find('\n') - 1, 16'000u) << "after the JSON document and its newline";
}

TEST(snapshot, keys_that_do_not_match_their_count_are_refused) {
  idempotency_image keys;
  keys.keys = {*pack_key(slot_of("t1", "k"), at(7'000, 9))};
  const auto payload = encode_snapshot(1, 0, {}, sample_state(), keys);
  std::string error;
  EXPECT_FALSE(decode_snapshot(payload.substr(0, payload.size() - 1), &error));
  EXPECT_FALSE(decode_snapshot(payload + std::string(16, '\0'), &error));
  EXPECT_NE(error.find("idempotency keys"), std::string::npos) << error;
}

TEST(snapshot, encoding_gives_up_once_cancelled_and_not_before) {
  // A stopping process cancels the snapshot being encoded rather than wait for it.
  const auto state = sample_state();
  idempotency_image keys;
  for (int i = 0; i < 5000; ++i) keys.keys.push_back(*pack_key(slot_of("t1", "k" + std::to_string(i)), at(7, i)));
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

TEST(snapshot, one_written_before_grants_is_refused_so_the_log_is_replayed) {
  // It cannot say which grant holds which credit; a replay of the log can.
  for (const int version : {2, 3}) {
    auto doc = nlohmann::json::parse(encode_snapshot(5, 1000, {}, sample_state(), {}));
    doc["version"] = version;
    for (auto& a : doc["accounts"]) a.erase("grants");
    std::string error;
    EXPECT_FALSE(decode_snapshot(doc.dump() + "\n", &error));
    EXPECT_NE(error.find("predates credit grants"), std::string::npos) << error;
  }
}

TEST(snapshot, grants_that_do_not_add_up_are_refused) {
  auto doc = nlohmann::json::parse(encode_snapshot(5, 1000, {}, sample_state(), {}));
  for (auto& a : doc["accounts"])
    if (!a["grants"].empty()) a["grants"][0][9] = a["grants"][0][9].get<std::int64_t>() + 1;  // remaining
  std::string error;
  EXPECT_FALSE(decode_snapshot(doc.dump() + "\n", &error));
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
