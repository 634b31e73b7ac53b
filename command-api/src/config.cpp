#include <charconv>
#include <fstream>
#include <stdexcept>

#include "credits/command_api/api_config.hpp"
#include "credits/common/env.hpp"
#include "credits/common/ids.hpp"
#include "credits/read_model/redis.hpp"  // redis_db_max

namespace credits::api {
std::map<std::string, api_key> parse_api_keys(const std::string& text) {
  std::map<std::string, api_key> keys;
  std::size_t start = 0;
  while (start <= text.size()) {
    const auto end = std::min(text.find(',', start), text.size());
    const auto entry = text.substr(start, end - start);
    const auto colon = entry.find(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == entry.size())
      throw std::invalid_argument("CREDITS_API_KEYS: entry \"" + entry.substr(0, colon) +
                                  ":...\" is not of the form tenant:key");
    const auto tenant = entry.substr(0, colon);
    const auto key = entry.substr(colon + 1);
    if (key.size() < 8)
      throw std::invalid_argument("CREDITS_API_KEYS: a key of tenant " + tenant + " is shorter than 8 characters");
    const auto hash = sha256_hex(key);
    if (!keys.emplace(hash, api_key{tenant, "key_" + hash.substr(0, 16)}).second)
      throw std::invalid_argument("CREDITS_API_KEYS: a key is listed twice");
    start = end + 1;
  }
  return keys;
}

namespace {

// "2.5" -> 2'500'000 millionths; digits, at most one dot and 6 decimals, below 10^6 credits per 1K tokens.
std::int64_t parse_price(std::string_view text, std::string_view entry) {
  const auto fail = [&] {
    return std::invalid_argument("CREDITS_MODEL_PRICES: \"" + std::string(entry) +
                                 "\": a price is credits per 1K tokens, e.g. 2.5 (at most 6 decimals)");
  };
  const auto dot = text.find('.');
  const auto whole = text.substr(0, dot);
  const auto frac = dot == std::string_view::npos ? std::string_view{} : text.substr(dot + 1);
  if (whole.empty() || whole.size() > 6 || frac.size() > 6 || (dot != std::string_view::npos && frac.empty()))
    throw fail();
  std::int64_t n = 0;
  for (char ch : whole) {
    if (ch < '0' || ch > '9') throw fail();
    n = n * 10 + (ch - '0');
  }
  std::int64_t f = 0;
  for (std::size_t i = 0; i < 6; ++i) {
    const char ch = i < frac.size() ? frac[i] : '0';
    if (ch < '0' || ch > '9') throw fail();
    f = f * 10 + (ch - '0');
  }
  return n * price_scale + f;
}

}  // namespace

price_table parse_prices(std::string_view text) {
  price_table out;
  while (!text.empty()) {
    const auto comma = text.find(',');
    const auto entry = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
    if (entry.empty()) continue;
    const auto eq = entry.find('=');
    if (eq == std::string_view::npos || eq == 0)
      throw std::invalid_argument("CREDITS_MODEL_PRICES: \"" + std::string(entry) +
                                  "\" is not [tenant:]model=input/output/cached");
    auto name = entry.substr(0, eq);
    std::string tenant = "*";
    if (const auto colon = name.find(':'); colon != std::string_view::npos) {
      tenant = std::string(name.substr(0, colon));
      name = name.substr(colon + 1);
    }
    const auto prices = entry.substr(eq + 1);
    const auto s1 = prices.find('/'), s2 = s1 == std::string_view::npos ? s1 : prices.find('/', s1 + 1);
    if (name.empty() || tenant.empty() || s2 == std::string_view::npos ||
        prices.find('/', s2 + 1) != std::string_view::npos)
      throw std::invalid_argument("CREDITS_MODEL_PRICES: \"" + std::string(entry) +
                                  "\" is not [tenant:]model=input/output/cached");
    const model_price p{parse_price(prices.substr(0, s1), entry),
                        parse_price(prices.substr(s1 + 1, s2 - s1 - 1), entry),
                        parse_price(prices.substr(s2 + 1), entry)};
    if (!out.emplace(std::pair{tenant, std::string(name)}, p).second)
      throw std::invalid_argument("CREDITS_MODEL_PRICES: " + std::string(name) + " is priced twice for " + tenant);
  }
  return out;
}

namespace {

// load_config's parts, in the order the variables are read (the first bad one is the one reported).

// Where the API listens and what it talks to, and the bounds of each connection and request.
void read_connections(const env_reader& r, config& c) {
  r.text("CREDITS_HTTP_ADDRESS", c.http_address);
  r.number("CREDITS_HTTP_PORT", c.http_port, 0, 65535);
  r.number("CREDITS_HTTP_THREADS", c.http_threads, 1, 64);
  r.text("CREDITS_KAFKA_BROKERS", c.kafka_brokers);
  r.text("CREDITS_LEDGER_TOPIC", c.ledger_topic);
  r.text("CREDITS_USAGE_TOPIC", c.usage_topic);
  r.text("CREDITS_TRANSACTIONAL_ID", c.transactional_id);
  r.text("CREDITS_REDIS_HOST", c.redis_host);
  r.number("CREDITS_REDIS_PORT", c.redis_port, 1, 65535);
  r.number("CREDITS_REDIS_CONNECTIONS_MAX", c.redis_connections_max, 1, 256);
  r.number("CREDITS_REDIS_DB", c.redis_db, 0, read_model::redis_db_max);
  r.number("CREDITS_BODY_BYTES_MAX", c.body_bytes_max, 1024, 16 * 1024 * 1024);
  r.number("CREDITS_HEADER_BYTES_MAX", c.header_bytes_max, 1024, 1024 * 1024);
  r.number("CREDITS_BATCH_COMMANDS_MAX", c.batch_commands_max, 1, 100'000);
  r.number("CREDITS_QUEUE_COMMANDS_MAX", c.queue_commands_max, 1, 10'000'000);
  r.millis("CREDITS_KAFKA_TRANSACTION_TIMEOUT_MS", c.kafka_transaction_timeout_ms, 1000, 900'000);
  r.millis("CREDITS_APPEND_TIMEOUT_MS", c.append_timeout_ms, 100, 900'000);
  r.millis("CREDITS_STARTUP_TIMEOUT_MS", c.startup_timeout_ms, 1000, 3'600'000);
  r.millis("CREDITS_READ_WAIT_MS", c.read_wait_ms, 0, 60'000);
  r.millis("CREDITS_IDLE_TIMEOUT_MS", c.idle_timeout_ms, 100, 3'600'000);
  r.millis("CREDITS_EXPIRY_SCAN_INTERVAL_MS", c.expiry_scan_interval_ms, 10, 60'000);
  r.millis("CREDITS_REDIS_TIMEOUT_MS", c.redis_timeout_ms, 10, 60'000);
  r.number("CREDITS_RESERVATION_TIMEOUT_S", c.limits.reservation_timeout_s, 1, c.limits.reservation_timeout_s_max);
  r.number("CREDITS_STRING_BYTES_MAX", c.limits.string_bytes_max, 16, 64 * 1024);
  r.number("CREDITS_METADATA_BYTES_MAX", c.limits.metadata_bytes_max, 2, 1024 * 1024);
  r.number("CREDITS_JSON_DEPTH_MAX", c.limits.json_depth_max, 2, 128);
  r.number("CREDITS_EXPIRIES_PER_BATCH_MAX", c.expiries_per_batch_max, 1, 100'000);
  r.millis("CREDITS_SHUTDOWN_TIMEOUT_MS", c.shutdown_timeout_ms, 100, 600'000);
  r.number("CREDITS_CONNECTIONS_MAX", c.connections_max, 1, 1'000'000);
  r.millis("CREDITS_REQUEST_TIMEOUT_MS", c.request_timeout_ms, 100, 600'000);
  r.millis("CREDITS_SEND_TIMEOUT_MS", c.send_timeout_ms, 100, 600'000);
  r.millis("CREDITS_KAFKA_PROBE_INTERVAL_MS", c.kafka_probe_interval_ms, 100, 600'000);
  r.millis("CREDITS_KAFKA_PROBE_TIMEOUT_MS", c.kafka_probe_timeout_ms, 100, 600'000);
}

// The writer: idempotency keys, snapshots, the event contract and the prices.
void read_writer(const env_reader& r, config& c, const std::function<const char*(const char*)>& getenv) {
  std::int64_t window_s = c.idempotency_window_ms.count() / 1000;
  r.number("CREDITS_IDEMPOTENCY_WINDOW_S", window_s, 1, 30LL * 86400);
  c.idempotency_window_ms = std::chrono::milliseconds(window_s * 1000);
  r.number("CREDITS_IDEMPOTENCY_KEYS_MAX", c.idempotency_keys_max, 1, 1'000'000'000);
  r.number("CREDITS_IDEMPOTENCY_RESPONSES_CACHED_MAX", c.idempotency_responses_cached_max, 0, 10'000'000);
  r.text("CREDITS_SNAPSHOT_TOPIC", c.snapshot_topic);
  r.text("CREDITS_EVENT_SOURCE", c.event_source);
  r.number("CREDITS_BALANCE_LOW_THRESHOLD", c.balance_low_threshold, 0, amount_max);
  r.number("CREDITS_SNAPSHOT_INTERVAL_EVENTS", c.snapshot_interval_events, 0, 1'000'000'000);
  r.number("CREDITS_SNAPSHOT_CHUNK_BYTES", c.snapshot_chunk_bytes, 1024, 900 * 1024);
  r.number("CREDITS_ACCESS_LOG", c.access_log, 0, 1);
  if (c.append_timeout_ms > c.kafka_transaction_timeout_ms)
    throw std::invalid_argument("CREDITS_APPEND_TIMEOUT_MS must not exceed CREDITS_KAFKA_TRANSACTION_TIMEOUT_MS");
  if (const char* prices = getenv("CREDITS_MODEL_PRICES")) c.model_prices = parse_prices(prices);
}

// Who may ask, how often, and over what: the key log, the rate limits and TLS.
void read_access(const env_reader& r, config& c) {
  r.text("CREDITS_KEYS_TOPIC", c.keys_topic);
  r.number("CREDITS_RATE_LIMIT_REQUESTS_PER_S", c.rate_limit_requests_per_s, 0, 1'000'000);
  r.number("CREDITS_RATE_LIMIT_BURST_REQUESTS", c.rate_limit_burst_requests, 0, 10'000'000);
  if (c.rate_limit_burst_requests == 0) c.rate_limit_burst_requests = 2 * c.rate_limit_requests_per_s;
  r.number("CREDITS_RATE_LIMIT_KEYS_MAX", c.rate_limit_keys_max, 1, 100'000'000);
  r.text("CREDITS_TLS_CERT_FILE", c.tls_cert_file);
  r.text("CREDITS_TLS_KEY_FILE", c.tls_key_file);
  if (c.tls_cert_file.empty() != c.tls_key_file.empty())
    throw std::invalid_argument("CREDITS_TLS_CERT_FILE and CREDITS_TLS_KEY_FILE go together: set both or neither");
  for (const auto* file : {&c.tls_cert_file, &c.tls_key_file})
    if (!file->empty() && !std::ifstream(*file)) throw std::invalid_argument("TLS file " + *file + " cannot be read");
}

// Scale out: the group, and the address other instances forward to.
void read_group(const env_reader& r, config& c) {
  r.text("CREDITS_GROUP_ID", c.group_id);
  r.text("CREDITS_ADVERTISED_ADDRESS", c.advertised_address);
  r.millis("CREDITS_GROUP_SESSION_TIMEOUT_MS", c.group_session_timeout_ms, 1000, 600'000);
  r.millis("CREDITS_OWNERS_REFRESH_MS", c.owners_refresh_ms, 10, 60'000);
  r.millis("CREDITS_OWNERS_TIMEOUT_MS", c.owners_timeout_ms, 100, 60'000);
  r.millis("CREDITS_FORWARD_TIMEOUT_MS", c.forward_timeout_ms, 100, 600'000);
  if (!c.group_id.empty()) {
    if (!c.tls_cert_file.empty())
      throw std::invalid_argument(
          "CREDITS_GROUP_ID: instances forward commands to each other over plain HTTP, so "
          "TLS must end in front of them (a load balancer), not in the API");
    if (c.advertised_address.empty()) {
      if (c.http_address == "0.0.0.0" || c.http_address == "::" || c.http_port == 0)
        throw std::invalid_argument(
            "CREDITS_ADVERTISED_ADDRESS (host:port other instances reach this one at) is "
            "required with CREDITS_GROUP_ID when listening on a wildcard address or port 0");
      c.advertised_address = c.http_address + ":" + std::to_string(c.http_port);
    }
    if (c.advertised_address.rfind(':') == std::string::npos)
      throw std::invalid_argument("CREDITS_ADVERTISED_ADDRESS must be host:port");
  }
}

}  // namespace

config load_config(const std::function<const char*(const char*)>& getenv) {
  config c;
  const env_reader r{getenv};
  read_connections(r, c);
  read_writer(r, c, getenv);
  read_access(r, c);
  read_group(r, c);
  const char* keys = getenv("CREDITS_API_KEYS");
  if (!keys || *keys == '\0') throw std::invalid_argument("CREDITS_API_KEYS is required (tenant:key,...)");
  c.api_keys = parse_api_keys(keys);
  return c;
}

}  // namespace credits::api
