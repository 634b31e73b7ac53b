#include <algorithm>
#include <map>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_set>
#include <utility>

#include "credits/common/clock.hpp"
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

// Switches the view to the rebuilt one, atomically, if and only if this rebuild still holds the lock, the
// rebuild database still holds what it built, and it has applied at least as much of every partition as the live
// view:
//   ARGV[1] = view db, ARGV[2] = rebuild db, ARGV[3] = the lock's expected holder,
//   ARGV[4] = the lock key, ARGV[5] = the positions key, ARGV[6] = the view marker's key, ARGV[7] = the rebuilt
//   view's id.
// Returns "SWAPPED", "BEHIND <field> <rebuilt> <live>", "LOCK <holder>" or "LOST" (the rebuild database lost its
// marker, and so everything built before: a FLUSHALL). Redis runs a script alone, so no event can be applied to
// the live view between the comparison and the swap; the SELECTs stay inside it.
constexpr std::string_view swap_script = R"lua(
redis.call('SELECT', ARGV[1])
local holder = redis.call('GET', ARGV[4])
if holder ~= ARGV[3] then return 'LOCK ' .. tostring(holder) end
local live = redis.call('HGETALL', ARGV[5])
redis.call('SELECT', ARGV[2])
if redis.call('HGET', ARGV[6], 'id') ~= ARGV[7] then return 'LOST' end
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

// Marks the live view as being rebuilt, if this rebuild holds the lock: its id goes (so every projector's apply
// script refuses it, and the API answers 503), the notice comes.
//   KEYS[1] = the view marker, KEYS[2] = the lock; ARGV = the holder, since, reason, by.
constexpr std::string_view announce_script = R"lua(
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 'LOCK' end
redis.call('HDEL', KEYS[1], 'id')
redis.call('HSET', KEYS[1], 'rebuildingSince', ARGV[2], 'reason', ARGV[3], 'by', ARGV[4])
return 'OK'
)lua";

constexpr std::string_view builder_client_name = "credits-rebuild-builder";

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
  // Starts the new view, in the (empty) rebuild database, with its marker (a new id) and a position of -1 for
  // every partition.
  view_builder(const projector_config& config, const std::string& view_id)
      : config_(config),
        consumer_(config.brokers, true, {{"fetch.wait.max.ms", std::to_string(config.fetch_wait_ms)}}),
        redis_(config.redis_host, config.redis_port, milliseconds(config.redis_timeout_ms)) {
    redis_.run({"CLIENT", "SETNAME", std::string(builder_client_name)});
    legacy_sha_ = redis_.run({"SCRIPT", "LOAD", read_model::legacy_script()}).value.value_or("");
    redis_.run({"SELECT", std::to_string(config.redis_rebuild_db)});
    std::vector<store::start_point> from;
    std::vector<std::string> marker{"HSET",
                                    std::string(read_model::view_key),
                                    "id",
                                    view_id,
                                    "createdAt",
                                    format_time(wall_clock_ms()),
                                    std::string(read_model::view_fold_field),
                                    std::string(read_model::view_fold_grants)};
    std::vector<std::string> positions{"HSET", std::string(read_model::positions_key)};
    for (const auto& topic : {config.ledger_topic, config.usage_topic}) {
      counts_[topic] = consumer_.partition_count(topic, metadata_timeout_ms);
      marker.insert(marker.end(), {read_model::view_topic_field(topic), std::to_string(counts_[topic])});
      for (std::int32_t p = 0; p < counts_[topic]; ++p) {
        partitions_.emplace_back(topic, p);
        read_[read_model::position_field(topic, p)] = -1;
        positions.insert(positions.end(), {read_model::position_field(topic, p), "-1"});
        from.push_back({topic, p, 0});
      }
    }
    redis_.run(marker);
    redis_.run(positions);
    consumer_.assign(from);
  }

  // One poll and one pipeline. Returns the records handled. A Redis error throws: the rebuild stops, and the
  // next one starts again from an empty database.
  std::size_t step() {
    memory_.trim();
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
                            : read_model::fold(*e, m.offset, context_of(*e));
      if (!refused) memory_.learn(*e);
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
    // each (coalesce). Redis executes this batch while the next one is read and folded. The grant side of an
    // event written before grants reads what the commands before it wrote: such a batch goes in order, each of
    // those as a script call.
    if (std::any_of(commands.begin(), commands.end(), read_model::is_legacy)) {
      for (auto& c : commands)
        if (read_model::is_legacy(c)) {
          c.erase(c.begin());
          c.insert(c.begin(), {"EVALSHA", legacy_sha_, "0"});
        }
    } else {
      commands = read_model::coalesce(std::move(commands));
    }
    drain();
    redis_.send(commands);
    in_flight_ = commands.size();
    return batch.size();
  }

  // The facts the fold of `e` needs: from memory, or else read from the view built so far (once what was sent
  // is executed; what this batch taught is in memory).
  read_model::fold_context context_of(const event& e) {
    read_model::fold_facts missing;
    auto context = memory_.context(e, missing);
    if (missing.grants.empty() && missing.reservation.empty()) return context;
    drain();
    std::vector<std::optional<std::string>> replies;
    for (auto& r : redis_.pipeline(read_model::fold_memory::lookups(e.account_id, missing)))
      replies.push_back(std::move(r.value));
    memory_.complete(context, missing, replies);
    return context;
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
  read_model::fold_memory memory_{config_.fold_facts_max};
  projector_stats stats_;
  std::size_t in_flight_ = 0;  // commands sent whose replies are not read yet
  std::string legacy_sha_;     // read_model::legacy_script()
};

