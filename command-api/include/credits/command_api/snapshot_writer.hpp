#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "credits/command_api/api_config.hpp"
#include "credits/command_api/idempotency.hpp"
#include "credits/common/domain.hpp"
#include "credits/event_store/event_store.hpp"

namespace credits::api {

// What one snapshot holds: a copy of the writer's state taken between two batches, so it is exactly the fold
// of the log up to `next_offsets`.
struct snapshot_job {
  std::uint64_t id = 0;
  time_ms created_at = 0;
  std::map<std::string, std::vector<std::int64_t>> next_offsets;
  ledger_state state;
  idempotency_image idempotency;
  std::chrono::milliseconds copy_took{0};  // how long the writer thread spent taking the copy
};

// Encodes and appends snapshots on a thread of its own, so that the writer thread only pays for copying its
// state (encoding and appending a large snapshot took seconds, during which no command was decided). One
// snapshot at a time: while one is being written, the writer keeps going and offers the next one later.
// Its transactional id is the writer's with a `.snapshots` suffix, claimed at construction, so a snapshot's
// chunks reach the topic all or none, and an older process's snapshot writer is fenced. A partition writer's
// snapshots carry the scope "p<N>" (snapshot.hpp), with their own id (`<id>-p<N>.snapshots`) and keys.
class snapshot_writer {
 public:
  explicit snapshot_writer(const config& cfg, std::string scope = {});
  // Gives the snapshot being written CREDITS_SHUTDOWN_TIMEOUT_MS to finish, then gives it up (nothing of it is
  // appended), and joins.
  ~snapshot_writer();
  snapshot_writer(const snapshot_writer&) = delete;
  snapshot_writer& operator=(const snapshot_writer&) = delete;

  bool idle() const;
  // Takes the job if no snapshot is being written; false (and `job` untouched) otherwise.
  bool offer(snapshot_job& job);

 private:
  void run();
  void write(snapshot_job& job);

  const config& cfg_;
  const std::string scope_;
  std::unique_ptr<store::transactional_producer> producer_;  // snapshot thread only after construction
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::optional<snapshot_job> job_;  // being written (or about to be)
  bool stopping_ = false;
  std::atomic<bool> cancelled_{false};  // set by the destructor: the encoding gives up, nothing is appended
  std::thread thread_;
};

}  // namespace credits::api
