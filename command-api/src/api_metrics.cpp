#include "credits/command_api/api_metrics.hpp"

#include <prometheus/text_serializer.h>

#include <algorithm>

namespace credits::api {
namespace {

using prometheus::Histogram;

// Request handling and Kafka transactions: from a millisecond to the append timeout's order of seconds.
Histogram::BucketBoundaries latency_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
}

// Commands per Kafka transaction: 1 when idle, up to CREDITS_BATCH_COMMANDS_MAX (512 by default) under load.
Histogram::BucketBoundaries batch_buckets() { return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096}; }

constexpr std::string_view operational_routes[] = {"/healthz", "/readyz", "/metrics"};

// One series of a family registered (or found, when it already is) in `registry`.
prometheus::Counter& counter(prometheus::Registry& registry, const std::string& name, const std::string& help,
                             const prometheus::Labels& labels = {}) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry).Add(labels);
}
prometheus::Gauge& gauge(prometheus::Registry& registry, const std::string& name, const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry).Add({});
}
Histogram& histogram(prometheus::Registry& registry, const std::string& name, const std::string& help,
                     const Histogram::BucketBoundaries& buckets) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(registry).Add({}, buckets);
}

}  // namespace

std::string_view route_label(std::string_view target, bool api_route) {
  const auto path = target.substr(0, target.find('?'));
  if (api_route && !path.empty()) return path;
  const auto* op = std::find(std::begin(operational_routes), std::end(operational_routes), path);
  return op != std::end(operational_routes) ? *op : other_route;
}

api_metrics::api_metrics()
    : requests_family_(prometheus::BuildCounter()
                           .Name("credits_api_http_requests_total")
                           .Help("HTTP requests answered, by route (path template) and status code")
                           .Register(registry_)),
      duration_family_(prometheus::BuildHistogram()
                           .Name("credits_api_http_request_duration_seconds")
                           .Help("Time from a request read to its response ready, by route")
                           .Register(registry_)),
      commands_committed_(counter(registry_, "credits_api_commands_committed_total",
                                  "Commands whose events were committed to the log")),
      events_appended_(counter(registry_, "credits_api_events_appended_total",
                               "Events committed to the log (commands' events, their signals and expiries)")),
      transaction_duration_(histogram(registry_, "credits_api_kafka_transaction_duration_seconds",
                                      "Time to append one batch in a Kafka transaction, committed or not",
                                      latency_buckets())),
      transaction_commands_(histogram(registry_, "credits_api_kafka_transaction_commands",
                                      "Commands per committed Kafka transaction (group commit batch size)",
                                      batch_buckets())),
      transactions_aborted_(counter(registry_, "credits_api_kafka_transactions_failed_total",
                                    "Kafka transactions not committed, by outcome (aborted, unknown)",
                                    {{"outcome", "aborted"}})),
      transactions_unknown_(counter(registry_, "credits_api_kafka_transactions_failed_total",
                                    "Kafka transactions not committed, by outcome (aborted, unknown)",
                                    {{"outcome", "unknown"}})),
      idempotent_replays_(counter(registry_, "credits_api_idempotent_replays_total",
                                  "Commands answered with the first answer to their Idempotency-Key")),
      redis_errors_(counter(registry_, "credits_api_redis_errors_total",
                            "Failed Redis calls of the query side (queries and readiness checks)")),
      queue_commands_(gauge(registry_, "credits_api_writer_queue_commands", "Commands waiting for the writer")),
      open_connections_(gauge(registry_, "credits_api_open_connections", "HTTP connections open now")),
      quarantined_accounts_(gauge(registry_, "credits_api_quarantined_accounts",
                                  "Accounts blocked by a record the writer could not fold (answering 423)")),
      quarantined_records_(gauge(registry_, "credits_api_quarantined_records",
                                 "Records the writer could not fold and no operator has voided yet")),
      unkeyed_records_(counter(registry_, "credits_api_unkeyed_records_skipped_total",
                               "Records without a key the writer could not fold, each time a replay read one")),
      idempotency_window_(gauge(registry_, "credits_idempotency_window_seconds",
                                "How far back a retry with the same Idempotency-Key is recognised now: "
                                "CREDITS_IDEMPOTENCY_WINDOW_S, or less once keys were forgotten for lack of room")),
      idempotency_keys_(gauge(registry_, "credits_idempotency_keys", "Idempotency keys remembered")),
      idempotency_keys_max_(gauge(registry_, "credits_idempotency_keys_max",
                                  "Idempotency keys that can be remembered (CREDITS_IDEMPOTENCY_KEYS_MAX)")),
      idempotency_bytes_(gauge(registry_, "credits_idempotency_bytes",
                               "Memory the idempotency keys take (their ring and index, not the cached answers)")) {}

