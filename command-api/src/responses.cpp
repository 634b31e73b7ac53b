#include "credits/command_api/responses.hpp"

#include <iterator>

#include "credits/common/assert.hpp"
#include "credits/common/ids.hpp"
#include "credits/common/overloaded.hpp"

namespace credits::api {
namespace {

using nlohmann::json;

// The reservation an event names, as the account held it when the answer's facts were taken.
json reservation_json(const account_facts& account, std::string_view status) {
  CREDITS_ASSERT(account.reservation.has_value(), "rendering a reservation the facts do not hold");
  const auto& r = *account.reservation;
  return {{"id", r.id},
          {"accountId", account.id},
          {"externalId", account.external_id},
          {"amount", r.amount},
          {"status", status},
          {"createdAt", format_time(r.created_at)},
          {"expiresAt", format_time(r.expires_at)},
          {"operation", r.operation},
          {"model", r.model},
          {"metadata", r.metadata}};
}

// One success body per event type (render()).
struct body_renderer {
  const event& e;
  const account_facts& account;

  json operator()(const account_created& p) const {
    return {
        {"success", true},
        {"account", account_json(account.id, p.name, p.external_id, p.email, p.metadata, format_time(e.occurred_at))}};
  }
  json operator()(const credits_added& p) const {
    json grant{
        {"grantId", grant_of(p)},
        {"expiresAt", p.expires_at ? json(format_time(*p.expires_at)) : json(nullptr)},
        {"priority", p.priority.value_or(grant_priority_default)},
        {"category", to_string(p.category.value_or(grant_category::paid))},
        {"costBasis", p.cost ? json{{"amount", p.cost->amount}, {"currency", p.cost->currency}} : json(nullptr)}};
    json out{{"success", true},
             {"accountId", account.id},
             {"externalId", account.external_id},
             {"balance", p.balance_after},
             {"added", p.amount},
             {"transactionId", p.transaction_id}};
    out.update(grant);
    return out;
  }
  json operator()(const credits_deducted& p) const {
    if (p.reason == reason_grant_voided)  // POST /v1/grants/void
      return {{"success", true},
              {"accountId", account.id},
              {"externalId", account.external_id},
              {"grantId", p.grant_id},
              {"voided", p.amount},
              {"balance", p.balance_after},
              {"transactionId", p.transaction_id}};
    return {{"success", true},
            {"accountId", account.id},
            {"externalId", account.external_id},
            {"balance", p.balance_after},
            {"deducted", p.amount},
            {"transactionId", p.transaction_id},
            {"draws", draws_json(p.draws.value_or(grant_draws{}))}};
  }
  json operator()(const credits_reserved&) const {
    // As it was when created, also when rendered again later.
    return {{"success", true}, {"reservation", reservation_json(account, "pending")}};
  }
  json operator()(const reservation_confirmed& p) const {
    return {{"success", true},
            {"reservationId", p.reservation_id},
            {"transactionId", p.transaction_id},
            {"accountId", account.id},
            {"externalId", account.external_id},
            {"amountCharged", p.charged + p.overcaptured},
            {"amountReleased", p.released},
            // After the over-capture's deduction, which follows this event in the same transaction.
            {"balance", p.balance_after - p.overcaptured},
            {"overcaptured", p.overcaptured},
            {"overcaptureTransactionId",
             p.overcaptured > 0 ? json(derived_transaction_id(account.id, p.transaction_id, reason_overcapture))
                                : json(nullptr)},
            {"draws", draws_json(p.draws.value_or(grant_draws{}))}};
  }
  json operator()(const reservation_cancelled& p) const {
    return {{"success", true}, {"reservation", reservation_json(account, "cancelled")}, {"amountReleased", p.released}};
  }
  json operator()(const reservation_expired& p) const {
    return {{"success", true}, {"reservation", reservation_json(account, "expired")}, {"amountReleased", p.released}};
  }
  json operator()(const usage_recorded& p) const {
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
  }
  json operator()(const transaction_reversed& p) const {
    return {{"success", true},
            {"accountId", account.id},
            {"externalId", account.external_id},
            {"transactionId", p.transaction_id},
            {"reversalOf", p.original_transaction_id},
            {"amount", p.amount},
            {"balance", p.balance_after}};
  }
  json operator()(const event_voided& p) const {
    return {{"success", true},
            {"voided",
             {{"eventId", p.voided_event_id},
              {"position", p.voided_position},
              {"accountId", e.account_id},
              {"reason", p.reason},
              {"voidedBy", e.api_key_id},
              {"voidedAt", format_time(e.occurred_at)},
              {"voidEventId", e.event_id}}},
            {"accountBlocked", !p.account_unblocked}};
  }
  json operator()(const balance_low& p) const {  // a signal that follows its cause; never a command's own answer
    return {{"success", true},        {"accountId", account.id},  {"balance", p.balance},
            {"reserved", p.reserved}, {"available", p.available}, {"threshold", p.threshold}};
  }
};

std::string_view message_of(unavailable_reason reason) {
  switch (reason) {
    case unavailable_reason::busy:
      return "the writer is busy or recovering; retry later";
    case unavailable_reason::partition_moved:
      return "this account's partition moved to another instance; retry";
    case unavailable_reason::log_unavailable:
      return "the event log is unavailable; retry later";
    case unavailable_reason::outcome_unknown:
      return "the outcome of the write is unknown; retry with the same Idempotency-Key";
    case unavailable_reason::first_answer_unreadable:
      return "the first answer to this Idempotency-Key cannot be read now; retry later";
  }
  return "retry later";
}

command_answer refused(const rejection& r) { return {http_status(r.code), error_body(r), {}, false}; }

// Each http_error's status and JSON code, in the enum's order.
struct http_error_row {
  unsigned status;
  std::string_view code;
};
constexpr http_error_row http_errors[] = {
    {401, "unauthorized"}, {403, "forbidden"},          {429, "rate_limited"},
    {404, "not_found"},    {405, "method_not_allowed"}, {413, "payload_too_large"},
};
static_assert(std::size(http_errors) == static_cast<std::size_t>(http_error::payload_too_large) + 1);

}  // namespace

unsigned http_status(error_code code) {
  switch (code) {
    case error_code::invalid_request:
      return 400;
    case error_code::account_not_found:
    case error_code::reservation_not_found:
    case error_code::transaction_not_found:
    case error_code::event_not_found:
    case error_code::grant_not_found:
      return 404;
    case error_code::account_blocked:
      return 423;
    case error_code::insufficient_credits:
      return 402;
    case error_code::account_exists:
    case error_code::reservation_not_pending:
    case error_code::reservation_expired:
    case error_code::transaction_account_mismatch:
    case error_code::idempotency_key_reused:
    case error_code::idempotency_key_in_flight:
    case error_code::grant_not_active:
      return 409;
    case error_code::unavailable:
      return 503;
    case error_code::internal:
      return 500;
  }
  return 500;
}

unsigned http_status(http_error code) { return http_errors[static_cast<std::size_t>(code)].status; }

std::string_view to_string(http_error code) { return http_errors[static_cast<std::size_t>(code)].code; }

json error_body(const rejection& r) {
  json error = {{"code", to_string(r.code)}, {"message", r.message}};
  if (!r.field.empty()) error["field"] = r.field;
  if (!r.details.is_null()) error["details"] = r.details;
  return {{"success", false}, {"error", std::move(error)}};
}

json error_body(http_error code, const std::string& message, const json& details) {
  json error = {{"code", to_string(code)}, {"message", message}};
  if (!details.is_null()) error["details"] = details;
  return {{"success", false}, {"error", std::move(error)}};
}

json account_json(const std::string& id, const std::string& name, const std::string& external_id,
                  const std::string& email, const json& metadata, const std::string& created_at) {
  return {{"id", id},       {"name", name},         {"externalId", external_id},
          {"email", email}, {"metadata", metadata}, {"createdAt", created_at}};
}

json render(const event& e, const account_facts& account) { return std::visit(body_renderer{e, account}, e.payload); }

command_answer answer_of(const command_result& result) {
  return std::visit(
      overloaded{
          [](const accepted& a) {
            return command_answer{200, render(a.e, a.account), a.position.to_string(), a.replayed};
          },
          [](const rejection& r) { return refused(r); },
          [](const unavailable& u) {
            return refused(rejection{error_code::unavailable, std::string(message_of(u.reason)), "", nullptr});
          },
          [](const in_flight&) {
            return refused(rejection{error_code::idempotency_key_in_flight,
                                     "a request with this Idempotency-Key is in flight", "", nullptr});
          },
          [](const elsewhere&) {  // forwarding it failed, or it was forwarded here already
            return refused(
                rejection{error_code::unavailable,
                          "this account's partition is moving between instances; retry with the same Idempotency-Key",
                          "", nullptr});
          },
      },
      result);
}

}  // namespace credits::api
