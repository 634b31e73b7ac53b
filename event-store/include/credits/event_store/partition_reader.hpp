#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "credits/event_store/event_store.hpp"

namespace credits::store {

// The offsets that bound a partition's log.
struct watermarks {
  std::int64_t low = 0;   // first offset still in the log
  std::int64_t high = 0;  // the offset the next record will get
};

// What the operator commands (export, verify, rebuild, import) read through: a read_committed consumer over
// explicitly assigned partitions that reports the end of each partition, hands out records one at a time with
// their headers, and answers metadata questions (partition counts, watermarks, whether a topic exists). Unlike
// `consumer`, an error that waiting will not cure (an unknown topic or partition, an offset out of range)
// throws. No group membership, no offset commits. Owns one librdkafka consumer and lives on one thread;
// destruction closes it.
class partition_reader {
 public:
  explicit partition_reader(const std::string& brokers, const settings& extra = {});
  ~partition_reader();
  partition_reader(const partition_reader&) = delete;
  partition_reader& operator=(const partition_reader&) = delete;

  // Replaces the whole assignment (offset 0 or less: from the beginning). Throws if librdkafka refuses.
  void assign(const std::vector<start_point>& from);

  // The next record with its headers, or nullopt after `timeout` without one. Reaching the end of a
  // partition calls `on_end`.
  std::optional<message> poll(std::chrono::milliseconds timeout,
                              const std::function<void(const std::string&, std::int32_t)>& on_end = {});

  std::int32_t partition_count(const std::string& topic, std::chrono::milliseconds timeout);
  watermarks query_watermarks(const std::string& topic, std::int32_t partition, std::chrono::milliseconds timeout);
  bool topic_exists(const std::string& topic, std::chrono::milliseconds timeout);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace credits::store
