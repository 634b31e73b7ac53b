#include "credits/projector/projector.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <future>
#include <map>
#include <optional>
#include <random>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_set>

#include "credits/common/assert.hpp"
#include "credits/common/clock.hpp"
#include "credits/common/log.hpp"
#include "credits/common/overloaded.hpp"
#include "credits/common/replay.hpp"
#include "credits/event_store/partitioner.hpp"
#include "credits/projector/operations.hpp"

namespace credits {
namespace {

using std::chrono::milliseconds;

void log(log_level level, const std::string& line, std::initializer_list<log_field> fields = {}) {
  write_log(level, "credits-projector", line, fields);
}

std::optional<std::int64_t> parse_int(std::string_view s) {
  std::int64_t n = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc{} || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return n;
}

// Sleeps in short slices so that a stop request is honoured within one slice, not one backoff.
void sleep_unless_stopped(milliseconds total, const std::atomic<bool>& stop) {
  constexpr milliseconds slice_ms{50};
  const auto deadline = std::chrono::steady_clock::now() + total;
  while (!stop.load(std::memory_order_relaxed) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::min(slice_ms, total));
}

// Offsets are written only by the script, so a field that does not parse means the hash was damaged by
// hand; guessing a start point would skip or double-apply events.
std::int64_t stored_offset(const std::optional<std::string>& value, const std::string& field) {
  if (!value) return -1;
  const auto n = parse_int(*value);
  if (!n || *n < -1)
    throw std::runtime_error(std::string(read_model::positions_key) + " field " + field +
                             " is not an offset: " + *value);
  return *n;
}

// How often an idle projector checks that its view still has its marker (a busy one learns it from every apply
// script), and how long it waits between looks at a view being rebuilt by another projector.
constexpr milliseconds view_check_interval_ms{1000};
constexpr milliseconds view_wait_ms{500};
// A view inspection that keeps finding the marker changed under it (other projectors making or registering it)
// gives up after this many reads; the next step inspects again.
constexpr int view_inspections_max = 3;
constexpr std::string_view lag_record_key = "credits:projector";

// HGETALL's flat reply as a map.
std::map<std::string, std::string> hash_of(const read_model::redis_connection::reply& r) {
  std::map<std::string, std::string> out;
  for (std::size_t i = 0; i + 1 < r.array.size(); i += 2)
    if (r.array[i] && r.array[i + 1]) out.emplace(*r.array[i], *r.array[i + 1]);
  return out;
}

// Makes the marker of a new view, with a position of -1 for every partition, only on a database that holds no
// view and nothing else (but the projector's lag record and a rebuild's lock): the first start.
//   KEYS[1] = credits:view, KEYS[2] = credits:positions, KEYS[3] = credits:projector, KEYS[4] = the rebuild lock
//   ARGV[1] = id, ARGV[2] = createdAt, ARGV[3] = n, then n (topic field, partition count) pairs, then the
//   position fields.
// Returns "CREATED", "EXISTS" (another projector made one) or "NOT_EMPTY".
constexpr std::string_view create_view_script = R"lua(
if redis.call('EXISTS', KEYS[1]) == 1 then return 'EXISTS' end
if redis.call('DBSIZE') > redis.call('EXISTS', KEYS[3]) + redis.call('EXISTS', KEYS[4]) then return 'NOT_EMPTY' end
local n = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'createdAt', ARGV[2], unpack(ARGV, 4, 3 + 2 * n))
for i = 4 + 2 * n, #ARGV do redis.call('HSET', KEYS[2], ARGV[i], '-1') end
return 'CREATED'
)lua";

// Adds topics to a view that does not hold them yet (several topic sets sharing one database, as the test
// suites do): their partitions start at -1. Only into the view with the id ARGV[1].
//   KEYS[1] = credits:view, KEYS[2] = credits:positions; ARGV[1] = id, ARGV[2] = n, then n (topic field,
//   partition count) pairs, then the position fields.
// Returns "OK" or "CHANGED".
constexpr std::string_view register_topics_script = R"lua(
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return 'CHANGED' end
local n = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 3, 2 + 2 * n))
for i = 3 + 2 * n, #ARGV do redis.call('HSETNX', KEYS[2], ARGV[i], '-1') end
return 'OK'
)lua";

// On a cluster the marker has a slot of its own, so it is made alone. Returns "CREATED" or "EXISTS".
constexpr std::string_view create_cluster_view_script = R"lua(
if redis.call('EXISTS', KEYS[1]) == 1 then return 'EXISTS' end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'createdAt', ARGV[2], unpack(ARGV, 3))
return 'CREATED'
)lua";

// "<host name>-<process id>": unique among the projectors running at one time, which is all a lag field needs.
std::string default_instance_id() {
  std::array<char, 256> host{};
  if (gethostname(host.data(), host.size() - 1) != 0) host[0] = '\0';
  std::string id;
  for (const char* c = host.data(); *c != '\0' && id.size() < instance_id_bytes_max / 2; ++c)
    id += std::isalnum(static_cast<unsigned char>(*c)) || *c == '.' || *c == '-' ? *c : '_';
  return (id.empty() ? std::string("projector") : id) + "-" + std::to_string(getpid());
}

void read_settings(const env_reader& r, projector_config& config) {
  r.text("CREDITS_KAFKA_BROKERS", config.brokers);
  r.text("CREDITS_REDIS_HOST", config.redis_host);
  r.number("CREDITS_REDIS_PORT", config.redis_port, 1, 65535);
  r.number("CREDITS_REDIS_DB", config.redis_db, 0, read_model::redis_db_max);
  r.number("CREDITS_REDIS_REBUILD_DB", config.redis_rebuild_db, 0, read_model::redis_db_max);
  r.text("CREDITS_LEDGER_TOPIC", config.ledger_topic);
  r.text("CREDITS_USAGE_TOPIC", config.usage_topic);
  r.text("CREDITS_DLQ_TOPIC", config.dlq_topic);
  r.text("CREDITS_KEYS_TOPIC", config.keys_topic);
  const auto batch_max = static_cast<std::int64_t>(batch_events_max_limit);
  r.number("CREDITS_PROJECTOR_BATCH_EVENTS_MAX", config.batch_events_max, 1, batch_max);
  r.number("CREDITS_REBUILD_BATCH_EVENTS_MAX", config.rebuild_batch_events_max, 1, batch_max);
  r.number("CREDITS_PROJECTOR_FOLD_FACTS_MAX", config.fold_facts_max, 1, fold_facts_max_limit);
  r.number("CREDITS_PROJECTOR_FETCH_WAIT_MS", config.fetch_wait_ms, 0, fetch_wait_ms_limit);
  r.number("CREDITS_REBUILD_SWAP_TIMEOUT_MS", config.rebuild_swap_timeout_ms, 1, rebuild_swap_timeout_ms_limit);
  r.text("CREDITS_PROJECTOR_METRICS_ADDRESS", config.metrics_address);
  r.number("CREDITS_PROJECTOR_METRICS_PORT", config.metrics_port, 0, 65535);
  // Empty is allowed and means "no group", so a compose file can pass the variable through unset.
  if (const char* v = r.raw("CREDITS_PROJECTOR_GROUP_ID")) config.group_id = v;
  r.number("CREDITS_PROJECTOR_SESSION_TIMEOUT_MS", config.group_session_timeout_ms, group_session_timeout_ms_min,
           group_session_timeout_ms_max);
  r.number("CREDITS_PROJECTOR_MAX_POLL_INTERVAL_MS", config.group_max_poll_interval_ms, group_session_timeout_ms_min,
           group_max_poll_interval_ms_max);
  r.text("CREDITS_PROJECTOR_INSTANCE_ID", config.instance_id);
}

}  // namespace

