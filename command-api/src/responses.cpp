#include "credits/command_api/responses.hpp"

#include "credits/common/assert.hpp"
#include "credits/common/overloaded.hpp"

namespace credits::api {
namespace {

using nlohmann::json;

json reservation_json(const account_state& account, const reservation_state& r) {
  return {{"id", r.id},
          {"accountId", account.id},
          {"externalId", account.external_id},
          {"amount", r.amount},
          {"status", to_string(r.status)},
          {"createdAt", format_time(r.created_at)},
          {"expiresAt", format_time(r.expires_at)},
          {"operation", r.operation},
          {"model", r.model},
          {"metadata", r.metadata}};
}

const reservation_state& reservation_of(const account_state& account, const std::string& id) {
  auto it = account.reservations.find(id);
  CREDITS_ASSERT(it != account.reservations.end(), "rendering a reservation the state does not hold");
  return it->second;
}

}  // namespace

unsigned http_status(error_code code) {
  switch (code) {
    case error_code::invalid_request:
      return 400;
    case error_code::unauthorized:
      return 401;
    case error_code::forbidden:
      return 403;
    case error_code::rate_limited:
      return 429;
    case error_code::account_not_found:
    case error_code::reservation_not_found:
    case error_code::transaction_not_found:
    case error_code::route_not_found:
      return 404;
    case error_code::method_not_allowed:
      return 405;
    case error_code::insufficient_credits:
      return 402;
    case error_code::account_exists:
    case error_code::reservation_not_pending:
    case error_code::reservation_expired:
    case error_code::transaction_account_mismatch:
    case error_code::idempotency_key_reused:
    case error_code::idempotency_key_in_flight:
      return 409;
    case error_code::payload_too_large:
      return 413;
    case error_code::unavailable:
      return 503;
    case error_code::internal:
      return 500;
  }
  return 500;
}

json error_body(const rejection& r) {
  json error = {{"code", to_string(r.code)}, {"message", r.message}};
  if (!r.field.empty()) error["field"] = r.field;
  if (!r.details.is_null()) error["details"] = r.details;
  return {{"success", false}, {"error", std::move(error)}};
}

json account_json(const std::string& id, const std::string& name, const std::string& external_id,
                  const std::string& email, const json& metadata, const std::string& created_at) {
  return {{"id", id},       {"name", name},         {"externalId", external_id},
          {"email", email}, {"metadata", metadata}, {"createdAt", created_at}};
}

json render(const event& e, const account_state& account) {
  return std::visit(
      overloaded{
          [&](const account_created& p) -> json {
            return {{"success", true},
                    {"account",
                     account_json(account.id, p.name, p.external_id, p.email, p.metadata, format_time(e.occurred_at))}};
          },
          [&](const credits_added& p) -> json {
            return {{"success", true},
                    {"accountId", account.id},
                    {"externalId", account.external_id},
                    {"balance", p.balance_after},
                    {"added", p.amount},
                    {"transactionId", p.transaction_id}};
          },
          [&](const credits_deducted& p) -> json {
            return {{"success", true},
                    {"accountId", account.id},
                    {"externalId", account.external_id},
                    {"balance", p.balance_after},
                    {"deducted", p.amount},
                    {"transactionId", p.transaction_id}};
          },
          [&](const credits_reserved& p) -> json {
            auto r = reservation_json(account, reservation_of(account, p.reservation_id));
            r["status"] = "pending";  // as it was when created, also when rendered again later
            return {{"success", true}, {"reservation", std::move(r)}};
          },
          [&](const reservation_confirmed& p) -> json {
            return {{"success", true},
                    {"reservationId", p.reservation_id},
                    {"transactionId", p.transaction_id},
                    {"accountId", account.id},
                    {"externalId", account.external_id},
                    {"amountCharged", p.charged},
                    {"amountReleased", p.released},
                    {"balance", p.balance_after}};
          },
          [&](const reservation_cancelled& p) -> json {
            auto r = reservation_json(account, reservation_of(account, p.reservation_id));
            r["status"] = "cancelled";
            return {{"success", true}, {"reservation", std::move(r)}, {"amountReleased", p.released}};
          },
          [&](const reservation_expired& p) -> json {
            auto r = reservation_json(account, reservation_of(account, p.reservation_id));
            r["status"] = "expired";
            return {{"success", true}, {"reservation", std::move(r)}, {"amountReleased", p.released}};
          },
          [&](const usage_recorded& p) -> json {
            return {{"success", true},
                    {"usage",
                     {{"id", p.usage_id},
                      {"accountId", account.id},
                      {"externalId", account.external_id},
                      {"context", p.context},
                      {"transactionId", p.transaction_id.empty() ? json(nullptr) : json(p.transaction_id)},
                      {"modelId", p.model_id},
                      {"usageType", p.usage_type},
                      {"inputTokens", p.input_tokens},
                      {"outputTokens", p.output_tokens},
                      {"cachedTokens", p.cached_tokens},
                      {"totalTokens", p.input_tokens + p.output_tokens},
                      {"metadata", p.metadata},
                      {"costCredits", p.cost_credits ? json(*p.cost_credits) : json(nullptr)},
                      {"createdAt", format_time(e.occurred_at)}}}};
          },
          [&](const transaction_reversed& p) -> json {
            return {{"success", true},
                    {"accountId", account.id},
                    {"externalId", account.external_id},
                    {"transactionId", p.transaction_id},
                    {"reversalOf", p.original_transaction_id},
                    {"amount", p.amount},
                    {"balance", p.balance_after}};
          },
          [&](const balance_low& p) -> json {  // a signal that follows its cause; never a command's own answer
            return {{"success", true},        {"accountId", account.id},  {"balance", p.balance},
                    {"reserved", p.reserved}, {"available", p.available}, {"threshold", p.threshold}};
          },
      },
      e.payload);
}

}  // namespace credits::api
