#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "credits/command_api/api_config.hpp"
#include "credits/command_api/writer.hpp"
#include "credits/common/requests.hpp"
#include "credits/event_store/group_membership.hpp"

namespace credits::api {

// Which account streams this process writes, and who writes the others (docs/scaling.md).
//  - Alone (no CREDITS_GROUP_ID): one writer owns every partition.
//  - In a group: the process is a member of the Kafka consumer group CREDITS_GROUP_ID on the ledger topic, and
//    each partition the group assigns it gets a writer of its own (writer.hpp, partition mode), built and
//    rebuilt from the log on a thread of its own when the partition arrives. When the group takes a partition
//    away, its writer is stopped first (the commands it queued are decided and answered) and only then is the
//    partition handed on; its transactional id fences it should it outlive that (a paused process). Commands
//    for accounts of partitions this process does not own are `elsewhere`: the HTTP side forwards them to the
//    owner_address() of their partition.
//  - A partition writer fenced while the group still assigns its partition here (another process claimed the id:
//    a stale owner recovering its producer, or an operator) is replaced by a new writer once it has stayed
//    fenced for a session timeout: by then the group has taken the partition away if it was to move, so the
//    other claimant is the stale one, and the new writer's claim fences it in turn.
// Threads: everything from any thread; start() and stop() from main.
class ownership {
 public:
  ownership(const config& cfg, writer::clock_fn now, api_metrics& metrics);
  ~ownership();
  ownership(const ownership&) = delete;
  ownership& operator=(const ownership&) = delete;

  // Alone: rebuilds and starts the writer (throws if Kafka cannot be reached). In a group: checks the topics
  // and joins; partitions arrive later, from the group.
  void start();
  void stop();

  submit_result submit(submission&& s);
  std::optional<log_position> latest_position(const std::string& account_id) const;
  // The account of a quarantined record, if one of this process's writers holds it (writer::quarantined_account).
  std::optional<std::string> quarantined_account(const std::string& event_id) const;
  bool ready() const;  // alone: the writer is; in a group: every owned partition's writer is
  std::size_t accounts() const;
  std::size_t queued_commands() const;
  writer::start_stats last_start() const;
  // Alone: the writer's; in a group: the keys summed over the owned partitions' writers, and the shortest window
  // any of them holds (the configured window when it owns none).
  writer::idempotency_summary idempotency() const;

  bool grouped() const { return !cfg_.group_id.empty(); }
  std::vector<std::int32_t> owned() const;
  std::int32_t partition_of_account(std::string_view account_id) const;

  // A new random account id in a partition this process owns, so creating it needs no forwarding; any
  // partition when it owns none (or alone).
  std::string new_account_id(const random_bits& bits) const;

  // Where the partition's owner listens (its CREDITS_ADVERTISED_ADDRESS), as the group coordinator said at most
  // owners_refresh_ms ago; nullopt while the partition has no owner (the group is rebalancing). Blocks on a
  // Kafka admin call when the cached answer is too old: call it off the I/O threads.
  std::optional<std::string> owner_address(std::int32_t partition);

 private:
  struct slot;
  std::shared_ptr<slot> slot_of(std::int32_t partition) const;
  void assigned(const std::vector<std::int32_t>& partitions);
  void revoked(const std::vector<std::int32_t>& partitions);
  std::shared_ptr<slot> start_slot(std::int32_t partition);
  // The watchdog's round: replaces each writer fenced for a session timeout while its partition stayed here.
  void replace_fenced_writers();

  const config& cfg_;
  const writer::clock_fn now_;
  api_metrics& metrics_;
  std::int32_t partitions_ = 0;  // of the ledger topic (and the usage topic: they must match in a group)

  std::unique_ptr<writer> alone_;

  mutable std::shared_mutex slots_mutex_;
  std::map<std::int32_t, std::shared_ptr<slot>> slots_;
  std::unique_ptr<store::group_membership> membership_;
  std::atomic<bool> joined_{false};

  std::mutex watchdog_mutex_;
  std::condition_variable watchdog_wake_;
  bool watchdog_stop_ = false;
  std::thread watchdog_;

  std::mutex owners_mutex_;  // serialises describe calls and guards the cache
  std::unique_ptr<store::group_observer> observer_;
  std::map<std::int32_t, std::string> owners_;
  std::chrono::steady_clock::time_point owners_at_{};
};

}  // namespace credits::api