std::variant<projector_config, std::string> projector_config_from_env(const env_lookup& lookup) {
  projector_config config;
  try {
    read_settings(env_reader{lookup}, config);
  } catch (const std::invalid_argument& e) {
    return std::string(e.what());
  }
  // librdkafka refuses a poll interval shorter than the session: the member would be dropped between polls.
  if (config.group_max_poll_interval_ms < config.group_session_timeout_ms)
    return "CREDITS_PROJECTOR_MAX_POLL_INTERVAL_MS (" + std::to_string(config.group_max_poll_interval_ms) +
           ") must be at least CREDITS_PROJECTOR_SESSION_TIMEOUT_MS (" +
           std::to_string(config.group_session_timeout_ms) + ")";
  const bool id_ok = config.instance_id.size() <= instance_id_bytes_max &&
                     std::all_of(config.instance_id.begin(), config.instance_id.end(), [](char c) {
                       return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
                     });
  if (!id_ok)
    return "CREDITS_PROJECTOR_INSTANCE_ID: expected up to " + std::to_string(instance_id_bytes_max) +
           " letters, digits, '.', '_' or '-', got \"" + config.instance_id + "\"";
  if (config.ledger_topic == config.usage_topic)
    return std::string("CREDITS_LEDGER_TOPIC and CREDITS_USAGE_TOPIC must differ, both are \"") + config.ledger_topic +
           "\"";
  if (config.dlq_topic.empty()) config.dlq_topic = config.ledger_topic + ".dlq";
  if (config.dlq_topic == config.ledger_topic || config.dlq_topic == config.usage_topic)
    return "CREDITS_DLQ_TOPIC must differ from the event topics, it is \"" + config.dlq_topic + "\"";
  if (config.keys_topic == config.ledger_topic || config.keys_topic == config.usage_topic ||
      config.keys_topic == config.dlq_topic)
    return "CREDITS_KEYS_TOPIC must differ from the event and dead-letter topics, it is \"" + config.keys_topic + "\"";
  // A rebuild flushes its database before building into it: the same number would wipe the live view.
  if (config.redis_db == config.redis_rebuild_db)
    return "CREDITS_REDIS_DB and CREDITS_REDIS_REBUILD_DB must differ, both are " + std::to_string(config.redis_db);
  return config;
}

std::string dead_letter_topic(const projector_config& config) {
  return config.dlq_topic.empty() ? config.ledger_topic + ".dlq" : config.dlq_topic;
}

namespace {

// Both apply scripts (after read_model::legacy_lua) define these two functions.
//   check_guards(j, count): checks the `count` guards from ARGV[j] on (each its word count, then its words: see
//     read_model::guards); returns why the first one that fails refuses, or nil and the index after them.
//   run_commands(j, stop, tallies): runs the commands from ARGV[j] up to ARGV[stop] (each its word count, then
//     its words). A CREDITS.LEGACY command is the grant side of an event written before grants (fold.hpp):
//     `legacy` runs it. A negative count marks a tally (read_model::is_tally; then key, field, delta): its index
//     goes into `tallies`, for the caller to add up.
constexpr std::string_view guard_and_run_lua = R"lua(
local function check_guards(j, count)
  local money = {}  -- key -> its balance and reserved, read with its id (nothing is written between the guards)
  for _ = 1, count do
    local n = tonumber(ARGV[j])
    local kind, key, reason = ARGV[j + 1], ARGV[j + 2], ARGV[j + n]
    local ok
    if kind == 'absent' then
      ok = redis.call('HEXISTS', key, ARGV[j + 3]) == 0
    elseif kind == 'present' and ARGV[j + 3] == 'id' then
      local v = redis.call('HMGET', key, 'id', 'balance', 'reserved')
      ok = v[1] ~= false
      money[key] = {v[2], v[3]}
    elseif kind == 'present' then
      ok = redis.call('HEXISTS', key, ARGV[j + 3]) == 1
    elseif kind == 'equals' then
      ok = redis.call('HGET', key, ARGV[j + 3]) == ARGV[j + 4]
    elseif kind == 'money' then
      local v = money[key] or redis.call('HMGET', key, 'balance', 'reserved')
      local balance = tonumber(v[1] or '0') + tonumber(ARGV[j + 3])
      local reserved = tonumber(v[2] or '0') + tonumber(ARGV[j + 4])
      ok = reserved >= 0 and reserved <= balance and balance <= 9007199254740991 and
           (ARGV[j + 5] == '' or balance == tonumber(ARGV[j + 5]))
      if not ok then
        reason = reason .. string.format(' (balance %.0f, reserved %.0f after it)', balance, reserved)
      end
    else
      ok = false
      reason = 'unknown guard ' .. kind
    end
    if not ok then return reason, nil end
    j = j + n + 1
  end
  return nil, j
end

local function run_commands(j, stop, tallies)
  while j < stop do
    local n = tonumber(ARGV[j])
    if n < 0 then
      tallies[#tallies + 1] = j
      j = j + 4
    else
      if ARGV[j + 1] == 'CREDITS.LEGACY' then
        legacy({unpack(ARGV, j + 2, j + n)})
      else
        redis.call(unpack(ARGV, j + 1, j + n))
      end
      j = j + n + 1
    end
  end
end
)lua";

// Writes guarded_apply_script's call for a run of events, word by word, into `word` (a callable taking a
// std::string_view): the EVALSHA arguments, or their wire form.
template <class Word>
void write_guarded_apply(Word&& word, const std::string& script_sha, const std::string& view_id,
                         const std::string& position_field, const std::vector<guarded_event>& events) {
  const auto number = [&](std::int64_t n) {
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, n).ptr;
    word(std::string_view(digits, static_cast<std::size_t>(end - digits)));
  };
  for (const std::string_view w :
       {std::string_view("EVALSHA"), std::string_view(script_sha), std::string_view("2"), read_model::positions_key,
        read_model::view_key, std::string_view(position_field), std::string_view(view_id)})
    word(w);
  number(static_cast<std::int64_t>(events.size()));
  for (const auto& e : events) {
    const auto lists = {&e.guards, &e.commands, &e.marks};
    std::size_t span = 0;  // the words after the guard count; a tally goes without its verb
    for (const auto* list : lists)
      for (const auto& words : *list) span += 1 + words.size() - (read_model::is_tally(words) ? 1 : 0);
    number(e.offset);
    number(e.previous_offset);
    number(static_cast<std::int64_t>(span));
    number(static_cast<std::int64_t>(e.guards.size()));
    for (const auto* list : lists)
      for (const auto& words : *list) {
        // The script adds up the run's tallies and increments each counter once (guarded_apply_script).
        const bool tally = read_model::is_tally(words);
        number(tally ? -3 : static_cast<std::int64_t>(words.size()));
        for (auto w = words.begin() + (tally ? 1 : 0); w != words.end(); ++w) word(*w);
      }
  }
}

}  // namespace

std::string_view guarded_apply_script() {
  static const std::string script = std::string(read_model::legacy_lua) + std::string(guard_and_run_lua) + R"lua(
local view = redis.call('HGET', KEYS[2], 'id')
if view ~= ARGV[2] then
  return redis.error_reply('VIEW the view is ' .. (view or 'gone') .. ', not ' .. ARGV[2])
end
local field = ARGV[1]
local stored = tonumber(redis.call('HGET', KEYS[1], field) or '-1')
local recorded = nil   -- the offset (as sent) of the last event applied, once one is
local applied, replayed = 0, 0
local totals = {}      -- key -> field -> the sum of the applied events' tallies
local refused, gap     -- why the next event was refused, or the GAP error
local ok, err = pcall(function()
  local i = 4
  for _ = 1, tonumber(ARGV[3]) do
    local offset, stop = tonumber(ARGV[i]), i + 4 + tonumber(ARGV[i + 2])
    if stored >= offset then
      replayed = replayed + 1
    elseif stored ~= tonumber(ARGV[i + 1]) then
      gap = 'GAP ' .. field .. ' is at ' .. stored .. ' but event ' .. ARGV[i] .. ' follows ' .. ARGV[i + 1]
      return
    else
      local why, j = check_guards(i + 4, tonumber(ARGV[i + 3]))
      if why then
        refused = why
        return
      end
      local tallies = {}
      run_commands(j, stop, tallies)
      for _, t in ipairs(tallies) do
        local key, f, delta = ARGV[t + 1], ARGV[t + 2], tonumber(ARGV[t + 3])
        local sums = totals[key] or {}
        totals[key] = sums
        local sum = (sums[f] or 0) + delta
        if math.abs(sum) > 9007199254740991 then  -- past what a Lua number holds exactly: add what it has
          redis.call('HINCRBY', key, f, string.format('%d', sums[f]))
          sum = delta
        end
        sums[f] = sum
      end
      stored, recorded, applied = offset, ARGV[i], applied + 1
    end
    i = stop
  end
end)
for key, sums in pairs(totals) do
  for f, n in pairs(sums) do redis.call('HINCRBY', key, f, string.format('%d', n)) end
end
if recorded then redis.call('HSET', KEYS[1], field, recorded) end
if not ok then
  return redis.error_reply(type(err) == 'table' and (err.err or 'ERR in a command') or tostring(err))
end
if gap then return redis.error_reply(gap) end
return {tostring(applied), tostring(replayed), refused}
)lua";
  return script;
}

