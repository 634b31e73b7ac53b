#include <gtest/gtest.h>

#include "credits/command_api/api_config.hpp"
#include "credits/command_api/queries.hpp"

namespace credits::api {
namespace {

constexpr time_ms now = 1'764'432'082'123;  // 2025-11-29T16:01:22.123Z

list_params accepted(const nlohmann::json& params) {
  auto r = parse_list_params(params, now);
  EXPECT_TRUE(std::holds_alternative<list_params>(r)) << std::get<rejection>(r).message;
  return std::holds_alternative<list_params>(r) ? std::get<list_params>(r) : list_params{};
}

std::string refused_field(const nlohmann::json& params) {
  auto r = parse_list_params(params, now);
  EXPECT_TRUE(std::holds_alternative<rejection>(r)) << params.dump();
  return std::holds_alternative<rejection>(r) ? std::get<rejection>(r).field : "";
}

TEST(list_params, the_grant_parameters_are_read_by_their_own_endpoints_only) {
  const auto on = [](const char* path, const nlohmann::json& params) { return parse_list_params(params, now, path); };
  const auto field = [](const std::variant<list_params, rejection>& r) {
    return std::holds_alternative<rejection>(r) ? std::get<rejection>(r).field : std::string();
  };
  // The balance: include=grants, or a window (which implies it), 0..3650 days.
  EXPECT_FALSE(std::get<list_params>(on("/v1/accounts/balance", nlohmann::json::object())).include_grants);
  const auto week = std::get<list_params>(on("/v1/accounts/balance", {{"include", "grants"}}));
  EXPECT_TRUE(week.include_grants);
  EXPECT_EQ(week.expiring_within_days, 7);
  const auto month = std::get<list_params>(on("/v1/accounts/balance", {{"expiringWithinDays", "30"}}));
  EXPECT_TRUE(month.include_grants);
  EXPECT_EQ(month.expiring_within_days, 30);
  EXPECT_EQ(field(on("/v1/accounts/balance", {{"include", "all"}})), "include");
  for (const char* bad : {"-1", "3651", "7d"})
    EXPECT_EQ(field(on("/v1/accounts/balance", {{"expiringWithinDays", bad}})), "expiringWithinDays") << bad;
  // The grants: a status filter.
  EXPECT_EQ(std::get<list_params>(on("/v1/accounts/grants", {{"status", "expired"}})).status, "expired");
  EXPECT_EQ(field(on("/v1/accounts/grants", {{"status", "pending"}})), "status");
  // Elsewhere they are not parameters at all, as before grants: a reservation listing's `status` is ignored.
  EXPECT_EQ(field(on("/v1/reservations", {{"status", "pending"}, {"include", "x"}})), "");
  // The credits report covers whole days, like a usage summary.
  EXPECT_EQ(std::get<list_params>(on("/v1/reports/credits", {{"startDate", "2025-11-28T00:00:00Z"}})).days,
            (std::vector<std::string>{"2025-11-28", "2025-11-29"}));
}

TEST(list_params, defaults_and_bounds) {
  const auto p = accepted(nlohmann::json::object());
  EXPECT_EQ(p.query.limit, list_limit_default);
  EXPECT_FALSE(p.query.after);
  EXPECT_EQ(accepted({{"limit", "200"}}).query.limit, 200u);
  for (const char* bad : {"0", "201", "-1", "1x"}) EXPECT_EQ(refused_field({{"limit", bad}}), "limit") << bad;
}

TEST(list_params, end_date_is_exclusive_and_after_the_start) {
  const auto p = accepted({{"startDate", "2025-11-29T00:00:00Z"}, {"endDate", "2025-11-30T00:00:00Z"}});
  EXPECT_EQ(p.query.from, 1'764'374'400'000);
  EXPECT_EQ(p.query.to, 1'764'460'799'999);
  EXPECT_EQ(refused_field({{"startDate", "2025-11-30T00:00:00Z"}, {"endDate", "2025-11-30T00:00:00Z"}}), "endDate");
  EXPECT_EQ(refused_field({{"startDate", "yesterday"}}), "startDate");
  EXPECT_EQ(refused_field({{"asOf", "2025-02-30T00:00:00Z"}}), "asOf");
}

TEST(list_params, cursors_round_trip_and_garbage_is_refused) {
  const read_model::page_cursor c{1'764'432'082'123, "0000000000000000042:txn_1"};
  const auto p = accepted({{"cursor", c.to_string()}});
  ASSERT_TRUE(p.query.after);
  EXPECT_EQ(p.query.after->score, c.score);
  EXPECT_EQ(p.query.after->member, c.member);
  for (const char* bad : {"garbage", ".x", "12.", "x1.y", "-5.x", "+5.x", " 5.x", "1234567890123456789.x"})
    EXPECT_EQ(refused_field({{"cursor", bad}}), "cursor") << bad;
  EXPECT_EQ(accepted({{"cursor", "999999999999999999.x.y"}}).query.after->member, "x.y");
}

TEST(list_params, filters_are_checked) {
  EXPECT_EQ(accepted({{"type", "charge"}}).type, "charge");
  EXPECT_EQ(refused_field({{"type", "refund"}}), "type");
  EXPECT_EQ(accepted({{"type", "reversal"}}).type, "reversal");
  EXPECT_EQ(refused_field({{"context", "everyone"}}), "context");
  EXPECT_TRUE(accepted({{"activeOnly", "true"}}).active_only);
  EXPECT_EQ(refused_field({{"activeOnly", "yes"}}), "activeOnly");
  EXPECT_EQ(refused_field({{"summary", "2"}}), "summary");
}

TEST(list_params, a_summary_covers_whole_utc_days_up_to_a_year) {
  const auto p = accepted({{"summary", "true"}});
  ASSERT_EQ(p.days.size(), 30u);  // the default: the 30 days up to now
  EXPECT_EQ(p.days.front(), "2025-10-31");
  EXPECT_EQ(p.days.back(), "2025-11-29");
  const auto one =
      accepted({{"summary", "true"}, {"startDate", "2025-11-29T23:00:00Z"}, {"endDate", "2025-11-30T00:00:01Z"}});
  EXPECT_EQ(one.days, (std::vector<std::string>{"2025-11-29", "2025-11-30"}));
  EXPECT_EQ(refused_field({{"summary", "true"}, {"startDate", "2024-01-01T00:00:00Z"}}), "startDate");
  EXPECT_EQ(refused_field({{"summary", "true"}, {"startDate", "2025-12-25T00:00:00Z"}}), "startDate");  // after now
}

}  // namespace
}  // namespace credits::api

