#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace credits::api {

// The idempotency keys' figures, sampled for a scrape (writer.hpp: idempotency_summary).
struct idempotency_sample {
  std::size_t keys = 0;
  std::size_t keys_max = 0;
  std::size_t bytes = 0;
  double window_held_s = 0;
};

// The route label of requests whose path is no route: one value, so clients cannot grow the label set.
inline constexpr std::string_view other_route = "other";

// The route label of a request target. Paths carry no ids (those travel in query strings and bodies), so a
// route's path is its own template: `api_route` says the router recognised the path as an API route; the
// operational paths (/healthz, /readyz, /metrics) are recognised here; anything else is other_route. The
// query string is never part of the label.
std::string_view route_label(std::string_view target, bool api_route);

// The command API's Prometheus metrics (names in docs/operations.md). Owns the registry and every metric in
// it. Thread-safe: request_done() from any I/O thread, the writer's calls from the writer thread, scrape()
// from whichever I/O thread serves /metrics. Lifecycle: built in main before the writer and the server, and
// outlives both.
//
// The hot path takes no lock of ours: the series of each (route, status) and each route's latency histogram
// are resolved once, the first time a route is seen, into an append-only table that readers scan without a
// lock (prometheus-cpp's histogram still takes its own per-series mutex on each observation).
class api_metrics {
 public:
  api_metrics();
  api_metrics(const api_metrics&) = delete;
  api_metrics& operator=(const api_metrics&) = delete;

  // One answered request: its route label (route_label()), HTTP status and handling time.
  void request_done(std::string_view route, unsigned status, double seconds);
  // A request answered without being read (malformed, too large, or its connection over the limit): counted
  // under other_route, not timed.
  void request_unread(unsigned status);

  // The writer: a Kafka transaction that committed `commands` commands as `events` events, one that failed
  // (outcome unknown or aborted), and a command answered from its idempotency key.
  void transaction_committed(std::size_t commands, std::size_t events, double seconds);
  void transaction_failed(bool outcome_unknown, double seconds);
  void idempotent_replay() { idempotent_replays_.Increment(); }

  // The writers' quarantine (credits/common/replay.hpp): how the number of blocked accounts and of quarantined
  // records changed (each writer reports its own deltas, so partition writers add up), and a record that could
  // not be folded and names no account (counted each time a replay reads it).
  void quarantine_changed(std::int64_t accounts_delta, std::int64_t records_delta) {
    quarantined_accounts_.Increment(static_cast<double>(accounts_delta));
    quarantined_records_.Increment(static_cast<double>(records_delta));
  }
  void unkeyed_record() { unkeyed_records_.Increment(); }

  // A Redis call of the query side that failed.
  void redis_error() { redis_errors_.Increment(); }

  // The text exposition format (version 0.0.4), with the gauges sampled now.
  std::string scrape(std::size_t open_connections, std::size_t queue_commands,
                     const idempotency_sample& idempotency = {});

 private:
  // The statuses the API answers with, resolved up front; any other is looked up when it happens.
  static constexpr std::array<unsigned, 11> statuses{200, 400, 401, 402, 404, 405, 409, 413, 431, 500, 503};
  static constexpr std::size_t routes_max = 64;  // far above the routes the server has

  struct route_series {
    std::string route;
    prometheus::Histogram* duration = nullptr;
    std::array<prometheus::Counter*, statuses.size()> requests{};
  };
  const route_series* series_of(std::string_view route);

  prometheus::Registry registry_;
  prometheus::Family<prometheus::Counter>& requests_family_;
  prometheus::Family<prometheus::Histogram>& duration_family_;
  prometheus::Counter& commands_committed_;
  prometheus::Counter& events_appended_;
  prometheus::Histogram& transaction_duration_;
  prometheus::Histogram& transaction_commands_;
  prometheus::Counter& transactions_aborted_;
  prometheus::Counter& transactions_unknown_;
  prometheus::Counter& idempotent_replays_;
  prometheus::Counter& redis_errors_;
  prometheus::Gauge& queue_commands_;
  prometheus::Gauge& open_connections_;
  prometheus::Gauge& quarantined_accounts_;
  prometheus::Gauge& quarantined_records_;
  prometheus::Counter& unkeyed_records_;
  prometheus::Gauge& idempotency_window_;
  prometheus::Gauge& idempotency_keys_;
  prometheus::Gauge& idempotency_keys_max_;
  prometheus::Gauge& idempotency_bytes_;

  std::array<route_series, routes_max> routes_;
  std::atomic<std::size_t> routes_published_{0};  // entries [0, this) are complete and never change again
  std::mutex routes_mutex_;                       // serialises adding an entry
};

}  // namespace credits::api