std::string_view cluster_apply_script() {
  static const std::string script = std::string(read_model::legacy_lua) + std::string(guard_and_run_lua) + R"lua(
local stored = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
local offset = tonumber(ARGV[2])
local poison_field = 'poison:' .. ARGV[1] .. ':' .. ARGV[2]
if stored >= offset then
  local refused = redis.call('HGET', KEYS[1], poison_field)
  if refused then return 'POISON ' .. refused end
  return 0
end
if ARGV[3] ~= '' and stored ~= tonumber(ARGV[3]) then
  return redis.error_reply('GAP ' .. ARGV[1] .. ' is at ' .. stored .. ' but event ' .. ARGV[2] ..
                           ' follows ' .. ARGV[3])
end
local refused, i = check_guards(6, tonumber(ARGV[5]))
if refused then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], poison_field, refused)
  return 'POISON ' .. refused
end
run_commands(i, #ARGV + 1, {})
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
)lua";
  return script;
}

std::string_view positions_max_script() {
  return R"lua(
for i = 1, #ARGV, 2 do
  if tonumber(ARGV[i + 1]) > tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1') then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
)lua";
}

std::vector<std::string> guarded_apply_args(const std::string& script_sha, const std::string& view_id,
                                            const std::string& position_field,
                                            const std::vector<guarded_event>& events) {
  std::vector<std::string> args;
  write_guarded_apply([&](std::string_view w) { args.emplace_back(w); }, script_sha, view_id, position_field, events);
  return args;
}

std::string guarded_apply_command(const std::string& script_sha, const std::string& view_id,
                                  const std::string& position_field, const std::vector<guarded_event>& events) {
  read_model::resp_writer out;
  write_guarded_apply([&](std::string_view w) { out.word(w); }, script_sha, view_id, position_field, events);
  return std::move(out).finish();
}

std::vector<std::string> guarded_apply_args(const std::string& script_sha, const std::string& view_id,
                                            const std::string& position_field, std::int64_t offset,
                                            std::int64_t previous_offset,
                                            const std::vector<std::vector<std::string>>& commands,
                                            const std::vector<std::vector<std::string>>& guards) {
  static const std::vector<std::vector<std::string>> none;
  return guarded_apply_args(script_sha, view_id, position_field, {{offset, previous_offset, commands, guards, none}});
}

guarded_reply read_guarded_reply(const read_model::redis_connection::reply& r) {
  if (r.array.size() < 2 || !r.array[0] || !r.array[1])
    throw std::runtime_error("redis: unexpected apply script reply " + r.value.value_or("(an array)"));
  return {std::stoul(*r.array[0]), std::stoul(*r.array[1]), r.array.size() > 2 ? r.array[2] : std::nullopt};
}

std::vector<std::string> cluster_apply_args(const std::string& script_sha, const tag_part& part,
                                            const std::string& field, std::int64_t offset,
                                            std::optional<std::int64_t> previous_offset) {
  std::vector<std::string> keys{read_model::applied_key(part.tag)};
  for (const auto* list : {&part.guards, &part.commands})
    for (const auto& words : *list)
      if (std::find(keys.begin(), keys.end(), words.at(1)) == keys.end()) keys.push_back(words.at(1));
  std::vector<std::string> args{"EVALSHA", script_sha, std::to_string(keys.size())};
  args.insert(args.end(), keys.begin(), keys.end());
  // A script may touch keys of one slot only, so on a cluster the view's marker is checked between batches
  // (projector::check_view) rather than by each part: ARGV[4] is unused.
  args.insert(args.end(), {field, std::to_string(offset), previous_offset ? std::to_string(*previous_offset) : "", "",
                           std::to_string(part.guards.size())});
  for (const auto* list : {&part.guards, &part.commands})
    for (const auto& words : *list) {
      args.push_back(std::to_string(words.size()));
      args.insert(args.end(), words.begin(), words.end());
    }
  return args;
}

std::vector<tag_part> split_by_tag(const std::vector<std::vector<std::string>>& commands,
                                   const std::vector<std::vector<std::string>>& guards, std::string_view account_id) {
  std::vector<tag_part> parts{{std::string(read_model::hash_tag(read_model::account_key(account_id))), {}, {}}};
  for (const auto& g : guards) {
    CREDITS_ASSERT(g.size() > 1 && read_model::hash_tag(g[1]) == parts[0].tag, "a guard outside its account's slot");
    parts[0].guards.push_back(g);
  }
  for (const auto& c : commands) {
    CREDITS_ASSERT(c.size() > 1, "a fold command without a key");
    const auto tag = read_model::hash_tag(c[1]);
    CREDITS_ASSERT(tag.size() < c[1].size(), "a fold command on a key without a hash tag");
    auto part = std::find_if(parts.begin(), parts.end(), [&](const tag_part& p) { return p.tag == tag; });
    if (part == parts.end()) part = parts.insert(parts.end(), tag_part{std::string(tag), {}, {}});
    part->commands.push_back(c);
  }
  return parts;
}

std::string new_view_id() {
  std::random_device random;
  const auto bits = static_cast<std::uint64_t>(random()) << 32 | random();
  char id[17];
  std::snprintf(id, sizeof id, "%016llx", static_cast<unsigned long long>(bits));
  return id;
}

std::string describe(const std::vector<store::start_point>& points) {
  std::string out;
  const std::string* topic = nullptr;
  for (const auto& p : points) {
    if (!topic || *topic != p.topic) {
      if (topic) out += "; ";
      out += p.topic;
      topic = &p.topic;
    }
    out += " " + std::to_string(p.partition) + "@" + (p.offset <= 0 ? std::string("start") : std::to_string(p.offset));
  }
  return out;
}

// An event found unappliable in one round of apply(): the batch index and why.
struct projector::poison {
  std::size_t index = 0;
  std::string reason;
  std::int64_t previous_offset = -1;  // the position it follows, which its record must follow too
};

projector::projector(projector_config config)
    : config_(std::move(config)),
      consumer_(config_.brokers, false, {{"fetch.wait.max.ms", std::to_string(config_.fetch_wait_ms)}}),
      dead_letters_(config_.brokers) {
  for (const auto* topic : {&config_.ledger_topic, &config_.usage_topic}) {
    const auto count = consumer_.partition_count(*topic, milliseconds(config_.metadata_timeout_ms));
    partition_counts_[*topic] = count;
    for (std::int32_t p = 0; p < count; ++p) partitions_.emplace_back(*topic, p);
  }
  metrics_ = std::make_unique<projector_metrics>(partitions_);
  // Checked now: finding it missing at the first poison event would stall that partition instead.
  const auto dlq = dead_letter_topic(config_);
  try {
    consumer_.partition_count(dlq, milliseconds(config_.metadata_timeout_ms));
  } catch (const std::runtime_error& e) {
    throw std::runtime_error("dead-letter topic " + dlq +
                             " is missing (scripts/lib.sh create_topics creates it): " + e.what());
  }
  connect_redis();
  if (config_.instance_id.empty()) config_.instance_id = default_instance_id();
  if (config_.group_id.empty()) {
    std::vector<store::topic_partition> all;
    for (const auto& [topic, partition] : partitions_) all.push_back({topic, partition});
    set_owned(std::move(all));
    // Adopts the view, or makes one on an empty database, and assigns every partition after its position; or
    // starts the rebuild of a view that lost its data, which run() waits for.
    tend_view();
    return;
  }
  // Nothing is owned until the first poll joins the group; the callbacks run on this thread, inside it.
  // Kafka's client.id names the instance in the broker's logs and the group's member list.
  set_owned({});
  tend_view();  // the view only: the group assigns the partitions
  try {
    group_ = std::make_unique<store::consumer_group_member>(
        config_.brokers, config_.group_id, std::vector<std::string>{config_.ledger_topic, config_.usage_topic},
        store::consumer_group_member::callbacks{
            [this](const std::vector<store::topic_partition>& given) { return on_assigned(given); },
            [this](const std::vector<store::topic_partition>& taken) { on_revoked(taken); }},
        store::group_limits{milliseconds(config_.group_session_timeout_ms),
                            milliseconds(config_.group_max_poll_interval_ms)},
        store::settings{{"fetch.wait.max.ms", std::to_string(config_.fetch_wait_ms)},
                        {"client.id", config_.instance_id}});
  } catch (...) {
    rebuild_stop_.store(true);  // no destructor runs: a rebuild started above must stop before its future waits
    throw;
  }
}

