#include "credits/projector.hpp"

#include <charconv>
#include <cstdio>
#include <optional>
#include <string_view>
#include <thread>
#include <type_traits>

#include "credits/assert.hpp"

namespace credits {
namespace {

using std::chrono::milliseconds;

void log(const std::string& line) { std::fprintf(stderr, "credits-projector: %s\n", line.c_str()); }

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
    throw std::runtime_error(std::string(read_model::positions_key) + " field " + field + " is not an offset: " + *value);
  return *n;
}

}  // namespace

std::variant<projector_config, std::string> projector_config_from_env(const env_lookup& lookup) {
  projector_config config;
  std::string error;
  auto text = [&](const char* name, std::string& out) {
    const char* v = lookup(name);
    if (!v) return;
    if (*v == '\0' && error.empty()) error = std::string(name) + ": must not be empty";
    out = v;
  };
  auto integer = [&](const char* name, std::int64_t min, std::int64_t max, auto& out) {
    const char* v = lookup(name);
    if (!v || !error.empty()) return;
    const auto n = parse_int(v);
    if (!n || *n < min || *n > max) {
      error = std::string(name) + ": expected an integer from " + std::to_string(min) + " to " + std::to_string(max) +
              ", got \"" + v + "\"";
      return;
    }
    out = static_cast<std::remove_reference_t<decltype(out)>>(*n);
  };
  text("CREDITS_KAFKA_BROKERS", config.brokers);
  text("CREDITS_REDIS_HOST", config.redis_host);
  integer("CREDITS_REDIS_PORT", 1, 65535, config.redis_port);
  text("CREDITS_LEDGER_TOPIC", config.ledger_topic);
  text("CREDITS_USAGE_TOPIC", config.usage_topic);
  integer("CREDITS_PROJECTOR_BATCH_EVENTS_MAX", 1, static_cast<std::int64_t>(batch_events_max_limit),
          config.batch_events_max);
  integer("CREDITS_PROJECTOR_FETCH_WAIT_MS", 0, fetch_wait_ms_limit, config.fetch_wait_ms);
  if (!error.empty()) return error;
  if (config.ledger_topic == config.usage_topic)
    return std::string("CREDITS_LEDGER_TOPIC and CREDITS_USAGE_TOPIC must differ, both are \"") +
           config.ledger_topic + "\"";
  return config;
}

std::string_view guarded_apply_script() {
  return R"lua(
local stored = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
local offset = tonumber(ARGV[2])
if stored >= offset then return 0 end
if stored ~= tonumber(ARGV[3]) then
  return redis.error_reply('GAP ' .. ARGV[1] .. ' is at ' .. stored .. ' but event ' .. ARGV[2] ..
                           ' follows ' .. ARGV[3])
end
local i = 4
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
)lua";
}

