#include "credits/common/replay.hpp"

#include <algorithm>

#include "credits/common/overloaded.hpp"

namespace credits {
namespace {

// What a record that does not decode still says about itself: its eventId and tenant when its text is a JSON
// object that holds them as strings.
std::pair<std::string, std::string> id_and_tenant(std::string_view value) {
  const auto j = nlohmann::json::parse(value, nullptr, false);
  if (!j.is_object()) return {};
  const auto string_at = [&](const char* name) {
    const auto it = j.find(name);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  return {string_at("eventId"), string_at("tenant")};
}

}  // namespace

std::string position_of(const log_record& r) {
  return std::string(r.topic) + ":" + std::to_string(r.partition) + ":" + std::to_string(r.offset);
}

std::optional<std::string> admission_error(const event& e, std::string_view key, stream topic_stream,
                                           std::int32_t partition, std::int32_t home_partition) {
  if (key.empty()) return std::string("the record has no key");
  if (key != e.account_id) return "key " + std::string(key) + " is not the event's account " + e.account_id;
  const auto type = std::string(type_name(e.payload));
  if (stream_of(e.payload) != topic_stream)
    return type + " does not belong on the " + (topic_stream == stream::ledger ? "ledger" : "usage") + " topic";
  if (home_partition != partition)
    return "key " + std::string(key) + " belongs to partition " + std::to_string(home_partition) + ", not " +
           std::to_string(partition);
  std::optional<std::string> out_of_range;
  const auto check = [&](const char* field, std::int64_t n) {
    if (!out_of_range && (n < 0 || n > amount_max))
      out_of_range = type + " " + field + " " + std::to_string(n) + " is outside 0.." + std::to_string(amount_max);
  };
  std::visit(overloaded{
                 [](const account_created&) {},
                 [](const event_voided&) {},
                 [&](const credits_added& p) {
                   check("amount", p.amount);
                   check("balanceAfter", p.balance_after);
                 },
                 [&](const credits_deducted& p) {
                   check("amount", p.amount);
                   check("balanceAfter", p.balance_after);
                 },
                 [&](const credits_reserved& p) { check("amount", p.amount); },
                 [&](const reservation_confirmed& p) {
                   check("charged", p.charged);
                   check("released", p.released);
                   check("balanceAfter", p.balance_after);
                   check("overcaptured", p.overcaptured);
                 },
                 [&](const reservation_cancelled& p) { check("released", p.released); },
                 [&](const reservation_expired& p) { check("released", p.released); },
                 [&](const usage_recorded& p) {
                   check("inputTokens", p.input_tokens);
                   check("outputTokens", p.output_tokens);
                   check("cachedTokens", p.cached_tokens);
                 },
                 [&](const transaction_reversed& p) {
                   check("amount", p.amount);
                   check("balanceAfter", p.balance_after);
                 },
                 [&](const balance_low& p) {
                   check("threshold", p.threshold);
                   check("balance", p.balance);
                   check("reserved", p.reserved);
                 },
             },
             e.payload);
  return out_of_range;
}

replayed replay(ledger_state& state, const log_record& r) {
  replayed out;
  std::string error;
  out.e = decode(r.value, &error);
  std::optional<std::string> refused =
      out.e ? admission_error(*out.e, r.key, r.topic_stream, r.partition, r.home_partition)
            : std::optional<std::string>("undecodable: " + error);
  if (!refused) refused = violation(state, *out.e);
  if (!refused) {
    apply(state, *out.e);
    return out;
  }
  out.reason = std::move(*refused);
  if (r.key.empty()) {
    out.result = replayed::outcome::unkeyed;
    return out;
  }
  out.result = replayed::outcome::quarantined;
  auto [id, tenant] = out.e ? std::pair(out.e->event_id, out.e->tenant) : id_and_tenant(r.value);
  auto position = position_of(r);
  if (id.empty()) id = position;
  auto& records = state.quarantined[std::string(r.key)];
  // A record read twice (the writer replays a partition again after a failed append) is quarantined once.
  const bool known =
      std::any_of(records.begin(), records.end(), [&](const quarantined_record& q) { return q.position == position; });
  if (!known) records.push_back(quarantined_record{std::move(id), std::move(position), out.reason, std::move(tenant)});
  return out;
}

}  // namespace credits