// A rebuild still running stops between two of its batches; its future's destructor waits for that.
projector::~projector() { rebuild_stop_.store(true); }

void projector::connect_redis() {
  redis_.reset();
  auto redis = std::make_unique<read_model::redis_connection>(config_.redis_host, config_.redis_port,
                                                              milliseconds(config_.redis_timeout_ms));
  if (!config_.redis_client_name.empty()) redis->run({"CLIENT", "SETNAME", config_.redis_client_name});
  if (redis->clustered() && config_.redis_db != 0)
    throw std::runtime_error("CREDITS_REDIS_DB is " + std::to_string(config_.redis_db) + " but " + config_.redis_host +
                             ":" + std::to_string(config_.redis_port) + " is a Redis Cluster, which has only db 0");
  if (!redis->clustered()) redis->run({"SELECT", std::to_string(config_.redis_db)});
  redis_ = std::move(redis);
  load_script();
}

std::vector<store::start_point> projector::stored_start_points(const std::vector<store::topic_partition>& of) {
  if (of.empty()) return {};
  std::vector<std::string> args{"HMGET", std::string(read_model::positions_key)};
  for (const auto& p : of) args.push_back(read_model::position_field(p.topic, p.partition));
  const auto r = redis_->run(args);
  if (r.array.size() != of.size()) throw std::runtime_error("redis: HMGET returned the wrong number of values");
  std::vector<store::start_point> points;
  for (std::size_t i = 0; i < of.size(); ++i)
    points.push_back({of[i].topic, of[i].partition, stored_offset(r.array[i], args[i + 2]) + 1});
  return points;
}

void projector::assign(const std::vector<store::start_point>& from) {
  drop_prefetched();  // read from the old positions
  if (group_)
    group_->assign(from);
  else
    consumer_.assign(from);
  // An event read at `offset` is the first after the position offset - 1; the script checks exactly that.
  for (const auto& p : from) previous_offset_[read_model::position_field(p.topic, p.partition)] = p.offset - 1;
}

void projector::rewind(const std::vector<store::start_point>& from) {
  if (!group_) return assign(from);
  for (const auto& p : from)
    if (std::find(owned_.begin(), owned_.end(), store::topic_partition{p.topic, p.partition}) == owned_.end())
      throw std::invalid_argument("rewind: " + p.topic + ":" + std::to_string(p.partition) +
                                  " is not assigned to this member of group " + config_.group_id);
  // The group's assignment is replaced as a whole: owned partitions not named go on from where they are.
  std::vector<store::start_point> all;
  for (const auto& p : owned_) {
    const auto named = std::find_if(from.begin(), from.end(), [&](const store::start_point& s) {
      return s.topic == p.topic && s.partition == p.partition;
    });
    const auto previous = previous_offset_.find(read_model::position_field(p.topic, p.partition));
    if (named != from.end())
      all.push_back(*named);
    else if (previous != previous_offset_.end())
      all.push_back({p.topic, p.partition, previous->second + 1});
  }
  assign(all);
}

bool projector::try_recover() {
  try {
    connect_redis();
    ++stats_.recoveries;
    // Whatever Redis holds now is inspected before anything is folded into it: it may have lost its data.
    view_ready_ = false;
    log(log_level::info, "redis reconnected");
    return true;
  } catch (const std::runtime_error& e) {
    metrics_->redis_error();
    log(log_level::error, std::string("redis unavailable: ") + e.what());
    redis_.reset();
    return false;
  }
}

void projector::run(const std::atomic<bool>& stop) {
  const milliseconds backoff_min(config_.reconnect_backoff_ms_min);
  const milliseconds backoff_max(config_.reconnect_backoff_ms_max);
  auto backoff = backoff_min;
  // Lag is reported to the log and to Redis (credits:projector lagOffsets/reportedAt) at this interval.
  constexpr auto lag_report_interval = std::chrono::seconds(10);
  auto next_lag_report = std::chrono::steady_clock::now();
  auto next_lag_sample = next_lag_report;
  auto next_view_check = next_lag_report + view_check_interval_ms;
  while (!stop.load(std::memory_order_relaxed)) {
    if (std::chrono::steady_clock::now() >= next_lag_sample) {
      next_lag_sample = std::chrono::steady_clock::now() + milliseconds(config_.metrics_interval_ms);
      sample_lag();
    }
    if (std::chrono::steady_clock::now() >= next_lag_report) {
      next_lag_report = std::chrono::steady_clock::now() + lag_report_interval;
      report_lag();
    }
    if (redis_ && view_ready_ && std::chrono::steady_clock::now() >= next_view_check) {
      next_view_check = std::chrono::steady_clock::now() + view_check_interval_ms;
      check_view();
    }
    if (!redis_) {
      if (!try_recover()) {
        if (group_)
          poll_without_redis(backoff, stop);
        else
          sleep_unless_stopped(backoff, stop);
        backoff = std::min(backoff * 2, backoff_max);
        continue;
      }
      backoff = backoff_min;
    }
    if (!view_ready_) {
      bool ready = false;
      try {
        ready = tend_view();
      } catch (const std::runtime_error& e) {
        metrics_->redis_error();
        log(log_level::error, std::string("redis unavailable while inspecting the view: ") + e.what());
        redis_.reset();
        continue;
      }
      if (!ready) {
        // A member keeps polling the group meanwhile (dropping what it reads), as while Redis is away.
        if (group_)
          poll_without_redis(view_wait_ms, stop);
        else
          sleep_unless_stopped(view_wait_ms, stop);
        continue;
      }
    }
    step();
  }
  rebuild_stop_.store(true);
  if (rebuild_.valid()) rebuild_.wait();
  // A stopped member's lag fields would otherwise stay behind in the record, looking current.
  if (group_ && redis_) {
    try {
      redis_->run({"HDEL", std::string(lag_record_key), "lagOffsets:" + config_.instance_id,
                   "reportedAt:" + config_.instance_id});
    } catch (const std::runtime_error& e) {
      log(log_level::warn, std::string("could not remove this projector's lag fields: ") + e.what());
    }
  }
}

void projector::report_lag() {
  std::int64_t behind = 0;
  for (const auto& p : lag_by_partition()) behind += p.offsets;
  if (behind > 0)
    log(log_level::info, "lag: " + std::to_string(behind) + " offsets behind the end of the log",
        {{"lagOffsets", behind}});
  if (!redis_) return;
  try {
    const auto now_ms = wall_clock_ms();
    // In a group each projector sees only its own partitions, so each writes fields of its own instead of
    // overwriting the others' (docs/operations.md, "Several projectors").
    const std::string suffix = group_ ? ":" + config_.instance_id : std::string();
    redis_->run({"HSET", std::string(lag_record_key), "lagOffsets" + suffix, std::to_string(behind),
                 "reportedAt" + suffix, format_time(now_ms)});
  } catch (const std::runtime_error& e) {
    metrics_->redis_error();
    log(log_level::error, std::string("redis unavailable: ") + e.what());
    redis_.reset();
  }
}

void projector::sample_lag() {
  const auto now_ms = wall_clock_ms();
  for (const auto& p : lag_by_partition()) metrics_->lag(partition_index(p.topic, p.partition), p.offsets, now_ms);
}

