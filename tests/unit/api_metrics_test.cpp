// The API's metrics: route labels, request and Kafka transaction series.
#include <gtest/gtest.h>

#include <prometheus/text_serializer.h>

#include <string>

#include "credits/command_api/api_metrics.hpp"
#include "prometheus_text.hpp"

namespace credits {
namespace {

using credits::test::sample;

TEST(route_label, an_api_route_is_its_own_path_without_the_query_string) {
  EXPECT_EQ(api::route_label("/v1/accounts/balance?accountId=acc_123", true), "/v1/accounts/balance");
  EXPECT_EQ(api::route_label("/v1/accounts/credits/add", true), "/v1/accounts/credits/add");
}

TEST(route_label, operational_paths_are_recognised_without_the_router) {
  EXPECT_EQ(api::route_label("/healthz", false), "/healthz");
  EXPECT_EQ(api::route_label("/readyz?verbose=1", false), "/readyz");
  EXPECT_EQ(api::route_label("/metrics", false), "/metrics");
}

TEST(route_label, anything_else_is_one_label_so_clients_cannot_grow_the_set) {
  EXPECT_EQ(api::route_label("/v1/accounts/acc_123", false), api::other_route);
  EXPECT_EQ(api::route_label("/../../etc/passwd", false), api::other_route);
  EXPECT_EQ(api::route_label("", false), api::other_route);
  EXPECT_EQ(api::route_label("?x=1", true), api::other_route);
  EXPECT_EQ(api::route_label("/healthzz", false), api::other_route);
}

TEST(api_metrics, requests_are_counted_by_route_and_status_and_timed_by_route) {
  api::api_metrics m;
  m.request_done("/v1/accounts/credits/add", 200, 0.002);
  m.request_done("/v1/accounts/credits/add", 200, 0.004);
  m.request_done("/v1/accounts/credits/add", 422, 0.001);  // a status not resolved up front
  m.request_done("/v1/accounts/credits/add", 402, 0.001);
  m.request_unread(413);
  const auto text = m.scrape(7, 3);
  EXPECT_EQ(sample(text, R"(credits_api_http_requests_total{route="/v1/accounts/credits/add",status="200"})"), 2);
  EXPECT_EQ(sample(text, R"(credits_api_http_requests_total{route="/v1/accounts/credits/add",status="402"})"), 1);
  EXPECT_EQ(sample(text, R"(credits_api_http_requests_total{route="/v1/accounts/credits/add",status="422"})"), 1);
  EXPECT_EQ(sample(text, R"(credits_api_http_requests_total{route="other",status="413"})"), 1);
  EXPECT_EQ(sample(text, R"(credits_api_http_request_duration_seconds_count{route="/v1/accounts/credits/add"})"), 4);
  EXPECT_EQ(
      sample(text, R"(credits_api_http_request_duration_seconds_bucket{route="/v1/accounts/credits/add",le="0.001"})"),
      2);
  EXPECT_EQ(sample(text, "credits_api_open_connections"), 7);
  EXPECT_EQ(sample(text, "credits_api_writer_queue_commands"), 3);
}

TEST(api_metrics, kafka_transactions_count_commands_events_and_failures_by_outcome) {
  api::api_metrics m;
  m.transaction_committed(5, 6, 0.01);
  m.transaction_committed(1, 1, 0.02);
  m.transaction_failed(true, 5);
  m.transaction_failed(false, 0.1);
  m.transaction_failed(false, 0.1);
  m.idempotent_replay();
  m.redis_error();
  const auto text = m.scrape(0, 0);
  EXPECT_EQ(sample(text, "credits_api_commands_committed_total"), 6);
  EXPECT_EQ(sample(text, "credits_api_events_appended_total"), 7);
  EXPECT_EQ(sample(text, "credits_api_kafka_transaction_commands_count"), 2);
  EXPECT_EQ(sample(text, "credits_api_kafka_transaction_commands_sum"), 6);
  EXPECT_EQ(sample(text, "credits_api_kafka_transaction_duration_seconds_count"), 5);
  EXPECT_EQ(sample(text, R"(credits_api_kafka_transactions_failed_total{outcome="unknown"})"), 1);
  EXPECT_EQ(sample(text, R"(credits_api_kafka_transactions_failed_total{outcome="aborted"})"), 2);
  EXPECT_EQ(sample(text, "credits_api_idempotent_replays_total"), 1);
  EXPECT_EQ(sample(text, "credits_api_redis_errors_total"), 1);
}

}  // namespace
}  // namespace credits
