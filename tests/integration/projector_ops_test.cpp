#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "credits/common/events.hpp"
#include "credits/common/ids.hpp"
#include "credits/event_store/event_store.hpp"
#include "credits/event_store/idempotent_producer.hpp"
#include "credits/event_store/partition_reader.hpp"
#include "credits/event_store/partitioner.hpp"
#include "credits/projector/fold.hpp"
#include "credits/projector/operations.hpp"
#include "credits/projector/projector.hpp"
#include "credits/read_model/layout.hpp"
#include "credits/read_model/reads.hpp"
#include "credits/read_model/redis.hpp"
#include "projector_harness.hpp"
#include "suite_resources.hpp"

// Poison events against the real Kafka and Redis: the projector's Lua guards, the dead-letter topic, the
// blocked marks, and verify and rebuild agreeing with them. Each test has topics of its own and a view in Redis
// databases of the suite's own, flushed first (suite_resources.hpp), since verify and rebuild need a view that
// holds those topics and nothing else.
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

// What an operation printed, captured through a FILE.
class captured_output {
 public:
  captured_output() : file_(open_memstream(&data_, &size_)) {}
  ~captured_output() {
    if (file_) std::fclose(file_);
    std::free(data_);
  }
  captured_output(const captured_output&) = delete;
  captured_output& operator=(const captured_output&) = delete;
  std::FILE* file() { return file_; }
  std::string text() {
    std::fflush(file_);
    return std::string(data_, size_);
  }

 private:
  char* data_ = nullptr;
  std::size_t size_ = 0;
  std::FILE* file_;
};

class projector_ops_test : public ::testing::Test {
 protected:
  void SetUp() override {
    auto parsed = projector_config_from_env([](const char* name) { return std::getenv(name); });
    ASSERT_TRUE(std::holds_alternative<projector_config>(parsed)) << std::get<std::string>(parsed);
    config_ = std::get<projector_config>(parsed);
    harness::use_topics_of_its_own(config_, "projector-ops", topic_partitions, topic_partitions, kafka_timeout);
    config_.redis_db = harness::projector_ops_test_dbs.view;
    config_.redis_rebuild_db = harness::projector_ops_test_dbs.rebuild;
    config_.redis_client_name = "credits-projector-ops-test-" + hex_suffix();
    redis_ = std::make_unique<read_model::redis_connection>(config_.redis_host, config_.redis_port, 2000ms);
    harness::flush(*redis_, harness::projector_ops_test_dbs);
    producer_ = std::make_unique<store::transactional_producer>(config_.brokers,
                                                                "credits-projector-ops-test-" + hex_suffix(), 10s, 30s);
  }

  event make(const std::string& account, event_payload payload) {
    return event{"evt-" + hex_suffix(), event_schema_version, "t1", account, "key_test", "req_test", "", "",
                 1'764'432'082'123,     std::move(payload)};
  }

  std::vector<store::position> produce(const std::vector<store::record>& records) {
    const auto result = producer_->append(records, kafka_timeout);
    EXPECT_EQ(result.status, store::append_status::committed) << result.error;
    return result.positions;
  }
  std::vector<store::position> produce_events(const std::vector<event>& events) {
    std::vector<store::record> records;
    for (const auto& e : events) records.push_back({config_.ledger_topic, e.account_id, encode(e)});
    return produce(records);
  }

  bool applied(const std::vector<store::position>& positions) {
    for (const auto& p : positions)
      if (read_model::applied_offset(*redis_, config_.ledger_topic, p.partition) < p.offset) return false;
    return true;
  }

  // Every copy of a record of the ledger topic in the dead-letter topic, read from its start to its end, by
  // "<partition>:<offset>" of the original (a poison event is copied at least once: a crash may copy it again).
  std::map<std::string, std::vector<store::message>> dead_letters() {
    store::partition_reader dlq(config_.brokers);
    const auto dlq_topic = dead_letter_topic(config_);
    const auto dlq_partitions = dlq.partition_count(dlq_topic, kafka_timeout);
    std::vector<store::start_point> from;
    for (std::int32_t p = 0; p < dlq_partitions; ++p) from.push_back({dlq_topic, p, 0});
    dlq.assign(from);
    std::set<std::int32_t> open;
    for (std::int32_t p = 0; p < dlq_partitions; ++p) open.insert(p);
    std::map<std::string, std::vector<store::message>> copies;
    const auto deadline = clock::now() + catch_up_timeout;
    while (!open.empty() && clock::now() < deadline) {
      const auto r = dlq.poll(500ms, [&](const std::string&, std::int32_t p) { open.erase(p); });
      if (!r) continue;
      std::map<std::string, std::string> h;
      for (const auto& [name, value] : r->headers) h[name] = value;
      if (h["credits-topic"] != config_.ledger_topic) continue;
      copies[h["credits-partition"] + ":" + h["credits-offset"]].push_back(*r);
    }
    EXPECT_TRUE(open.empty()) << "the dead-letter topic was not read to its end";
    return copies;
  }

