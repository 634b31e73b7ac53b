#include <algorithm>
#include <map>
#include <stdexcept>
#include <thread>
#include <unordered_set>
#include <utility>

#include "credits/common/log.hpp"
#include "credits/common/replay.hpp"
#include "credits/event_store/partition_reader.hpp"
#include "credits/event_store/partitioner.hpp"
#include "credits/projector/operations.hpp"

namespace credits::ops {
namespace {

using std::chrono::milliseconds;
using clock = std::chrono::steady_clock;

constexpr milliseconds metadata_timeout_ms{10'000};
constexpr milliseconds idle_wait_ms{20};  // a step that found nothing (or lost Redis) waits this long
constexpr milliseconds behind_report_interval_ms{5000};

// Switches the view to the rebuilt one, atomically, if and only if this rebuild still holds the lock and has
// applied at least as much of every partition as the live view:
//   ARGV[1] = view db, ARGV[2] = rebuild db, ARGV[3] = the lock's expected holder,
//   ARGV[4] = the lock key, ARGV[5] = the positions key.
// Returns "SWAPPED", "BEHIND <field> <rebuilt> <live>" or "LOCK <holder>". Redis runs a script alone, so no
// event can be applied to the live view between the comparison and the swap; the SELECTs stay inside it.
constexpr std::string_view swap_script = R"lua(
redis.call('SELECT', ARGV[1])
local holder = redis.call('GET', ARGV[4])
if holder ~= ARGV[3] then return 'LOCK ' .. tostring(holder) end
local live = redis.call('HGETALL', ARGV[5])
redis.call('SELECT', ARGV[2])
for i = 1, #live, 2 do
  local rebuilt = tonumber(redis.call('HGET', ARGV[5], live[i]) or '-1')
  if rebuilt < tonumber(live[i + 1]) then return 'BEHIND ' .. live[i] .. ' ' .. rebuilt .. ' ' .. live[i + 1] end
end
redis.call('SWAPDB', ARGV[1], ARGV[2])
return 'SWAPPED'
)lua";

// Takes the lock from a holder that is gone, only if it is still that holder's.
constexpr std::string_view take_over_script = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[2]) end
return false
)lua";

void say(std::FILE* out, const std::string& line) {
  std::fprintf(out, "%s\n", line.c_str());
  std::fflush(out);
}

// Folds the whole log into an empty database that nothing else writes (the rebuild holds the lock and
// nothing reads the rebuild database). So no script is needed: each event's guards are checked against an
// in-memory copy of the fields they read (read_model::guard_state), kept by the very commands the view
// receives, and the commands (read_model::fold, read_model::poison_marks) go plain and pipelined, each
// batch with its partitions' positions, and a batch's writes to one key merged (read_model::coalesce). The
// result is the view the live projector builds, field for field, at fewer than a few plain commands per event
// instead of a script call each.
// Lives on the rebuild's thread; owns a Kafka consumer, a Redis connection and the in-memory fold.
class view_builder {
 public:
  explicit view_builder(const projector_config& config)
      : config_(config),
        consumer_(config.brokers, true, {{"fetch.wait.max.ms", std::to_string(config.fetch_wait_ms)}}),
        redis_(config.redis_host, config.redis_port, milliseconds(config.redis_timeout_ms)) {
    redis_.run({"CLIENT", "SETNAME", "credits-rebuild-builder"});
    redis_.run({"SELECT", std::to_string(config.redis_rebuild_db)});
    std::vector<store::start_point> from;
    for (const auto& topic : {config.ledger_topic, config.usage_topic}) {
      counts_[topic] = consumer_.partition_count(topic, metadata_timeout_ms);
      for (std::int32_t p = 0; p < counts_[topic]; ++p) {
        partitions_.emplace_back(topic, p);
        read_[read_model::position_field(topic, p)] = -1;
        from.push_back({topic, p, 0});
      }
    }
    consumer_.assign(from);
  }

