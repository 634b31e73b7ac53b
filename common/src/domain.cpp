#include "credits/common/domain.hpp"

#include <optional>

#include "credits/common/assert.hpp"
#include "credits/common/ids.hpp"
#include "credits/common/overloaded.hpp"

namespace credits {
namespace {

event make_event(const request_context& ctx, std::string account_id, event_payload payload) {
  return event{.event_id = {},
               .schema_version = event_schema_version,
               .tenant = ctx.tenant,
               .account_id = std::move(account_id),
               .api_key_id = ctx.api_key_id,
               .request_id = ctx.request_id,
               .idempotency_key = ctx.idempotency_key,
               .request_hash = ctx.request_hash,
               .occurred_at = ctx.now,
               .payload = std::move(payload)};
}

decision one(event e) {
  std::vector<event> events;
  events.push_back(std::move(e));
  return events;
}

rejection reject(error_code code, std::string message, std::string field = {}, nlohmann::json details = nullptr) {
  return rejection{code, std::move(message), std::move(field), std::move(details)};
}

// Another tenant's account is reported exactly like a missing one, so ids reveal nothing across tenants.
const account_state* find_account(const ledger_state& state, const std::string& id, const std::string& tenant) {
  auto it = state.accounts.find(id);
  if (it == state.accounts.end() || it->second.tenant != tenant) return nullptr;
  return &it->second;
}

rejection no_account() { return reject(error_code::account_not_found, "account not found"); }

rejection insufficient(amount_t needed, amount_t available) {
  return reject(error_code::insufficient_credits, "insufficient credits", "amount",
                {{"needed", needed}, {"available", available}});
}

// Resolves a reservation id to its account and the reservation, which must still be pending and unexpired.
struct pending_reservation {
  const account_state* account = nullptr;
  const reservation_state* reservation = nullptr;
};
std::variant<pending_reservation, rejection> find_pending(const ledger_state& state, const std::string& id,
                                                          const request_context& ctx) {
  const auto account_id = account_of("rsv", id);
  const account_state* account = account_id ? find_account(state, *account_id, ctx.tenant) : nullptr;
  const auto it = account ? account->reservations.find(id) : decltype(account->reservations.end()){};
  if (!account || it == account->reservations.end())
    return reject(error_code::reservation_not_found, "reservation not found", "reservationId");
  const auto& r = it->second;
  if (r.status == reservation_status::expired || (r.status == reservation_status::pending && ctx.now >= r.expires_at))
    return reject(error_code::reservation_expired, "reservation expired at " + format_time(r.expires_at),
                  "reservationId", {{"status", "expired"}, {"expiresAt", format_time(r.expires_at)}});
  if (r.status != reservation_status::pending)
    return reject(error_code::reservation_not_pending, "reservation is already " + std::string(to_string(r.status)),
                  "reservationId", {{"status", to_string(r.status)}});
  return pending_reservation{account, &r};
}

decision decide_one(const ledger_state& state, const create_account& c, const request_context& ctx) {
  if (state.accounts.contains(c.account_id))
    return reject(error_code::account_exists,
                  c.external_id.empty() ? "account already exists" : "an account with this externalId already exists",
                  "externalId", {{"accountId", c.account_id}});
  return one(make_event(ctx, c.account_id, account_created{c.name, c.external_id, c.email, c.metadata}));
}

decision decide_one(const ledger_state& state, const add_credits& c, const request_context& ctx) {
  const auto* account = find_account(state, c.account_id, ctx.tenant);
  if (!account) return no_account();
  if (c.amount > amount_max - account->balance)
    return reject(error_code::invalid_request, "the balance would exceed the maximum of 2^53-1 credits", "amount",
                  {{"balance", account->balance}, {"max", amount_max}});
  return one(make_event(ctx, c.account_id,
                        credits_added{c.transaction_id, c.amount, account->balance + c.amount, c.description,
                                      c.payment_method, c.metadata}));
}

decision decide_one(const ledger_state& state, const deduct_credits& c, const request_context& ctx) {
  const auto* account = find_account(state, c.account_id, ctx.tenant);
  if (!account) return no_account();
  if (c.amount > account->available()) return insufficient(c.amount, account->available());
  return one(
      make_event(ctx, c.account_id,
                 credits_deducted{c.transaction_id, c.amount, account->balance - c.amount, c.description, c.metadata}));
}

decision decide_one(const ledger_state& state, const create_reservation& c, const request_context& ctx) {
  const auto* account = find_account(state, c.account_id, ctx.tenant);
  if (!account) return no_account();
  if (c.amount > account->available()) return insufficient(c.amount, account->available());
  if (account->reservations.contains(c.reservation_id))  // 64 random bits collided: the client may retry
    return reject(error_code::internal, "reservation id collision, please retry");
  return one(make_event(
      ctx, c.account_id,
      credits_reserved{c.reservation_id, c.amount, ctx.now + c.expires_in_ms, c.operation, c.model, c.metadata}));
}

decision decide_one(const ledger_state& state, const confirm_reservation& c, const request_context& ctx) {
  auto found = find_pending(state, c.reservation_id, ctx);
  if (auto* r = std::get_if<rejection>(&found)) return std::move(*r);
  const auto [account, reservation] = std::get<pending_reservation>(found);
  if (c.actual_amount > reservation->amount)
    return reject(error_code::invalid_request, "actualAmount exceeds the reserved amount", "actualAmount",
                  {{"reserved", reservation->amount}, {"actualAmount", c.actual_amount}});
  return one(
      make_event(ctx, account->id,
                 reservation_confirmed{c.reservation_id, c.transaction_id, c.actual_amount,
                                       reservation->amount - c.actual_amount, account->balance - c.actual_amount}));
}

decision decide_one(const ledger_state& state, const cancel_reservation& c, const request_context& ctx) {
  auto found = find_pending(state, c.reservation_id, ctx);
  if (auto* r = std::get_if<rejection>(&found)) return std::move(*r);
  const auto [account, reservation] = std::get<pending_reservation>(found);
  return one(make_event(ctx, account->id, reservation_cancelled{c.reservation_id, reservation->amount}));
}

decision decide_one(const ledger_state& state, const record_usage& c, const request_context& ctx) {
  const auto* account = find_account(state, c.account_id, ctx.tenant);
  if (!account) return no_account();
  if (!c.transaction_id.empty() && !account->transactions.contains(c.transaction_id)) {
    const auto owner_id = account_of("txn", c.transaction_id);
    const auto* owner = owner_id ? find_account(state, *owner_id, ctx.tenant) : nullptr;
    if (owner && owner->transactions.contains(c.transaction_id))
      return reject(error_code::transaction_account_mismatch, "the transaction belongs to another account",
                    "transactionId");
    return reject(error_code::transaction_not_found, "transaction not found", "transactionId");
  }
  return one(make_event(ctx, c.account_id,
                        usage_recorded{c.usage_id, c.context, c.transaction_id, c.model_id, c.usage_type,
                                       c.input_tokens, c.output_tokens, c.cached_tokens, c.metadata}));
}

decision decide_one(const ledger_state& state, const reverse_transaction& c, const request_context& ctx) {
  const auto account_id = account_of("txn", c.transaction_id);
  const auto* account = account_id ? find_account(state, *account_id, ctx.tenant) : nullptr;
  const auto it = account ? account->transactions.find(c.transaction_id) : decltype(account->transactions.end()){};
  if (!account || it == account->transactions.end())
    return reject(error_code::transaction_not_found, "transaction not found", "transactionId");
  const auto& original = it->second;
  if (original.type != "CreditsAdded" && original.type != "CreditsDeducted" && original.type != "ReservationConfirmed")
    return reject(error_code::invalid_request, "a " + original.type + " transaction cannot be reversed",
                  "transactionId", {{"type", original.type}});
  const amount_t remaining = original.amount - original.reversed;
  const amount_t amount = c.amount == 0 ? remaining : c.amount;
  if (amount == 0 || amount > remaining)
    return reject(error_code::invalid_request,
                  remaining == 0 ? "the transaction is already fully reversed"
                                 : "amount exceeds what is left to reverse of the transaction",
                  "amount", {{"original", original.amount}, {"reversed", original.reversed}, {"remaining", remaining}});
  transaction_reversed r{c.reversal_id, c.transaction_id, original.type, amount, 0, c.description, c.metadata};
  const amount_t delta = balance_delta(r);
  if (delta < 0 && -delta > account->available()) return insufficient(-delta, account->available());
  if (delta > 0 && delta > amount_max - account->balance)
    return reject(error_code::invalid_request, "the balance would exceed the maximum of 2^53-1 credits", "amount",
                  {{"balance", account->balance}, {"max", amount_max}});
  r.balance_after = account->balance + delta;
  return one(make_event(ctx, account->id, std::move(r)));
}

decision decide_one(const ledger_state& state, const void_event& c, const request_context& ctx) {
  const auto it = state.quarantined.find(c.account_id);
  const auto* account = find_account(state, c.account_id, ctx.tenant);
  if (it != state.quarantined.end())
    for (const auto& q : it->second) {
      if (q.event_id != c.event_id || (!account && q.tenant != ctx.tenant)) continue;
      return one(make_event(ctx, c.account_id, event_voided{q.event_id, q.position, c.reason, it->second.size() == 1}));
    }
  return reject(error_code::event_not_found, "no quarantined event with this id on the account", "eventId");
}

// The quarantined record that blocks the account for this tenant, if any. Another tenant's account is not
// reported (it answers as a missing one would); an account that does not exist is reported to the tenant the
// record names.
const quarantined_record* blocking(const ledger_state& state, const std::string& account_id,
                                   const request_context& ctx) {
  const auto it = state.quarantined.find(account_id);
  if (it == state.quarantined.end()) return nullptr;
  const auto& first = it->second.front();
  if (const auto a = state.accounts.find(account_id); a != state.accounts.end())
    return a->second.tenant == ctx.tenant ? &first : nullptr;
  return first.tenant == ctx.tenant ? &first : nullptr;
}

rejection blocked(const std::string& account_id, const quarantined_record& q, std::size_t count) {
  return reject(error_code::account_blocked,
                "the account is blocked: an event on its stream could not be applied (" + q.reason +
                    "); an operator must void it (POST /v1/admin/events/void)",
                "",
                {{"accountId", account_id},
                 {"eventId", q.event_id},
                 {"position", q.position},
                 {"reason", q.reason},
                 {"quarantinedEvents", count}});
}

reservation_state& pending_in(account_state& account, const std::string& id) {
  auto it = account.reservations.find(id);
  CREDITS_ASSERT(it != account.reservations.end(), "event names an unknown reservation");
  CREDITS_ASSERT(it->second.status == reservation_status::pending, "reservation resolved twice");
  return it->second;
}

void post(account_state& account, const std::string& transaction_id, const char* type, amount_t amount) {
  account.transactions.emplace(transaction_id, transaction_state{type, amount, 0});
}

void release(ledger_state& state, account_state& account, reservation_state& r, reservation_status status) {
  account.reserved -= r.amount;
  r.status = status;
  state.pending_by_expiry.erase({r.expires_at, r.id});
}

}  // namespace

std::string_view to_string(error_code code) {
  switch (code) {
    case error_code::invalid_request:
      return "invalid_request";
    case error_code::account_not_found:
      return "account_not_found";
    case error_code::reservation_not_found:
      return "reservation_not_found";
    case error_code::transaction_not_found:
      return "transaction_not_found";
    case error_code::insufficient_credits:
      return "insufficient_credits";
    case error_code::account_exists:
      return "account_exists";
    case error_code::reservation_not_pending:
      return "reservation_not_pending";
    case error_code::reservation_expired:
      return "reservation_expired";
    case error_code::transaction_account_mismatch:
      return "transaction_account_mismatch";
    case error_code::idempotency_key_reused:
      return "idempotency_key_reused";
    case error_code::idempotency_key_in_flight:
      return "idempotency_key_in_flight";
    case error_code::account_blocked:
      return "account_blocked";
    case error_code::event_not_found:
      return "event_not_found";
    case error_code::unavailable:
      return "unavailable";
    case error_code::internal:
      return "internal";
  }
  return "internal";
}

std::string_view to_string(reservation_status status) {
  switch (status) {
    case reservation_status::pending:
      return "pending";
    case reservation_status::confirmed:
      return "confirmed";
    case reservation_status::cancelled:
      return "cancelled";
    case reservation_status::expired:
      return "expired";
  }
  return "pending";
}

std::string target_account(const command& cmd) {
  return std::visit(overloaded{
                        [](const confirm_reservation& c) { return account_of("rsv", c.reservation_id).value_or(""); },
                        [](const cancel_reservation& c) { return account_of("rsv", c.reservation_id).value_or(""); },
                        [](const reverse_transaction& c) { return account_of("txn", c.transaction_id).value_or(""); },
                        [](const auto& c) { return c.account_id; },
                    },
                    cmd);
}

std::optional<amount_t> usage_cost(const price_table& prices, std::string_view tenant, std::string_view model,
                                   std::int64_t input_tokens, std::int64_t output_tokens, std::int64_t cached_tokens) {
  auto it = prices.find({std::string(tenant), std::string(model)});
  if (it == prices.end()) it = prices.find({"*", std::string(model)});
  if (it == prices.end()) return std::nullopt;
  const auto& p = it->second;
  // Tokens and prices are below 2^53 and 2^40: the products fit in 128 bits (a GCC/Clang extension).
  __extension__ using int128 = __int128;
  const int128 micro = static_cast<int128>(input_tokens) * p.input + static_cast<int128>(output_tokens) * p.output +
                       static_cast<int128>(cached_tokens) * p.cached;
  const int128 per = static_cast<int128>(1000) * price_scale;
  const int128 cost = (micro + per - 1) / per;
  return cost > amount_max ? amount_max : static_cast<amount_t>(cost);
}

decision decide(const ledger_state& state, const command& cmd, const request_context& ctx, const policy& rules) {
  if (!std::holds_alternative<void_event>(cmd) && !state.quarantined.empty()) {
    const auto account_id = target_account(cmd);
    if (const auto* q = blocking(state, account_id, ctx))
      return blocked(account_id, *q, state.quarantined.at(account_id).size());
  }
  auto d = std::visit([&](const auto& c) { return decide_one(state, c, ctx); }, cmd);
  auto* events = std::get_if<std::vector<event>>(&d);
  if (events && !rules.prices.empty())
    if (auto* usage = std::get_if<usage_recorded>(&events->front().payload))
      usage->cost_credits = usage_cost(rules.prices, ctx.tenant, usage->model_id, usage->input_tokens,
                                       usage->output_tokens, usage->cached_tokens);
  if (!events || rules.balance_low_threshold <= 0) return d;
  // Only a deduction or a new hold lowers `available`; confirming, cancelling and expiring raise it.
  const auto& cause = events->front();
  const auto it = state.accounts.find(cause.account_id);
  if (it == state.accounts.end()) return d;
  const auto& before = it->second;
  auto lowered = std::visit(
      overloaded{
          [&](const credits_deducted& p) {
            return std::optional(balance_low{rules.balance_low_threshold, before.balance - p.amount, before.reserved,
                                             before.available() - p.amount, "CreditsDeducted", p.transaction_id});
          },
          [&](const credits_reserved& p) {
            return std::optional(balance_low{rules.balance_low_threshold, before.balance, before.reserved + p.amount,
                                             before.available() - p.amount, "CreditsReserved", p.reservation_id});
          },
          [&](const transaction_reversed& p) {
            const auto delta = balance_delta(p);
            return delta < 0
                       ? std::optional(balance_low{rules.balance_low_threshold, before.balance + delta, before.reserved,
                                                   before.available() + delta, "TransactionReversed", p.transaction_id})
                       : std::optional<balance_low>();
          },
          [](const auto&) { return std::optional<balance_low>(); },
      },
      cause.payload);
  if (lowered && before.available() >= rules.balance_low_threshold &&
      lowered->available < rules.balance_low_threshold) {
    request_context signal = ctx;
    signal.idempotency_key.clear();  // the causing event answers for the request
    signal.request_hash.clear();
    events->push_back(make_event(signal, cause.account_id, std::move(*lowered)));
  }
  return d;
}

std::vector<event> expire_due(const ledger_state& state, time_ms now, std::size_t max_events) {
  std::vector<event> events;
  for (const auto& [expires_at, id] : state.pending_by_expiry) {
    if (expires_at > now || events.size() >= max_events) break;
    const auto account_id = account_of("rsv", id);
    CREDITS_ASSERT(account_id.has_value(), "indexed reservation id is malformed");
    if (state.quarantined.contains(*account_id)) continue;  // paused until the account is served again
    const auto& account = state.accounts.at(*account_id);
    const auto& r = account.reservations.at(id);
    request_context ctx{.tenant = account.tenant,
                        .api_key_id = "system",
                        .request_id = {},
                        .idempotency_key = {},
                        .request_hash = {},
                        .now = now};
    events.push_back(make_event(ctx, account.id, reservation_expired{id, r.amount}));
  }
  return events;
}

std::optional<std::string> violation(const ledger_state& state, const event& e) {
  if (std::holds_alternative<account_created>(e.payload)) {
    if (state.accounts.contains(e.account_id)) return "account " + e.account_id + " is created twice";
    return std::nullopt;
  }
  if (std::holds_alternative<usage_recorded>(e.payload) || std::holds_alternative<event_voided>(e.payload))
    return std::nullopt;
  const auto it = state.accounts.find(e.account_id);
  if (it == state.accounts.end()) return "no account " + e.account_id;
  const auto& account = it->second;
  amount_t balance = account.balance;
  amount_t reserved = account.reserved;
  std::optional<amount_t> balance_after;
  const auto pending_hold = [&](const std::string& id, amount_t accounted) -> std::optional<std::string> {
    const auto r = account.reservations.find(id);
    if (r == account.reservations.end() || r->second.status != reservation_status::pending)
      return "reservation " + id + " is unknown or not pending";
    if (r->second.amount != accounted)
      return "the event accounts for " + std::to_string(accounted) + " of the hold " + id + " of " +
             std::to_string(r->second.amount);
    return std::nullopt;
  };
  std::optional<std::string> refused;
  std::visit(overloaded{
                 [](const account_created&) {},
                 [](const usage_recorded&) {},
                 [](const event_voided&) {},
                 [](const balance_low&) {},
                 [&](const transaction_reversed& p) {
                   balance += balance_delta(p);
                   balance_after = p.balance_after;
                 },
                 [&](const credits_added& p) {
                   balance += p.amount;
                   balance_after = p.balance_after;
                 },
                 [&](const credits_deducted& p) {
                   balance -= p.amount;
                   balance_after = p.balance_after;
                 },
                 [&](const credits_reserved& p) {
                   if (account.reservations.contains(p.reservation_id))
                     refused = "reservation " + p.reservation_id + " is created twice";
                   reserved += p.amount;
                 },
                 [&](const reservation_confirmed& p) {
                   refused = pending_hold(p.reservation_id, p.charged + p.released);
                   reserved -= p.charged + p.released;
                   balance -= p.charged;
                   balance_after = p.balance_after;
                 },
                 [&](const reservation_cancelled& p) {
                   refused = pending_hold(p.reservation_id, p.released);
                   reserved -= p.released;
                 },
                 [&](const reservation_expired& p) {
                   refused = pending_hold(p.reservation_id, p.released);
                   reserved -= p.released;
                 },
             },
             e.payload);
  if (refused) return refused;
  if (reserved < 0 || reserved > balance || balance > amount_max)
    return std::string(type_name(e.payload)) + " would leave balance " + std::to_string(balance) + ", reserved " +
           std::to_string(reserved);
  if (balance_after && *balance_after != balance)
    return std::string(type_name(e.payload)) + " says balanceAfter " + std::to_string(*balance_after) +
           ", the fold gives " + std::to_string(balance);
  return std::nullopt;
}

namespace {

// The change one event makes to an account that exists; violation() has checked that it keeps every invariant.
// AccountCreated, UsageRecorded and EventVoided never get here (apply handles them before looking the account up).
void apply_to(ledger_state&, account_state&, const event&, const account_created&) {}
void apply_to(ledger_state&, account_state&, const event&, const usage_recorded&) {}
void apply_to(ledger_state&, account_state&, const event&, const event_voided&) {}
void apply_to(ledger_state&, account_state&, const event&, const balance_low&) {}  // the cause moved the credits

void apply_to(ledger_state&, account_state& account, const event&, const credits_added& p) {
  account.balance += p.amount;
  post(account, p.transaction_id, "CreditsAdded", p.amount);
}

void apply_to(ledger_state&, account_state& account, const event&, const credits_deducted& p) {
  account.balance -= p.amount;
  post(account, p.transaction_id, "CreditsDeducted", p.amount);
}

void apply_to(ledger_state& state, account_state& account, const event& e, const credits_reserved& p) {
  account.reserved += p.amount;
  account.reservations.emplace(p.reservation_id,
                               reservation_state{p.reservation_id, p.amount, e.occurred_at, p.expires_at,
                                                 reservation_status::pending, 0, p.operation, p.model, p.metadata});
  state.pending_by_expiry.emplace(p.expires_at, p.reservation_id);
}

void apply_to(ledger_state& state, account_state& account, const event&, const reservation_confirmed& p) {
  auto& r = pending_in(account, p.reservation_id);
  release(state, account, r, reservation_status::confirmed);
  r.charged = p.charged;
  account.balance -= p.charged;
  post(account, p.transaction_id, "ReservationConfirmed", p.charged);
}

void apply_to(ledger_state&, account_state& account, const event&, const transaction_reversed& p) {
  // decide() reverses only what it knows; the folds judge a reversal by its money alone, as the projector can.
  if (const auto original = account.transactions.find(p.original_transaction_id);
      original != account.transactions.end())
    original->second.reversed += p.amount;
  account.balance += balance_delta(p);
  post(account, p.transaction_id, "TransactionReversed", p.amount);
}

void apply_to(ledger_state& state, account_state& account, const event&, const reservation_cancelled& p) {
  release(state, account, pending_in(account, p.reservation_id), reservation_status::cancelled);
}

void apply_to(ledger_state& state, account_state& account, const event&, const reservation_expired& p) {
  release(state, account, pending_in(account, p.reservation_id), reservation_status::expired);
}

// The voided record leaves the account's quarantine; none of the folds ever applied it.
void unquarantine(ledger_state& state, const event& e, const event_voided& v) {
  const auto it = state.quarantined.find(e.account_id);
  if (it == state.quarantined.end()) return;
  std::erase_if(it->second, [&](const quarantined_record& q) { return q.event_id == v.voided_event_id; });
  if (it->second.empty()) state.quarantined.erase(it);
}

}  // namespace

void apply(ledger_state& state, const event& e) {
  if (const auto why = violation(state, e)) CREDITS_ASSERT(false, why->c_str());
  if (const auto* created = std::get_if<account_created>(&e.payload)) {
    auto& a = state.accounts[e.account_id];
    a.id = e.account_id;
    a.tenant = e.tenant;
    a.name = created->name;
    a.external_id = created->external_id;
    a.email = created->email;
    a.metadata = created->metadata;
    a.created_at = e.occurred_at;
    return;
  }
  if (std::holds_alternative<usage_recorded>(e.payload)) return;  // usage moves no credits
  if (const auto* voided = std::get_if<event_voided>(&e.payload)) return unquarantine(state, e, *voided);
  auto& account = state.accounts.at(e.account_id);
  std::visit([&](const auto& p) { apply_to(state, account, e, p); }, e.payload);
}

}  // namespace credits
