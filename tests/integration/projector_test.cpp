#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "credits/common/events.hpp"
#include "credits/common/ids.hpp"
#include "credits/event_store/event_store.hpp"
#include "credits/projector/fold.hpp"
#include "credits/projector/projector.hpp"
#include "credits/read_model/layout.hpp"
#include "credits/read_model/reads.hpp"
#include "credits/read_model/redis.hpp"
#include "projector_harness.hpp"
#include "suite_resources.hpp"

// These run against the real Kafka and Redis of scripts/up.sh --infra-only. Each test makes topics of its own and
// starts from empty Redis databases of the suite's own (suite_resources.hpp), so no test sees another's events,
// whatever order they run in.
namespace credits {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

using harness::catch_up_timeout;
using harness::eventually;
using harness::fresh_account;
using harness::hex_suffix;
using harness::running_projector;

constexpr auto kafka_timeout = 15s;
constexpr std::int32_t topic_partitions = 12;  // as scripts/lib.sh makes the stack's

class projector_test : public ::testing::Test {
 protected:
  void SetUp() override {
    auto parsed = projector_config_from_env([](const char* name) { return std::getenv(name); });
    ASSERT_TRUE(std::holds_alternative<projector_config>(parsed)) << std::get<std::string>(parsed);
    config_ = std::get<projector_config>(parsed);
    harness::use_topics_of_its_own(config_, "projector", topic_partitions, topic_partitions, kafka_timeout);
    config_.redis_db = harness::projector_test_dbs.view;
    config_.redis_rebuild_db = harness::projector_test_dbs.rebuild;
    config_.redis_client_name = "credits-projector-test-" + hex_suffix();
    redis_ = std::make_unique<read_model::redis_connection>(config_.redis_host, config_.redis_port, 2000ms);
    harness::flush(*redis_, harness::projector_test_dbs);
    producer_ = std::make_unique<store::transactional_producer>(config_.brokers,
                                                                "credits-projector-test-" + hex_suffix(), 10s, 30s);
  }

  event make(const std::string& account, event_payload payload) {
    return event{"evt-" + hex_suffix(), event_schema_version, "t1", account, "key_test", "req_test", "", "",
                 1'764'432'082'123,     std::move(payload)};
  }

  store::record record_of(const event& e) {
    const auto& topic = stream_of(e.payload) == stream::usage ? config_.usage_topic : config_.ledger_topic;
    return store::record{topic, e.account_id, encode(e)};
  }

  // Appends in one Kafka transaction; returns each record's position.
  std::vector<store::position> produce(const std::vector<store::record>& records) {
    const auto result = producer_->append(records, kafka_timeout);
    EXPECT_EQ(result.status, store::append_status::committed) << result.error;
    return result.positions;
  }
  std::vector<store::position> produce_events(const std::vector<event>& events) {
    std::vector<store::record> records;
    for (const auto& e : events) records.push_back(record_of(e));
    return produce(records);
  }

  // True once the stored position of every (topic, partition) covers the given offsets.
  bool applied(const std::string& topic, const std::vector<store::position>& positions) {
    for (const auto& p : positions)
      if (read_model::applied_offset(*redis_, topic, p.partition) < p.offset) return false;
    return true;
  }

  // The id of the view in the projector's database, for calling its script by hand; a marker is made if there
  // is none yet (the database is shared with other topic sets: a projector that finds it adds its topics).
  std::string view_id() {
    redis_->run({"HSETNX", std::string(read_model::view_key), "id", "test-" + hex_suffix()});
    return redis_->run({"HGET", std::string(read_model::view_key), "id"}).value.value_or("");
  }

  amount_t balance(const std::string& account) {
    const auto a = read_model::get_account(*redis_, account);
    return a ? a->balance : -1;
  }