std::vector<std::string> guarded_apply_args(const std::string& script_sha, const std::string& position_field,
                                            std::int64_t offset, std::int64_t previous_offset,
                                            const std::vector<std::vector<std::string>>& commands) {
  std::vector<std::string> args{"EVALSHA",
                                script_sha,
                                "1",
                                std::string(read_model::positions_key),
                                position_field,
                                std::to_string(offset),
                                std::to_string(previous_offset)};
  for (const auto& command : commands) {
    args.push_back(std::to_string(command.size()));
    args.insert(args.end(), command.begin(), command.end());
  }
  return args;
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

projector::projector(projector_config config)
    : config_(std::move(config)),
      consumer_(config_.brokers, false, {{"fetch.wait.max.ms", std::to_string(config_.fetch_wait_ms)}}) {
  for (const auto* topic : {&config_.ledger_topic, &config_.usage_topic}) {
    const auto count = consumer_.partition_count(*topic, milliseconds(config_.metadata_timeout_ms));
    for (std::int32_t p = 0; p < count; ++p) partitions_.emplace_back(*topic, p);
  }
  connect_redis();
  resume_points_ = stored_start_points();
  assign(resume_points_);
}

projector::~projector() = default;

void projector::connect_redis() {
  redis_.reset();
  auto redis = std::make_unique<read_model::redis_connection>(config_.redis_host, config_.redis_port,
                                                              milliseconds(config_.redis_timeout_ms));
  if (!config_.redis_client_name.empty()) redis->run({"CLIENT", "SETNAME", config_.redis_client_name});
  const auto sha = redis->run({"SCRIPT", "LOAD", std::string(guarded_apply_script())});
  if (!sha.value) throw std::runtime_error("redis: SCRIPT LOAD returned no digest");
  script_sha_ = *sha.value;
  redis_ = std::move(redis);
}

std::vector<store::start_point> projector::stored_start_points() {
  std::vector<std::string> args{"HMGET", std::string(read_model::positions_key)};
  for (const auto& [topic, partition] : partitions_) args.push_back(read_model::position_field(topic, partition));
  const auto r = redis_->run(args);
  if (r.array.size() != partitions_.size()) throw std::runtime_error("redis: HMGET returned the wrong number of values");
  std::vector<store::start_point> points;
  for (std::size_t i = 0; i < partitions_.size(); ++i) {
    const auto& [topic, partition] = partitions_[i];
    points.push_back({topic, partition, stored_offset(r.array[i], args[i + 2]) + 1});
  }
  return points;
}

void projector::assign(const std::vector<store::start_point>& from) {
  consumer_.assign(from);
  // An event read at `offset` is the first after the position offset - 1; the script checks exactly that.
  for (const auto& p : from) previous_offset_[read_model::position_field(p.topic, p.partition)] = p.offset - 1;
}

void projector::rewind(const std::vector<store::start_point>& from) { assign(from); }

bool projector::try_recover() {
  try {
    connect_redis();
    const auto points = stored_start_points();
    assign(points);
    ++stats_.recoveries;
    log("redis reconnected; resuming at " + describe(points));
    return true;
  } catch (const std::runtime_error& e) {
    log(std::string("redis unavailable: ") + e.what());
    redis_.reset();
    return false;
  }
}

void projector::run(const std::atomic<bool>& stop) {
  const milliseconds backoff_min(config_.reconnect_backoff_ms_min);
  const milliseconds backoff_max(config_.reconnect_backoff_ms_max);
  auto backoff = backoff_min;
  while (!stop.load(std::memory_order_relaxed)) {
    if (!redis_) {
      if (!try_recover()) {
        sleep_unless_stopped(backoff, stop);
        backoff = std::min(backoff * 2, backoff_max);
        continue;
      }
      backoff = backoff_min;
    }
    step();
  }
}

std::size_t projector::step() {
  if (!redis_ && !try_recover()) return 0;
  const auto batch = consumer_.poll(config_.batch_events_max, milliseconds(config_.poll_timeout_ms));
  if (batch.empty()) return 0;
  try {
    apply(batch);
  } catch (const std::runtime_error& e) {
    // The consumer has moved past events whose fate is unknown; recovery re-reads from the stored positions,
    // and the script turns whatever did land into no-ops.
    log(std::string("redis error: ") + e.what() + "; reconnecting");
    redis_.reset();
  }
  return batch.size();
}

void projector::apply(const std::vector<store::message>& batch) {
  std::vector<std::vector<std::string>> calls;
  std::vector<std::size_t> sent;              // index into batch of each call
  std::vector<std::string> poison_errors(batch.size());
  calls.reserve(batch.size());
  sent.reserve(batch.size());
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const auto& m = batch[i];
    auto field = read_model::position_field(m.topic, m.partition);
    const auto previous = previous_offset_.find(field);
    CREDITS_ASSERT(previous != previous_offset_.end(), "a message from a partition that was never assigned");
    // librdkafka drops messages fetched before a re-assignment; this guards the script's gap check if one
    // slipped through anyway. It was sent before, so skipping it loses nothing.
    if (m.offset <= previous->second) continue;
    std::string error;
    const auto e = decode(m.value, &error);
    if (!e) poison_errors[i] = error.empty() ? std::string("undecodable") : error;
    calls.push_back(guarded_apply_args(script_sha_, field, m.offset, previous->second,
                                       e ? read_model::fold(*e) : std::vector<std::vector<std::string>>{}));
    sent.push_back(i);
    previous->second = m.offset;
  }
  if (calls.empty()) return;

  std::vector<read_model::redis_connection::reply> replies;
  try {
    replies = redis_->pipeline(calls);
  } catch (const read_model::reply_error& e) {
    // Redis forgets scripts on restart or SCRIPT FLUSH. Re-sending the whole batch is safe: the script makes
    // every event that did apply a no-op.
    if (!std::string_view(e.what()).starts_with("NOSCRIPT")) throw;
    const auto sha = redis_->run({"SCRIPT", "LOAD", std::string(guarded_apply_script())});
    if (!sha.value) throw std::runtime_error("redis: SCRIPT LOAD returned no digest");
    script_sha_ = *sha.value;
    for (auto& call : calls) call[1] = script_sha_;
    replies = redis_->pipeline(calls);
  }

  for (std::size_t k = 0; k < replies.size(); ++k) {
    const auto& m = batch[sent[k]];
    if (replies[k].value != "1") {
      ++stats_.replayed;
      continue;
    }
    ++stats_.applied;
    // Logged only when its position advanced, so a re-read poison event is not reported twice.
    if (!poison_errors[sent[k]].empty()) {
      ++stats_.poison;
      log("poison event at " + m.topic + ":" + std::to_string(m.partition) + "@" + std::to_string(m.offset) +
          " (key " + m.key + ") skipped: " + poison_errors[sent[k]]);
    }
  }
}

}  // namespace credits
