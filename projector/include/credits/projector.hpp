#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "credits/event_store.hpp"
#include "credits/read_model.hpp"

namespace credits {

// Everything the projector may be told, read once at start-up and validated before any socket opens.
struct projector_config {
  std::string brokers = "127.0.0.1:9092";
  std::string redis_host = "127.0.0.1";
  int redis_port = 6379;
  std::string ledger_topic = "credits.ledger";
  std::string usage_topic = "credits.usage";
  std::string redis_client_name = "credits-projector";  // CLIENT SETNAME, to find it in CLIENT LIST
  std::size_t batch_events_max = 1000;     // events per poll, and so per Redis pipeline
  std::int64_t fetch_wait_ms = 10;         // librdkafka fetch.wait.max.ms: the broker's wait for more data
  std::int64_t poll_timeout_ms = 100;      // longest wait for a batch, and so for noticing a stop request
  std::int64_t redis_timeout_ms = 2000;    // connect and per-command timeout
  std::int64_t metadata_timeout_ms = 10'000;  // partition counts at start-up
  std::int64_t reconnect_backoff_ms_min = 100;
  std::int64_t reconnect_backoff_ms_max = 5000;
};

inline constexpr std::size_t batch_events_max_limit = 100'000;
inline constexpr std::int64_t fetch_wait_ms_limit = 60'000;

// Reads the configuration from the environment through `lookup` (std::getenv in main, a map in tests).
// Returns the config, or one sentence naming the bad variable.
using env_lookup = std::function<const char*(const char*)>;
std::variant<projector_config, std::string> projector_config_from_env(const env_lookup& lookup);

// The Lua script that applies one event's commands and advances its partition's position atomically:
//   KEYS[1] = credits:positions
//   ARGV[1] = position field, ARGV[2] = the event's offset,
//   ARGV[3] = the offset of the event read before it on that partition (the position this event follows),
//   ARGV[4..] = the commands, each as its word count followed by its words.
// Returns 1 when applied, 0 when the position already covers the offset (a replay: nothing is written).
// Refuses with a GAP error when the stored position is neither at nor past ARGV[2] nor equal to ARGV[3]:
// an earlier event of that partition failed in the same pipeline, and applying this one would skip it.
std::string_view guarded_apply_script();

// The EVALSHA arguments for one event (no commands for a poison event: only its position advances).
std::vector<std::string> guarded_apply_args(const std::string& script_sha, const std::string& position_field,
                                            std::int64_t offset, std::int64_t previous_offset,
                                            const std::vector<std::vector<std::string>>& commands);

// Counters since construction. Read them from the thread that runs the projector, or after it stopped.
struct projector_stats {
  std::uint64_t applied = 0;     // events whose commands ran (poison included)
  std::uint64_t replayed = 0;    // events already covered by the stored position: no-ops
  std::uint64_t poison = 0;      // events that failed to decode; their position advanced anyway
  std::uint64_t recoveries = 0;  // reconnects after a Redis error
};

// Folds the ledger and usage topics into the Redis read model, exactly once in effect: each event's
// commands and its partition's position change together in one Lua script, so after a crash, a Redis error
// or a rewind the re-read events are no-ops. Owns one Kafka consumer and one Redis connection; lives on
// the one thread that calls run() or step(). Construction connects to both, reads the stored positions and
// assigns every partition just after them; it throws if any of that fails (a start-up failure).
class projector {
 public:
  explicit projector(projector_config config);
  ~projector();
  projector(const projector&) = delete;
  projector& operator=(const projector&) = delete;

  // Polls and applies until `stop` is set. Redis errors are logged and retried with bounded backoff; a fatal
  // Kafka error throws.
  void run(const std::atomic<bool>& stop);

  // One poll and one pipeline; reconnects first if the last step lost Redis. Returns the events handled.
  std::size_t step();

  // Where each partition resumed at start-up (offset 0: from the beginning).
  const std::vector<store::start_point>& resume_points() const { return resume_points_; }

  // Re-reads partitions from earlier offsets. Events the stored positions cover are skipped by the script,
  // so this is safe; it exists for operators and tests.
  void rewind(const std::vector<store::start_point>& from);

  const projector_stats& stats() const { return stats_; }

 private:
  void connect_redis();
  std::vector<store::start_point> stored_start_points();
  void assign(const std::vector<store::start_point>& from);
  bool try_recover();
  void apply(const std::vector<store::message>& batch);

  projector_config config_;
  std::vector<std::pair<std::string, std::int32_t>> partitions_;  // (topic, partition), both topics
  store::consumer consumer_;
  std::unique_ptr<read_model::redis_connection> redis_;  // null after an error, until reconnected
  std::string script_sha_;
  // Position field -> offset of the last event read from it: what the next event follows (ARGV[3]).
  std::unordered_map<std::string, std::int64_t> previous_offset_;
  std::vector<store::start_point> resume_points_;
  projector_stats stats_;
};

// "credits.ledger 0@12 1@start ..." for the start-up line.
std::string describe(const std::vector<store::start_point>& points);

}  // namespace credits
