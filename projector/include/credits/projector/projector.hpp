#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "credits/common/env.hpp"
#include "credits/common/events.hpp"
#include "credits/event_store/consumer_group_member.hpp"
#include "credits/event_store/event_store.hpp"
#include "credits/event_store/idempotent_producer.hpp"
#include "credits/projector/fold.hpp"
#include "credits/projector/projector_metrics.hpp"
#include "credits/read_model/layout.hpp"
#include "credits/read_model/reads.hpp"
#include "credits/read_model/redis.hpp"

namespace credits {

// Everything the projector may be told, read once at start-up and validated before any socket opens.
struct projector_config {
  std::string brokers = "127.0.0.1:9092";
  std::string redis_host = "127.0.0.1";
  int redis_port = 6379;
  int redis_db = 0;          // the Redis database the view owns (CREDITS_REDIS_DB)
  int redis_rebuild_db = 1;  // where `rebuild` builds the next view before swapping it in (CREDITS_REDIS_REBUILD_DB)
  std::string ledger_topic = "credits.ledger";
  std::string usage_topic = "credits.usage";
  std::string dlq_topic;  // CREDITS_DLQ_TOPIC; empty in the struct means "<ledger topic>.dlq"
  // The API key log (CREDITS_KEYS_TOPIC, as the API and credits-admin read it): not folded, but exported and
  // imported with the event topics, so a restore keeps every ck_live_ key and every revocation.
  std::string keys_topic = "credits.keys";
  std::string redis_client_name = "credits-projector";  // CLIENT SETNAME, to find it in CLIENT LIST
  std::size_t batch_events_max = 1000;                  // events per poll, and so per Redis pipeline
  std::size_t rebuild_batch_events_max = 5000;          // the same for a rebuild: no reader waits on it, so larger
  // Facts a fold needs (a grant's category, a hold's draws: read_model::fold_memory) kept in memory; beyond it the
  // projector reads them from the view. About 150 bytes each.
  std::size_t fold_facts_max = 1'000'000;
  std::int64_t fetch_wait_ms = 10;            // librdkafka fetch.wait.max.ms: the broker's wait for more data
  std::int64_t poll_timeout_ms = 100;         // longest wait for a batch, and so for noticing a stop request
  std::int64_t redis_timeout_ms = 2000;       // connect and per-command timeout
  std::int64_t metadata_timeout_ms = 10'000;  // partition counts at start-up
  std::int64_t reconnect_backoff_ms_min = 100;
  std::int64_t reconnect_backoff_ms_max = 5000;
  std::int64_t dlq_timeout_ms = 10'000;            // a dead-letter copy must be acknowledged within this
  std::int64_t rebuild_swap_timeout_ms = 120'000;  // catching up with the live view before the switch
  std::int64_t log_read_timeout_ms = 3'600'000;    // verify and export read the whole log within this
  std::int64_t progress_interval_ms = 2000;        // plain progress lines (a terminal bar: 5 per second)
  // Prometheus metrics of `run` (CREDITS_PROJECTOR_METRICS_ADDRESS, CREDITS_PROJECTOR_METRICS_PORT; port 0: off).
  std::string metrics_address = "127.0.0.1";
  int metrics_port = 9464;
  std::int64_t metrics_interval_ms = 1000;  // how often the lag gauges are sampled
  // Several projectors (docs/operations.md "Several projectors"). Empty: this projector reads every partition.
  // Set: it joins this Kafka consumer group and folds only the partitions the group gives it
  // (CREDITS_PROJECTOR_GROUP_ID).
  std::string group_id;
  std::int64_t group_session_timeout_ms = 45'000;     // CREDITS_PROJECTOR_SESSION_TIMEOUT_MS
  std::int64_t group_max_poll_interval_ms = 300'000;  // CREDITS_PROJECTOR_MAX_POLL_INTERVAL_MS
  // Names this process in the group's lag record (credits:projector fields lagOffsets:<id>, reportedAt:<id>) and
  // as its Kafka client.id (CREDITS_PROJECTOR_INSTANCE_ID; default: host name and process id).
  std::string instance_id;
};

// The dead-letter topic: dlq_topic, or "<ledger topic>.dlq".
std::string dead_letter_topic(const projector_config& config);

inline constexpr std::size_t batch_events_max_limit = 100'000;
// Events of one partition per apply script call (guarded_apply_script): a call spares Redis the per-call work of
// the events after the first. Measured by a catch-up (bench/ab): 32 folded faster than 1, 8 or 256; Redis runs
// nothing else during a call, which at some 30 µs an event is about 1 ms.
inline constexpr std::size_t apply_run_events_max = 32;
inline constexpr std::size_t fold_facts_max_limit = 100'000'000;
inline constexpr std::int64_t fetch_wait_ms_limit = 60'000;
inline constexpr std::int64_t rebuild_swap_timeout_ms_limit = 86'400'000;
// The broker's default group.min.session.timeout.ms and group.max.session.timeout.ms.
inline constexpr std::int64_t group_session_timeout_ms_min = 6'000;
inline constexpr std::int64_t group_session_timeout_ms_max = 1'800'000;
inline constexpr std::int64_t group_max_poll_interval_ms_max = 86'400'000;
inline constexpr std::size_t instance_id_bytes_max = 200;

// Reads the configuration from the environment through `lookup` (std::getenv in main, a map in tests).
// Returns the config, or one sentence naming the bad variable.
std::variant<projector_config, std::string> projector_config_from_env(const env_lookup& lookup);

// The Lua script that applies a run of events of one partition, in order, each atomically with the position it
// advances to. For each event it checks the guards, applies the commands and moves the position:
//   KEYS[1] = credits:positions, KEYS[2] = credits:view
//   ARGV[1] = position field, ARGV[2] = the id of the view the projector folds into (credits:view field id),
//   ARGV[3] = the number of events; then for each event: its offset, the offset of the event read before it on
//   that partition (the position it follows), the number of words that follow for it, the number of its guards,
//   and its guards and commands, each as its word count followed by its words (guards: see read_model::guards).
//   A tally (read_model::is_tally) goes as -3, key, field, delta: the script adds up the tallies of the events it
//   applies and increments each counter once, at the end.
// Returns [applied, replayed, refused]: the number of events applied; the number whose offset the position
// already covered (replays: nothing is written); and, when a guard failed, why: that event (the one after the
// applied and replayed ones) and the ones after it are not written, and the position stays before it (the projector
// copies the event to the dead-letter topic first, then records it with read_model::poison_marks through this
// script).
// Refuses with a VIEW error when the view's id is not ARGV[2]: the view lost its data (a FLUSHALL, even in the
// middle of a pipeline: nothing after it is written into the empty database), or a rebuild replaced it.
// Refuses with a GAP error when the stored position is neither at nor past an event's offset nor equal to the
// offset it follows: an earlier event of that partition did not apply, and applying this one would skip it.
// An error in a command stops the run there: what was applied before it is recorded, and the error is returned.
std::string_view guarded_apply_script();

struct guarded_event {
  std::int64_t offset;
  std::int64_t previous_offset;
  const std::vector<std::vector<std::string>>& commands;
  const std::vector<std::vector<std::string>>& guards;
  const std::vector<std::vector<std::string>>& marks;  // view-wide commands run with the event (read_model::void_marks)
};

// The EVALSHA arguments for a run of events of one partition.
std::vector<std::string> guarded_apply_args(const std::string& script_sha, const std::string& view_id,
                                            const std::string& position_field,
                                            const std::vector<guarded_event>& events);
// The same in Redis's wire form (read_model::resp_writer), as the projector sends it.
std::string guarded_apply_command(const std::string& script_sha, const std::string& view_id,
                                  const std::string& position_field, const std::vector<guarded_event>& events);
// The arguments for one event.
std::vector<std::string> guarded_apply_args(const std::string& script_sha, const std::string& view_id,
                                            const std::string& position_field, std::int64_t offset,
                                            std::int64_t previous_offset,
                                            const std::vector<std::vector<std::string>>& commands,
                                            const std::vector<std::vector<std::string>>& guards = {});

struct guarded_reply {
  std::size_t applied = 0;
  std::size_t replayed = 0;
  std::optional<std::string> refused;
};
// Reads guarded_apply_script's answer; throws std::runtime_error on any other.
guarded_reply read_guarded_reply(const read_model::redis_connection::reply& r);

// A new view's id (credits:view field id): 16 random hex digits.
std::string new_view_id();

// ---- Redis Cluster ----------------------------------------------------------------------------------------
// A Lua script may only touch keys of one slot, so on a cluster an event is applied in parts, one per hash tag
// its commands touch (its account's; for some events also its tenant's), each guarded by an offset of its own
// in that tag's slot instead of by the partition's position:
//   credits:applied:{<tag>}  HASH "account:<topic>:<partition>" or "shared:<topic>:<partition>" -> offset of the
//                                 last event whose part was applied; "poison:<field>:<offset>" -> why the event
//                                 at that offset was refused
// All of one account's events sit in one partition per topic and are applied in offset order, so a part whose
// offset is not past its field's was applied already. credits:positions is then only where to resume: it is
// raised (never lowered) after a batch's parts have all been applied.
struct tag_part {
  std::string tag;
  std::vector<std::vector<std::string>> commands;
  std::vector<std::vector<std::string>> guards;
};

// An event's commands and guards split by hash tag. The account's part comes first, always (with the guards,
// which read only the account's keys), even when it has no commands.
std::vector<tag_part> split_by_tag(const std::vector<std::vector<std::string>>& commands,
                                   const std::vector<std::vector<std::string>>& guards, std::string_view account_id);

// The cluster's apply script, for one part of one event:
//   KEYS[1] = credits:applied:{<tag>}, KEYS[2...] = every key the part touches (so the cluster can route it),
//   ARGV[1] = the part's field, ARGV[2] = the event's offset,
//   ARGV[3] = the offset this part follows on its field, or "" when this batch has not sent one before it,
//   ARGV[4] = "" (unused: the view's marker lives in another slot), ARGV[5] = the number of guards, then the
//   guards and the commands as in guarded_apply_script (tallies as plain HINCRBY commands).
// Returns 1 when applied, 0 when already applied, and "POISON <reason>" when a guard fails; a refusal is
// recorded (the field moves past it, and a replay answers "POISON <reason>" again) so that later events of the
// account are judged without it, in the same pipeline, exactly as the fold of the log judges them.
std::string_view cluster_apply_script();
std::vector<std::string> cluster_apply_args(const std::string& script_sha, const tag_part& part,
                                            const std::string& field, std::int64_t offset,
                                            std::optional<std::int64_t> previous_offset);
// KEYS[1] = credits:positions, ARGV = field, offset, ...: raises each field to its offset if below.
std::string_view positions_max_script();

// Counters since construction. Read them from the thread that runs the projector, or after it stopped.
struct projector_stats {
  std::uint64_t applied = 0;        // events whose commands ran
  std::uint64_t replayed = 0;       // events already covered by the stored position: no-ops
  std::uint64_t poison = 0;         // events that could not be applied, recorded in the view (and the DLQ)
  std::uint64_t dead_lettered = 0;  // copies written to the dead-letter topic (at least once per poison event)
  std::uint64_t recoveries = 0;     // reconnects after a Redis or dead-letter error
  std::uint64_t view_losses = 0;    // times the view was found to have lost its data
  std::uint64_t view_rebuilds = 0;  // rebuilds of a lost view this projector ran to the switch
};

namespace ops {
enum class rebuild_outcome;  // operations.hpp
}

// Folds the ledger and usage topics into the Redis read model, exactly once in effect: each event's
// commands and its partition's position change together in one Lua script, so after a crash, a Redis error
// or a rewind the re-read events are no-ops. An event that cannot be applied (undecodable, unknown type,
// misplaced, or failing a money invariant) is copied to the dead-letter topic, then recorded in the view and
// its account marked blocked, and the partition moves on. Owns one Kafka consumer, one Redis connection and
// one producer (for the dead-letter topic); lives on the one thread that calls run() or step(). Construction
// connects, checks that the dead-letter topic exists, reads the stored positions and assigns every partition
// just after them; it throws if any of that fails (a start-up failure).
//
// With a group id (several projectors) it instead subscribes as a member of that Kafka consumer group and folds
// only the partitions the group gives it. The group's rebalances run inside poll, and in this mode every poll is
// made on the projector's thread between two batches (there is no prefetch thread), so the rebalance callbacks
// may use the Redis connection and the gap-check bookkeeping directly: on assignment they read the stored
// positions of the given partitions and start each just after its own; on revocation they forget them. Kafka
// offsets are never committed: positions stay in Redis, so any member resumes exactly where another stopped, and
// the script turns what both happen to fold into no-ops.
//
// The view (docs/operations.md, "When Redis loses the view"). The projector folds into one view, named by the
// id in its marker (credits:view), which every apply script checks. Construction adopts the view it finds, or
// makes a new one on an empty database (the first start), and assigns the partitions. When the view turns out to
// have lost its data (its marker or positions gone, noticed by an apply script, after a reconnect, or by the
// check every view_check_interval_ms while idle), the projector counts and logs that, stops folding, and
// rebuilds the view from the log by itself (ops::rebuild_view, with the live view marked as being rebuilt) on a
// thread of its own, then resumes from the rebuilt positions. In a group the members that notice contend for the
// rebuild lock: one builds, the others wait, still polling the group, and all resume after the switch. A view
// another rebuild replaced (`credits-projector rebuild`) is adopted, not counted. Redis being unreachable is not
// a loss: it is retried as before.
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
  // Logs how far behind the log the projection is and stores it in Redis (credits:projector).
  void report_lag();

