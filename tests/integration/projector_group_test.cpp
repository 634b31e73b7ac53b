#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <sstream>
#include <thread>

#include "credits/common/events.hpp"
#include "credits/common/ids.hpp"
#include "credits/event_store/event_store.hpp"
#include "credits/event_store/topics.hpp"
#include "credits/projector/fold.hpp"
#include "credits/projector/operations.hpp"
#include "credits/projector/projector.hpp"
#include "credits/read_model/layout.hpp"
#include "credits/read_model/reads.hpp"
#include "credits/read_model/redis.hpp"
#include "projector_harness.hpp"
#include "suite_resources.hpp"

// Several projectors in one Kafka consumer group (CREDITS_PROJECTOR_GROUP_ID) against the real Kafka and Redis:
// they divide the partitions, every event is applied exactly once, and when one leaves (cleanly, or killed
// without a word) the other takes its partitions over and the view converges with the log (verify). Each test
// makes topics of its own, so the group sees only its events, and uses Redis databases of its own
// (suite_resources.hpp), flushed first, since verify compares the whole view.
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
constexpr std::int32_t ledger_partitions = 4;
constexpr std::int32_t usage_partitions = 2;
constexpr std::size_t all_partitions = ledger_partitions + usage_partitions;
// The broker's minimum: a killed member's partitions move after about this long.
constexpr std::int64_t session_timeout_ms = 6'000;
constexpr std::size_t accounts_per_round = 30;

class projector_group_test : public ::testing::Test {
 protected:
  void SetUp() override {
    auto parsed = projector_config_from_env([](const char* name) { return std::getenv(name); });
    ASSERT_TRUE(std::holds_alternative<projector_config>(parsed)) << std::get<std::string>(parsed);
    config_ = std::get<projector_config>(parsed);
    const auto suffix =
        harness::use_topics_of_its_own(config_, "group", ledger_partitions, usage_partitions, kafka_timeout);
    config_.redis_db = harness::projector_group_test_dbs.view;
    // Written only by a rebuild of a view that lost its data (the test that flushes the view).
    config_.redis_rebuild_db = harness::projector_group_test_dbs.rebuild;
    config_.metrics_port = 0;
    config_.group_id = "credits-test-group-" + suffix;
    config_.group_session_timeout_ms = session_timeout_ms;
    redis_ = std::make_unique<read_model::redis_connection>(config_.redis_host, config_.redis_port, 2000ms);
    harness::flush(*redis_, harness::projector_group_test_dbs);
    producer_ =
        std::make_unique<store::transactional_producer>(config_.brokers, "credits-group-test-" + suffix, 10s, 30s);
  }

  projector_config member(const std::string& instance) {
    auto c = config_;
    c.instance_id = instance;
    c.redis_client_name = "credits-group-test-" + instance + "-" + config_.group_id;
    return c;
  }

  event make(const std::string& account, event_payload payload) {
    return event{"evt-" + hex_suffix(), event_schema_version, "t1", account, "key_test", "req_test", "", "",
                 1'764'432'082'123,     std::move(payload)};
  }

  // Appends a round of account streams (created, two top-ups, a deduction and a usage record each) in one Kafka
  // transaction; returns how many events it wrote.
  std::size_t produce_round() {
    std::vector<store::record> records;
    for (std::size_t i = 0; i < accounts_per_round; ++i) {
      const auto acc = fresh_account();
      const auto txn = child_id("txn", acc, 3);
      for (const auto& e : {make(acc, account_created{"G", "user-" + acc, "", {}}),
                            make(acc, credits_added{child_id("txn", acc, 1), 100, 100, "", "", {}}),
                            make(acc, credits_added{child_id("txn", acc, 2), 50, 150, "", "", {}}),
                            make(acc, credits_deducted{txn, 30, 120, "chat", {}})})
        records.push_back({config_.ledger_topic, acc, encode(e)});
      records.push_back(
          {config_.usage_topic, acc,
           encode(
               make(acc, usage_recorded{child_id("use", acc, 4), "customer", txn, "gpt-4o", "text", 100, 30, 0, {}}))});
    }
    const auto result = producer_->append(records, kafka_timeout);
    EXPECT_EQ(result.status, store::append_status::committed) << result.error;
    for (std::size_t i = 0; i < records.size(); ++i) {
      auto& end = records[i].topic == config_.ledger_topic ? ledger_end_ : usage_end_;
      const auto& at = result.positions.at(i);
      end[at.partition] = std::max(end[at.partition], at.offset);
    }
    return records.size();
  }

