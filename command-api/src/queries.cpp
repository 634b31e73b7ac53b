#include "credits/command_api/queries.hpp"

#include <charconv>

namespace credits::api {
namespace {

constexpr time_ms day_ms = 86'400'000;

rejection bad(std::string field, std::string message) {
  return rejection{error_code::invalid_request, std::move(message), std::move(field), nullptr};
}

std::string param(const nlohmann::json& params, const char* name) {
  const auto it = params.find(name);
  return it != params.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::optional<time_ms> time_param(const nlohmann::json& params, const char* name, std::optional<rejection>& error) {
  const auto text = param(params, name);
  if (text.empty()) return std::nullopt;
  const auto t = parse_time(text);
  if (!t && !error) error = bad(name, std::string(name) + " must be an RFC 3339 UTC time, e.g. 2026-11-29T00:00:00Z");
  return t;
}

std::optional<bool> flag(const std::string& text) {
  if (text.empty() || text == "false" || text == "0") return false;
  if (text == "true" || text == "1") return true;
  return std::nullopt;
}

}  // namespace

std::variant<list_params, rejection> parse_list_params(const nlohmann::json& params, time_ms now,
                                                       std::string_view path) {
  list_params out;
  out.query.limit = list_limit_default;
  if (const auto limit = param(params, "limit"); !limit.empty()) {
    std::size_t n = 0;
    const auto [p, ec] = std::from_chars(limit.data(), limit.data() + limit.size(), n);
    if (ec != std::errc{} || p != limit.data() + limit.size() || n < 1 || n > list_limit_max)
      return bad("limit", "limit must be an integer from 1 to " + std::to_string(list_limit_max));
    out.query.limit = n;
  }
  if (const auto cursor = param(params, "cursor"); !cursor.empty()) {
    out.query.after = read_model::page_cursor::parse(cursor);
    if (!out.query.after) return bad("cursor", "cursor is not one this API returned as nextCursor");
  }
  std::optional<rejection> error;
  const auto start = time_param(params, "startDate", error);
  const auto end = time_param(params, "endDate", error);
  out.as_of = time_param(params, "asOf", error);
  if (error) return *error;
  if (start) out.query.from = *start;
  if (end) out.query.to = *end - 1;  // endDate is exclusive
  if (start && end && *end <= *start) return bad("endDate", "endDate must be later than startDate");

  out.type = param(params, "type");
  if (!out.type.empty() && out.type != "credit" && out.type != "debit" && out.type != "charge" &&
      out.type != "reversal")
    return bad("type", "type must be credit, debit, charge or reversal");
  out.model_id = param(params, "modelId");
  out.context = param(params, "context");
  if (!out.context.empty() && out.context != "customer" && out.context != "system")
    return bad("context", "context must be \"customer\" or \"system\"");
  out.usage_type = param(params, "usageType");
  const auto active = flag(param(params, "activeOnly"));
  const auto summary = flag(param(params, "summary"));
  if (!active) return bad("activeOnly", "activeOnly must be true or false");
  if (!summary) return bad("summary", "summary must be true or false");
  out.active_only = *active;
  out.summary = *summary;
  const bool balance = path == "/v1/accounts/balance";
  const auto include = balance ? param(params, "include") : std::string();
  if (!include.empty() && include != "grants") return bad("include", "include must be \"grants\"");
  out.include_grants = include == "grants";
  if (const auto days = balance ? param(params, "expiringWithinDays") : std::string(); !days.empty()) {
    out.include_grants = true;
    const auto [p, ec] = std::from_chars(days.data(), days.data() + days.size(), out.expiring_within_days);
    if (ec != std::errc{} || p != days.data() + days.size() || out.expiring_within_days < 0 ||
        out.expiring_within_days > expiring_within_days_max)
      return bad("expiringWithinDays",
                 "expiringWithinDays must be an integer from 0 to " + std::to_string(expiring_within_days_max));
  }
  if (path == "/v1/accounts/grants") out.status = param(params, "status");
  if (!out.status.empty() && out.status != "active" && out.status != "expired" && out.status != "voided")
    return bad("status", "status must be active, expired or voided");

  if (out.summary || path == "/v1/reports/credits") {
    // Whole UTC days: from startDate's day (default: 30 days before endDate) to endDate's (default: today).
    const time_ms last = end ? *end - 1 : now;
    const time_ms first = start ? *start : last - 29 * day_ms;
    const auto first_day = first - ((first % day_ms) + day_ms) % day_ms;
    if ((last - first_day) / day_ms + 1 > static_cast<time_ms>(summary_days_max))
      return bad("startDate", "a summary or report covers at most " + std::to_string(summary_days_max) + " days");
    for (time_ms d = first_day; d <= last; d += day_ms) out.days.push_back(format_time(d).substr(0, 10));
    if (out.days.empty()) return bad("startDate", "startDate must not be later than endDate or now");
  }
  return out;
}

}  // namespace credits::api
