#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <random>
#include <string>

#include "credits/command_api/api_metrics.hpp"
#include "credits/command_api/responses.hpp"
#include "credits/command_api/writer.hpp"
#include "credits/common/events.hpp"
#include "credits/common/ids.hpp"
#include "kafka_topics.hpp"

// A partition writer (scale out, docs/scaling.md) against the real broker: when the partition's next owner
// starts, the old owner is fenced, and it neither appends nor takes the id back. The SIGSTOP test in
// test_scale_out.py shows the same end to end, but there the paused process usually learns that it lost the
// partition before it decides anything; here the stale writer certainly decides against its old state.
namespace credits::api {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds answer_timeout{30'000};

time_ms wall_clock() {
  return std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Submits `cmd` and waits for its answer; a submission that is not queued is answered here with its result.
std::variant<command_result, submit_result> run(writer& w, command cmd, const std::string& idempotency_key) {
  auto answer = std::make_shared<std::promise<command_result>>();
  auto future = answer->get_future();
  const auto queued = w.submit(submission{
      std::move(cmd), request_context{"tenant_a", "key_a", "req", idempotency_key, sha256_hex(idempotency_key), 0},
      [answer](command_result r) { answer->set_value(std::move(r)); }});
  if (queued != submit_result::queued) return queued;
  if (future.wait_for(answer_timeout) != std::future_status::ready) throw std::runtime_error("no answer in time");
  return future.get();
}

// One-partition topics and a transactional id of the test's own; snapshots every `snapshot_interval_events`
// (0: none) to a snapshot topic of its own.
config fresh_config(std::size_t snapshot_interval_events) {
  config cfg;
  cfg.kafka_brokers = testing::brokers();
  cfg.ledger_topic = testing::create_topic("credits-test-partition-writer-ledger-");
  cfg.usage_topic = testing::create_topic("credits-test-partition-writer-usage-");
  if (snapshot_interval_events > 0)
    cfg.snapshot_topic = testing::create_topic("credits-test-partition-writer-snapshots-");
  cfg.transactional_id = "credits-test-partition-writer-" + std::to_string(std::random_device{}());
  cfg.snapshot_interval_events = snapshot_interval_events;
  return cfg;
}

// The HTTP status the API would answer the writer's result with; 0 when it was not queued.
unsigned status_of(const std::variant<command_result, submit_result>& r) {
  const auto* o = std::get_if<command_result>(&r);
  return o ? answer_of(*o).status : 0;
}

TEST(partition_writer, a_fenced_owner_neither_appends_nor_claims_the_partition_back) {
  const auto cfg = fresh_config(0);
  api_metrics metrics;
  const auto account = derive_account_id("tenant_a", "stale-owner");

  writer old_owner(cfg, wall_clock, metrics, 0);
  old_owner.start();
  ASSERT_EQ(status_of(run(old_owner, create_account{account, "Stale", "stale-owner", "", {}}, "create")), 200u);
  ASSERT_EQ(status_of(run(old_owner, add_credits{account, 100, "", "", {}, child_id("txn", account, 1)}, "add")), 200u);

  writer new_owner(cfg, wall_clock, metrics, 0);  // the partition moved: its id is claimed, the log re-read
  new_owner.start();
  EXPECT_EQ(status_of(run(new_owner, deduct_credits{account, 100, "", {}, child_id("txn", account, 2)}, "new")), 200u);

  // The old owner still holds 100 credits in memory: its decision is refused by the log, not appended.
  EXPECT_EQ(status_of(run(old_owner, deduct_credits{account, 100, "", {}, child_id("txn", account, 3)}, "old")), 503u);
  EXPECT_TRUE(old_owner.fenced());
  EXPECT_FALSE(old_owner.ready());
  const auto after = run(old_owner, deduct_credits{account, 1, "", {}, child_id("txn", account, 4)}, "old-again");
  ASSERT_TRUE(std::holds_alternative<submit_result>(after));
  EXPECT_EQ(std::get<submit_result>(after), submit_result::busy);

  // The new owner was not fenced back, and the log holds exactly one deduction.
  EXPECT_EQ(status_of(run(new_owner, add_credits{account, 5, "", "", {}, child_id("txn", account, 5)}, "new-add")),
            200u);
  std::vector<std::string> deductions;
  store::read_to_end(
      cfg.kafka_brokers, {cfg.ledger_topic},
      [&](const store::message& m) {
        const auto e = decode(m.value);
        ASSERT_TRUE(e.has_value());
        if (std::holds_alternative<credits_deducted>(e->payload)) deductions.push_back(e->idempotency_key);
      },
      testing::kafka_timeout);
  EXPECT_EQ(deductions, std::vector<std::string>{"new"});
  old_owner.stop();
  new_owner.stop();
}

TEST(partition_writer, the_next_owner_starts_from_the_partitions_snapshot_and_its_tail) {
  const auto cfg = fresh_config(2);
  api_metrics metrics;
  const auto account = derive_account_id("tenant_a", "snapshotted");

  writer first(cfg, wall_clock, metrics, 0);
  first.start();
  ASSERT_EQ(status_of(run(first, create_account{account, "Snap", "snapshotted", "", {}}, "create")), 200u);
  ASSERT_EQ(status_of(run(first, add_credits{account, 70, "", "", {}, child_id("txn", account, 1)}, "add")), 200u);
  // The snapshot is written off the writer thread: wait until its chunks are in the topic.
  const auto deadline = std::chrono::steady_clock::now() + answer_timeout;
  for (bool found = false; !found;) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "no snapshot of partition 0 was written";
    store::read_to_end(
        cfg.kafka_brokers, {cfg.snapshot_topic},
        [&](const store::message& m) { found = found || m.value.find(R"("scope":"p0")") != std::string::npos; },
        testing::kafka_timeout);
  }
  ASSERT_EQ(status_of(run(first, add_credits{account, 5, "", "", {}, child_id("txn", account, 2)}, "tail")), 200u);
  first.stop();

  writer next(cfg, wall_clock, metrics, 0);
  next.start();
  EXPECT_TRUE(next.last_start().from_snapshot);
  EXPECT_EQ(next.last_start().events_replayed, 1u);  // only the add after the snapshot
  EXPECT_EQ(status_of(run(next, deduct_credits{account, 75, "", {}, child_id("txn", account, 3)}, "all")), 200u);
  EXPECT_EQ(status_of(run(next, deduct_credits{account, 1, "", {}, child_id("txn", account, 4)}, "more")), 402u);
  next.stop();
}

}  // namespace
}  // namespace credits::api
