#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "credits/common/domain.hpp"
#include "credits/read_model/reads.hpp"

// The query parameters of the list and report endpoints, validated. Pure: the HTTP side reads the view.
namespace credits::api {

inline constexpr std::size_t list_limit_default = 50;
inline constexpr std::size_t list_limit_max = 200;
inline constexpr std::size_t summary_days_max = 366;  // a usage summary covers at most a year of days

inline constexpr int expiring_within_days_default = 7;
inline constexpr int expiring_within_days_max = 3650;

struct list_params {
  read_model::list_query query;
  std::string type;               // transactions: credit, debit, charge, reversal
  std::string model_id;           // usage
  std::string context;            // usage: customer or system
  std::string usage_type;         // usage
  bool active_only = false;       // reservations: pending and not yet expired
  bool summary = false;           // usage: totals instead of records
  std::vector<std::string> days;  // usage summary: every UTC day from startDate to endDate
  std::optional<time_ms> as_of;   // balance
  // balance: the grant details (byCategory, expiringSoon), asked for with include=grants or expiringWithinDays. Not
  // by default: the Get Started answer keeps its exact upstream shape.
  bool include_grants = false;
  int expiring_within_days = expiring_within_days_default;  // balance: the window of expiringSoon
  std::string status;                                       // grants: active, expired or voided
};

// `params` are the query parameters as strings, of a query to `path`. `now` bounds an open-ended summary range. A
// usage summary (summary=true) and the credits report cover whole UTC days (`days`). The parameters of one endpoint
// alone (a grant's `status`, the balance's `include`) are read for that endpoint only.
std::variant<list_params, rejection> parse_list_params(const nlohmann::json& params, time_ms now,
                                                       std::string_view path = {});

}  // namespace credits::api