  // One poll and one pipeline. Returns the records handled. A Redis error throws: the rebuild stops, and the
  // next one starts again from an empty database.
  std::size_t step() {
    const auto batch = consumer_.poll(config_.rebuild_batch_events_max, milliseconds(config_.poll_timeout_ms),
                                      [this](const std::string& topic, std::int32_t partition) {
                                        ended_.insert(read_model::position_field(topic, partition));
                                      });
    if (batch.empty()) return 0;
    std::vector<std::vector<std::string>> commands;
    commands.reserve(batch.size() * 3);
    std::map<std::string, std::int64_t> moved;
    for (const auto& m : batch) {
      auto field = read_model::position_field(m.topic, m.partition);
      if (m.offset <= read_.at(field)) continue;
      std::string error;
      const auto e = decode(m.value, &error);
      auto refused =
          e ? admission_error(*e, m.key, m.topic == config_.ledger_topic ? stream::ledger : stream::usage, m.partition,
                              store::partition_of_key(m.key, counts_.at(m.topic)))
            : std::optional<std::string>("undecodable: " + (error.empty() ? std::string("no detail") : error));
      if (!refused) refused = mirror_.check(read_model::guards(*e));
      auto folded = refused ? read_model::poison_marks(m.topic, m.partition, m.offset, m.key, *refused)
                            : read_model::fold(*e, m.offset);
      if (!refused)
        for (auto& c : read_model::void_marks(*e)) folded.push_back(std::move(c));
      if (refused) {
        ++stats_.poison;
        write_log(log_level::warn, "credits-projector",
                  "poison event at " + m.topic + ":" + std::to_string(m.partition) + "@" + std::to_string(m.offset) +
                      " (key " + m.key + "): " + *refused + "; recorded by the rebuild",
                  {{"topic", m.topic},
                   {"partition", m.partition},
                   {"offset", m.offset},
                   {"accountId", m.key},
                   {"reason", *refused}});
      } else {
        ++stats_.applied;
      }
      mirror_.apply(folded);
      for (auto& c : folded) commands.push_back(std::move(c));
      read_.at(field) = m.offset;
      moved[std::move(field)] = m.offset;
    }
    if (!moved.empty()) {
      std::vector<std::string> positions{"HSET", std::string(read_model::positions_key)};
      for (const auto& [field, offset] : moved) {
        positions.push_back(field);
        positions.push_back(std::to_string(offset));
      }
      commands.push_back(std::move(positions));
    }
    // Nothing reads the rebuild database until the swap, so a batch's writes to one key go as one command
    // each (coalesce). Redis executes this batch while the next one is read and folded.
    commands = read_model::coalesce(std::move(commands));
    drain();
    redis_.send(commands);
    in_flight_ = commands.size();
    return batch.size();
  }

  // Waits until Redis has executed every command sent; the view then holds everything folded so far.
  void drain() {
    for (const auto& o : redis_.receive(std::exchange(in_flight_, 0)))
      if (o.error) throw std::runtime_error("rebuild: redis: " + *o.error);
  }

  const std::vector<std::pair<std::string, std::int32_t>>& partitions() const { return partitions_; }
  const std::unordered_map<std::string, std::int64_t>& read_offsets() const { return read_; }
  const std::unordered_set<std::string>& ended() const { return ended_; }
  const projector_stats& stats() const { return stats_; }

 private:
  const projector_config& config_;
  store::consumer consumer_;
  read_model::redis_connection redis_;
  std::map<std::string, std::int32_t> counts_;
  std::vector<std::pair<std::string, std::int32_t>> partitions_;
  std::unordered_map<std::string, std::int64_t> read_;  // position field -> last offset folded (-1: none)
  std::unordered_set<std::string> ended_;
  read_model::guard_state mirror_;
  projector_stats stats_;
  std::size_t in_flight_ = 0;  // commands sent whose replies are not read yet
};

// The lock lives in the view's database and names its holder by Redis client id, so a rebuild that died
// (its connection closed) is recognised and its lock taken over without waiting for any timeout. The swap
// moves the lock out with the old view, which is then flushed: a finished rebuild leaves no lock behind.
void take_lock(read_model::redis_connection& view, const std::string& me) {
  const std::string key(read_model::rebuild_lock_key);
  if (view.run({"SET", key, me, "NX"}).value == "OK") return;
  const auto holder = view.run({"GET", key}).value;
  if (!holder) return take_lock(view, me);
  const auto alive = view.run({"CLIENT", "LIST", "ID", *holder}).value;
  if (alive && !alive->empty())
    throw std::runtime_error("another rebuild (redis client " + *holder + ") is running on this view");
  if (!view.run({"EVAL", std::string(take_over_script), "1", key, *holder, me}).value)
    throw std::runtime_error("another rebuild took the lock first");
}

// A Redis Cluster has one database and no SWAPDB: say how to rebuild there instead.
bool refuse_on_cluster(const projector_config& config, const read_model::redis_connection& view) {
  if (!view.clustered()) return false;
  std::fprintf(stderr,
               "rebuild: %s:%d is a Redis Cluster, which has one database and no SWAPDB, so a view cannot be built "
               "beside the live one there. Rebuild it in place instead: stop the projectors, delete the view's "
               "keys on every master (redis-cli --cluster call %s:%d FLUSHDB) and start a projector, which replays "
               "the log from the start (docs/scaling.md, \"Redis Cluster\").\n",
               config.redis_host.c_str(), config.redis_port, config.redis_host.c_str(), config.redis_port);
  return true;
}

// The log's extent when the rebuild starts, for the progress display (the log may grow while it is read).
// Offsets include Kafka transaction markers, so progress counts log offsets read, not events.
class log_extent {
 public:
  log_extent(const projector_config& config, const view_builder& builder) {
    store::partition_reader probe(config.brokers);
    for (const auto& [topic, partition] : builder.partitions()) {
      const auto w = probe.query_watermarks(topic, partition, metadata_timeout_ms);
      extent_[read_model::position_field(topic, partition)] = w;
      total_ += static_cast<std::uint64_t>(w.high - w.low);
    }
  }

