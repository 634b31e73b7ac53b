#pragma once

#include <optional>
#include <string>
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
};

// `params` are the query parameters as strings. `now` bounds an open-ended summary range.
std::variant<list_params, rejection> parse_list_params(const nlohmann::json& params, time_ms now);

}  // namespace credits::api
