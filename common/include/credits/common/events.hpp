#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace credits {

// Amounts are whole credits. JSON numbers above 2^53 - 1 lose precision in JavaScript clients, so no amount
// and no balance may exceed it.
using amount_t = std::int64_t;
inline constexpr amount_t amount_max = (std::int64_t{1} << 53) - 1;

// Milliseconds since the Unix epoch, UTC.
using time_ms = std::int64_t;

// Credit grants. Every CreditsAdded creates one grant (its id is the transaction id with the prefix "grt": the
// same account digits, so it routes to the account's partition). Every event that takes credits from grants or
// returns them to grants says which and how many in `draws`; events written before grants carry none, and every
// fold computes them by the burn order at that point (domain.hpp), so the old log folds to the same grants.
enum class grant_category { paid, promotional };
std::string_view to_string(grant_category category);
std::optional<grant_category> grant_category_from(std::string_view text);

inline constexpr int grant_priority_min = 0;
inline constexpr int grant_priority_max = 100;
inline constexpr int grant_priority_default = 50;  // as Stripe's credit grants

// What was paid for a grant, for revenue reports: integer minor units of an ISO 4217 currency ("USD", "EUR").
struct cost_basis {
  amount_t amount = 0;
  std::string currency;
  bool operator==(const cost_basis&) const = default;
};
bool is_currency_code(std::string_view text);

// Credits taken from (or returned to) one grant.
struct grant_draw {
  std::string grant_id;
  amount_t amount = 0;
  bool operator==(const grant_draw&) const = default;
};
using grant_draws = std::vector<grant_draw>;
// [{grantId, amount}, ...], as events and answers show draws.
nlohmann::json draws_json(const grant_draws& draws);

// Why a CreditsDeducted took credits, when not a plain deduction. An expiry or a void of a grant is a deduction
// so that a consumer folding balances by the version 1 rules stays right (docs/events/README.md).
inline constexpr std::string_view reason_grant_expired = "grant_expired";
inline constexpr std::string_view reason_grant_voided = "grant_voided";
inline constexpr std::string_view reason_overcapture = "overcapture";

struct account_created {
  std::string name;
  std::string external_id;
  std::string email;
  nlohmann::json metadata = nlohmann::json::object();
};

struct credits_added {
  std::string transaction_id;
  amount_t amount = 0;
  amount_t balance_after = 0;
  std::string description;
  std::string payment_method;
  nlohmann::json metadata = nlohmann::json::object();
  // The grant it creates. Empty on events written before grants: the fold derives it from transaction_id.
  std::string grant_id = {};
  std::optional<time_ms> expires_at = std::nullopt;  // nullopt: never
  // Absent on events written before grants: grant_priority_default and paid.
  std::optional<int> priority = std::nullopt;
  std::optional<grant_category> category = std::nullopt;
  std::optional<cost_basis> cost = std::nullopt;  // what was paid for it, when the caller said
};

// The grant a CreditsAdded creates: its grantId, or for events written before grants the id derived from its
// transaction id (grant_id_of), or "grt:<transactionId>" when that is malformed.
std::string grant_of(const credits_added& p);

struct credits_deducted {
  std::string transaction_id;
  amount_t amount = 0;
  amount_t balance_after = 0;
  std::string description;
  nlohmann::json metadata = nlohmann::json::object();
  std::optional<grant_draws> draws = std::nullopt;  // nullopt: written before grants (the fold computes them)
  std::string reason = {};                          // empty, or one of the reason_* above
  std::string grant_id = {};                        // the grant expired or voided (those reasons only)
  std::string reservation_id = {};                  // the reservation over-captured (reason overcapture only)
};

struct credits_reserved {
  std::string reservation_id;
  amount_t amount = 0;
  time_ms expires_at = 0;
  std::string operation;
  std::string model;
  nlohmann::json metadata = nlohmann::json::object();
  std::optional<grant_draws> draws = std::nullopt;  // what the hold took; nullopt: written before grants
};

// charged + released always equals the reserved amount. `draws` is what was charged, taken from the hold's draws
// in their order; the rest of each held draw returns to its grant.
struct reservation_confirmed {
  std::string reservation_id;
  std::string transaction_id;
  amount_t charged = 0;
  amount_t released = 0;
  amount_t balance_after = 0;
  std::optional<grant_draws> draws = std::nullopt;
  // An over-capture: how much above the hold the caller's actualAmount was. The excess is not in this event's
  // money: the CreditsDeducted (reason overcapture) that follows it takes it. Here so that the answer (and a
  // replay of it) can say what was charged in all. 0: none.
  amount_t overcaptured = 0;
};