// The lock lives in the view's database and names its holder by Redis client id, so a rebuild that died
// (its connection closed) is recognised and its lock taken over without waiting for any timeout. The swap
// moves the lock out with the old view, which is then flushed: a finished rebuild leaves no lock behind.
// Returns nullopt when this rebuild holds the lock now, else the live holder's client id.
std::optional<std::string> take_lock(read_model::redis_connection& view, const std::string& me) {
  const std::string key(read_model::rebuild_lock_key);
  if (view.run({"SET", key, me, "NX"}).value == "OK") return std::nullopt;
  const auto holder = view.run({"GET", key}).value;
  if (!holder) return take_lock(view, me);
  const auto alive = view.run({"CLIENT", "LIST", "ID", *holder}).value;
  if (alive && !alive->empty()) return holder;
  if (!view.run({"EVAL", std::string(take_over_script), "1", key, *holder, me}).value)
    return view.run({"GET", key}).value.value_or("(gone again)");  // another rebuild took it first
  return std::nullopt;
}

// A FLUSHALL takes the lock with everything else, so a rebuild that was running then may still be writing into
// the rebuild database when the next one takes the lock and flushes it. Its builder's connection is closed here,
// before that flush, so nothing of it lands in the new build (its rebuild fails, and could not have switched:
// the lock is not its own). Any other builder holding that database now is such a one: a live rebuild holds the
// lock. Builders of other views use other rebuild databases.
void close_stale_builders(read_model::redis_connection& view, int rebuild_db) {
  const auto clients = view.run({"CLIENT", "LIST", "TYPE", "normal"}).value.value_or("");
  std::size_t start = 0;
  while (start < clients.size()) {
    auto end = clients.find('\n', start);
    if (end == std::string::npos) end = clients.size();
    const std::string_view line(clients.data() + start, end - start);
    start = end + 1;
    std::string id;
    bool builder = false, in_db = false;
    std::size_t at = 0;
    while (at < line.size()) {
      auto space = line.find(' ', at);
      if (space == std::string_view::npos) space = line.size();
      const auto word = line.substr(at, space - at);
      at = space + 1;
      if (word.starts_with("id=")) id = std::string(word.substr(3));
      builder = builder || word == "name=" + std::string(builder_client_name);
      in_db = in_db || word == "db=" + std::to_string(rebuild_db);
    }
    if (builder && in_db && !id.empty()) {
      view.run({"CLIENT", "KILL", "ID", id});
      write_log(log_level::warn, "credits-projector",
                "closed the connection of a rebuild that lost its lock (redis client " + id + ")",
                {{"redisClient", id}});
    }
  }
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
bool build_to_end(const projector_config& config, view_builder& builder, const std::atomic<bool>& stop,
                  const rebuild_output& output) {
  const log_extent extent(config, builder);
  const milliseconds interval(config.progress_interval_ms);
  std::optional<progress_reporter> bar;
  if (output.progress) bar.emplace(output.progress, "rebuild", interval);
  const auto started = clock::now();
  auto last_line = started;
  std::optional<std::uint64_t> last_done;  // what the last line said, so the final one is not said twice
  const auto report = [&](bool last) {
    if (bar)
      return last ? bar->finish(extent.done(builder), extent.total())
                  : bar->update(extent.done(builder), extent.total());
    const auto done = extent.done(builder);
    if (last ? last_done == done : clock::now() - last_line < interval) return;
    last_line = clock::now();
    last_done = done;
    const std::chrono::duration<double> elapsed = last_line - started;
    output.say("rebuild: " + progress_line(done, extent.total(), elapsed.count()));
  };
  while (builder.ended().size() < builder.partitions().size()) {
    if (stop.load()) return false;
    step(builder);
    report(false);
  }
  report(true);
  return true;
}

// 2. Catch up with the live view and switch. The live projector keeps applying new events meanwhile, so the
// switch is attempted between steps until the rebuilt view is at or past it on every partition. False when
// stopped; throws when the lock is lost or the deadline passes (the live view is then unchanged).
bool swap_when_caught_up(const projector_config& config, view_builder& builder, read_model::redis_connection& view,
                         const std::string& me, const std::string& view_id, const std::atomic<bool>& stop,
                         const rebuild_output& output) {
  const auto deadline = clock::now() + milliseconds(config.rebuild_swap_timeout_ms);
  auto last_report = clock::now();
  for (;;) {
    if (stop.load()) return false;
    builder.drain();
    const auto state = view.run({"EVAL", std::string(swap_script), "0", std::to_string(config.redis_db),
                                 std::to_string(config.redis_rebuild_db), me, std::string(read_model::rebuild_lock_key),
                                 std::string(read_model::positions_key), std::string(read_model::view_key), view_id})
                           .value.value_or("");
    if (state == "SWAPPED") return true;
    if (state.starts_with("LOCK")) throw std::runtime_error("rebuild: lost the lock (" + state + ")");
    if (state == "LOST")
      throw std::runtime_error(
          "rebuild: the rebuild database lost what was built (FLUSHALL?); nothing was switched, build again");
    if (clock::now() > deadline)
      throw std::runtime_error("rebuild: could not catch up with the live view in time (" + state +
                               "); the live view is unchanged");
    if (clock::now() - last_report > behind_report_interval_ms) {
      output.say("rebuild: catching up with the live view (" + state + ")");
      last_report = clock::now();
    }
    step(builder);
  }
}

}  // namespace

