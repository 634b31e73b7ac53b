#pragma once

#include <atomic>
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
#include <unordered_set>

#include "credits/command_api/api_config.hpp"
#include "credits/command_api/api_metrics.hpp"
#include "credits/command_api/command_result.hpp"
#include "credits/command_api/idempotency.hpp"
#include "credits/command_api/snapshot_writer.hpp"
#include "credits/common/domain.hpp"
#include "credits/common/replay.hpp"
#include "credits/event_store/event_store.hpp"

namespace credits::api {

struct submission {
  command cmd;
  request_context ctx;  // `now` is stamped by the writer
  // Called exactly once, on the writer thread, with an `accepted`, a `rejection` or an `unavailable`.
  std::function<void(command_result)> done;
};

enum class submit_result {
  queued,     // `done` will be called
  busy,       // queue full or the writer is recovering (command_result: unavailable)
  in_flight,  // a command with the same Idempotency-Key is queued or being written (command_result: in_flight)
  elsewhere,  // another instance owns the account's partition (ownership.hpp; command_result: elsewhere)
};

// The single writer of every account stream this process owns. It holds the folded ledger_state in memory
// (rebuilt at start-up from the newest snapshot plus the tail of the log, never from Redis), decides each
// command against it and appends the resulting events to Kafka, many commands per Kafka transaction (group
// commit). Only after the Kafka transaction commits are the commands answered. If an append fails or its
// outcome is unknown, the batch is answered `unavailable` and the state is rebuilt from the log before more commands
// are taken. Every `snapshot_interval_events` events it copies its state and hands the copy to a
// snapshot_writer, which writes it to the snapshot topic on a thread of its own.
//
// With a `partition` (group mode, see ownership.hpp) it owns that one partition of the ledger and usage topics:
// it rebuilds from those partitions only, its transactional id is CREDITS_TRANSACTIONAL_ID + "-p<N>", so whoever
// owns the partition next fences it, and once fenced it never claims the id back: it stops taking commands and
// waits to be stopped. Its snapshots hold its partition only (scope "p<N>", see snapshot.hpp), so whoever owns
// the partition next starts from the newest of them plus the partition's tail.
//
// Threads: submit(), latest_position() and the counters from any thread; everything else on the writer
// thread that start() launches. stop() drains the queue and joins.
class writer {
 public:
  using clock_fn = std::function<time_ms()>;

  writer(const config& cfg, clock_fn now, api_metrics& metrics, std::optional<std::int32_t> partition = std::nullopt);
  ~writer();
  writer(const writer&) = delete;
  writer& operator=(const writer&) = delete;

  // Fences older writers (init_transactions), checks the topics and rebuilds the state, then starts the
  // writer thread. Throws if Kafka cannot be reached within the start-up timeout.
  void start();
  void stop();

  // Takes `s` only when it answers `queued`; otherwise the caller answers and `s` is left to it.
  submit_result submit(submission&& s);

  // The last log position this process wrote for the account (read-your-writes without a client position).
  std::optional<log_position> latest_position(const std::string& account_id) const;

  // The account whose quarantined record has this id (the eventId an account_blocked answer names), if this
  // writer holds it.
  std::optional<std::string> quarantined_account(const std::string& event_id) const;

  bool ready() const;   // state rebuilt and taking commands
  bool fenced() const;  // a partition writer whose id a newer owner claimed: it takes no command again
  std::size_t accounts() const;
  std::size_t queued_commands() const;  // waiting for the writer thread

  struct start_stats {
    bool from_snapshot = false;
    std::uint64_t snapshot_id = 0;
    std::size_t events_replayed = 0;
    std::chrono::milliseconds duration{0};
  };
  start_stats last_start() const;

  // The idempotency keys this writer remembers, as of its last batch, and the window it holds now
  // (idempotency.hpp: window_held).
  struct idempotency_summary {
    std::size_t keys = 0;
    std::size_t keys_max = 0;
    std::size_t bytes = 0;
    std::chrono::milliseconds window_held{0};
  };
  idempotency_summary idempotency() const;

 private:
  struct decided_batch;
  struct tail_fold;