  std::string poison_field(const store::position& p) {
    return read_model::poison_field(config_.ledger_topic, p.partition, p.offset);
  }

  projector_config config_;
  std::unique_ptr<read_model::redis_connection> redis_;
  std::unique_ptr<store::transactional_producer> producer_;
};

TEST_F(projector_ops_test, poison_events_are_dead_lettered_recorded_and_reported_while_the_rest_applies) {
  const auto a = fresh_account(), b = fresh_account(), c = fresh_account();
  const auto rsv = child_id("rsv", a, 1), unknown_rsv = child_id("rsv", a, 2);
  // One Kafka transaction, so all of a's events sit in one batch with poison events between good ones.
  const auto events_a = produce_events({
      make(a, account_created{"A", "user-" + a, "", {}}),
      make(a, credits_added{child_id("txn", a, 3), 100, 100, "", "", {}}),
      make(a, credits_deducted{child_id("txn", a, 4), 500, 0, "", {}}),  // overdraft
      make(a, credits_added{child_id("txn", a, 5), 50, 150, "", "", {}}),
      make(a, reservation_confirmed{unknown_rsv, child_id("txn", a, 6), 1, 0, 149}),  // unknown reservation
      make(a, credits_reserved{rsv, 100, 1'764'432'142'123, "", "", {}}),
      make(a, credits_reserved{rsv, 10, 1'764'432'142'123, "", "", {}}),  // created twice
      make(a, reservation_cancelled{rsv, 50}),                            // releases half the hold
      make(a, reservation_cancelled{rsv, 100}),
      make(a, account_created{"A again", "user-" + a, "", {}}),  // created twice
  });
  ASSERT_EQ(events_a.size(), 10u);
  const std::vector<store::position> poison_a{events_a[2], events_a[4], events_a[6], events_a[7], events_a[9]};

  // b: bytes that are no event at all, on its key, before its real events.
  const auto garbage_b = produce({store::record{config_.ledger_topic, b, "{not an event"}});
  const auto events_b = produce_events({make(b, account_created{"B", "user-" + b, "", {}}),
                                        make(b, credits_added{child_id("txn", b, 1), 10, 10, "", "", {}})});
  // c: a valid event written to a partition its key does not map to, then its real one.
  const auto home_c = store::partition_of_key(c, topic_partitions);
  store::idempotent_producer plain(config_.brokers);
  plain.produce(config_.ledger_topic, (home_c + 1) % topic_partitions, c,
                encode(make(c, account_created{"C", "", "", {}})));
  plain.flush(kafka_timeout);
  const auto events_c = produce_events({make(c, account_created{"C", "user-" + c, "", {}})});

  projector_stats stats;
  {
    running_projector projector(config_);
    ASSERT_TRUE(eventually([&] {
      return applied(events_a) && applied(events_b) && applied(events_c) &&
             redis_->run({"SISMEMBER", std::string(read_model::blocked_key), c}).value == "1";
    }));
    stats = projector.stop();
  }
  EXPECT_GE(stats.poison, 7u);
  EXPECT_GE(stats.dead_lettered, 7u);

  const auto view_a = read_model::get_account(*redis_, a);
  ASSERT_TRUE(view_a.has_value());
  EXPECT_EQ(view_a->balance, 150);
  EXPECT_EQ(view_a->reserved, 0);
  EXPECT_TRUE(view_a->blocked);
  EXPECT_EQ(read_model::get_reservation(*redis_, a, rsv)->status, "cancelled");
  EXPECT_EQ(read_model::get_reservation(*redis_, a, rsv)->amount, 100);
  EXPECT_FALSE(read_model::get_reservation(*redis_, a, unknown_rsv).has_value());
  EXPECT_EQ(redis_->run({"HGET", read_model::account_key(a), "blockedAt"}).value, poison_field(events_a[2]));

  const auto view_b = read_model::get_account(*redis_, b);
  ASSERT_TRUE(view_b.has_value());
  EXPECT_EQ(view_b->balance, 10);
  EXPECT_TRUE(view_b->blocked);
  const auto view_c = read_model::get_account(*redis_, c);
  ASSERT_TRUE(view_c.has_value());
  EXPECT_EQ(view_c->name, "C");
  EXPECT_TRUE(view_c->blocked);
  EXPECT_EQ(redis_->run({"SISMEMBER", std::string(read_model::blocked_key), c}).value, "1");

  std::set<std::string> expected;  // "<partition>:<offset>" of every poison event here
  for (const auto& p : poison_a) expected.insert(std::to_string(p.partition) + ":" + std::to_string(p.offset));
  expected.insert(std::to_string(garbage_b[0].partition) + ":" + std::to_string(garbage_b[0].offset));
  for (const auto& p : poison_a) {
    const auto entry = redis_->run({"HGET", std::string(read_model::poison_key), poison_field(p)}).value;
    ASSERT_TRUE(entry.has_value()) << poison_field(p);
    EXPECT_EQ(nlohmann::json::parse(*entry)["key"], a);
  }
  const auto entry_b = redis_->run({"HGET", std::string(read_model::poison_key), poison_field(garbage_b[0])}).value;
  ASSERT_TRUE(entry_b.has_value());
  EXPECT_NE(nlohmann::json::parse(*entry_b)["reason"].get<std::string>().find("undecodable"), std::string::npos);

  // Each poison event's copy in the dead-letter topic: the original bytes, with where it was and why.
  const auto copies = dead_letters();
  for (const auto& where : expected) {
    ASSERT_TRUE(copies.contains(where)) << where;
    for (const auto& copy : copies.at(where))
      EXPECT_FALSE(std::find_if(copy.headers.begin(), copy.headers.end(), [](const store::header& x) {
                     return x.first == "credits-reason" && !x.second.empty();
                   }) == copy.headers.end());
  }
  const auto garbage_copies =
      copies.at(std::to_string(garbage_b[0].partition) + ":" + std::to_string(garbage_b[0].offset));
  EXPECT_EQ(garbage_copies.front().value, "{not an event");
  bool c_copied = false;
  for (const auto& [where, list] : copies)
    for (const auto& copy : list)
      for (const auto& [name, value] : copy.headers)
        if (copy.key == c && name == "credits-reason" && value.find("belongs to partition") != std::string::npos)
          c_copied = true;
  EXPECT_TRUE(c_copied);

  // verify agrees with the view, lists the poison events, and says so in its exit code.
  {
    captured_output out;
    const std::atomic<bool> stop{false};
    EXPECT_EQ(ops::verify(config_, stop, out.file()), ops::exit_poison) << out.text();
    const auto text = out.text();
    EXPECT_NE(text.find(" 0 mismatches"), std::string::npos) << text;
    for (const auto& p : poison_a) EXPECT_NE(text.find("poison: " + poison_field(p)), std::string::npos) << text;
  }

  // A rebuild reaches the same view: the same balances, the same poison records and blocked marks, and no
  // second copy in the dead-letter topic.
  {
    captured_output out;
    const std::atomic<bool> stop{false};
    ASSERT_EQ(ops::rebuild(config_, stop, out.file()), 0) << out.text();
  }
  const auto rebuilt_a = read_model::get_account(*redis_, a);
  ASSERT_TRUE(rebuilt_a.has_value());
  EXPECT_EQ(rebuilt_a->balance, 150);
  EXPECT_TRUE(rebuilt_a->blocked);
  for (const auto& p : poison_a)
    EXPECT_TRUE(redis_->run({"HEXISTS", std::string(read_model::poison_key), poison_field(p)}).value == "1");
  EXPECT_TRUE(read_model::get_account(*redis_, b)->blocked);
  EXPECT_EQ(redis_->run({"EXISTS", std::string(read_model::rebuild_lock_key)}).value, "0");
  // The dead-letter topic read again to its end: the rebuild added no copy of any of these poison events.
  const auto after_rebuild = dead_letters();
  for (const auto& where : expected) {
    ASSERT_TRUE(after_rebuild.contains(where)) << where;
    EXPECT_EQ(after_rebuild.at(where).size(), copies.at(where).size()) << "copies of the poison event at " << where;
  }
}

