#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "credits/event_store/event_store.hpp"

// Partition ownership through a Kafka consumer group: the group protocol decides which member owns which
// partition of a topic, and every member can ask who owns what. Nothing is read through the membership; it
// exists for its assignments.
namespace credits::store {

// One process's membership of `group_id` on `topic`, with the cooperative-sticky assignor, so a rebalance
// moves only the partitions that change owner. A thread of its own serves the group protocol (librdkafka calls
// the rebalance callback from the consumer poll) and calls:
//  - `assigned(partitions)` when partitions become this member's (the handler must not block for long: it
//    starts taking them over and returns);
//  - `revoked(partitions)` before they are given up, and only when it returns does the group hand them on
//    (the handler stops writing them first). Partitions lost without a clean hand-over (the session timed out,
//    e.g. after the process was paused) are reported through `revoked` too: by then they may have a new owner.
// `member_name` is the member's client.id, which describe_owners() reports: the address other members reach
// this process at. Destruction leaves the group (revoking what it owns) and joins the thread.
class group_membership {
 public:
  struct handlers {
    std::function<void(const std::vector<std::int32_t>&)> assigned;
    std::function<void(const std::vector<std::int32_t>&)> revoked;
  };

  group_membership(const std::string& brokers, const std::string& group_id, const std::string& topic,
                   const std::string& member_name, std::chrono::milliseconds session_timeout, handlers h,
                   const settings& extra = {});
  ~group_membership();
  group_membership(const group_membership&) = delete;
  group_membership& operator=(const group_membership&) = delete;

  // The partitions this member owns now (assigned and not revoked).
  std::vector<std::int32_t> owned() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// Asks the group coordinator which member owns each partition of `topic` in `group_id`: partition -> the
// owner's member_name. A partition missing from the map has no owner now (the group is rebalancing, or has
// fewer members than needed). One admin client, kept for the object's life; describe() blocks at most
// `timeout` and throws on an error. Not thread-safe: callers serialise.
class group_observer {
 public:
  explicit group_observer(const std::string& brokers);
  ~group_observer();
  group_observer(const group_observer&) = delete;
  group_observer& operator=(const group_observer&) = delete;

  std::map<std::int32_t, std::string> describe(const std::string& group_id, const std::string& topic,
                                               std::chrono::milliseconds timeout);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace credits::store
