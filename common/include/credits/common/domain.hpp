#pragma once

#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

#include "credits/common/events.hpp"

namespace credits {

// Why a command or a query was refused, in the ledger's terms: decide() and the request validation, the writer's
// idempotency keys, and a backing service being unavailable. Refusals that only an HTTP server can make (a
// missing key, a wrong route or method, a body too large, a spent rate limit) are command-api's http_error. The
// HTTP status of each code is decided in exactly one place (command-api's responses.cpp).
enum class error_code {
  invalid_request,
  account_not_found,
  reservation_not_found,
  transaction_not_found,
  insufficient_credits,
  account_exists,
  reservation_not_pending,
  reservation_expired,
  transaction_account_mismatch,
  idempotency_key_reused,
  idempotency_key_in_flight,
  grant_not_found,
  grant_not_active,  // the grant expired or was voided already
  account_blocked,   // a record on the account's stream could not be applied: quarantined until it is voided
  event_not_found,   // no quarantined record with this id (POST /v1/admin/events/void)
  unavailable,
  internal,
};

std::string_view to_string(error_code code);

struct rejection {
  error_code code = error_code::invalid_request;
  std::string message;
  std::string field;  // the offending request field, when one is to blame
  nlohmann::json details = nullptr;
};

enum class reservation_status { pending, confirmed, cancelled, expired };
std::string_view to_string(reservation_status status);

struct reservation_state {
  std::string id;
  amount_t amount = 0;
  time_ms created_at = 0;
  time_ms expires_at = 0;
  reservation_status status = reservation_status::pending;
  amount_t charged = 0;
  std::string operation;
  std::string model;
  nlohmann::json metadata = nlohmann::json::object();
  grant_draws draws = {};  // what the hold took from each grant, in burn order: a pending hold holds exactly these
  bool operator==(const reservation_state&) const = default;
};

// A ledger transaction as far as later commands need it: usage links to it, a reversal undoes part of it.
struct transaction_state {
  std::string type;  // the event type that posted it: CreditsAdded, CreditsDeducted, ReservationConfirmed, ...
  amount_t amount = 0;
  amount_t reversed = 0;    // by TransactionReversed events so far
  std::string reason = {};  // a CreditsDeducted's reason (grant_expired, grant_voided, overcapture), else empty
  grant_draws draws = {};   // a charge: what it took and is not refunded yet, in the order it took it
  bool operator==(const transaction_state&) const = default;
};

enum class grant_status { active, expired, voided };
std::string_view to_string(grant_status status);

// One grant of credits (a CreditsAdded) and where its credits are. Conservation, per grant:
//   granted == remaining + held + charged - refunded + expired + voided
// where `granted` is the amount added less corrections (reversals of the CreditsAdded).
struct grant_state {
  std::string id;
  std::string transaction_id;  // of its CreditsAdded
  std::uint64_t sequence = 0;  // order of creation on the account (the log's order): the last tie-break of burning
  time_ms created_at = 0;
  std::optional<time_ms> expires_at;  // nullopt: never
  int priority = grant_priority_default;
  grant_category category = grant_category::paid;
  std::optional<cost_basis> cost;
  amount_t granted = 0;
  amount_t remaining = 0;  // unused and unheld: what a deduction or a hold may take
  amount_t held = 0;       // by pending reservations
  amount_t charged = 0;
  amount_t refunded = 0;
  amount_t expired = 0;
  amount_t voided = 0;
  // `expired` once an expiry removed its remainder; a grant with nothing left is expired by its time alone.
  grant_status status = grant_status::active;

  bool expired_at(time_ms now) const { return expires_at && *expires_at <= now; }
  bool operator==(const grant_state&) const = default;
};

// A grant's place in the burn order (lower burns first): lower priority, then sooner expiry (never last), then
// older.
struct burn_key {
  int priority = grant_priority_default;
  time_ms expires_at = 0;  // time_never for a grant that never expires
  std::uint64_t sequence = 0;
  std::string grant_id;
  auto operator<=>(const burn_key&) const = default;
};
inline constexpr time_ms time_never = std::numeric_limits<time_ms>::max();
burn_key burn_key_of(const grant_state& g);

// One account stream folded: what decide() needs to judge the next command on this account.
struct account_state {
  std::string id;
  std::string tenant;
  std::string name;
  std::string external_id;
  std::string email;
  nlohmann::json metadata = nlohmann::json::object();
  time_ms created_at = 0;
  amount_t balance = 0;
  amount_t reserved = 0;
  std::unordered_map<std::string, reservation_state> reservations;
  std::unordered_map<std::string, transaction_state> transactions;  // by ledger transaction id
  std::unordered_map<std::string, grant_state> grants;              // by grant id
  std::set<burn_key> burnable;  // the grants with remaining > 0, in burn order (expired ones included)
  std::uint64_t grants_created = 0;
  // Sums over the grants, kept by apply() and checked against balance and reserved after every event.
  amount_t grants_remaining = 0;
  amount_t grants_held = 0;