TEST_F(projector_ops_test, a_second_rebuild_is_refused_while_one_holds_the_lock_and_a_dead_holders_lock_is_taken) {
  read_model::redis_connection holder(config_.redis_host, config_.redis_port, 2000ms);
  holder.run({"SELECT", std::to_string(config_.redis_db)});
  const auto id = *holder.run({"CLIENT", "ID"}).value;
  const std::string lock(read_model::rebuild_lock_key);
  redis_->run({"SET", lock, id});
  const std::atomic<bool> stop{false};
  {
    captured_output out;
    EXPECT_THROW(ops::rebuild(config_, stop, out.file()), std::runtime_error);
  }
  EXPECT_EQ(redis_->run({"GET", lock}).value, id);
  redis_->run({"CLIENT", "KILL", "ID", id});  // the holder dies: its lock is stale at once
  ASSERT_TRUE(eventually([&] { return redis_->run({"CLIENT", "LIST", "ID", id}).value.value_or("").empty(); }, 5s));
  captured_output out;
  EXPECT_EQ(ops::rebuild(config_, stop, out.file()), 0) << out.text();
  EXPECT_EQ(redis_->run({"EXISTS", lock}).value, "0");
}

// Account streams (an account and a top-up each) appended from a thread of its own until destroyed: the load under
// which the view loses its data. Remembers the last offset it wrote to every ledger partition.
class ledger_load {
 public:
  explicit ledger_load(std::function<std::vector<store::position>()> append_one)
      : append_one_(std::move(append_one)), thread_([this] {
          while (!stop_.load()) {
            const auto written = append_one_();
            const std::lock_guard lock(mutex_);
            for (const auto& p : written) last_[p.partition] = std::max(last_[p.partition], p.offset);
            ++appends_;
          }
        }) {}
  ~ledger_load() { stop(); }
  ledger_load(const ledger_load&) = delete;
  ledger_load& operator=(const ledger_load&) = delete;

