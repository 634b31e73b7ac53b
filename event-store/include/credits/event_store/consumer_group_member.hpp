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

// Where a member of a consumer group reads: one partition of one topic.
struct topic_partition {
  std::string topic;
  std::int32_t partition = 0;
  friend bool operator==(const topic_partition&, const topic_partition&) = default;
};

// The limits of group membership (librdkafka names in parentheses).
struct group_limits {
  // Without a heartbeat for this long the broker declares the member dead and gives its partitions to the
  // others (session.timeout.ms). The broker accepts 6000 to 1800000 by default. Heartbeats go every third of it.
  std::chrono::milliseconds session_timeout{45'000};
  // A member that does not poll for this long leaves the group (max.poll.interval.ms); must be at least the
  // session timeout.
  std::chrono::milliseconds max_poll_interval{300'000};
};

// A read_committed consumer that shares the partitions of `topics` with the other members of the Kafka
// consumer group `group_id` (eager rebalancing, round-robin assignment). It never commits offsets: where each
// partition starts is the caller's answer to on_assigned, called with the partitions the group gave this member.
// Owns one librdkafka consumer and lives on one thread: the one that calls poll(), inside which librdkafka runs
// both callbacks. Joins at the first poll(); destruction leaves the group (calling on_revoked), so the others
// take over at once rather than after the session timeout.
class consumer_group_member {
 public:
  struct callbacks {
    // Where to start reading each given partition (the first offset to read; 0 reads from the beginning), or
    // nullopt when that is unknown for now: none of them is then read until assign() names their offsets.
    // Must not throw.
    std::function<std::optional<std::vector<start_point>>(const std::vector<topic_partition>&)> on_assigned;
    // These partitions are being taken away (all of them: the protocol is eager); after it returns they are
    // unassigned, and no message of them read before is returned by poll(). Must not throw.
    std::function<void(const std::vector<topic_partition>&)> on_revoked;
  };

  consumer_group_member(const std::string& brokers, const std::string& group_id, const std::vector<std::string>& topics,
                        callbacks on_rebalance, const group_limits& limits, const settings& extra = {});
  ~consumer_group_member();
  consumer_group_member(const consumer_group_member&) = delete;
  consumer_group_member& operator=(const consumer_group_member&) = delete;

  // Up to `max` messages; waits at most `timeout` for the first. A rebalance during the call discards what
  // was read before it, so a batch never mixes two assignments.
  std::vector<message> poll(std::size_t max, std::chrono::milliseconds timeout);

  // Reads exactly these partitions from these offsets (0: from the beginning), replacing what is read now:
  // after on_assigned returned nullopt, or to read the owned partitions again from other offsets. Pass every
  // partition the group gave this member (a partition left out is not read, yet stays this member's).
  // Throws if librdkafka refuses.
  void assign(const std::vector<start_point>& from);

  std::vector<topic_partition> assignment();
  std::int32_t partition_count(const std::string& topic, std::chrono::milliseconds timeout);

  // As consumer::lag_by_partition: per assigned partition, from the watermarks of the last fetches.
  std::vector<consumer::partition_lag> lag_by_partition();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace credits::store