std::size_t projector::partition_index(const std::string& topic, std::int32_t partition) const {
  // A partition added to a topic after start-up has no index (and no metrics) until a restart.
  const auto count = partition_counts_.find(topic);
  if (count == partition_counts_.end() || partition < 0 || partition >= count->second) return partitions_.size();
  const auto ledger_partitions = static_cast<std::size_t>(partition_counts_.at(config_.ledger_topic));
  return (topic == config_.ledger_topic ? 0 : ledger_partitions) + static_cast<std::size_t>(partition);
}

void projector::poll_without_redis(milliseconds total, const std::atomic<bool>& stop) {
  const auto deadline = std::chrono::steady_clock::now() + total;
  while (!stop.load(std::memory_order_relaxed) && std::chrono::steady_clock::now() < deadline) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    // Dropped unread: recovery starts every owned partition again from its stored position.
    const auto wait = std::clamp(left, milliseconds(0), milliseconds(config_.poll_timeout_ms));
    (void)group_->poll(config_.batch_events_max, wait);
  }
}

std::vector<store::message> projector::poll_messages() {
  return group_ ? group_->poll(config_.batch_events_max, milliseconds(config_.poll_timeout_ms))
                : consumer_.poll(config_.batch_events_max, milliseconds(config_.poll_timeout_ms));
}

std::vector<store::consumer::partition_lag> projector::lag_by_partition() {
  return group_ ? group_->lag_by_partition() : consumer_.lag_by_partition();
}

void projector::set_owned(std::vector<store::topic_partition> owned) {
  std::vector<bool> is_owned(partitions_.size(), false);
  for (const auto& p : owned)
    if (const auto i = partition_index(p.topic, p.partition); i < is_owned.size()) is_owned[i] = true;
  for (std::size_t i = 0; i < is_owned.size(); ++i) metrics_->owned(i, is_owned[i]);
  owned_ = std::move(owned);
  owned_count_.store(owned_.size(), std::memory_order_relaxed);
}

std::optional<std::vector<store::start_point>> projector::on_assigned(
    const std::vector<store::topic_partition>& given) {
  set_owned(given);
  for (const auto& p : given) previous_offset_.erase(read_model::position_field(p.topic, p.partition));
  // run() recovers (or the view is rebuilt), then starts them (resume_from_stored).
  if (!redis_ || !view_ready_) return std::nullopt;
  try {
    auto points = stored_start_points(given);
    // An event read at `offset` is the first after the position offset - 1; the script checks exactly that.
    for (const auto& p : points) previous_offset_[read_model::position_field(p.topic, p.partition)] = p.offset - 1;
    log(log_level::info,
        "group " + config_.group_id + " assigned " + std::to_string(given.size()) + " partitions; resuming at " +
            describe(points),
        {{"group", config_.group_id}, {"partitions", given.size()}});
    return points;
  } catch (const std::exception& e) {
    // None is read until run() has reconnected and assigned them from their stored positions. Nothing may leave
    // this function by exception: librdkafka's C frames are below it.
    metrics_->redis_error();
    log(log_level::error, std::string("redis unavailable at assignment: ") + e.what());
    redis_.reset();
    return std::nullopt;
  }
}

void projector::on_revoked(const std::vector<store::topic_partition>& taken) {
  for (const auto& p : taken) previous_offset_.erase(read_model::position_field(p.topic, p.partition));
  set_owned({});
  log(log_level::info, "group " + config_.group_id + " revoked " + std::to_string(taken.size()) + " partitions",
      {{"group", config_.group_id}, {"partitions", taken.size()}});
}

// ---- the view ----------------------------------------------------------------------------------------------

projector::view_inspection projector::inspect_view() {
  if (redis_->clustered()) return inspect_clustered_view();
  std::vector<std::string> fields;  // every partition's position field
  for (const auto& [topic, partition] : partitions_) fields.push_back(read_model::position_field(topic, partition));
  const std::string view(read_model::view_key), positions(read_model::positions_key);
  for (int attempt = 0; attempt < view_inspections_max; ++attempt) {
    const auto marker = hash_of(redis_->run({"HGETALL", view}));
    const auto id = marker.contains("id") ? marker.at("id") : std::string();
    if (!id.empty()) {
      // Topics this view does not hold yet (another topic set's view shares the database) join it, from their start.
      std::vector<std::string> pairs, joining_fields;
      for (const auto& [topic, partition] : partitions_) {
        if (marker.contains(read_model::view_topic_field(topic))) continue;
        if (partition == 0)
          pairs.insert(pairs.end(), {read_model::view_topic_field(topic), std::to_string(partition_counts_.at(topic))});
        joining_fields.push_back(read_model::position_field(topic, partition));
      }
      if (!pairs.empty()) {
        std::vector<std::string> registering{"EVAL", std::string(register_topics_script), "2", view, positions,
                                             id,     std::to_string(pairs.size() / 2)};
        registering.insert(registering.end(), pairs.begin(), pairs.end());
        registering.insert(registering.end(), joining_fields.begin(), joining_fields.end());
        if (redis_->run(registering).value != "OK") continue;  // the view changed meanwhile: look again
        log(log_level::info,
            "view " + id + " now holds " + config_.ledger_topic + " and " + config_.usage_topic +
                " too; they are folded from their start",
            {{"viewId", id}});
      }
      std::vector<std::string> read{"HMGET", positions};
      read.insert(read.end(), fields.begin(), fields.end());
      const auto stored = redis_->run(read).array;
      for (std::size_t i = 0; i < fields.size(); ++i)
        if (i >= stored.size() || !stored[i])
          return {view_found::lost, std::string(read_model::positions_key) + " has no field " + fields[i] +
                                        " (the view lost its positions)"};
      if (had_view_ && id != view_id_)
        log(log_level::info, "the view " + view_id_ + " was replaced by view " + id + " (a rebuild); folding into it",
            {{"viewId", id}});
      if (!marker.contains(std::string(read_model::view_fold_field)) && warned_old_fold_ != id) {
        warned_old_fold_ = id;
        log(log_level::warn,
            "view " + id +
                " was made by a projector older than credit grants: it has no grants for the events folded before "
                "(the grants listing, the balance by category and the credits report miss them); run "
                "`credits-projector rebuild` once to fold them",
            {{"viewId", id}});
      }
      view_id_ = id;
      had_view_ = true;
      return {view_found::intact, ""};
    }
    if (marker.contains("rebuildingSince"))
      return {view_found::rebuilding, marker.contains("reason") ? marker.at("reason") : std::string()};
    if (had_view_)
      return {view_found::lost, "its marker " + view +
                                    " is gone (a FLUSHALL, a restart without the append-only file, a failover to an "
                                    "empty replica)"};
    const auto fresh = new_view_id();
    std::vector<std::string> create{"EVAL",
                                    std::string(create_view_script),
                                    "4",
                                    view,
                                    positions,
                                    std::string(lag_record_key),
                                    std::string(read_model::rebuild_lock_key),
                                    fresh,
                                    format_time(wall_clock_ms()),
                                    std::to_string(partition_counts_.size() + 1),
                                    std::string(read_model::view_fold_field),
                                    std::string(read_model::view_fold_grants)};
    for (const auto& [topic, count] : partition_counts_)
      create.insert(create.end(), {read_model::view_topic_field(topic), std::to_string(count)});
    create.insert(create.end(), fields.begin(), fields.end());
    const auto created = redis_->run(create).value.value_or("");
    if (created == "EXISTS") continue;
    if (created == "NOT_EMPTY")
      return {view_found::lost,
              "the database holds data but no view marker (a view made before markers, or one that lost part of its "
              "data)"};
    log(log_level::info,
        "made the new view " + fresh + " in redis db " + std::to_string(config_.redis_db) +
            " (the database was empty); folding the log from its start",
        {{"viewId", fresh}});
    view_id_ = fresh;
    had_view_ = true;
    return {view_found::intact, ""};
  }
  throw std::runtime_error("redis: the view's marker kept changing while it was read");
}