  std::uint64_t total() const { return total_; }

  std::uint64_t done(const view_builder& builder) const {
    std::uint64_t n = 0;
    for (const auto& [field, w] : extent_) {
      const auto read = builder.ended().contains(field) ? w.high : builder.read_offsets().at(field) + 1;
      n += static_cast<std::uint64_t>(std::clamp(read, w.low, w.high) - w.low);
    }
    return n;
  }

 private:
  std::unordered_map<std::string, store::watermarks> extent_;
  std::uint64_t total_ = 0;
};

void step(view_builder& builder) {
  if (builder.step() == 0) std::this_thread::sleep_for(idle_wait_ms);
}

// 1. Everything up to the end of every partition. False when stopped.
bool build_to_end(const projector_config& config, view_builder& builder, const std::atomic<bool>& stop) {
  const log_extent extent(config, builder);
  progress_reporter progress(stderr, "rebuild", milliseconds(config.progress_interval_ms));
  while (builder.ended().size() < builder.partitions().size()) {
    if (stop.load()) return false;
    step(builder);
    progress.update(extent.done(builder), extent.total());
  }
  progress.finish(extent.done(builder), extent.total());
  return true;
}

// 2. Catch up with the live view and switch. The live projector keeps applying new events meanwhile, so the
// switch is attempted between steps until the rebuilt view is at or past it on every partition. False when
// stopped; throws when the lock is lost or the deadline passes (the live view is then unchanged).
bool swap_when_caught_up(const projector_config& config, view_builder& builder, read_model::redis_connection& view,
                         const std::string& me, const std::atomic<bool>& stop, std::FILE* out) {
  const auto deadline = clock::now() + milliseconds(config.rebuild_swap_timeout_ms);
  auto last_report = clock::now();
  for (;;) {
    if (stop.load()) return false;
    builder.drain();
    const auto state = view.run({"EVAL", std::string(swap_script), "0", std::to_string(config.redis_db),
                                 std::to_string(config.redis_rebuild_db), me, std::string(read_model::rebuild_lock_key),
                                 std::string(read_model::positions_key)})
                           .value.value_or("");
    if (state == "SWAPPED") return true;
    if (state.starts_with("LOCK")) throw std::runtime_error("rebuild: lost the lock (" + state + ")");
    if (clock::now() > deadline)
      throw std::runtime_error("rebuild: could not catch up with the live view in time (" + state +
                               "); the live view is unchanged");
    if (clock::now() - last_report > behind_report_interval_ms) {
      say(out, "rebuild: catching up with the live view (" + state + ")");
      last_report = clock::now();
    }
    step(builder);
  }
}

}  // namespace

int rebuild(const projector_config& config, const std::atomic<bool>& stop, std::FILE* out) {
  const auto started = clock::now();
  const milliseconds redis_timeout(config.redis_timeout_ms);
  read_model::redis_connection view(config.redis_host, config.redis_port, redis_timeout);
  if (refuse_on_cluster(config, view)) return 2;
  view.run({"CLIENT", "SETNAME", "credits-rebuild"});
  view.run({"SELECT", std::to_string(config.redis_db)});
  const auto me = view.run({"CLIENT", "ID"}).value.value_or("");
  take_lock(view, me);

  read_model::redis_connection staging(config.redis_host, config.redis_port, redis_timeout);
  staging.run({"SELECT", std::to_string(config.redis_rebuild_db)});
  // Whatever an interrupted rebuild left here is discarded: a rebuild always starts from an empty database.
  staging.run({"FLUSHDB"});

  // Poison events are recorded in the new view but not copied to the dead-letter topic again: the live
  // projector copied them when it met them.
  view_builder builder(config);
  say(out, "rebuild: building the view of " + config.ledger_topic + " and " + config.usage_topic + " in redis db " +
               std::to_string(config.redis_rebuild_db) + " (the live view in db " + std::to_string(config.redis_db) +
               " keeps serving)");
  if (!build_to_end(config, builder, stop)) return exit_stopped;
  if (!swap_when_caught_up(config, builder, view, me, stop, out)) return exit_stopped;
  // The old view now sits in the rebuild database.
  staging.run({"FLUSHDB", "ASYNC"});

  const auto& s = builder.stats();
  const auto events = s.applied + s.poison;
  const double seconds = std::chrono::duration<double>(clock::now() - started).count();
  char rate[64];
  std::snprintf(rate, sizeof rate, "%.1f s (%.0f events/s)", seconds, static_cast<double>(events) / seconds);
  say(out, "rebuild: switched db " + std::to_string(config.redis_db) + " to the new view: " + std::to_string(events) +
               " events (" + std::to_string(s.poison) + " poison) in " + rate + "; old view discarded");
  return 0;
}

}  // namespace credits::ops