  projector_config config_;
  std::unique_ptr<read_model::redis_connection> redis_;
  std::unique_ptr<store::transactional_producer> producer_;
};

TEST_F(projector_test, folds_a_reservation_lifecycle_and_usage_into_the_read_model) {
  const auto acc = fresh_account();
  const auto rsv_1 = child_id("rsv", acc, 1);
  const auto rsv_2 = child_id("rsv", acc, 2);
  const auto txn = child_id("txn", acc, 3);
  const auto ledger = produce_events({
      make(acc, account_created{"Alice", "user-" + acc, "a@example.com", {{"plan", "pro"}}}),
      make(acc, credits_added{child_id("txn", acc, 4), 1000, 1000, "top-up", "card", {}}),
      make(acc, credits_reserved{rsv_1, 500, 1'764'432'142'123, "chat", "gpt-4o", {}}),
      make(acc, reservation_confirmed{rsv_1, txn, 320, 180, 680}),
      make(acc, credits_reserved{rsv_2, 200, 1'764'432'142'123, "chat", "gpt-4o", {}}),
      make(acc, reservation_cancelled{rsv_2, 200}),
  });
  const auto usage = produce_events(
      {make(acc, usage_recorded{child_id("use", acc, 5), "customer", txn, "gpt-4o", "text", 1000, 320, 0, {}})});

  running_projector projector(config_);
  ASSERT_TRUE(eventually([&] { return applied(config_.ledger_topic, ledger) && applied(config_.usage_topic, usage); }));
  projector.stop();

  const auto account = read_model::get_account(*redis_, acc);
  ASSERT_TRUE(account.has_value());
  EXPECT_EQ(account->name, "Alice");
  EXPECT_EQ(account->metadata, (nlohmann::json{{"plan", "pro"}}));
  EXPECT_EQ(account->created_at, "2025-11-29T16:01:22.123Z");
  EXPECT_EQ(account->balance, 680);
  EXPECT_EQ(account->reserved, 0);

  const auto confirmed = read_model::get_reservation(*redis_, acc, rsv_1);
  ASSERT_TRUE(confirmed.has_value());
  EXPECT_EQ(confirmed->status, "confirmed");
  EXPECT_EQ(confirmed->amount, 500);
  EXPECT_EQ(confirmed->charged, 320);
  EXPECT_EQ(confirmed->released, 180);
  EXPECT_EQ(confirmed->transaction_id, txn);
  const auto cancelled = read_model::get_reservation(*redis_, acc, rsv_2);
  ASSERT_TRUE(cancelled.has_value());
  EXPECT_EQ(cancelled->status, "cancelled");
  EXPECT_EQ(cancelled->released, 200);
  EXPECT_EQ(redis_->run({"ZCARD", read_model::reservations_key(acc)}).value, "2");

  const auto daily = read_model::usage_daily_key(acc, "2025-11-29");
  EXPECT_EQ(redis_->run({"HGET", daily, "gpt-4o:inputTokens"}).value, "1000");
  EXPECT_EQ(redis_->run({"HGET", daily, "gpt-4o:records"}).value, "1");
}

// credits-projector killed with SIGKILL in the middle of a backlog, as a crash leaves it: whatever it held (a batch
// read but not applied, the next one prefetched, a pipeline Redis had only begun) dies with it, and no shutdown
// path runs. A restarted projector resumes from the positions in Redis and applies every event exactly once: each
// credits_added says the balance it leaves, so one applied twice would be refused as poison and block its account,
// and one skipped would leave the balance short.
TEST_F(projector_test, a_projector_killed_mid_backlog_is_resumed_by_a_restart_that_applies_each_event_once) {
  constexpr std::size_t accounts_total = 8;
  constexpr amount_t adds_per_account = 600;
  constexpr std::size_t records_per_append = 1000;
  constexpr int kills = 5;
  std::vector<std::string> accounts;
  std::vector<event> events;
  for (std::size_t i = 0; i < accounts_total; ++i) {
    accounts.push_back(fresh_account());
    events.push_back(make(accounts.back(), account_created{"K", "user-" + accounts.back(), "", {}}));
  }
  for (amount_t n = 1; n <= adds_per_account; ++n)
    for (const auto& acc : accounts)
      events.push_back(make(acc, credits_added{child_id("txn", acc, static_cast<std::uint64_t>(n)), 1, n, "", "", {}}));
  std::map<std::int32_t, std::int64_t> last_offset;  // partition -> the highest offset of this test's events
  for (std::size_t i = 0; i < events.size(); i += records_per_append) {
    const auto end = std::min(events.size(), i + records_per_append);
    for (const auto& p : produce_events(
             {events.begin() + static_cast<std::ptrdiff_t>(i), events.begin() + static_cast<std::ptrdiff_t>(end)}))
      last_offset[p.partition] = std::max(last_offset[p.partition], p.offset);
  }
  const amount_t total = adds_per_account * static_cast<amount_t>(accounts_total);
  // How many of this test's credits the view holds so far.
  const auto folded = [&] {
    amount_t sum = 0;
    for (const auto& acc : accounts) sum += std::max<amount_t>(balance(acc), 0);
    return sum;
  };

  // Small batches, so the process is killed between two of many, or inside one.
  auto settings = harness::projector_settings(config_);
  settings["CREDITS_PROJECTOR_GROUP_ID"] = "";  // the fixed assignment, whatever the environment says
  settings["CREDITS_PROJECTOR_BATCH_EVENTS_MAX"] = "25";
  int killed_mid_way = 0;
  for (int k = 0; k < kills; ++k) {
    const auto before = folded();
    if (before == total) break;
    harness::projector_process crashing(settings);
    ASSERT_TRUE(crashing.started());
    // Killed as soon as it has applied something of this backlog, whatever it is doing at that moment.
    ASSERT_TRUE(eventually([&] { return folded() > before; })) << "kill " << k << ": the projector applied nothing";
    ASSERT_TRUE(crashing.kill()) << "kill " << k << ": the projector had exited already";
    if (folded() < total) ++killed_mid_way;
  }
  ASSERT_GE(killed_mid_way, 1) << "the projector folded the whole backlog before it could be killed";
  std::printf("killed credits-projector %d times mid-backlog, with %lld of %lld credits folded\n", killed_mid_way,
              static_cast<long long>(folded()), static_cast<long long>(total));

  const auto more = produce_events(
      {make(accounts.front(),
            credits_added{child_id("txn", accounts.front(), 99'999), 50, adds_per_account + 50, "", "", {}})});
  std::vector<store::position> targets = more;
  for (const auto& [partition, offset] : last_offset) targets.push_back({partition, offset});
  running_projector restarted(config_);
  ASSERT_TRUE(eventually([&] { return applied(config_.ledger_topic, targets); }));
  restarted.stop();
  for (const auto& acc : accounts) {
    const auto view = read_model::get_account(*redis_, acc);
    ASSERT_TRUE(view.has_value()) << acc;
    EXPECT_EQ(view->balance, adds_per_account + (acc == accounts.front() ? 50 : 0)) << acc;
    EXPECT_FALSE(view->blocked) << acc << " holds a poison event: one of its events was applied twice";
  }
}

TEST_F(projector_test, replaying_applied_events_changes_nothing) {
  const auto acc = fresh_account();
  const auto positions = produce_events({make(acc, account_created{"C", "user-" + acc, "", {}}),
                                         make(acc, credits_added{child_id("txn", acc, 1), 700, 700, "", "", {}}),
                                         make(acc, credits_deducted{child_id("txn", acc, 2), 200, 500, "", {}})});
  {
    running_projector projector(config_);
    ASSERT_TRUE(eventually([&] { return applied(config_.ledger_topic, positions); }));
  }
  ASSERT_EQ(balance(acc), 500);

  // A brand-new projector forced back to the first of these events reads them all again.
  projector replayer(config_);
  const auto partition = positions.front().partition;
  replayer.rewind({{config_.ledger_topic, partition, positions.front().offset}});
  ASSERT_TRUE(eventually([&] {
    replayer.step();
    return replayer.stats().replayed >= positions.size();
  }));
  EXPECT_EQ(balance(acc), 500);
  EXPECT_EQ(read_model::get_account(*redis_, acc)->reserved, 0);

  // The script itself, called with an already-covered offset, writes nothing.
  const auto field = read_model::position_field(config_.ledger_topic, partition);
  const auto old_offset = positions.back().offset;
  const auto reply = redis_->run(
      guarded_apply_args(*redis_->run({"SCRIPT", "LOAD", std::string(guarded_apply_script())}).value, view_id(), field,
                         old_offset, old_offset - 1, {{"HINCRBY", read_model::account_key(acc), "balance", "1000"}}));
  EXPECT_EQ(read_guarded_reply(reply).replayed, 1u);
  EXPECT_EQ(read_guarded_reply(reply).applied, 0u);
  EXPECT_EQ(balance(acc), 500);
  EXPECT_GE(read_model::applied_offset(*redis_, config_.ledger_topic, partition), old_offset);
}

TEST_F(projector_test, the_script_refuses_an_event_that_would_skip_an_unapplied_one) {
  // The stored position is P; an event claiming to follow P + 5 must not apply, or whatever lies between
  // would be lost. A private position field keeps this away from the real partitions.
  const auto field = "credits.test-gap-" + hex_suffix() + ":0";
  const auto key = "credits:test-gap:" + hex_suffix();
  const auto sha = *redis_->run({"SCRIPT", "LOAD", std::string(guarded_apply_script())}).value;
  const auto view = view_id();
  EXPECT_EQ(
      read_guarded_reply(redis_->run(guarded_apply_args(sha, view, field, 10, -1, {{"INCRBY", key, "1"}}))).applied,
      1u);
  EXPECT_THROW(redis_->run(guarded_apply_args(sha, view, field, 20, 15, {{"INCRBY", key, "1"}})),
               read_model::reply_error);
  EXPECT_EQ(
      read_guarded_reply(redis_->run(guarded_apply_args(sha, view, field, 20, 10, {{"INCRBY", key, "1"}}))).applied,
      1u);
  EXPECT_EQ(redis_->run({"GET", key}).value, "2");
  // Into a view that is not the one the projector folds into (it lost its data, or a rebuild replaced it) the
  // script writes nothing, whatever the position says.
  try {
    redis_->run(guarded_apply_args(sha, "another-view", field, 21, 20, {{"INCRBY", key, "1"}}));
    ADD_FAILURE() << "the script applied an event to another view";
  } catch (const read_model::reply_error& e) {
    EXPECT_TRUE(std::string_view(e.what()).starts_with("VIEW")) << e.what();
  }
  EXPECT_EQ(redis_->run({"GET", key}).value, "2");
  redis_->run({"DEL", key});
  redis_->run({"HDEL", std::string(read_model::positions_key), field});
}

TEST_F(projector_test, a_run_of_events_applies_each_in_order_stops_at_a_refusal_and_adds_up_its_tallies) {
  const auto field = "credits.test-run-" + hex_suffix() + ":0";
  const auto account = "credits:test-run:{" + hex_suffix() + "}";
  const auto report = std::string(read_model::grant_report_prefix) + "test-run:" + hex_suffix();
  const auto sha = *redis_->run({"SCRIPT", "LOAD", std::string(guarded_apply_script())}).value;
  const auto view = view_id();
  const auto spend = [&](amount_t n) {
    return std::vector<std::vector<std::string>>{{"HINCRBY", account, "balance", std::to_string(-n)},
                                                 {"HINCRBY", report, "consumed|paid", std::to_string(n)}};
  };
  const auto covered = [&](amount_t n) {
    return std::vector<std::vector<std::string>>{{"money", account, std::to_string(-n), "0", "", "overdraft"}};
  };
  const std::vector<std::vector<std::string>> none, top_up{{"HINCRBY", account, "balance", "10"}};
  const auto s3 = spend(3), s4 = spend(4), s20 = spend(20), s1 = spend(1);
  const auto g3 = covered(3), g4 = covered(4), g20 = covered(20), g1 = covered(1);
  // 10 credits; spend 3, then 4, then 20 (refused: only 3 are left), then 1.
  const auto reply = read_guarded_reply(redis_->run(guarded_apply_args(sha, view, field,
                                                                       {{0, -1, top_up, none, none},
                                                                        {1, 0, s3, g3, none},
                                                                        {2, 1, s4, g4, none},
                                                                        {3, 2, s20, g20, none},
                                                                        {4, 3, s1, g1, none}})));
  EXPECT_EQ(reply.applied, 3u);
  EXPECT_EQ(reply.replayed, 0u);
  ASSERT_TRUE(reply.refused);
  EXPECT_TRUE(reply.refused->starts_with("overdraft")) << *reply.refused;
  EXPECT_EQ(redis_->run({"HGET", account, "balance"}).value, "3");
  // The tallies of the applied events only, added up.
  EXPECT_EQ(redis_->run({"HGET", report, "consumed|paid"}).value, "7");
  EXPECT_EQ(redis_->run({"HGET", std::string(read_model::positions_key), field}).value, "2");

  // The rest goes again after the refused one is recorded (here: as if it were); what applied is replayed.
  const auto again = read_guarded_reply(redis_->run(
      guarded_apply_args(sha, view, field, {{2, 1, s4, g4, none}, {3, 2, none, none, none}, {4, 3, s1, g1, none}})));
  EXPECT_EQ(again.replayed, 1u);
  EXPECT_EQ(again.applied, 2u);
  EXPECT_FALSE(again.refused);
  EXPECT_EQ(redis_->run({"HGET", account, "balance"}).value, "2");
  EXPECT_EQ(redis_->run({"HGET", report, "consumed|paid"}).value, "8");

  // A command that fails stops the run there; the events before it stay applied and recorded.
  const std::vector<std::vector<std::string>> broken{{"HINCRBY", account, "balance", "not a number"}};
  EXPECT_THROW(redis_->run(guarded_apply_args(
                   sha, view, field, {{5, 4, s1, g1, none}, {6, 5, broken, none, none}, {7, 6, s1, g1, none}})),
               read_model::reply_error);
  EXPECT_EQ(redis_->run({"HGET", account, "balance"}).value, "1");
  EXPECT_EQ(redis_->run({"HGET", report, "consumed|paid"}).value, "9");
  EXPECT_EQ(redis_->run({"HGET", std::string(read_model::positions_key), field}).value, "5");
  redis_->run({"DEL", account, report});
  redis_->run({"HDEL", std::string(read_model::positions_key), field});
}

TEST_F(projector_test, the_cluster_script_applies_a_part_once_records_a_refusal_and_refuses_a_gap) {
  // The script a Redis Cluster runs also runs on a single server: its keys share one hash tag here.
  const auto tag = "test-cluster-" + hex_suffix();
  const auto counter = "credits:test:{" + tag + "}:n";
  const auto money = "credits:test:{" + tag + "}:money";
  const auto sha = *redis_->run({"SCRIPT", "LOAD", std::string(cluster_apply_script())}).value;
  const std::string field = "account:credits.test:0";
  const auto call = [&](std::int64_t offset, std::optional<std::int64_t> previous, amount_t spend) {
    return redis_->run(
        cluster_apply_args(sha,
                           tag_part{tag,
                                    {{"INCRBY", counter, "1"}, {"HINCRBY", money, "balance", std::to_string(-spend)}},
                                    {{"money", money, std::to_string(-spend), "0", "", "overdraft"}}},
                           field, offset, previous));
  };
  redis_->run({"HSET", money, "balance", "10"});
  EXPECT_EQ(call(3, std::nullopt, 4).value, "1");
  EXPECT_EQ(call(3, std::nullopt, 4).value, "0");  // a replay
  const auto refused = call(5, 3, 100).value;      // would overdraw: refused, and the refusal recorded
  ASSERT_TRUE(refused && refused->starts_with("POISON overdraft")) << refused.value_or("(nil)");
  EXPECT_EQ(call(5, 3, 100).value, refused);              // a replay of the refused event answers the same
  EXPECT_EQ(call(8, 5, 1).value, "1");                    // the next event follows the refused one
  EXPECT_THROW(call(12, 9, 1), read_model::reply_error);  // 9 never applied: GAP
  EXPECT_EQ(redis_->run({"GET", counter}).value, "2");
  EXPECT_EQ(redis_->run({"HGET", money, "balance"}).value, "5");
  EXPECT_EQ(redis_->run({"HGET", read_model::applied_key(tag), field}).value, "8");
  redis_->run({"DEL", counter, money, read_model::applied_key(tag)});
}

TEST_F(projector_test, a_poison_event_is_skipped_and_its_position_advances) {
  const auto acc = fresh_account();
  // Same key, so the same partition, in this order: the garbage sits before the good events.
  const auto poison = produce({store::record{config_.ledger_topic, acc, "{not an event"}});
  ASSERT_EQ(poison.size(), 1u);
  const auto good = produce_events({make(acc, account_created{"D", "user-" + acc, "", {}}),
                                    make(acc, credits_added{child_id("txn", acc, 1), 10, 10, "", "", {}})});
  ASSERT_EQ(good.front().partition, poison.front().partition);

  running_projector projector(config_);
  ASSERT_TRUE(eventually([&] { return applied(config_.ledger_topic, good); }));
  projector.stop();
  EXPECT_GE(read_model::applied_offset(*redis_, config_.ledger_topic, poison.front().partition), poison.front().offset);
  EXPECT_EQ(balance(acc), 10);
}

// Finds the id of the Redis client with the given name in CLIENT LIST.
std::optional<std::string> client_id(read_model::redis_connection& redis, const std::string& name) {
  std::istringstream lines(*redis.run({"CLIENT", "LIST"}).value);
  for (std::string line; std::getline(lines, line);) {
    if (line.find(" name=" + name + " ") == std::string::npos) continue;
    const auto start = line.find("id=") + 3;
    return line.substr(start, line.find(' ', start) - start);
  }
  return std::nullopt;
}

TEST_F(projector_test, a_lost_redis_connection_is_re_established_and_nothing_is_skipped) {
  const auto acc = fresh_account();
  const auto first = produce_events({make(acc, account_created{"E", "user-" + acc, "", {}}),
                                     make(acc, credits_added{child_id("txn", acc, 1), 100, 100, "", "", {}})});
  running_projector projector(config_);
  ASSERT_TRUE(eventually([&] { return applied(config_.ledger_topic, first); }));

  const auto id = client_id(*redis_, config_.redis_client_name);
  ASSERT_TRUE(id.has_value());
  redis_->run({"CLIENT", "KILL", "ID", *id});
  // These arrive on a dead connection: the pipeline fails and the projector must re-read them.
  std::vector<event> more;
  for (std::uint64_t i = 2; i < 12; ++i)
    more.push_back(
        make(acc, credits_added{child_id("txn", acc, i), 10, 100 + 10 * static_cast<amount_t>(i - 1), "", "", {}}));
  const auto second = produce_events(more);
  ASSERT_TRUE(eventually([&] { return applied(config_.ledger_topic, second); }));
  const auto stats = projector.stop();
  EXPECT_GE(stats.recoveries, 1u);
  EXPECT_EQ(balance(acc), 200);
}

TEST_F(projector_test, catches_up_on_a_backlog_and_reports_its_throughput) {
  const char* requested = std::getenv("CREDITS_THROUGHPUT_EVENTS");
  const std::size_t events_total = requested ? std::stoul(requested) : 10'000;
  constexpr std::size_t accounts_total = 200;
  constexpr std::size_t records_per_append = 1000;

  std::vector<std::string> accounts;
  std::map<std::string, amount_t> expected;
  std::vector<event> events;
  for (std::size_t i = 0; i < accounts_total; ++i) {
    accounts.push_back(fresh_account());
    events.push_back(make(accounts.back(), account_created{"T", "user-" + accounts.back(), "", {}}));
  }
  for (std::size_t i = events.size(); i < events_total; ++i) {
    const auto& acc = accounts[i % accounts_total];
    // A valid event says the balance it leaves; the projector refuses one that disagrees with the fold.
    events.push_back(make(acc, credits_added{child_id("txn", acc, i), 1, ++expected[acc], "", "", {}}));
  }
  std::map<std::int32_t, std::int64_t> last_offset;  // partition -> highest offset produced
  for (std::size_t i = 0; i < events.size(); i += records_per_append) {
    const auto end = std::min(events.size(), i + records_per_append);
    for (const auto& p : produce_events(
             {events.begin() + static_cast<std::ptrdiff_t>(i), events.begin() + static_cast<std::ptrdiff_t>(end)}))
      last_offset[p.partition] = std::max(last_offset[p.partition], p.offset);
  }
  std::vector<store::position> targets;
  for (const auto& [partition, offset] : last_offset) targets.push_back({partition, offset});

  running_projector projector(config_);
  const auto started = clock::now();
  ASSERT_TRUE(eventually([&] { return applied(config_.ledger_topic, targets); }, 120s));
  const auto elapsed = std::chrono::duration<double>(clock::now() - started).count();
  const auto stats = projector.stop();
  std::printf("projector: %zu events (this test's) caught up in %.2f s: %.0f events/s; applied %llu in total\n",
              events.size(), elapsed, static_cast<double>(events.size()) / elapsed,
              static_cast<unsigned long long>(stats.applied));

  for (const auto& acc : {accounts.front(), accounts.back()}) EXPECT_EQ(balance(acc), expected[acc]) << acc;
}

}  // namespace
}  // namespace credits