  amount_t available() const { return balance - reserved; }
  bool operator==(const account_state&) const = default;
};

// A record of the account's stream that the fold refused: it would break an invariant, or it does not decode, or
// it sits where no event of its kind may (replay.hpp). The record is not applied; its account takes no command
// until an operator voids it (EventVoided), and its pending holds do not expire meanwhile.
struct quarantined_record {
  std::string event_id;  // the record's eventId, or its position when none can be read from it
  std::string position;  // "<topic>:<partition>:<offset>"
  std::string reason;
  std::string tenant;  // the record's tenant when it names one, else empty
  bool operator==(const quarantined_record&) const = default;
};

// All account streams one writer owns. Pending reservations are also indexed by expiry so the writer finds
// the expired ones without a scan.
struct ledger_state {
  std::unordered_map<std::string, account_state> accounts;
  std::set<std::pair<time_ms, std::string>> pending_by_expiry;  // (expires_at, reservation id)
  std::set<std::pair<time_ms, std::string>> grants_by_expiry;   // (expires_at, grant id): remaining > 0
  // By account id (the record's Kafka key, which may name no account that exists), in log order. An account is
  // blocked while it has any.
  std::unordered_map<std::string, std::vector<quarantined_record>> quarantined;
};

// Who asks, and when. Stamped into every event the command produces.
struct request_context {
  std::string tenant;
  std::string api_key_id;
  std::string request_id;
  std::string idempotency_key;
  std::string request_hash;
  time_ms now = 0;
};

// Commands carry every id they will need, generated by the caller, so that decide() stays pure.
struct create_account {
  std::string account_id;
  std::string name;
  std::string external_id;
  std::string email;
  nlohmann::json metadata = nlohmann::json::object();
};
// Creates a grant, whose id is derived from transaction_id (grant_id_of).
struct add_credits {
  std::string account_id;
  amount_t amount = 0;
  std::string description;
  std::string payment_method;
  nlohmann::json metadata = nlohmann::json::object();
  std::string transaction_id;
  std::optional<time_ms> expires_at = std::nullopt;          // must be after the request's time
  std::optional<std::int64_t> expires_in_ms = std::nullopt;  // or this long after the request's time
  int priority = grant_priority_default;
  grant_category category = grant_category::paid;
  std::optional<cost_basis> cost = std::nullopt;
};
struct deduct_credits {
  std::string account_id;
  amount_t amount = 0;
  std::string description;
  nlohmann::json metadata = nlohmann::json::object();
  std::string transaction_id;
};
struct create_reservation {
  std::string account_id;
  amount_t amount = 0;
  std::int64_t expires_in_ms = 0;
  std::string operation;
  std::string model;
  nlohmann::json metadata = nlohmann::json::object();
  std::string reservation_id;
};
// actual_amount above the hold is refused unless allow_overcapture: then the whole hold is charged and the excess
// is deducted from available in burn order (a CreditsDeducted with reason overcapture, its id derived from
// transaction_id), or the confirm is refused as insufficient and the hold stays pending.
struct confirm_reservation {
  std::string reservation_id;
  amount_t actual_amount = 0;
  std::string transaction_id;
  bool allow_overcapture = false;
};
struct cancel_reservation {
  std::string reservation_id;
};
// Reverses `amount` of a ledger transaction (0: all of it that is not reversed yet).
struct reverse_transaction {
  std::string transaction_id;
  amount_t amount = 0;
  std::string description;
  nlohmann::json metadata = nlohmann::json::object();
  std::string reversal_id;  // the new transaction's id
};
struct record_usage {
  std::string account_id;
  std::string usage_id;
  std::string context;
  std::string transaction_id;
  std::string model_id;
  std::string usage_type;
  std::int64_t input_tokens = 0;
  std::int64_t output_tokens = 0;
  std::int64_t cached_tokens = 0;
  nlohmann::json metadata = nlohmann::json::object();
};

// Removes a grant's unused, unheld remainder for good (a CreditsDeducted with reason grant_voided); what its
// holds return later is voided as it returns.
struct void_grant {
  std::string grant_id;
  std::string transaction_id;  // of the CreditsDeducted
};

// An operator sets a quarantined record aside (POST /v1/admin/events/void, an `admin` key).
struct void_event {
  std::string account_id;  // the quarantined account (the writer finds it when the request names none)
  std::string event_id;    // as the account_blocked answer names it
  std::string reason;
};

using command = std::variant<create_account, add_credits, deduct_credits, create_reservation, confirm_reservation,
                             cancel_reservation, record_usage, reverse_transaction, void_event, void_grant>;

// The account a command addresses; for reservations it is embedded in the reservation id.
std::string target_account(const command& cmd);

using decision = std::variant<std::vector<event>, rejection>;

// Operator settings that shape decisions. Recorded in the events they cause, so a replay never needs them.
// A model's price in millionths of a credit per 1,000 tokens (so 0.15 credits per 1K is 150'000): integers only.
struct model_price {
  std::int64_t input = 0;
  std::int64_t output = 0;
  std::int64_t cached = 0;
  bool operator==(const model_price&) const = default;
};
inline constexpr std::int64_t price_scale = 1'000'000;

// Prices by (tenant, model); the tenant "*" prices a model for every tenant without its own price.
using price_table = std::map<std::pair<std::string, std::string>, model_price>;

// The cost of a usage in credits, rounded up; nullopt when the model has no price for the tenant.
std::optional<amount_t> usage_cost(const price_table& prices, std::string_view tenant, std::string_view model,
                                   std::int64_t input_tokens, std::int64_t output_tokens, std::int64_t cached_tokens);

struct policy {
  // A command that takes an account's available balance from >= this to below it also emits BalanceLow.
  // 0 turns the signal off.
  amount_t balance_low_threshold = 0;
  price_table prices;  // UsageRecorded carries the cost at these prices
};

// Judges a command against the current state. Pure: no clock, no ids, no I/O beyond its arguments. The
// command's own event comes first in the result; signals it causes (BalanceLow) follow it.
decision decide(const ledger_state& state, const command& cmd, const request_context& ctx, const policy& rules = {});

// Emits ReservationExpired for every pending reservation whose expiry is at or before `now`, except on a
// quarantined account: its holds wait until the account is served again.
std::vector<event> expire_due(const ledger_state& state, time_ms now, std::size_t max_events);

// The grants of the account in burn order at `now`: unexpired (expiresAt > now), remaining > 0; lower priority
// first, then sooner expiry (never-expiring last), then older. Every decision that takes credits (a deduction, a
// hold, an over-capture) takes them in this order.
std::vector<const grant_state*> burn_order(const account_state& account, time_ms now);
// What the account may spend at `now`: the remaining credits of its unexpired grants.
amount_t spendable(const account_state& account, time_ms now);
// Takes `amount` from the grants in burn order at `now`; nullopt if they hold less.
std::optional<grant_draws> draw_in_burn_order(const account_state& account, amount_t amount, time_ms now);

// The first `amount` of a hold's draws, in their order: what a confirm charges.
grant_draws first_of(const grant_draws& held, amount_t amount);
// What is left of `held` per grant after `taken`, in the order of `held`: what a confirm returns.
grant_draws rest_of(const grant_draws& held, const grant_draws& taken);

// Emits, for every grant whose expiry is at or before `now` and that has an unused, unheld remainder, a
// CreditsDeducted (reason grant_expired) of that remainder, except on a quarantined account. Its transaction id is
// derived from the grant id (expiry_transaction_id), so the decision stays pure.
std::vector<event> expire_grants_due(const ledger_state& state, time_ms now, std::size_t max_events);

// Why folding `e` into `state` would break an invariant of the ledger (an account created twice, an event for an
// unknown account, a hold resolved twice or for another amount, a balanceAfter that disagrees with the fold, an
// overdraft, a balance above the maximum, ...), or nullopt. Every fold of the log (the writer's replay, the
// projector's guards, verify) refuses exactly these events.
std::optional<std::string> violation(const ledger_state& state, const event& e);

// Folds one event into the state. Requires !violation(state, e) (asserted).
void apply(ledger_state& state, const event& e);

}  // namespace credits
