#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "credits/command_api/api_config.hpp"
#include "credits/command_api/auth.hpp"
#include "credits/command_api/ownership.hpp"
#include "credits/read_model/reads.hpp"

namespace credits::api {

// Redis connections for the query endpoints, used from the blocking pool only.
class redis_pool {
 public:
  explicit redis_pool(const config& cfg) : cfg_(cfg) {}
  std::unique_ptr<read_model::redis_connection> acquire();
  void release(std::unique_ptr<read_model::redis_connection> c);

 private:
  const config& cfg_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<read_model::redis_connection>> idle_;
};

// Whether Kafka answers, as the HTTP side sees it: a thread of its own asks a broker for the ledger topic's
// metadata every `kafka_probe_interval_ms`, waiting at most `kafka_probe_timeout_ms` (librdkafka blocks, so this
// stays off the I/O threads and the Redis pool). It starts out reachable (the server only listens once the
// writer has reached Kafka). Lifecycle: probes from construction until destruction, which joins the thread.
// current() and reachable() from any thread.
class kafka_probe {
 public:
  struct status {
    bool reachable = true;
    std::string error;  // why the last probe failed, when it did
  };

  explicit kafka_probe(const config& cfg);
  ~kafka_probe();
  kafka_probe(const kafka_probe&) = delete;
  kafka_probe& operator=(const kafka_probe&) = delete;

  status current() const;
  bool reachable() const { return reachable_.load(std::memory_order_acquire); }

 private:
  void run();

  const config& cfg_;
  std::atomic<bool> reachable_{true};
  mutable std::mutex mutex_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::string error_;
  std::thread thread_;
};

// The HTTP surface: a Beast server with one coroutine per connection (each on its own strand), routing to
// the writer for commands and to Redis for queries, plus /healthz (the process serves), /readyz (Kafka,
// the writer and Redis can serve) and /metrics (Prometheus; every answered request is counted and timed). Blocking
// Redis calls run on a pool of their own, never on the I/O threads. Every connection is bounded: at most
// `connections_max` at once (more are answered 503 and closed), one request at a time, each request within
// `request_timeout_ms` once it has started, idle at most `idle_timeout_ms`. Every /v1 request is authenticated
// (key_registry: 401), limited per key (rate_limiter: 429) and, for commands, checked for a read-write key (403), in
// that order, before anything is decided. With CREDITS_TLS_CERT_FILE/KEY_FILE every connection is TLS. Lifecycle:
// construct, listen(), run the io_context; shutdown() closes the acceptor.
class http_api {
 public:
  // `keys` decides which X-API-Key is accepted; it must outlive the server.
  http_api(const config& cfg, boost::asio::io_context& io, ownership& w, const key_registry& keys,
           api_metrics& metrics);
  ~http_api();

  // Binds and starts accepting; returns the bound port (useful with port 0).
  std::uint16_t listen();
  void shutdown();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace credits::api