  void run();
  // One batch, in steps: decide every command against the state (applying what it decides), append the events
  // in one Kafka transaction, then answer every submission exactly once.
  void process(std::vector<submission>& batch);
  decided_batch decide_batch(std::vector<submission>& batch);
  void decide_one(submission& s, std::size_t index, decided_batch& d);
  std::optional<command_result> answer_from_key(const submission& s, time_ms now);
  void add_expiries(decided_batch& d);
  store::append_result append(const decided_batch& d);
  void commit(decided_batch& d, const store::append_result& result);
  void fail(std::vector<submission>& batch, decided_batch& d, const store::append_result& result);
  void answer(std::vector<submission>& batch, std::vector<std::optional<command_result>>& answers);
  std::unique_ptr<store::transactional_producer> make_producer(std::chrono::milliseconds init_timeout) const;
  std::string snapshot_scope() const;
  void rebuild();
  void fold(const store::message& m, tail_fold& t);
  void report_refused(const store::message& m, const replayed& r);
  void publish_quarantine();
  void cache_recent_answers(tail_fold& t);
  bool load_snapshot(store::start_offsets& from);
  void offer_snapshot();
  void recover(bool producer_lost);
  void release_in_flight(const std::vector<submission>& batch);
  void watch_idempotency(time_ms now);
  std::optional<accepted> first_answer(const idempotency_store::candidate& c);
  std::optional<std::uint64_t> remember_key(const event& e, stream topic, std::int32_t partition, std::int64_t offset);
  const std::string& topic_of(stream s) const;
  std::string new_event_id();

  const config cfg_;
  const std::optional<std::int32_t> partition_;
  const policy rules_;  // from cfg_: the BalanceLow threshold and the model prices
  const clock_fn now_;
  api_metrics& metrics_;
  std::unique_ptr<store::transactional_producer> producer_;
  std::unique_ptr<snapshot_writer> snapshots_writer_;  // when snapshots are on

  // Writer thread only.
  ledger_state state_;
  idempotency_store idempotency_;
  std::unique_ptr<store::consumer> replay_reader_;                 // reads first answers that fell out of the cache
  std::map<std::string, std::vector<std::int64_t>> next_offsets_;  // what the state covers, per partition
  std::map<std::string, std::int32_t> partition_counts_;           // of the ledger and usage topics
  bool snapshots_;                                                 // configured and the topic exists
  std::size_t events_since_snapshot_ = 0;
  std::int64_t quarantined_accounts_reported_ = 0;  // to the metrics, which add up every writer's
  std::int64_t quarantined_records_reported_ = 0;
  std::uint64_t last_snapshot_id_ = 0;    // the highest id in the topic, so ours always come after it
  std::uint64_t loaded_snapshot_id_ = 0;  // the one this start-up used
  std::mt19937_64 rng_{std::random_device{}()};
  time_ms window_short_logged_at_ = -1;  // when the log last said the window held is short; -1: it is whole
  // The last batch expired as many holds and grants as a batch may: more may be due (a month end), so the next
  // scan comes at once instead of after CREDITS_EXPIRY_SCAN_INTERVAL_MS. Writer thread only.
  bool expiries_backlog_ = false;

  mutable std::mutex queue_mutex_;
  std::condition_variable queue_cv_;
  std::deque<submission> queue_;
  std::unordered_set<key128, key128_hash> in_flight_;  // idempotency slots queued or being written
  bool stopping_ = false;
  bool accepting_ = false;
  bool fenced_ = false;

  mutable std::mutex positions_mutex_;
  std::unordered_map<std::string, log_position> latest_;
  std::unordered_map<std::string, std::string> quarantine_index_;  // quarantined record id -> account

  std::size_t accounts_count_ = 0;
  start_stats last_start_;
  std::atomic<std::size_t> idempotency_keys_{0};  // written by the writer thread (watch_idempotency)
  std::atomic<std::size_t> idempotency_keys_max_{0};
  std::atomic<std::size_t> idempotency_bytes_{0};
  std::atomic<time_ms> idempotency_forgotten_until_{0};

  std::thread thread_;
};

}  // namespace credits::api