  // True once the stored position of every partition covers everything produced so far.
  bool all_applied() {
    for (const auto* ends : {&ledger_end_, &usage_end_})
      for (const auto& [partition, offset] : *ends)
        if (read_model::applied_offset(*redis_, ends == &ledger_end_ ? config_.ledger_topic : config_.usage_topic,
                                       partition) < offset)
          return false;
    return true;
  }

  // ops::verify over the test's topics and database: 0 when the view equals the fold of the log.
  std::pair<int, std::string> verify() {
    std::unique_ptr<std::FILE, decltype(&std::fclose)> out(std::tmpfile(), &std::fclose);
    const std::atomic<bool> never{false};
    const int code = ops::verify(config_, never, out.get());
    std::rewind(out.get());
    std::string text;
    for (int c; (c = std::fgetc(out.get())) != EOF;) text += static_cast<char>(c);
    return {code, text};
  }

  // The id of the Redis client with the given name in CLIENT LIST.
  std::optional<std::string> client_id(const std::string& name) {
    std::istringstream lines(*redis_->run({"CLIENT", "LIST"}).value);
    for (std::string line; std::getline(lines, line);) {
      if (line.find(" name=" + name + " ") == std::string::npos) continue;
      const auto start = line.find("id=") + 3;
      return line.substr(start, line.find(' ', start) - start);
    }
    return std::nullopt;
  }

  std::optional<std::string> lag_field(const std::string& name) {
    return redis_->run({"HGET", "credits:projector", name}).value;
  }

  projector_config config_;
  std::unique_ptr<read_model::redis_connection> redis_;
  std::unique_ptr<store::transactional_producer> producer_;
  std::map<std::int32_t, std::int64_t> ledger_end_, usage_end_;  // partition -> last offset produced
};

TEST_F(projector_group_test, two_projectors_share_the_partitions_and_the_survivor_takes_over_after_a_clean_stop) {
  std::size_t produced = produce_round();
  auto a = std::make_unique<running_projector>(member("group-test-a"));
  auto b = std::make_unique<running_projector>(member("group-test-b"));
  ASSERT_TRUE(eventually([&] { return a->owned() > 0 && b->owned() > 0 && a->owned() + b->owned() == all_partitions; }))
      << "owned: a " << a->owned() << ", b " << b->owned();
  produced += produce_round();
  ASSERT_TRUE(eventually([&] { return all_applied(); }));
  // Each member reports the lag of its own partitions in fields of its own.
  ASSERT_TRUE(eventually([&] { return lag_field("lagOffsets:group-test-a") && lag_field("lagOffsets:group-test-b"); }));
  EXPECT_FALSE(lag_field("lagOffsets").has_value());

  const auto a_stats = a->stop();
  a.reset();  // leaves the group
  ASSERT_TRUE(eventually([&] { return b->owned() == all_partitions; })) << "b owns " << b->owned();
  EXPECT_FALSE(lag_field("lagOffsets:group-test-a").has_value()) << "a stopped member's lag field stays behind";
  produced += produce_round();
  ASSERT_TRUE(eventually([&] { return all_applied(); }));
  const auto b_stats = b->stop();
  b.reset();

  // Exactly once: the script reports each event applied once, whichever member applied it.
  EXPECT_EQ(a_stats.applied + b_stats.applied, produced);
  EXPECT_GT(a_stats.applied, 0u);
  EXPECT_GT(b_stats.applied, 0u);
  EXPECT_EQ(a_stats.poison + b_stats.poison, 0u);
  const auto [code, report] = verify();
  EXPECT_EQ(code, 0) << report;
}