rebuild_outcome rebuild_view(const projector_config& config, const std::atomic<bool>& stop,
                             const std::optional<std::string>& announce, const rebuild_output& output,
                             std::string* holder) {
  const auto started = clock::now();
  const milliseconds redis_timeout(config.redis_timeout_ms);
  read_model::redis_connection view(config.redis_host, config.redis_port, redis_timeout);
  if (view.clustered()) throw std::runtime_error("rebuild: a Redis Cluster has no SWAPDB");
  view.run({"CLIENT", "SETNAME", "credits-rebuild"});
  view.run({"SELECT", std::to_string(config.redis_db)});
  const auto me = view.run({"CLIENT", "ID"}).value.value_or("");
  if (auto other = take_lock(view, me)) {
    if (holder) *holder = std::move(*other);
    return rebuild_outcome::busy;
  }
  close_stale_builders(view, config.redis_rebuild_db);
  if (announce) {
    const auto marked = view.run({"EVAL", std::string(announce_script), "2", std::string(read_model::view_key),
                                  std::string(read_model::rebuild_lock_key), me, format_time(wall_clock_ms()),
                                  *announce, config.instance_id});
    if (marked.value != "OK") throw std::runtime_error("rebuild: lost the lock before it started");
  }

  read_model::redis_connection staging(config.redis_host, config.redis_port, redis_timeout);
  staging.run({"SELECT", std::to_string(config.redis_rebuild_db)});
  // Whatever an interrupted rebuild left here is discarded: a rebuild always starts from an empty database.
  staging.run({"FLUSHDB"});

  // Poison events are recorded in the new view but not copied to the dead-letter topic again: the live
  // projector copied them when it met them.
  const auto view_id = new_view_id();
  view_builder builder(config, view_id);
  output.say("rebuild: building the view of " + config.ledger_topic + " and " + config.usage_topic + " in redis db " +
             std::to_string(config.redis_rebuild_db) +
             (announce ? " (the view in db " + std::to_string(config.redis_db) + " lost its data: " + *announce + ")"
                       : " (the live view in db " + std::to_string(config.redis_db) + " keeps serving)"));
  if (!build_to_end(config, builder, stop, output)) return rebuild_outcome::stopped;
  if (!swap_when_caught_up(config, builder, view, me, view_id, stop, output)) return rebuild_outcome::stopped;
  // The old view now sits in the rebuild database.
  staging.run({"FLUSHDB", "ASYNC"});

  const auto& s = builder.stats();
  const auto events = s.applied + s.poison;
  const double seconds = std::chrono::duration<double>(clock::now() - started).count();
  char rate[64];
  std::snprintf(rate, sizeof rate, "%.1f s (%.0f events/s)", seconds, static_cast<double>(events) / seconds);
  output.say("rebuild: switched db " + std::to_string(config.redis_db) + " to the new view " + view_id + ": " +
             std::to_string(events) + " events (" + std::to_string(s.poison) + " poison) in " + rate +
             "; old view discarded");
  return rebuild_outcome::switched;
}

int rebuild(const projector_config& config, const std::atomic<bool>& stop, std::FILE* out) {
  {
    const read_model::redis_connection probe(config.redis_host, config.redis_port,
                                             milliseconds(config.redis_timeout_ms));
    if (refuse_on_cluster(config, probe)) return 2;
  }
  const rebuild_output output{[out](const std::string& line) {
                                std::fprintf(out, "%s\n", line.c_str());
                                std::fflush(out);
                              },
                              stderr};
  std::string holder;
  switch (rebuild_view(config, stop, std::nullopt, output, &holder)) {
    case rebuild_outcome::switched:
      return 0;
    case rebuild_outcome::stopped:
      return exit_stopped;
    case rebuild_outcome::busy:
      break;
  }
  throw std::runtime_error("another rebuild (redis client " + holder + ") is running on this view");
}

}  // namespace credits::ops
