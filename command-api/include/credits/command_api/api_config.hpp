#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include "credits/common/domain.hpp"
#include "credits/common/keys.hpp"
#include "credits/common/requests.hpp"

namespace credits::api {

struct api_key {
  std::string tenant;
  std::string key_id;  // a stable, non-secret name for the key, stored in events
  key_scope scope = key_scope::read_write;
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

  // Scale out (docs/scaling.md). With a group id, this instance joins that Kafka consumer group on the ledger
  // topic and writes only the partitions the group assigns it; commands for other partitions are forwarded
  // to their owner at its advertised address (host:port, what other instances connect to; default
  // http_address:http_port). Without one, this instance writes every partition, alone.
  std::string group_id;
  std::string advertised_address;
  std::chrono::milliseconds group_session_timeout_ms{10'000};  // a silent instance loses its partitions after this
  std::chrono::milliseconds owners_refresh_ms{1'000};          // how old the partition -> owner map may get
  std::chrono::milliseconds owners_timeout_ms{2'000};          // one describe-group call
  std::chrono::milliseconds forward_timeout_ms{10'000};        // a forwarded command, connect to answer

  std::string redis_host = "127.0.0.1";
  int redis_port = 6379;
  int redis_connections_max = 4;
  int redis_db = 0;  // the projector's CREDITS_REDIS_DB: where the read models live

  // The bootstrap keys (CREDITS_API_KEYS), keyed by the SHA-256 of the key, so the lookup never compares
  // secrets byte by byte. Keys made with credits-admin live in the key log instead (auth.hpp).
  std::map<std::string, api_key> api_keys;
  std::string keys_topic = "credits.keys";

  // Per key, a token bucket: `rate_limit_requests_per_s` refill, at most `rate_limit_burst_requests` at once.
  // 0 requests per second: no limit.
  std::int64_t rate_limit_requests_per_s = 0;
  std::int64_t rate_limit_burst_requests = 0;  // 0: twice the rate
  std::size_t rate_limit_keys_max = 100'000;   // buckets kept; beyond it full ones go first, else the fullest

  // TLS on the API listener: both files (PEM) or neither (plain HTTP).
  std::string tls_cert_file;
  std::string tls_key_file;

  std::size_t body_bytes_max = 64 * 1024;
  std::size_t header_bytes_max = 16 * 1024;
  std::size_t batch_commands_max = 512;     // commands per Kafka transaction (group commit)
  std::size_t queue_commands_max = 10'000;  // commands waiting for the writer before 503
  std::size_t expiries_per_batch_max = 1000;

  std::chrono::milliseconds kafka_transaction_timeout_ms{10'000};
  std::chrono::milliseconds append_timeout_ms{5'000};
  std::chrono::milliseconds startup_timeout_ms{120'000};
  std::chrono::milliseconds read_wait_ms{300};  // how long a query waits for the projector
  std::chrono::milliseconds read_poll_interval_ms{5};
  std::chrono::milliseconds idle_timeout_ms{30'000};  // keep-alive connection with no request
  std::chrono::milliseconds expiry_scan_interval_ms{250};
  std::chrono::milliseconds redis_timeout_ms{1'000};
  std::chrono::milliseconds shutdown_timeout_ms{5'000};

  // Connections and their requests. A connection serves one request at a time (pipelined requests wait their
  // turn), so in-flight requests per connection are 1 by construction. Beyond `connections_max` a new
  // connection is answered 503 and closed; `request_timeout_ms` bounds how long a request may take to arrive
  // once its first byte has (a slow-drip client cannot hold a connection), `send_timeout_ms` how long sending
  // its response may take.
  std::size_t connections_max = 1024;
  std::chrono::milliseconds request_timeout_ms{10'000};
  std::chrono::milliseconds send_timeout_ms{10'000};

  // How often, and how patiently, the HTTP side asks Kafka for the ledger topic's metadata: /readyz reports
  // it, commands are answered 503 at once while it fails, and queries are marked stale.
  std::chrono::milliseconds kafka_probe_interval_ms{1'000};
  std::chrono::milliseconds kafka_probe_timeout_ms{1'000};

  // Idempotency keys: how long a key answers retries, and how many the process keeps at most (the oldest are
  // forgotten first when the cap is reached, so memory stays bounded whatever the traffic; in a group each
  // partition writer keeps its share). 16 M keys take about 341 MB (21.3 bytes each): 24 h at 185 keyed
  // commands/s, 4.4 h at 1,000/s.
  std::chrono::milliseconds idempotency_window_ms{24LL * 3600 * 1000};
  std::size_t idempotency_keys_max = 16'000'000;
  std::size_t idempotency_responses_cached_max = 10'000;  // recent answers kept whole; older ones are re-read

  // Snapshots of the writer's state, so start-up replays only the tail of the log.
  std::string snapshot_topic = "credits.snapshots";
  std::size_t snapshot_interval_events = 100'000;  // 0 disables snapshots
  std::size_t snapshot_chunk_bytes = 512 * 1024;   // below the broker's 1 MB message limit

  // The published event contract (docs/events/): the CloudEvents ce_source of every event this API writes,
  // and the available balance below which a deduction or hold also emits BalanceLow (0: never).
  std::string event_source = "/credits/command-api";
  amount_t balance_low_threshold = 0;
  // CREDITS_MODEL_PRICES: what a usage record costs in credits, reported in UsageRecorded (see parse_prices).
  price_table model_prices;

  // One JSON log line per answered request (CREDITS_ACCESS_LOG=1). Off by default: at full load the lines
  // would cost more than the requests. Answers with a 5xx status are logged either way.
  bool access_log = false;

  request_limits limits;
};

// "[tenant:]model=input/output/cached,...": credits per 1,000 tokens, up to 6 decimals, e.g.
// "gpt-4o=2.5/10/1.25,tenant_a:claude=3/15/0.3". Without a tenant the price is for every tenant ("*").
// Throws std::invalid_argument on a malformed entry.
price_table parse_prices(std::string_view text);

// Reads CREDITS_* variables through `getenv`. Throws std::invalid_argument naming the variable and the
// problem; main prints it and exits before any socket opens.
config load_config(const std::function<const char*(const char*)>& getenv);

// "tenant:key,tenant:key" -> keys. Exposed for tests.
std::map<std::string, api_key> parse_api_keys(const std::string& text);

}  // namespace credits::api