namespace credits::api {
namespace {

TEST(model_prices, parse_decimals_exactly_per_tenant_or_for_all) {
  const auto t = parse_prices("gpt-4o=2.5/10/1.25,tenant_a:claude=3/15/0.000001");
  EXPECT_EQ(t.at({"*", "gpt-4o"}), (model_price{2'500'000, 10'000'000, 1'250'000}));
  EXPECT_EQ(t.at({"tenant_a", "claude"}), (model_price{3'000'000, 15'000'000, 1}));
  for (const char* bad : {"gpt-4o", "=1/2/3", "m=1/2", "m=1/2/3/4", "m=1.2345678/1/1", "m=-1/1/1", "m=1./1/1",
                          "m=1/2/3,m=1/2/3", "m=abc/1/1"})
    EXPECT_THROW(parse_prices(bad), std::invalid_argument) << bad;
}

TEST(model_prices, cost_is_rounded_up_and_tenant_prices_win) {
  const auto t = parse_prices("gpt-4o=2.5/10/1.25,tenant_a:gpt-4o=1/1/1");
  EXPECT_EQ(usage_cost(t, "tenant_b", "gpt-4o", 1000, 320, 0), 6);  // 2.5 + 3.2 = 5.7
  EXPECT_EQ(usage_cost(t, "tenant_b", "gpt-4o", 0, 0, 800), 1);     // 1.0 exactly
  EXPECT_EQ(usage_cost(t, "tenant_b", "gpt-4o", 0, 0, 0), 0);
  EXPECT_EQ(usage_cost(t, "tenant_a", "gpt-4o", 1000, 1000, 1000), 3);
  EXPECT_EQ(usage_cost(t, "tenant_b", "claude", 1000, 0, 0), std::nullopt);
  // 128-bit products: exact near the limits, capped at the maximum amount beyond them.
  EXPECT_EQ(usage_cost(t, "t", "gpt-4o", amount_max, amount_max, amount_max), 123'848'989'752'689);  // x 13.75 / 1K
  const auto dear = parse_prices("m=999999.999999/999999.999999/999999.999999");
  EXPECT_EQ(usage_cost(dear, "t", "m", amount_max, amount_max, amount_max), amount_max);
}

}  // namespace
}  // namespace credits::api
