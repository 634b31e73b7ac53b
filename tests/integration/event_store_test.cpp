#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>

#include "credits/event_store.hpp"

// The event store's fencing against the real broker of scripts/up.sh --infra-only (CREDITS_KAFKA_BROKERS):
// librdkafka's mock cluster does not check producer epochs, so only a real coordinator can show that a new
// producer shuts out every transactional id of the one before it.
namespace credits::store {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds kafka_timeout{15'000};
constexpr milliseconds fenced_append_timeout{5'000};

std::string brokers() {
  const char* b = std::getenv("CREDITS_KAFKA_BROKERS");
  return b && *b ? b : "127.0.0.1:9092";
}

// A one-partition topic of the test's own, through the admin API (the broker does not auto-create topics).
std::string create_topic() {
  const std::string name = "credits-test-fencing-" + std::to_string(std::random_device{}());
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers().c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
    throw std::runtime_error(err);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (!rk) throw std::runtime_error(err);
  rd_kafka_NewTopic_t* topic = rd_kafka_NewTopic_new(name.c_str(), 1, 1, err, sizeof err);
  rd_kafka_queue_t* queue = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, &topic, 1, nullptr, queue);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(queue, static_cast<int>(kafka_timeout.count()));
  std::string failure = !ev ? "no answer" : rd_kafka_event_error(ev) ? rd_kafka_event_error_string(ev) : "";
  if (ev) {
    std::size_t n = 0;
    const auto* results = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
    if (n == 1 && rd_kafka_topic_result_error(results[0]) != RD_KAFKA_RESP_ERR_NO_ERROR)
      failure = rd_kafka_topic_result_error_string(results[0]);
    rd_kafka_event_destroy(ev);
  }
  rd_kafka_queue_destroy(queue);
  rd_kafka_NewTopic_destroy(topic);
  rd_kafka_destroy(rk);
  if (!failure.empty()) throw std::runtime_error("create topic " + name + ": " + failure);
  return name;
}

TEST(event_store_fencing, a_new_producer_fences_every_id_of_the_old_one) {
  const auto topic = create_topic();
  const std::string id = "credits-test-fencing-" + std::to_string(std::random_device{}());
  const std::vector<record> records{{topic, "account", "x"}};

  transactional_producer old_writer(brokers(), id, kafka_timeout, kafka_timeout, {}, 2);
  const auto first = old_writer.append(records, kafka_timeout);  // on id 0; id 1 is next
  ASSERT_EQ(first.status, append_status::committed) << first.error;

  transactional_producer new_writer(brokers(), id, kafka_timeout, kafka_timeout, {}, 2);
  for (int turn = 0; turn < 2; ++turn) {  // neither of the old writer's ids may append any more
    const auto fenced = old_writer.append(records, fenced_append_timeout);
    EXPECT_NE(fenced.status, append_status::committed) << "turn " << turn;
    EXPECT_TRUE(fenced.producer_lost) << "turn " << turn << ": " << fenced.error;
  }
  for (int turn = 0; turn < 2; ++turn) {
    const auto ok = new_writer.append(records, kafka_timeout);
    EXPECT_EQ(ok.status, append_status::committed) << "turn " << turn << ": " << ok.error;
  }

  // Exactly the three committed records are readable; the fenced attempts left nothing.
  std::size_t read = 0;
  read_to_end(brokers(), {topic}, [&](const message&) { ++read; }, kafka_timeout);
  EXPECT_EQ(read, 3u);
}

// An older release used one transactional id: the first id of the set is that same id, so the new writer's
// start-up fences it too.
TEST(event_store_fencing, the_first_id_is_the_single_id_of_older_releases) {
  const auto topic = create_topic();
  const std::string id = "credits-test-fencing-" + std::to_string(std::random_device{}());
  const std::vector<record> records{{topic, "account", "x"}};
  transactional_producer single(brokers(), id, kafka_timeout, kafka_timeout);
  ASSERT_EQ(single.append(records, kafka_timeout).status, append_status::committed);
  transactional_producer pair(brokers(), id, kafka_timeout, kafka_timeout, {}, 2);
  const auto fenced = single.append(records, fenced_append_timeout);
  EXPECT_NE(fenced.status, append_status::committed);
  EXPECT_TRUE(fenced.producer_lost) << fenced.error;
}

}  // namespace
}  // namespace credits::store
