#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "credits/api_config.hpp"
#include "credits/domain.hpp"
#include "credits/event_store.hpp"

namespace credits::api {

// A position in the log, as clients see it: "<topic>:<partition>:<offset>".
struct log_position {
  std::string topic;
  std::int32_t partition = -1;
  std::int64_t offset = -1;

  std::string to_string() const;
  static std::optional<log_position> parse(std::string_view text);
};

// The answer to one command.
struct outcome {
  unsigned status = 200;
  nlohmann::json body;
  std::string position;  // where the command's event sits in the log; empty when nothing was written
  bool replayed = false;  // an Idempotency-Key retry answered from the first attempt
};

struct submission {
  command cmd;
  request_context ctx;                 // `now` is stamped by the writer
  std::function<void(outcome)> done;  // called exactly once, on the writer thread
};

// The single writer of every account stream this process owns. It holds the folded ledger_state in memory
// (rebuilt from the log at start-up, never from Redis), decides each command against it and appends the
// resulting events to Kafka, many commands per Kafka transaction (group commit). Only after the Kafka
// transaction commits are the commands answered. If an append fails or its outcome is unknown, the batch is
// answered 503 and the state is rebuilt from the log before more commands are taken.
//
// Threads: submit() and latest_position() from any thread; everything else on the writer thread that
// start() launches. stop() drains the queue and joins.
class writer {
 public:
  using clock_fn = std::function<time_ms()>;

  writer(const config& cfg, clock_fn now);
  ~writer();
  writer(const writer&) = delete;
  writer& operator=(const writer&) = delete;

  // Fences older writers (init_transactions), checks the topics and rebuilds the state from the log, then
  // starts the writer thread. Throws if Kafka cannot be reached within the start-up timeout.
  void start();
  void stop();

  // Queues a command, taking it only when it returns true; false (answer 503) when the queue is full or the
  // writer is recovering, and `s` is left to the caller.
  bool submit(submission&& s);

  // The last log position this process wrote for the account (read-your-writes without a client position).
  std::optional<log_position> latest_position(const std::string& account_id) const;

  std::size_t accounts() const;

 private:
  struct remembered {
    std::string request_hash;
    outcome result;
  };

  void run();
  void process(std::vector<submission>& batch);
  void rebuild();
  void recover(bool producer_lost);
  const std::string& topic_of(const event& e) const;
  std::string new_event_id();

  const config cfg_;
  const clock_fn now_;
  std::unique_ptr<store::transactional_producer> producer_;

  // Writer thread only.
  ledger_state state_;
  std::unordered_map<std::string, remembered> idempotency_;  // tenant + '\n' + key
  std::mt19937_64 rng_{std::random_device{}()};

  mutable std::mutex queue_mutex_;
  std::condition_variable queue_cv_;
  std::deque<submission> queue_;
  bool stopping_ = false;
  bool accepting_ = false;

  mutable std::mutex positions_mutex_;
  std::unordered_map<std::string, log_position> latest_;
  std::size_t accounts_count_ = 0;

  std::thread thread_;
};

}  // namespace credits::api