// A cluster has no SWAPDB, so a view that lost data there is folded again in place: every owned partition from
// offset 0. The per-tag offsets (credits:applied:{tag}) make each event's part apply once, so the parts that
// survived are no-ops and the lost ones apply again. The marker shares no slot with the positions, so only the
// marker is checked.
projector::view_inspection projector::inspect_clustered_view() {
  const std::string view(read_model::view_key);
  for (int attempt = 0; attempt < view_inspections_max; ++attempt) {
    const auto id = redis_->run({"HGET", view, "id"}).value.value_or("");
    if (!id.empty()) {
      const bool changed = had_view_ && id != view_id_;
      const auto old = view_id_;
      view_id_ = id;
      had_view_ = true;
      if (!changed) return {view_found::intact, ""};
      return {view_found::replay,
              "the view's marker changed from " + old + " to " + id + " (another projector found the view lost)"};
    }
    const auto fresh = new_view_id();
    std::vector<std::string> create{"EVAL",
                                    std::string(create_cluster_view_script),
                                    "1",
                                    view,
                                    fresh,
                                    format_time(wall_clock_ms()),
                                    std::string(read_model::view_fold_field),
                                    std::string(read_model::view_fold_grants)};
    for (const auto& [topic, count] : partition_counts_)
      create.insert(create.end(), {read_model::view_topic_field(topic), std::to_string(count)});
    if (redis_->run(create).value != "CREATED") continue;
    view_id_ = fresh;
    if (!had_view_) {
      had_view_ = true;
      return {view_found::intact, ""};
    }
    return {view_found::replay, "its marker " + view + " is gone (a master lost its data)"};
  }
  throw std::runtime_error("redis: the view's marker kept changing while it was read");
}

bool projector::tend_view() {
  if (rebuild_.valid()) {
    if (rebuild_.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return false;
    try {
      switch (rebuild_.get()) {
        case ops::rebuild_outcome::switched:
          ++stats_.view_rebuilds;
          metrics_->view_rebuilt();
          break;
        case ops::rebuild_outcome::busy:
          if (last_view_log_ != "busy")
            log(log_level::info, "another projector holds the rebuild lock; waiting for its rebuild of the view");
          last_view_log_ = "busy";
          next_view_attempt_ = std::chrono::steady_clock::now() + view_wait_ms;
          return false;
        case ops::rebuild_outcome::stopped:
          return false;
      }
    } catch (const std::exception& e) {
      log(log_level::error, std::string("rebuilding the view failed: ") + e.what() + "; trying again");
      next_view_attempt_ = std::chrono::steady_clock::now() + milliseconds(config_.reconnect_backoff_ms_max);
      return false;
    }
  }
  if (std::chrono::steady_clock::now() < next_view_attempt_) return false;
  const auto seen = inspect_view();
  switch (seen.found) {
    case view_found::intact:
      resume_from_stored();
      break;
    case view_found::replay: {
      ++stats_.view_losses;
      metrics_->view_lost();
      log(log_level::error, "the view lost data: " + seen.why + "; folding every partition again from offset 0",
          {{"reason", seen.why}});
      std::vector<store::start_point> from;
      for (const auto& p : owned_) from.push_back({p.topic, p.partition, 0});
      if (!config_.group_id.empty() && !group_) break;  // constructing: the group assigns at the first poll
      assign(from);
      break;
    }
    case view_found::lost:
      ++stats_.view_losses;
      metrics_->view_lost();
      log(log_level::error, "the view lost its data: " + seen.why + "; rebuilding it from the log",
          {{"reason", seen.why}, {"redisDb", config_.redis_db}});
      start_rebuild(seen.why);
      return false;
    case view_found::rebuilding:
      if (last_view_log_ != "rebuilding")
        log(log_level::info, "the view is being rebuilt (" + seen.why + "); taking part (one projector builds)",
            {{"reason", seen.why}});
      last_view_log_ = "rebuilding";
      start_rebuild(seen.why);
      return false;
  }
  if (had_view_ && stats_.view_rebuilds + stats_.view_losses > 0 && last_view_log_ != "ready")
    log(log_level::info, "folding into view " + view_id_ + " again", {{"viewId", view_id_}});
  last_view_log_ = "ready";
  view_ready_ = true;
  metrics_->view_rebuilding(false);
  return true;
}

void projector::start_rebuild(std::string why) {
  metrics_->view_rebuilding(true);
  drop_prefetched();
  rebuild_stop_.store(false);
  // The thread reads its own copy of the configuration and this projector's stop flag, which the destructor
  // sets before the future (a member declared after it) waits for the thread.
  rebuild_ = std::async(std::launch::async, [config = config_, why = std::move(why), stop = &rebuild_stop_] {
    const ops::rebuild_output output{[](const std::string& line) { log(log_level::info, line); }, nullptr};
    return ops::rebuild_view(config, *stop, why, output);
  });
}

void projector::resume_from_stored() {
  auto points = stored_start_points(owned_);
  if (!config_.group_id.empty() && !group_) return;  // constructing: the group assigns at the first poll
  assign(points);
  if (stats_.recoveries + stats_.view_rebuilds + stats_.view_losses > 0)
    log(log_level::info, "resuming at " + describe(points));
  resume_points_ = std::move(points);
}

void projector::check_view() {
  try {
    std::vector<std::vector<std::string>> calls{{"HGET", std::string(read_model::view_key), "id"}};
    if (!redis_->clustered()) calls.push_back({"EXISTS", std::string(read_model::positions_key)});
    const auto r = redis_->pipeline(calls);
    const auto id = r.at(0).value.value_or("");
    if (id != view_id_)
      view_not_ready(id.empty() ? "the view's marker is gone" : "the view's id is " + id + " now");
    else if (calls.size() > 1 && r.at(1).value != "1")
      view_not_ready(std::string(read_model::positions_key) + " is gone");
  } catch (const std::runtime_error& e) {
    metrics_->redis_error();
    log(log_level::error, std::string("redis unavailable: ") + e.what());
    redis_.reset();
  }
}

void projector::view_not_ready(const std::string& why) {
  log(log_level::warn, "the view changed under the projector (" + why + "); inspecting it", {{"reason", why}});
  view_ready_ = false;
  drop_prefetched();
  fold_memory_.clear();
}

projector::prepared_batch projector::poll_and_prepare() {
  prepared_batch out;
  fold_memory_.trim();  // between batches: what the last batch taught it is needed until that batch applied
  out.messages = poll_messages();
  out.events.reserve(out.messages.size());
  for (const auto& m : out.messages) {
    auto& p = out.events.emplace_back();
    std::string error;
    const auto e = decode(m.value, &error);
    p.refused = e ? admission_error(*e, m.key, m.topic == config_.ledger_topic ? stream::ledger : stream::usage,
                                    m.partition, store::partition_of_key(m.key, partition_counts_.at(m.topic)))
                  : std::optional<std::string>("undecodable: " + (error.empty() ? std::string("no detail") : error));
    if (p.refused) continue;
    p.context = fold_memory_.context(*e, p.missing);
    if (p.missing.grants.empty() && p.missing.reservation.empty())
      p.commands = read_model::fold(*e, m.offset, p.context);
    else
      p.deferred = *e;
    p.guards = read_model::guards(*e);
    p.marks = read_model::void_marks(*e);
    fold_memory_.learn(*e);
  }
  return out;
}

void projector::resolve(prepared_batch& batch) {
  std::vector<std::vector<std::string>> calls;
  for (const auto& p : batch.events)
    if (p.deferred)
      for (auto& c : read_model::fold_memory::lookups(p.deferred->account_id, p.missing)) calls.push_back(std::move(c));
  if (calls.empty()) return;
  const auto replies = redis_->pipeline(calls);
  std::size_t next = 0;
  for (std::size_t i = 0; i < batch.events.size(); ++i) {
    auto& p = batch.events[i];
    if (!p.deferred) continue;
    std::vector<std::optional<std::string>> mine;
    for (std::size_t n = p.missing.grants.size() + (p.missing.reservation.empty() ? 0 : 1); n > 0; --n)
      mine.push_back(replies.at(next++).value);
    fold_memory_.complete(p.context, p.missing, mine);
    p.commands = read_model::fold(*p.deferred, batch.messages[i].offset, p.context);
    p.deferred.reset();
  }
}

void projector::drop_prefetched() {
  if (!prefetched_.valid()) return;
  prefetched_.wait();
  prefetched_ = {};
}

std::size_t projector::step() {
  if (!redis_ && !try_recover()) return 0;
  if (!view_ready_) {
    try {
      if (!tend_view()) return 0;
    } catch (const std::runtime_error& e) {
      metrics_->redis_error();
      log(log_level::error, std::string("redis unavailable while inspecting the view: ") + e.what());
      redis_.reset();
      return 0;
    }
  }
  auto prepared = prefetched_.valid() ? prefetched_.get() : poll_and_prepare();
  const auto& batch = prepared.messages;
  // A rebalance inside that poll may have lost Redis (group mode): its partitions wait, unread, for recovery.
  if (batch.empty() || !redis_) return 0;
  // The next batch is read, decoded and folded while Redis executes this one. Only that thread uses the
  // consumer until the future is taken (or dropped, before any re-assignment). Not in a group: there the
  // poll runs the rebalance callbacks, which must not race with apply() over the positions.
  if (!group_) prefetched_ = std::async(std::launch::async, [this] { return poll_and_prepare(); });
  const auto before = stats_;
  const auto started = std::chrono::steady_clock::now();
  const auto redirections = redis_->redirections();
  try {
    resolve(prepared);
    apply(prepared);
    // Slots moving between the masters of a cluster (resharding, a failover): worth a line, not an error.
    if (const auto followed = redis_->redirections() - redirections; followed > 0)
      log(log_level::info, "followed " + std::to_string(followed) + " Redis Cluster redirections (slots are moving)",
          {{"redirections", followed}});
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
    metrics_->batch_done(took.count());
    for (const auto& m : batch) metrics_->folded(partition_index(m.topic, m.partition), m.timestamp_ms);
  } catch (const std::runtime_error& e) {
    // The script refused the view: it lost its data, or a rebuild replaced it. Nothing was written after that;
    // the view is inspected before the next batch, which starts from its stored positions.
    if (std::string_view(e.what()).starts_with("redis: VIEW")) {
      view_not_ready(std::string(e.what()).substr(7));
    } else {
      // The consumer has moved past events whose fate is unknown; recovery re-reads from the stored positions,
      // and the script turns whatever did land into no-ops (and re-detects, and re-copies, any poison event
      // not yet recorded).
      if (std::string_view(e.what()).starts_with("redis")) metrics_->redis_error();
      log(log_level::error, std::string("error: ") + e.what() + "; reconnecting", {{"batchEvents", batch.size()}});
      redis_.reset();
    }
  }
  metrics_->applied(stats_.applied - before.applied);
  metrics_->replayed(stats_.replayed - before.replayed);
  for (auto n = before.poison; n < stats_.poison; ++n) metrics_->poison();
  return batch.size();
}

void projector::load_script() {
  const auto& script = redis_->clustered() ? cluster_apply_script() : guarded_apply_script();
  const auto sha = redis_->run({"SCRIPT", "LOAD", std::string(script)});
  if (!sha.value) throw std::runtime_error("redis: SCRIPT LOAD returned no digest");
  script_sha_ = *sha.value;
}

template <class Calls>
std::vector<read_model::redis_connection::outcome> projector::run_scripts(const Calls& calls) {
  if constexpr (std::is_same_v<Calls, std::vector<std::string>>)
    return scripts_answered(calls, redis_->pipeline_each_resp(calls));
  else
    return scripts_answered(calls, redis_->pipeline_each(calls));
}

template <class Calls>
std::vector<read_model::redis_connection::outcome> projector::scripts_answered(
    const Calls& calls, std::vector<read_model::redis_connection::outcome> outcomes) {
  const bool lost_script = std::any_of(outcomes.begin(), outcomes.end(), [](const auto& o) {
    return o.error && std::string_view(*o.error).starts_with("NOSCRIPT");
  });
  if (!lost_script) return outcomes;
  // Redis forgets scripts on restart or SCRIPT FLUSH. Re-sending the whole pipeline is safe: the script makes
  // every event that did apply a no-op (and the other commands sent with it are idempotent). A script's digest
  // is the SHA-1 of its text, so the calls name it still.
  load_script();
  return run_scripts(calls);
}

std::optional<std::string> projector::tally(const read_model::redis_connection::outcome& o) {
  if (o.error) throw std::runtime_error("redis: " + *o.error);
  const auto& value = o.value.value;
  if (value == "1") {
    ++stats_.applied;
    return std::nullopt;
  }
  if (value == "0") {
    ++stats_.replayed;
    return std::nullopt;
  }
  if (value && value->starts_with("POISON ")) return value->substr(7);
  throw std::runtime_error("redis: unexpected script reply " + value.value_or("(nil)"));
}

std::vector<std::size_t> projector::unapplied(const std::vector<store::message>& batch) const {
  std::vector<std::size_t> pending;
  pending.reserve(batch.size());
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const auto& m = batch[i];
    const auto previous = previous_offset_.find(read_model::position_field(m.topic, m.partition));
    // In a group a partition is forgotten at revocation, and the consumer drops what it read before; one that
    // slipped through anyway now belongs to another projector.
    if (group_ && previous == previous_offset_.end()) continue;
    CREDITS_ASSERT(previous != previous_offset_.end(), "a message from a partition that was never assigned");
    // librdkafka drops messages fetched before a re-assignment; this guards the script's gap check if one
    // slipped through anyway. It was sent before, so skipping it loses nothing.
    if (m.offset > previous->second) pending.push_back(i);
  }
  return pending;
}