  std::size_t step();

  // Where each partition resumed at start-up (offset 0: from the beginning).
  const std::vector<store::start_point>& resume_points() const { return resume_points_; }

  // Re-reads partitions from earlier offsets. Events the stored positions cover are skipped by the script,
  // so this is safe; it exists for operators and tests. In a group, naming a partition this member does not own
  // now throws std::invalid_argument.
  void rewind(const std::vector<store::start_point>& from);

  const projector_stats& stats() const { return stats_; }

  // Whether the projector folds now: false while its view is being rebuilt (by it or another projector).
  bool view_ready() const { return view_ready_; }
  // The id of the view it folds into (empty until it found or made one).
  const std::string& view_id() const { return view_id_; }

  // How many partitions (of both topics) this projector folds now: all of them without a group, what the group
  // gave it with one. Safe to read from any thread.
  std::size_t owned_partitions() const { return owned_count_.load(std::memory_order_relaxed); }

  // CREDITS_PROJECTOR_INSTANCE_ID, or the default made from the host name and process id.
  const std::string& instance_id() const { return config_.instance_id; }

  // What the metrics exposer serves; safe to collect from another thread.
  std::shared_ptr<prometheus::Registry> metrics_registry() const { return metrics_->registry(); }

 private:
  struct poison;
  void connect_redis();
  std::vector<store::start_point> stored_start_points(const std::vector<store::topic_partition>& of);
  void assign(const std::vector<store::start_point>& from);
  bool try_recover();  // reconnects to Redis; the view is inspected again before folding goes on
  // ---- the view (see the class comment) ----
  enum class view_found {
    intact,      // the view this projector may fold into: view_id_ is its id
    replay,      // on a cluster, a view that lost (or may have lost) data: folded again from offset 0, in place
    lost,        // it lost its data: `why` says how
    rebuilding,  // marked as being rebuilt (by another projector, or one that died at it)
  };
  struct view_inspection {
    view_found found;
    std::string why;
  };
  view_inspection inspect_view();
  view_inspection inspect_clustered_view();
  // Makes the view ready to fold into: inspects it, starts or waits for its rebuild, or takes the rebuild's
  // result. Never blocks for long. True once the view is ready and the owned partitions are assigned. Redis
  // errors throw, as in step().
  bool tend_view();
  void start_rebuild(std::string why);
  void resume_from_stored();  // assigns every owned partition just after its stored position
  // The marker (and on a server the positions) still there, with this projector's view id; else the view is
  // inspected again before the next batch.
  void check_view();
  void view_not_ready(const std::string& why);
  // A polled batch decoded, checked and folded: the CPU half of a step, done for the next batch on another
  // thread while Redis executes this one. Events are prepared alone; what they follow is decided in apply().
  struct prepared_event {
    std::optional<std::string> refused;  // a record-level poison event: why
    std::vector<std::vector<std::string>> commands;
    std::vector<std::vector<std::string>> guards;
    std::vector<std::vector<std::string>> marks;  // read_model::void_marks: view-wide, run once the event applied
    // An event whose fold needs facts the memory lacked: folded by resolve() once they are read from the view.
    std::optional<event> deferred;
    read_model::fold_context context;
    read_model::fold_facts missing;
  };
  struct prepared_batch {
    std::vector<store::message> messages;
    std::vector<prepared_event> events;  // one per message
  };
  prepared_batch poll_and_prepare();
  void drop_prefetched();
  // Reads the facts the deferred events of `batch` lack from the view and folds them. Everything before the batch
  // is applied by then, so the view holds every fact the memory lacks.
  void resolve(prepared_batch& batch);
  void apply(const prepared_batch& batch);
  void apply_clustered(const prepared_batch& batch);
  // The batch indices of the messages past what this projector already sent for their partitions.
  std::vector<std::size_t> unapplied(const std::vector<store::message>& batch) const;
  void load_script();  // the apply script for this Redis (a server or a cluster) into script_sha_
  // Runs a pipeline of EVALSHA calls (and idempotent plain commands), loading the script again if Redis lost it.
  // The calls are EVALSHA arguments, or commands in wire form (a std::vector<std::string>).
  template <class Calls>
  std::vector<read_model::redis_connection::outcome> run_scripts(const Calls& calls);
  // The replies to `calls`, already sent: `outcomes`, or, when Redis had lost the script, those of sending them
  // again after loading it.
  template <class Calls>
  std::vector<read_model::redis_connection::outcome> scripts_answered(
      const Calls& calls, std::vector<read_model::redis_connection::outcome> outcomes);
  // Counts the cluster apply script's answer for one part as applied or replayed, or returns the reason it refused
  // the event; throws on an error or an answer of another kind.
  std::optional<std::string> tally(const read_model::redis_connection::outcome& o);
  void record_poison(const std::vector<store::message>& batch, const std::vector<poison>& found);
  void copy_to_dead_letters(const std::vector<store::message>& batch, const std::vector<poison>& found);
  void report_poison(const store::message& m, const std::string& reason);  // counts and logs a newly recorded one
  void sample_lag();
  std::vector<store::message> poll_messages();
  // Waits out a reconnect backoff while still polling the group (dropping what it reads), so that a rebalance of
  // the other members is not held up by this one for up to the max poll interval (Kafka's rebalance timeout).
  void poll_without_redis(std::chrono::milliseconds total, const std::atomic<bool>& stop);
  std::vector<store::consumer::partition_lag> lag_by_partition();
  // Where (topic, partition) sits in partitions_ (and the metrics' series); partitions_.size() if nowhere.
  std::size_t partition_index(const std::string& topic, std::int32_t partition) const;
  // The group's rebalance callbacks (group mode only), called on this thread from inside poll_messages().
  std::optional<std::vector<store::start_point>> on_assigned(const std::vector<store::topic_partition>& given);
  void on_revoked(const std::vector<store::topic_partition>& taken);
  void set_owned(std::vector<store::topic_partition> owned);

