#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>

#include "credits/command_api/api_config.hpp"
#include "credits/common/domain.hpp"
#include "credits/common/keys.hpp"

namespace credits::api {

// Which keys the API accepts: the bootstrap keys of CREDITS_API_KEYS and the fold of the key log (created with
// credits-admin, minus every revocation, bootstrap keys included). Owns that fold; apply() is called by the
// key_log_follower's thread, authenticate() from any I/O thread (a shared lock, never held across a co_await).
class key_registry {
 public:
  explicit key_registry(const std::map<std::string, api_key>& bootstrap) : bootstrap_(bootstrap) {}

  // The key a presented X-API-Key names; nullopt when it names none (unknown, revoked or forged: the HTTP side
  // answers 401). A ck_live_ token is found by its id and its SHA-256 compared in constant time; any other token
  // by its SHA-256 among the bootstrap keys.
  std::optional<api_key> authenticate(std::string_view presented) const;

  void apply(const key_event& e);
  std::size_t keys_in_log() const;

 private:
  const std::map<std::string, api_key>& bootstrap_;
  mutable std::shared_mutex mutex_;
  key_log_state log_;
};

// Follows the key log (CREDITS_KEYS_TOPIC, read_committed) from its beginning for the process's life, so a key
// created or revoked with credits-admin applies without a restart: a committed change reaches the registry
// within one poll (`keys_poll_interval_ms`, 100 ms) plus Kafka's fetch latency. Runs on a thread of its own
// (librdkafka blocks); construction starts it, wait_loaded() blocks until the log has been read to its end as
// it was at start-up (or throws on a timeout or a missing topic), destruction stops and joins it.
class key_log_follower {
 public:
  key_log_follower(const config& cfg, key_registry& registry);
  ~key_log_follower();
  key_log_follower(const key_log_follower&) = delete;
  key_log_follower& operator=(const key_log_follower&) = delete;

  void wait_loaded(std::chrono::milliseconds timeout);

 private:
  void run();

  const config& cfg_;
  key_registry& registry_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool loaded_ = false;
  std::string error_;  // why loading failed, when it did
  std::thread thread_;
};

// How often the follower polls the key log: the upper bound of how long a committed revocation takes to
// apply, besides Kafka's own fetch latency.
inline constexpr std::chrono::milliseconds keys_poll_interval_ms{100};

}  // namespace credits::api
