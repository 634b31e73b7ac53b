#include "credits/command_api/auth.hpp"

#include <set>

#include "credits/common/ids.hpp"
#include "credits/common/log.hpp"
#include "credits/event_store/event_store.hpp"

namespace credits::api {
namespace {

constexpr std::string_view component = "credits-api";
// The broker answers a fetch with no new records after at most this long, so a revocation committed while a
// fetch waits is seen within it.
constexpr std::string_view keys_fetch_wait_ms = "100";
constexpr std::size_t keys_poll_records_max = 1000;

}  // namespace

std::optional<api_key> key_registry::authenticate(std::string_view presented) const {
  const auto hash = key_token_hash(presented);
  std::shared_lock lock(mutex_);
  if (const auto id = key_id_of_token(presented)) {
    const auto it = log_.keys.find(*id);
    // The comparison runs whether or not the key is revoked, so timing tells nothing about either.
    if (it == log_.keys.end() || !hashes_equal(hash, it->second.secret_hash) || it->second.revoked_at)
      return std::nullopt;
    return api_key{it->second.tenant, it->second.key_id, it->second.scope};
  }
  const auto it = bootstrap_.find(hash);
  if (it == bootstrap_.end()) return std::nullopt;
  if (const auto revoked = log_.keys.find(it->second.key_id);
      revoked != log_.keys.end() && revoked->second.tenant == it->second.tenant && revoked->second.revoked_at)
    return std::nullopt;
  return it->second;
}

void key_registry::apply(const key_event& e) {
  std::string why;
  bool applied = false;
  {
    std::unique_lock lock(mutex_);
    applied = credits::apply(log_, e, &why);
  }
  if (!applied)
    write_log(log_level::warn, component, "key log: ignored " + std::string(type_name(e.payload)) + ": " + why,
              {{"keyId", e.key_id}, {"tenant", e.tenant}});
}

std::size_t key_registry::keys_in_log() const {
  std::shared_lock lock(mutex_);
  return log_.keys.size();
}

key_log_follower::key_log_follower(const config& cfg, key_registry& registry)
    : cfg_(cfg), registry_(registry), thread_([this] { run(); }) {}

key_log_follower::~key_log_follower() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  thread_.join();
}

void key_log_follower::wait_loaded(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!cv_.wait_for(lock, timeout, [this] { return loaded_ || !error_.empty(); }))
    throw std::runtime_error("the key log " + cfg_.keys_topic + " was not read to its end within " +
                             std::to_string(timeout.count()) + " ms");
  if (!error_.empty()) throw std::runtime_error(error_);
}

void key_log_follower::run() {
  try {
    store::consumer c(cfg_.kafka_brokers, true, {{"fetch.wait.max.ms", std::string(keys_fetch_wait_ms)}});
    std::int32_t partitions = 0;
    try {
      partitions = c.partition_count(cfg_.keys_topic, cfg_.startup_timeout_ms);
    } catch (const std::exception& ex) {
      throw std::runtime_error("the key log " + cfg_.keys_topic + " cannot be read (create it with scripts/up.sh or " +
                               "scripts/lib.sh create_topics): " + ex.what());
    }
    std::vector<store::start_point> from;
    std::set<std::int32_t> open;
    for (std::int32_t p = 0; p < partitions; ++p) {
      from.push_back({cfg_.keys_topic, p, 0});
      open.insert(p);
    }
    c.assign(from);
    std::size_t applied = 0;
    for (;;) {
      {
        std::lock_guard lock(mutex_);
        if (stopping_) return;
      }
      const auto records = c.poll(keys_poll_records_max, keys_poll_interval_ms,
                                  [&](const std::string&, std::int32_t p) { open.erase(p); });
      for (const auto& m : records) {
        std::string error;
        if (auto e = decode_key_event(m.value, &error)) {
          registry_.apply(*e);
          ++applied;
        } else {
          write_log(log_level::error, component, "key log: skipped an undecodable record: " + error,
                    {{"partition", m.partition}, {"offset", m.offset}});
        }
      }
      if (open.empty()) {
        std::lock_guard lock(mutex_);
        if (!loaded_) {
          loaded_ = true;
          write_log(log_level::info, component, "key log read to its end",
                    {{"topic", cfg_.keys_topic}, {"events", applied}, {"keys", registry_.keys_in_log()}});
          cv_.notify_all();
        }
      }
    }
  } catch (const std::exception& ex) {
    // After start-up a failure here would freeze the keys as they are (revocations would stop applying):
    // better to stop serving than to accept a key that was revoked.
    write_log(log_level::error, component, std::string("key log follower failed: ") + ex.what());
    std::lock_guard lock(mutex_);
    error_ = ex.what();
    cv_.notify_all();
    if (loaded_) std::abort();
  }
}

}  // namespace credits::api
