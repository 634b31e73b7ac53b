#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>

#include <chrono>
#include <random>
#include <string>

#include "credits/event_store/event_store.hpp"
#include "kafka_topics.hpp"

// The event store's fencing against the real broker of scripts/up.sh --infra-only (CREDITS_KAFKA_BROKERS):
// librdkafka's mock cluster does not check producer epochs, so only a real coordinator can show that a new
// producer shuts out every transactional id of the one before it.
namespace credits::store {
namespace {

using std::chrono::milliseconds;
using testing::brokers;
using testing::create_topic;
using testing::kafka_timeout;

constexpr milliseconds fenced_append_timeout{5'000};

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
    EXPECT_TRUE(fenced.fenced) << "turn " << turn << ": " << fenced.error;
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