  void stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  std::vector<store::position> written() {
    const std::lock_guard lock(mutex_);
    std::vector<store::position> out;
    for (const auto& [partition, offset] : last_) out.push_back({partition, offset});
    return out;
  }
  std::size_t appends() {
    const std::lock_guard lock(mutex_);
    return appends_;
  }

 private:
  std::function<std::vector<store::position>()> append_one_;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::map<std::int32_t, std::int64_t> last_;
  std::size_t appends_ = 0;
  std::thread thread_;  // last: it starts once the rest exists
};

TEST_F(projector_ops_test, a_view_that_loses_its_data_under_load_is_rebuilt_from_the_log_by_the_projector) {
  running_projector projector(config_);
  ledger_load load([this] {
    const auto acc = fresh_account();
    return produce_events({make(acc, account_created{"L", "user-" + acc, "", {}}),
                           make(acc, credits_added{child_id("txn", acc, 1), 10, 10, "", "", {}})});
  });
  ASSERT_TRUE(eventually([&] { return load.appends() > 0 && applied(load.written()); }));
  const auto view_id = [&] { return redis_->run({"HGET", std::string(read_model::view_key), "id"}).value; };

  // All of it (FLUSHDB: the same as FLUSHALL, a restart without the append-only file, an empty replica), the
  // positions alone, the marker alone: each time the projector notices by itself, rebuilds the view from the log
  // and folds on into the new view, which then holds everything written meanwhile.
  const std::vector<std::pair<std::vector<std::string>, const char*>> losses{
      {{"FLUSHDB"}, "the whole view"},
      {{"DEL", std::string(read_model::positions_key)}, "the positions"},
      {{"DEL", std::string(read_model::view_key)}, "the marker"}};
  for (const auto& [command, what] : losses) {
    const auto before = view_id();
    ASSERT_TRUE(before.has_value());
    const auto appends = load.appends();
    redis_->run(command);
    ASSERT_TRUE(eventually(
        [&] {
          const auto now = view_id();
          return now && *now != *before && load.appends() > appends + 2 && applied(load.written());
        },
        120s))
        << what << " lost: the view was not rebuilt with every event";
  }
  load.stop();
  ASSERT_TRUE(eventually([&] { return applied(load.written()); }));
  const auto stats = projector.stop();
  EXPECT_GE(stats.view_losses, losses.size());
  EXPECT_EQ(stats.view_rebuilds, stats.view_losses);

  // Exactly the fold of the log: nothing lost, nothing applied twice (the projector tests' topics hold poison
  // events on purpose, hence exit_poison rather than 0).
  captured_output out;
  const std::atomic<bool> stop{false};
  const auto code = ops::verify(config_, stop, out.file());
  EXPECT_TRUE(code == 0 || code == ops::exit_poison) << out.text();
  EXPECT_NE(out.text().find(" 0 mismatches"), std::string::npos) << out.text();
}

}  // namespace
}  // namespace credits