// Both return the whole hold to its grants; `draws` repeats the hold's draws.
struct reservation_cancelled {
  std::string reservation_id;
  amount_t released = 0;
  std::optional<grant_draws> draws = std::nullopt;
};

struct reservation_expired {
  std::string reservation_id;
  amount_t released = 0;
  std::optional<grant_draws> draws = std::nullopt;
};

// Usage moves no credits; it lives on its own topic.
struct usage_recorded {
  std::string usage_id;
  std::string context;         // "customer" or "system"
  std::string transaction_id;  // empty when not linked
  std::string model_id;
  std::string usage_type;
  std::int64_t input_tokens = 0;
  std::int64_t output_tokens = 0;
  std::int64_t cached_tokens = 0;
  nlohmann::json metadata = nlohmann::json::object();
  // What the usage cost in credits at the model's price when it was recorded (CREDITS_MODEL_PRICES); absent
  // when the model has no price. Reported, never charged: credits move through reservations and deductions.
  std::optional<amount_t> cost_credits = std::nullopt;
};

// A signal, not a movement of credits: the command that caused it (in the same Kafka transaction, just before
// it) took the account's available balance from at or above `threshold` to below it. Downstream consumers use
// it to prompt a top-up. It carries no Idempotency-Key of its own: the causing event answers for the request.
struct balance_low {
  amount_t threshold = 0;
  amount_t balance = 0;
  amount_t reserved = 0;
  amount_t available = 0;
  std::string cause_type;  // CreditsDeducted or CreditsReserved
  std::string cause_id;    // its transactionId or reservationId
};

// A ledger transaction undone in whole or in part by a new transaction linked to it; history is never edited.
// Reversing a deduction or a confirmed reservation refunds (the balance rises by `amount`); reversing added
// credits corrects them (the balance falls by `amount`). The reversals of one original never exceed it.
struct transaction_reversed {
  std::string transaction_id;           // the reversal's own id
  std::string original_transaction_id;  // what it reverses, in the same account
  std::string original_type;            // CreditsAdded, CreditsDeducted or ReservationConfirmed
  amount_t amount = 0;
  amount_t balance_after = 0;
  std::string description;
  nlohmann::json metadata = nlohmann::json::object();
  // A refund: what returns to which grant (the original's draws, last drawn first). A correction of added
  // credits: what is taken from the grant. nullopt: written before grants.
  std::optional<grant_draws> draws = std::nullopt;
};

// How a reversal moves the balance.
inline amount_t balance_delta(const transaction_reversed& r) {
  return r.original_type == "CreditsAdded" ? -r.amount : r.amount;
}

// An operator's repair (POST /v1/admin/events/void): a record that no fold could apply (it would break an
// invariant, or it does not decode) quarantined its account; this sets it aside for good. Every fold ignores the
// voided record, as none ever applied it, and the account is served again once no quarantined record is left on it.
// Who voided it and when are the envelope's apiKeyId and occurredAt.
struct event_voided {
  std::string voided_event_id;     // the quarantined record's eventId, or its position when it has none readable
  std::string voided_position;     // "<topic>:<partition>:<offset>" of the quarantined record
  std::string reason;              // the operator's words
  bool account_unblocked = false;  // no other quarantined record is left on the account
};

using event_payload = std::variant<account_created, credits_added, credits_deducted, credits_reserved,
                                   reservation_confirmed, reservation_cancelled, reservation_expired, usage_recorded,
                                   balance_low, transaction_reversed, event_voided>;

inline constexpr int event_schema_version = 1;

// The envelope is the final stored form of every event: nothing written to the log needs migrating later.
struct event {
  std::string event_id;  // UUID
  int schema_version = event_schema_version;
  std::string tenant;
  std::string account_id;
  std::string api_key_id;  // which key caused it, never the key itself
  std::string request_id;
  std::string idempotency_key;  // empty when the request carried none
  std::string request_hash;     // fingerprint of the request, to tell a retry from a reused key
  time_ms occurred_at = 0;
  event_payload payload;
};

std::string_view type_name(const event_payload& payload);

// Balance-affecting events go to the ledger topic, usage to the usage topic; API key events (keys.hpp) to the
// key log, never mixed with the other two.
enum class stream { ledger, usage, keys };
stream stream_of(const event_payload& payload);

nlohmann::json to_json(const event& e);
std::string encode(const event& e);

// Decoding never throws: a malformed or unknown event yields nullopt and an explanation.
std::optional<event> decode(std::string_view text, std::string* error = nullptr);

// RFC 3339 in UTC with milliseconds, e.g. 2026-11-29T16:01:22.123Z.
std::string format_time(time_ms t);
std::optional<time_ms> parse_time(std::string_view text);

}  // namespace credits
