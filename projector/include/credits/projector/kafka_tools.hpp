#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

// The Kafka access the operations need beyond event-store's: reading chosen partitions from chosen offsets
// with end-of-partition notice, watermarks, a plain (non-transactional) producer that picks partitions and
// sets headers, and topic creation. The rest of the code never touches a librdkafka handle.
namespace credits::kafka {

using settings = std::map<std::string, std::string>;  // extra librdkafka properties

struct header {
  std::string name;
  std::string value;
};

struct record {
  std::string topic;
  std::int32_t partition = 0;
  std::int64_t offset = 0;
  std::string key;
  std::string value;
  std::int64_t timestamp_ms = -1;  // -1 when the broker gave none
  std::vector<header> headers;
};

struct watermarks {
  std::int64_t low = 0;   // first offset still in the log
  std::int64_t high = 0;  // the offset the next record will get
};

// A read_committed consumer over explicitly assigned partitions that reports the end of each partition.
// No group membership, no offset commits. Lives on one thread; owns one librdkafka consumer.
class reader {
 public:
  explicit reader(const std::string& brokers, const settings& extra = {});
  ~reader();
  reader(const reader&) = delete;
  reader& operator=(const reader&) = delete;

  struct from {
    std::string topic;
    std::int32_t partition = 0;
    std::int64_t offset = 0;  // the first offset to read
  };
  // Replaces the whole assignment.
  void assign(const std::vector<from>& points);

  // The next record, or nullopt after `timeout` without one. Reaching the end of a partition calls `on_end`.
  std::optional<record> poll(std::chrono::milliseconds timeout,
                             const std::function<void(const std::string&, std::int32_t)>& on_end = {});

  std::int32_t partition_count(const std::string& topic, std::chrono::milliseconds timeout);
  watermarks query_watermarks(const std::string& topic, std::int32_t partition, std::chrono::milliseconds timeout);
  bool topic_exists(const std::string& topic, std::chrono::milliseconds timeout);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// An idempotent producer (acks=all, ordered per partition) that writes to explicit partitions with headers.
// produce() only queues; flush() waits for every queued record and throws if any was not written. Lives on
// one thread.
class producer {
 public:
  explicit producer(const std::string& brokers, const settings& extra = {});
  ~producer();
  producer(const producer&) = delete;
  producer& operator=(const producer&) = delete;

  // partition -1 lets the murmur2_random partitioner choose from the key. timestamp_ms -1: now.
  void produce(const std::string& topic, std::int32_t partition, std::string_view key, std::string_view value,
               const std::vector<header>& headers = {}, std::int64_t timestamp_ms = -1);
  void flush(std::chrono::milliseconds timeout);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

struct topic_spec {
  std::string name;
  std::int32_t partitions = 1;
  settings configs;  // e.g. retention.ms
};

// Creates the topics (replication factor: the broker's default). Throws on any failure, including a topic
// that exists already.
void create_topics(const std::string& brokers, const std::vector<topic_spec>& topics,
                   std::chrono::milliseconds timeout);

}  // namespace credits::kafka
