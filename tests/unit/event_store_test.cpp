#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>

#include "credits/common/ids.hpp"
#include "credits/event_store/event_store.hpp"
#include "credits/event_store/partitioner.hpp"

namespace credits::store {
namespace {

using std::chrono::milliseconds;

constexpr int mock_partitions = 12;
constexpr milliseconds timeout{10'000};

// librdkafka's in-process mock cluster: real protocol, no broker process. Enough for the adapter's
// contract (transactions commit, positions come back, reads see committed records); the real broker is
// exercised by the integration tests.
class mock_cluster {
 public:
  mock_cluster() {
    char err[256];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    handle_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    cluster_ = rd_kafka_mock_cluster_new(handle_, 1);
    for (const char* topic : {"ledger", "usage"}) rd_kafka_mock_topic_create(cluster_, topic, mock_partitions, 1);
  }
  ~mock_cluster() {
    rd_kafka_mock_cluster_destroy(cluster_);
    rd_kafka_destroy(handle_);
  }
  std::string brokers() const { return rd_kafka_mock_cluster_bootstraps(cluster_); }
  rd_kafka_mock_cluster_t* get() { return cluster_; }

 private:
  rd_kafka_t* handle_ = nullptr;
  rd_kafka_mock_cluster_t* cluster_ = nullptr;
};

TEST(event_store, committed_append_returns_a_position_per_record_and_reads_back_in_order) {
  mock_cluster cluster;
  transactional_producer producer(cluster.brokers(), "test-writer", timeout, timeout);
  EXPECT_EQ(producer.partition_count("ledger", timeout), mock_partitions);

  const std::string account = derive_account_id("t", "u");
  std::vector<record> records;
  for (int i = 0; i < 5; ++i) records.push_back({"ledger", account, "event-" + std::to_string(i)});
  records.push_back({"usage", account, "usage-0"});
  const auto result = producer.append(records, timeout);
  ASSERT_EQ(result.status, append_status::committed) << result.error;
  ASSERT_EQ(result.positions.size(), records.size());
  for (std::size_t i = 1; i < 5; ++i) {
    EXPECT_EQ(result.positions[i].partition, result.positions[0].partition);
    EXPECT_GT(result.positions[i].offset, result.positions[i - 1].offset);
  }
  // librdkafka's murmur2_random partitioner and ours agree, so an id alone names its partition.
  EXPECT_EQ(result.positions[0].partition, partition_of_key(account, mock_partitions));

  std::vector<message> read;
  read_to_end(cluster.brokers(), {"ledger", "usage"}, [&](const message& m) { read.push_back(m); }, timeout);
  ASSERT_EQ(read.size(), records.size());
  std::vector<std::string> ledger_values;
  for (const auto& m : read) {
    EXPECT_EQ(m.key, account);
    if (m.topic == "ledger") ledger_values.push_back(m.value);
  }
  EXPECT_EQ(ledger_values, (std::vector<std::string>{"event-0", "event-1", "event-2", "event-3", "event-4"}));
}

TEST(event_store, many_accounts_spread_over_partitions_as_the_java_client_would) {
  mock_cluster cluster;
  transactional_producer producer(cluster.brokers(), "test-writer", timeout, timeout);
  std::vector<record> records;
  for (int i = 0; i < 50; ++i) records.push_back({"ledger", derive_account_id("t", "user" + std::to_string(i)), "x"});
  const auto result = producer.append(records, timeout);
  ASSERT_EQ(result.status, append_status::committed) << result.error;
  std::set<std::int32_t> used;
  for (std::size_t i = 0; i < records.size(); ++i) {
    EXPECT_EQ(result.positions[i].partition, partition_of_key(records[i].key, mock_partitions));
    used.insert(result.positions[i].partition);
  }
  EXPECT_GT(used.size(), 6u);
}

TEST(event_store, a_failed_commit_is_reported_as_unknown_with_the_brokers_error) {
  mock_cluster cluster;
  transactional_producer producer(cluster.brokers(), "test-writer", timeout, timeout);
  // The EndTxn request fails with a fatal error: the batch must not come back committed, nor as surely absent
  // (aborted), and the producer must be replaced. The append has all of `timeout`, so a run out of time (which
  // also ends in unknown) is not mistaken for this failure: the error must be the injected one.
  constexpr std::int16_t end_txn_api_key = 26;  // Kafka protocol ApiKey of EndTxn
  rd_kafka_mock_push_request_errors(cluster.get(), end_txn_api_key, 1, RD_KAFKA_RESP_ERR_INVALID_TXN_STATE);
  const std::vector<record> records{{"ledger", derive_account_id("t", "u"), "x"}};
  const auto result = producer.append(records, timeout);
  EXPECT_EQ(result.status, append_status::unknown) << result.error;
  EXPECT_TRUE(result.error.starts_with("commit_transaction: ")) << result.error;
  EXPECT_NE(result.error.find(rd_kafka_err2str(RD_KAFKA_RESP_ERR_INVALID_TXN_STATE)), std::string::npos)
      << result.error;
  EXPECT_TRUE(result.producer_lost);
  EXPECT_FALSE(result.fenced);
}

// Fencing needs a real broker (the mock cluster does not check producer epochs): see
// tests/integration/event_store_test.cpp.
TEST(event_store, ids_in_turn_keep_the_order_of_appends) {
  mock_cluster cluster;
  transactional_producer producer(cluster.brokers(), "test-writer", timeout, timeout, {}, 2);
  const std::string account = derive_account_id("t", "u");
  std::vector<std::int64_t> offsets;
  for (int i = 0; i < 6; ++i) {
    const std::vector<record> records{{"ledger", account, "event-" + std::to_string(i)}};
    const auto result = producer.append(records, timeout);
    ASSERT_EQ(result.status, append_status::committed) << i << ": " << result.error;
    offsets.push_back(result.positions[0].offset);
  }
  EXPECT_TRUE(std::is_sorted(offsets.begin(), offsets.end()));
  std::vector<std::string> values;
  read_to_end(cluster.brokers(), {"ledger"}, [&](const message& m) { values.push_back(m.value); }, timeout);
  EXPECT_EQ(values, (std::vector<std::string>{"event-0", "event-1", "event-2", "event-3", "event-4", "event-5"}));
}

TEST(event_store, reading_an_empty_log_ends_at_once) {
  // A first start-up reads empty topics: every partition reports its end without any record.
  mock_cluster cluster;
  std::size_t count = 0;
  read_to_end(cluster.brokers(), {"ledger", "usage"}, [&](const message&) { ++count; }, timeout);
  EXPECT_EQ(count, 0u);
}

}  // namespace
}  // namespace credits::store