TEST_F(projector_group_test, a_view_flushed_under_load_is_rebuilt_by_one_member_and_every_member_folds_on) {
  auto a = std::make_unique<running_projector>(member("group-test-a"));
  auto b = std::make_unique<running_projector>(member("group-test-b"));
  ASSERT_TRUE(eventually([&] { return a->owned() > 0 && b->owned() > 0 && a->owned() + b->owned() == all_partitions; }))
      << "owned: a " << a->owned() << ", b " << b->owned();
  produce_round();
  ASSERT_TRUE(eventually([&] { return all_applied(); }));
  const auto view_id = [&] { return redis_->run({"HGET", std::string(read_model::view_key), "id"}).value; };
  const auto before = view_id();
  ASSERT_TRUE(before.has_value());

  // Rounds keep coming while the view is flushed, rebuilt and folded into again.
  std::atomic<bool> stop_load{false};
  std::atomic<std::size_t> rounds{0};
  std::thread load([&] {
    while (!stop_load.load()) {
      produce_round();
      ++rounds;
    }
  });
  while (rounds.load() < 2) std::this_thread::sleep_for(10ms);
  redis_->run({"FLUSHDB"});
  const bool rebuilt = eventually([&] {
    const auto now = view_id();
    return now && *now != *before;
  });
  const auto after_switch = rounds.load();
  const bool went_on = rebuilt && eventually([&] { return rounds.load() > after_switch + 2; });
  stop_load.store(true);
  load.join();
  ASSERT_TRUE(rebuilt) << "no new view";
  ASSERT_TRUE(went_on);
  ASSERT_TRUE(eventually([&] { return all_applied(); }));
  const auto [code, report] = verify();
  EXPECT_EQ(code, 0) << report;
  const auto a_stats = a->stop(), b_stats = b->stop();
  EXPECT_GE(a_stats.view_losses + b_stats.view_losses, 1u);
  // One member built the view; the other waited for it (the rebuild lock), then both folded on.
  EXPECT_EQ(a_stats.view_rebuilds + b_stats.view_rebuilds, 1u);
  EXPECT_GT(a_stats.applied, 0u);
  EXPECT_GT(b_stats.applied, 0u);
}

TEST_F(projector_group_test, a_killed_projectors_partitions_move_to_the_other_after_the_session_timeout) {
  std::size_t produced = produce_round();
  auto a = std::make_unique<running_projector>(member("group-test-a"));
  ASSERT_TRUE(eventually([&] { return a->owned() == all_partitions && all_applied(); }));
  auto settings = harness::projector_settings(config_);
  settings["CREDITS_PROJECTOR_SESSION_TIMEOUT_MS"] = std::to_string(session_timeout_ms);
  settings["CREDITS_PROJECTOR_INSTANCE_ID"] = "group-test-b";
  harness::projector_process b(settings);
  ASSERT_TRUE(b.started());
  // b joined once a gives partitions up; then both fold the next round.
  ASSERT_TRUE(eventually([&] { return a->owned() > 0 && a->owned() < all_partitions; })) << "a owns " << a->owned();
  produced += produce_round();
  ASSERT_TRUE(eventually([&] { return all_applied(); }));

  ASSERT_TRUE(b.kill());  // no LeaveGroup: the broker notices only when the session times out
  produced += produce_round();
  const auto killed_at = clock::now();
  ASSERT_TRUE(eventually([&] { return a->owned() == all_partitions && all_applied(); })) << "a owns " << a->owned();
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - killed_at);
  std::printf("partitions of the killed member folded again after %lld ms (session timeout %lld ms)\n",
              static_cast<long long>(took.count()), static_cast<long long>(session_timeout_ms));
  const auto a_stats = a->stop();
  a.reset();
  EXPECT_LT(a_stats.applied, produced) << "b applied nothing";
  EXPECT_EQ(a_stats.poison, 0u);
  const auto [code, report] = verify();
  EXPECT_EQ(code, 0) << report;
}

TEST_F(projector_group_test, a_member_that_loses_redis_at_a_rebalance_resumes_its_partitions_once_reconnected) {
  std::size_t produced = produce_round();
  auto a = std::make_unique<running_projector>(member("group-test-a"));
  ASSERT_TRUE(eventually([&] { return a->owned() == all_partitions && all_applied(); }));
  // a is idle, so the next Redis command it sends is most likely the position read of the rebalance b's join
  // starts: its partitions are then read only once it has reconnected.
  const auto a_connection = client_id(member("group-test-a").redis_client_name);
  ASSERT_TRUE(a_connection.has_value());
  redis_->run({"CLIENT", "KILL", "ID", *a_connection});
  auto b = std::make_unique<running_projector>(member("group-test-b"));
  ASSERT_TRUE(eventually([&] { return a->owned() > 0 && b->owned() > 0 && a->owned() + b->owned() == all_partitions; }))
      << "owned: a " << a->owned() << ", b " << b->owned();
  produced += produce_round();
  ASSERT_TRUE(eventually([&] { return all_applied(); }));
  const auto a_stats = a->stop();
  const auto b_stats = b->stop();
  a.reset();
  b.reset();
  EXPECT_GE(a_stats.recoveries, 1u);
  EXPECT_EQ(a_stats.applied + b_stats.applied, produced);
  const auto [code, report] = verify();
  EXPECT_EQ(code, 0) << report;
}

}  // namespace
}  // namespace credits
