#include "credits/read_model/layout.hpp"

#include <cstdio>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "credits/common/events.hpp"
#include "credits/common/ids.hpp"

namespace credits::read_model {
namespace {

std::string tagged(std::string_view prefix, std::string_view account_id) {
  std::string key;
  key.reserve(prefix.size() + account_id.size() + 2);
  key.append(prefix).append("{").append(account_id).append("}");
  return key;
}

}  // namespace

std::string poison_field(std::string_view topic, std::int32_t partition, std::int64_t offset) {
  return position_field(topic, partition).append(":").append(std::to_string(offset));
}

std::string view_topic_field(std::string_view topic) { return std::string("topic:").append(topic); }

std::string account_key(std::string_view account_id) { return tagged("credits:account:", account_id); }
std::string voided_key(std::string_view account_id) { return tagged("credits:voided:", account_id); }
std::string applied_key(std::string_view tag) { return tagged("credits:applied:", tag); }

std::string reservation_key(std::string_view account_id, std::string_view reservation_id) {
  return tagged("credits:reservation:", account_id).append(":").append(reservation_id);
}

std::string reservations_key(std::string_view account_id) { return tagged("credits:reservations:", account_id); }

std::string position_field(std::string_view topic, std::int32_t partition) {
  return std::string(topic).append(":").append(std::to_string(partition));
}

std::string usage_key(std::string_view account_id, std::string_view usage_id) {
  return tagged("credits:usage:", account_id).append(":").append(usage_id);
}

std::string usage_daily_key(std::string_view account_id, std::string_view day) {
  return tagged(usage_daily_prefix, account_id).append(":").append(day);
}

std::string accounts_key(std::string_view tenant) { return tagged("credits:accounts:", tenant); }
std::string transactions_key(std::string_view account_id) { return tagged("credits:transactions:", account_id); }
std::string transaction_entries_key(std::string_view account_id) { return tagged("credits:transaction:", account_id); }
std::string usage_records_key(std::string_view account_id) { return tagged("credits:usage-records:", account_id); }
std::string usage_summary_key(std::string_view account_id, std::string_view day) {
  return tagged(usage_summary_prefix, account_id).append(":").append(day);
}
std::string tenant_usage_summary_key(std::string_view tenant, std::string_view day) {
  return tagged(std::string(usage_summary_prefix) + "tenant:", tenant).append(":").append(day);
}
std::string grant_key(std::string_view account_id) { return tagged("credits:grant:", account_id); }
std::string grant_field(std::string_view grant_id, std::string_view counter) {
  return std::string(grant_id).append("|").append(counter);
}
std::vector<std::string> grant_fields(std::string_view grant_id) {
  std::vector<std::string> out{std::string(grant_id)};
  for (const auto counter : grant_counters) out.push_back(grant_field(grant_id, counter));
  out.push_back(grant_field(grant_id, "status"));
  return out;
}
std::unordered_map<std::string, std::string> grant_hash(std::string_view grant_id,
                                                        const std::vector<std::optional<std::string>>& values) {
  std::unordered_map<std::string, std::string> h;
  if (values.empty() || !values[0]) return h;
  const auto terms = nlohmann::json::parse(*values[0], nullptr, false);
  if (!terms.is_object())
    throw std::runtime_error("read model: the terms of grant " + std::string(grant_id) + " are damaged");
  for (const auto& [name, value] : terms.items())
    h.emplace(name, value.is_string() ? value.get<std::string>() : value.dump());
  // The terms left out (fold.cpp): the defaults, and the transaction id of the grant's own id.
  h.emplace("priority", std::to_string(grant_priority_default));
  h.emplace("category", to_string(grant_category::paid));
  if (auto transaction_id = transaction_id_of_grant(grant_id); !transaction_id.empty())
    h.emplace("transactionId", std::move(transaction_id));
  h["id"] = grant_id;
  for (std::size_t i = 0; i < std::size(grant_counters); ++i)
    if (i + 1 < values.size() && values[i + 1]) h[std::string(grant_counters[i])] = *values[i + 1];
  const auto status = std::size(grant_counters) + 1;
  h["status"] = status < values.size() && values[status] ? *values[status] : "active";
  return h;
}
std::string grants_key(std::string_view account_id) { return tagged("credits:grants:", account_id); }
std::string legacy_draws_key(std::string_view account_id) { return tagged("credits:legacy-draws:", account_id); }
std::string grant_expiries_key(std::string_view account_id) { return tagged("credits:grant-expiries:", account_id); }
std::string grant_report_key(std::string_view tenant, std::string_view day) {
  return tagged(std::string(grant_report_prefix) + "tenant:", tenant).append(":").append(day);
}
std::string grant_report_field(std::string_view metric, std::string_view category) {
  return std::string(metric).append("|").append(category);
}
std::string sequenced(std::int64_t offset, std::string_view id) {
  if (offset < 0) {  // no log offset is; kept printable all the same
    char digits[24];
    std::snprintf(digits, sizeof digits, "%019lld:", static_cast<long long>(offset));
    return std::string(digits).append(id);
  }
  std::string out(20, '0');
  out[19] = ':';
  for (std::size_t i = 19; i-- > 0 && offset > 0; offset /= 10) out[i] = static_cast<char>('0' + offset % 10);
  return out.append(id);
}

std::string_view sequenced_id(std::string_view member) {
  const auto colon = member.find(':');
  return colon == std::string_view::npos ? member : member.substr(colon + 1);
}

std::string usage_summary_field(std::string_view context, std::string_view metric, std::string_view model_id) {
  return std::string(context).append("|").append(metric).append("|").append(model_id);
}

}  // namespace credits::read_model
