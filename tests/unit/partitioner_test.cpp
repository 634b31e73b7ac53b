#include "credits/event_store/partitioner.hpp"

#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "credits/common/ids.hpp"

// The one partitioner (event-store's partition_of_key) against the two it must agree with: Kafka's Java
// client, through its own test vectors, and librdkafka's murmur2_random, which the producers configure.
namespace credits::store {
namespace {

// librdkafka's partitioner for a record whose key is `key`, as its producer calls it: the key's bytes are
// never a null pointer for a record with a key, even an empty one (std::string::data() is never null).
std::int32_t librdkafka_partition(const std::string& key, std::int32_t partition_count) {
  return rd_kafka_msg_partitioner_murmur2_random(nullptr, key.data(), key.size(), partition_count, nullptr, nullptr);
}

// Keys of every length up to a few blocks of murmur2 (so every tail length), bytes of the whole range
// (signed char must not leak into the hash), and ids as the ledger makes them. Fixed seed: hermetic.
std::vector<std::string> sample_keys() {
  std::vector<std::string> keys{"", "a", "ab", "abc", "abcd", "abcde"};
  std::mt19937_64 random(19);
  std::uniform_int_distribution<int> byte(0, 255);
  for (std::size_t length = 0; length <= 40; ++length)
    for (int n = 0; n < 25; ++n) {
      std::string key;
      for (std::size_t i = 0; i < length; ++i) key.push_back(static_cast<char>(byte(random)));
      keys.push_back(std::move(key));
    }
  for (int i = 0; i < 1000; ++i) keys.push_back(account_id_from_bits(random(), static_cast<std::uint32_t>(random())));
  return keys;
}

TEST(partitioner, murmur2_matches_the_java_client) {
  // Vectors from Kafka's UtilsTest.testMurmur2.
  EXPECT_EQ(static_cast<std::int32_t>(murmur2("21")), -973932308);
  EXPECT_EQ(static_cast<std::int32_t>(murmur2("foobar")), -790332482);
  EXPECT_EQ(static_cast<std::int32_t>(murmur2("a-little-bit-long-string")), -985981536);
  EXPECT_EQ(static_cast<std::int32_t>(murmur2("a-little-bit-longer-string")), -1486304829);
  EXPECT_EQ(static_cast<std::int32_t>(murmur2("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8")), -58897971);
  EXPECT_EQ(static_cast<std::int32_t>(murmur2("abc")), 479470107);
}

TEST(partitioner, partitions_as_the_java_client_does) {
  // Utils.toPositive(Utils.murmur2(key)) % n, as Kafka's Java producer partitions, computed independently
  // (a Python port of Utils.murmur2 checked against the vectors of Kafka's UtilsTest).
  EXPECT_EQ(partition_of_key("a", 12), 4);
  EXPECT_EQ(partition_of_key("hello", 100), 29);
  EXPECT_EQ(partition_of_key("foobar", 12), 6);
  EXPECT_EQ(partition_of_key("acc_0123456789abcdef01234567", 12), 10);
  for (int i = 0; i < 100; ++i) {
    const auto p = partition_of_key("acc_" + std::to_string(i), 12);
    EXPECT_GE(p, 0);
    EXPECT_LT(p, 12);
  }
}

TEST(partitioner, agrees_with_librdkafkas_murmur2_random_on_every_key_and_partition_count) {
  std::vector<std::int32_t> counts;
  for (std::int32_t n = 1; n <= 64; ++n) counts.push_back(n);
  for (const std::int32_t n : {100, 128, 1000, 4096, 65'521, 2'147'483'647}) counts.push_back(n);
  std::size_t checked = 0;
  for (const auto& key : sample_keys())
    for (const auto n : counts) {
      ASSERT_EQ(partition_of_key(key, n), librdkafka_partition(key, n))
          << "key of " << key.size() << " bytes, " << n << " partitions";
      ++checked;
    }
  EXPECT_GT(checked, 100'000u);
}

TEST(partitioner, an_empty_key_is_hashed_like_any_other) {
  // A record with an empty (not absent) key goes where murmur2 of no bytes puts it, in librdkafka too; only a
  // record with no key at all gets a random partition there, and no caller asks where that goes.
  for (const std::int32_t n : {1, 2, 12, 100}) {
    EXPECT_EQ(partition_of_key("", n), librdkafka_partition("", n));
    EXPECT_EQ(partition_of_key("", n), partition_of_key(std::string_view(), n));
  }
}

}  // namespace
}  // namespace credits::store