  projector_config config_;
  std::vector<std::pair<std::string, std::int32_t>> partitions_;  // (topic, partition), both topics
  std::vector<store::topic_partition> owned_;  // what this projector folds now (all partitions without a group)
  std::atomic<std::size_t> owned_count_{0};    // owned_.size(), for other threads
  std::unordered_map<std::string, std::int32_t> partition_counts_;  // topic -> partitions
  store::consumer consumer_;
  store::idempotent_producer dead_letters_;
  std::unique_ptr<read_model::redis_connection> redis_;  // null after an error, until reconnected
  std::string script_sha_;
  // Position field -> offset of the last event read from it: what the next event follows (ARGV[3]).
  std::unordered_map<std::string, std::int64_t> previous_offset_;
  std::vector<store::start_point> resume_points_;
  projector_stats stats_;
  std::string view_id_;          // the view this projector folds into
  bool view_ready_ = false;      // view_id_ is that of the live view, and the owned partitions are assigned
  bool had_view_ = false;        // it has folded into a view: an empty database is then a loss, not a first start
  std::string last_view_log_;    // the last line about waiting for a rebuild, so it is not repeated every check
  std::string warned_old_fold_;  // the view said to predate grants, so that it is said once
  std::chrono::steady_clock::time_point next_view_attempt_{};
  std::atomic<bool> rebuild_stop_{false};
  // The rebuild of a lost view, running on a thread of its own (ops::rebuild_view). Joined before the members
  // it reads (config_) go: declared after them, and waited for by the destructor.
  std::future<ops::rebuild_outcome> rebuild_;
  std::unique_ptr<projector_metrics> metrics_;                   // series for partitions_, so made once they are known
  read_model::fold_memory fold_memory_{config_.fold_facts_max};  // used by the prefetching thread too
  // The group membership (null without a group id). Declared after everything its callbacks touch, so it is
  // destroyed (leaving the group, which runs on_revoked) while they still exist.
  std::unique_ptr<store::consumer_group_member> group_;
  // The next batch, being polled and prepared while this one is applied. Last member: it is joined before
  // the consumer it reads goes away.
  std::future<prepared_batch> prefetched_;
};

// "credits.ledger 0@12 1@start ..." for the start-up line.
std::string describe(const std::vector<store::start_point>& points);

}  // namespace credits
