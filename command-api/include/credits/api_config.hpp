#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include "credits/requests.hpp"

namespace credits::api {

struct api_key {
  std::string tenant;
  std::string key_id;  // a stable, non-secret name for the key, stored in events
};

// Everything the command API reads from its environment, validated once at start-up. Limits are named with
// their unit last.
struct config {
  std::string http_address = "127.0.0.1";
  std::uint16_t http_port = 8080;
  int http_threads = 2;

  std::string kafka_brokers = "127.0.0.1:9092";
  std::string ledger_topic = "credits.ledger";
  std::string usage_topic = "credits.usage";
  std::string transactional_id = "credits-command-api-0";

  std::string redis_host = "127.0.0.1";
  int redis_port = 6379;
  int redis_connections_max = 4;

  // Keyed by the SHA-256 of the key, so the lookup never compares secrets byte by byte.
  std::map<std::string, api_key> api_keys;

  std::size_t body_bytes_max = 64 * 1024;
  std::size_t header_bytes_max = 16 * 1024;
  std::size_t batch_commands_max = 512;    // commands per Kafka transaction (group commit)
  std::size_t queue_commands_max = 10'000;  // commands waiting for the writer before 503
  std::size_t expiries_per_batch_max = 1000;

  std::chrono::milliseconds kafka_transaction_timeout_ms{10'000};
  std::chrono::milliseconds append_timeout_ms{5'000};
  std::chrono::milliseconds startup_timeout_ms{120'000};
  std::chrono::milliseconds read_wait_ms{300};        // how long a query waits for the projector
  std::chrono::milliseconds read_poll_interval_ms{5};
  std::chrono::milliseconds idle_timeout_ms{30'000};  // keep-alive connection with no request
  std::chrono::milliseconds expiry_scan_interval_ms{250};
  std::chrono::milliseconds redis_timeout_ms{1'000};
  std::chrono::milliseconds shutdown_timeout_ms{5'000};

  request_limits limits;
};

// Reads CREDITS_* variables through `getenv`. Throws std::invalid_argument naming the variable and the
// problem; main prints it and exits before any socket opens.
config load_config(const std::function<const char*(const char*)>& getenv);

// "tenant:key,tenant:key" -> keys. Exposed for tests.
std::map<std::string, api_key> parse_api_keys(const std::string& text);

}  // namespace credits::api