const api_metrics::route_series* api_metrics::series_of(std::string_view route) {
  auto published = routes_published_.load(std::memory_order_acquire);
  for (std::size_t i = 0; i < published; ++i)
    if (routes_[i].route == route) return &routes_[i];
  std::lock_guard lock(routes_mutex_);
  published = routes_published_.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < published; ++i)  // another thread may have added it meanwhile
    if (routes_[i].route == route) return &routes_[i];
  if (published == routes_.size()) return nullptr;
  auto& entry = routes_[published];
  entry.route = std::string(route);
  entry.duration = &duration_family_.Add({{"route", entry.route}}, latency_buckets());
  for (std::size_t k = 0; k < statuses.size(); ++k)
    entry.requests[k] = &requests_family_.Add({{"route", entry.route}, {"status", std::to_string(statuses[k])}});
  routes_published_.store(published + 1, std::memory_order_release);
  return &entry;
}

void api_metrics::request_done(std::string_view route, unsigned status, double seconds) {
  const auto* series = series_of(route);
  const auto known = std::find(statuses.begin(), statuses.end(), status);
  if (series && known != statuses.end()) {
    series->requests[static_cast<std::size_t>(known - statuses.begin())]->Increment();
    series->duration->Observe(seconds);
    return;
  }
  // A status not resolved up front, or a full table: prometheus-cpp's own (locked) lookup.
  const std::string label(route);
  requests_family_.Add({{"route", label}, {"status", std::to_string(status)}}).Increment();
  (series ? *series->duration : duration_family_.Add({{"route", label}}, latency_buckets())).Observe(seconds);
}

void api_metrics::request_unread(unsigned status) {
  const auto* series = series_of(other_route);
  const auto known = std::find(statuses.begin(), statuses.end(), status);
  if (series && known != statuses.end())
    series->requests[static_cast<std::size_t>(known - statuses.begin())]->Increment();
  else
    requests_family_.Add({{"route", std::string(other_route)}, {"status", std::to_string(status)}}).Increment();
}

void api_metrics::transaction_committed(std::size_t commands, std::size_t events, double seconds) {
  transaction_duration_.Observe(seconds);
  transaction_commands_.Observe(static_cast<double>(commands));
  commands_committed_.Increment(static_cast<double>(commands));
  events_appended_.Increment(static_cast<double>(events));
}

void api_metrics::transaction_failed(bool outcome_unknown, double seconds) {
  transaction_duration_.Observe(seconds);
  (outcome_unknown ? transactions_unknown_ : transactions_aborted_).Increment();
}

std::string api_metrics::scrape(std::size_t open_connections, std::size_t queue_commands,
                                const idempotency_sample& idempotency) {
  open_connections_.Set(static_cast<double>(open_connections));
  queue_commands_.Set(static_cast<double>(queue_commands));
  idempotency_window_.Set(idempotency.window_held_s);
  idempotency_keys_.Set(static_cast<double>(idempotency.keys));
  idempotency_keys_max_.Set(static_cast<double>(idempotency.keys_max));
  idempotency_bytes_.Set(static_cast<double>(idempotency.bytes));
  return prometheus::TextSerializer{}.Serialize(registry_.Collect());
}

}  // namespace credits::api