// On a cluster (projector.hpp, "Redis Cluster"), in four steps, each after the last one's replies: the account
// parts of every event in one pipeline, which also finds the poison events; their dead-letter copies; the other
// parts with the poison marks; the positions. A crash or error anywhere re-reads from the positions, and every
// step repeats as a no-op what it did before.
void projector::apply_clustered(const prepared_batch& prepared) {
  const auto& batch = prepared.messages;
  const auto pending = unapplied(batch);
  // (applied key, field) -> the offset of the last part sent for it in this batch: what the next one follows.
  // A part that did not apply (an error, a redirection) fails every later part of its field in this batch with
  // GAP, so none of them can get ahead of it.
  std::map<std::pair<std::string, std::string>, std::int64_t> last_sent;
  const auto call_for = [&](const store::message& m, const tag_part& part, bool account) {
    auto field = (account ? "account:" : "shared:") + read_model::position_field(m.topic, m.partition);
    auto& last = last_sent[{part.tag, field}];
    const auto previous = last == 0 ? std::nullopt : std::optional<std::int64_t>(last - 1);
    last = m.offset + 1;  // 0: none sent yet
    return cluster_apply_args(script_sha_, part, field, m.offset, previous);
  };

  std::vector<std::vector<tag_part>> parts(batch.size());
  std::vector<std::vector<std::string>> calls;
  std::vector<std::size_t> sent;
  std::vector<poison> found;
  for (const auto i : pending) {
    const auto& event = prepared.events[i];
    if (event.refused) {
      found.push_back(poison{i, *event.refused});
      continue;
    }
    parts[i] = split_by_tag(event.commands, event.guards, batch[i].key);
    calls.push_back(call_for(batch[i], parts[i].front(), true));
    sent.push_back(i);
  }
  const auto outcomes = calls.empty() ? std::vector<read_model::redis_connection::outcome>{} : run_scripts(calls);
  for (std::size_t k = 0; k < outcomes.size(); ++k)
    if (auto refused = tally(outcomes[k])) {
      found.push_back(poison{sent[k], std::move(*refused)});
      parts[sent[k]].clear();
    }
  std::sort(found.begin(), found.end(), [](const poison& a, const poison& b) { return a.index < b.index; });
  copy_to_dead_letters(batch, found);

  calls.clear();
  for (const auto i : pending) {
    for (std::size_t p = 1; p < parts[i].size(); ++p) calls.push_back(call_for(batch[i], parts[i][p], false));
    // An applied void's view-wide marks: plain idempotent writes, repeated harmlessly after a crash.
    if (!parts[i].empty()) calls.insert(calls.end(), prepared.events[i].marks.begin(), prepared.events[i].marks.end());
  }
  std::vector<std::size_t> first_mark;  // per poison event: where its marks start in `calls`
  for (const auto& p : found) {
    const auto& m = batch[p.index];
    first_mark.push_back(calls.size());
    // Plain writes, each idempotent; the first, HSET of credits:poison, answers 1 only the first time.
    for (auto& c : read_model::poison_marks(m.topic, m.partition, m.offset, m.key, p.reason))
      calls.push_back(std::move(c));
  }
  const auto marked = calls.empty() ? std::vector<read_model::redis_connection::outcome>{} : run_scripts(calls);
  for (const auto& o : marked)
    if (o.error) throw std::runtime_error("redis: " + *o.error);
  for (std::size_t p = 0; p < found.size(); ++p)
    if (marked[first_mark[p]].value.value == "1") report_poison(batch[found[p].index], found[p].reason);

  std::vector<std::string> positions{"EVAL", std::string(positions_max_script()), "1",
                                     std::string(read_model::positions_key)};
  std::map<std::string, std::int64_t> last_offset;
  for (const auto i : pending)
    last_offset[read_model::position_field(batch[i].topic, batch[i].partition)] = batch[i].offset;
  if (last_offset.empty()) return;
  for (const auto& [field, offset] : last_offset) positions.insert(positions.end(), {field, std::to_string(offset)});
  redis_->run(positions);
  for (const auto& [field, offset] : last_offset) previous_offset_.at(field) = offset;
}

// Applies a batch in rounds. A round sends every event up to the first poison event of each partition; the
// poison events found are copied to the dead-letter topic and then recorded, and the next round resumes each
// of their partitions just after them. Without poison events a batch takes exactly one round, one pipeline.
void projector::apply(const prepared_batch& prepared) {
  if (redis_->clustered()) return apply_clustered(prepared);
  const auto& batch = prepared.messages;
  auto pending = unapplied(batch);

  // The events of a partition go in runs, one script call each (guarded_apply_script).
  struct run {
    std::string field;
    std::vector<std::size_t> events;  // batch indices
    std::vector<std::int64_t> after;  // the position each event follows
  };
  while (!pending.empty()) {
    std::vector<run> runs;
    std::unordered_map<std::string, std::size_t> open;  // field -> its run being filled
    std::unordered_map<std::string, poison> found;      // field -> its first poison event this round
    std::vector<std::size_t> later;                     // batch indices for the next round
    for (const auto i : pending) {
      const auto& m = batch[i];
      auto field = read_model::position_field(m.topic, m.partition);
      if (found.contains(field)) {
        later.push_back(i);
        continue;
      }
      auto& previous = previous_offset_.at(field);
      if (prepared.events[i].refused) {
        found.emplace(std::move(field), poison{i, *prepared.events[i].refused, previous});
        continue;
      }
      auto slot = open.find(field);
      if (slot == open.end() || runs[slot->second].events.size() == apply_run_events_max) {
        runs.push_back({field, {}, {}});
        slot = open.insert_or_assign(field, runs.size() - 1).first;
      }
      runs[slot->second].events.push_back(i);
      runs[slot->second].after.push_back(previous);
      previous = m.offset;
    }

    std::vector<std::string> calls;  // in wire form: no copy of the events' words but the one hiredis sends
    calls.reserve(runs.size());
    for (const auto& r : runs) {
      std::vector<guarded_event> events;
      events.reserve(r.events.size());
      for (std::size_t k = 0; k < r.events.size(); ++k) {
        const auto& e = prepared.events[r.events[k]];
        events.push_back({batch[r.events[k]].offset, r.after[k], e.commands, e.guards, e.marks});
      }
      calls.push_back(guarded_apply_command(script_sha_, view_id_, r.field, events));
      redis_->send_resp(calls.back());  // Redis runs it while the next one is written
    }

    const auto outcomes = scripts_answered(calls, redis_->receive(calls.size()));
    std::unordered_set<std::string> refused_by_script;
    for (std::size_t k = 0; k < outcomes.size(); ++k) {
      const auto& r = runs[k];
      // Events after a refused one on its partition were sent following it, so the script answered GAP.
      if (refused_by_script.contains(r.field)) {
        later.insert(later.end(), r.events.begin(), r.events.end());
        continue;
      }
      if (outcomes[k].error) throw std::runtime_error("redis: " + *outcomes[k].error);
      auto reply = read_guarded_reply(outcomes[k].value);
      stats_.applied += reply.applied;
      stats_.replayed += reply.replayed;
      if (!reply.refused) continue;
      const auto at = reply.applied + reply.replayed;
      CREDITS_ASSERT(at < r.events.size(), "the apply script refused an event it was not sent");
      refused_by_script.insert(r.field);
      later.insert(later.end(), r.events.begin() + static_cast<std::ptrdiff_t>(at + 1), r.events.end());
      // A record-level poison event of this partition comes after this one: it waits for the next round.
      if (const auto it = found.find(r.field); it != found.end()) later.push_back(it->second.index);
      found.insert_or_assign(r.field, poison{r.events[at], std::move(*reply.refused), r.after[at]});
      previous_offset_.at(r.field) = r.after[at];
    }

    std::vector<poison> round;
    for (auto& [field, p] : found) round.push_back(std::move(p));
    std::sort(round.begin(), round.end(), [](const poison& a, const poison& b) { return a.index < b.index; });
    record_poison(batch, round);
    std::sort(later.begin(), later.end());
    pending = std::move(later);
  }
}

// Copies the poison events to the dead-letter topic and waits for the broker's acknowledgement before
// recording them in the view: a crash in between re-reads them, copies them again and records them then, so
// each reaches the dead-letter topic at least once and none is recorded without its copy.
void projector::record_poison(const std::vector<store::message>& batch, const std::vector<poison>& found) {
  if (found.empty()) return;
  copy_to_dead_letters(batch, found);
  std::vector<std::vector<std::string>> calls;
  for (const auto& p : found) {
    const auto& m = batch[p.index];
    calls.push_back(guarded_apply_args(script_sha_, view_id_, read_model::position_field(m.topic, m.partition),
                                       m.offset, p.previous_offset,
                                       read_model::poison_marks(m.topic, m.partition, m.offset, m.key, p.reason)));
  }
  const auto outcomes = run_scripts(calls);
  for (std::size_t k = 0; k < outcomes.size(); ++k) {
    const auto& m = batch[found[k].index];
    if (outcomes[k].error) throw std::runtime_error("redis: " + *outcomes[k].error);
    previous_offset_.at(read_model::position_field(m.topic, m.partition)) = m.offset;
    // Counted and logged only when this call recorded it, so a re-read poison event is not reported twice.
    if (read_guarded_reply(outcomes[k].value).applied == 1) report_poison(m, found[k].reason);
  }
}

void projector::copy_to_dead_letters(const std::vector<store::message>& batch, const std::vector<poison>& found) {
  if (found.empty()) return;
  const auto dlq = dead_letter_topic(config_);
  for (const auto& p : found) {
    const auto& m = batch[p.index];
    dead_letters_.produce(dlq, -1, m.key, m.value,
                          {{"credits-reason", p.reason},
                           {"credits-topic", m.topic},
                           {"credits-partition", std::to_string(m.partition)},
                           {"credits-offset", std::to_string(m.offset)}});
  }
  dead_letters_.flush(milliseconds(config_.dlq_timeout_ms));
  stats_.dead_lettered += found.size();
}

void projector::report_poison(const store::message& m, const std::string& reason) {
  ++stats_.poison;
  log(log_level::warn,
      "poison event at " + m.topic + ":" + std::to_string(m.partition) + "@" + std::to_string(m.offset) + " (key " +
          m.key + "): " + reason + "; copied to " + dead_letter_topic(config_) +
          (m.key.empty() ? std::string() : ", account " + m.key + " marked blocked"),
      {{"topic", m.topic},
       {"partition", m.partition},
       {"offset", m.offset},
       {"accountId", m.key},
       {"reason", reason},
       {"deadLetterTopic", dead_letter_topic(config_)}});
}

}  // namespace credits
