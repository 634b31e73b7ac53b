#include "credits/common/domain.hpp"

#include <algorithm>
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

// The context of an event that follows a command's own event in its decision (an over-capture's excess, what a
// release or a refund returns to an expired or voided grant, BalanceLow): the command's event answers for the
// request, so the follower carries no Idempotency-Key (a replay of the log remembers keys by the events that
// carry them).
request_context follower(const request_context& ctx) {
  request_context out = ctx;
  out.idempotency_key.clear();
  out.request_hash.clear();
  return out;
}

const grant_state* find_grant(const account_state& account, const std::string& id) {
  const auto it = account.grants.find(id);
  return it == account.grants.end() ? nullptr : &it->second;
}

std::string_view gone_reason(const grant_state& g, time_ms now) {
  if (g.status == grant_status::voided) return reason_grant_voided;
  if (g.status == grant_status::expired || g.expired_at(now)) return reason_grant_expired;
  return {};
}

// What returns to a grant that expired or was voided leaves it again at once: after the event that returned it
// (a release, a refund), one CreditsDeducted per such grant, in the same decision and so the same Kafka
// transaction. `balance` is the account's balance after the events before; it follows these.
void remove_returned(std::vector<event>& out, const account_state& account, const grant_draws& returned,
                     std::string_view cause_id, amount_t& balance, const request_context& ctx) {
  for (const auto& d : returned) {
    const auto* g = find_grant(account, d.grant_id);
    CREDITS_ASSERT(g != nullptr, "a draw names an unknown grant");
    const auto reason = gone_reason(*g, ctx.now);
    if (reason.empty()) continue;
    balance -= d.amount;
    credits_deducted p{derived_transaction_id(account.id, cause_id, d.grant_id),
                       d.amount,
                       balance,
                       reason == reason_grant_voided ? "grant voided" : "grant expired",
                       nlohmann::json::object(),
                       grant_draws{d},
                       std::string(reason),
                       d.grant_id,
                       {}};
    out.push_back(make_event(follower(ctx), account.id, std::move(p)));
  }
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
  const auto expires_at = c.expires_in_ms ? std::optional<time_ms>(ctx.now + *c.expires_in_ms) : c.expires_at;
  if (expires_at && *expires_at <= ctx.now)
    return reject(error_code::invalid_request, "expiresAt must be in the future", "expiresAt",
                  {{"expiresAt", format_time(*expires_at)}, {"now", format_time(ctx.now)}});
  const auto grant_id = grant_id_of(c.transaction_id);
  CREDITS_ASSERT(!grant_id.empty(), "add_credits carries a malformed transaction id");
  if (account->grants.contains(grant_id))  // 64 random bits collided: the client may retry
    return reject(error_code::internal, "transaction id collision, please retry");
  credits_added p{c.transaction_id, c.amount, account->balance + c.amount, c.description, c.payment_method, c.metadata};
  p.grant_id = grant_id;
  p.expires_at = expires_at;
  p.priority = c.priority;
  p.category = c.category;
  p.cost = c.cost;
  return one(make_event(ctx, c.account_id, std::move(p)));
}

decision decide_one(const ledger_state& state, const deduct_credits& c, const request_context& ctx) {
  const auto* account = find_account(state, c.account_id, ctx.tenant);
  if (!account) return no_account();
  auto draws = draw_in_burn_order(*account, c.amount, ctx.now);
  if (!draws) return insufficient(c.amount, spendable(*account, ctx.now));
  return one(make_event(ctx, c.account_id,
                        credits_deducted{c.transaction_id, c.amount, account->balance - c.amount, c.description,
                                         c.metadata, std::move(draws)}));
}

decision decide_one(const ledger_state& state, const create_reservation& c, const request_context& ctx) {
  const auto* account = find_account(state, c.account_id, ctx.tenant);
  if (!account) return no_account();
  auto draws = draw_in_burn_order(*account, c.amount, ctx.now);
  if (!draws) return insufficient(c.amount, spendable(*account, ctx.now));
  if (account->reservations.contains(c.reservation_id))  // 64 random bits collided: the client may retry
    return reject(error_code::internal, "reservation id collision, please retry");
  return one(make_event(ctx, c.account_id,
                        credits_reserved{c.reservation_id, c.amount, ctx.now + c.expires_in_ms, c.operation, c.model,
                                         c.metadata, std::move(draws)}));
}

// Charges the whole hold and deducts the excess from available in burn order, or refuses as insufficient (the
// hold stays pending). Over-capture never truncates silently and never overdraws.
decision overcapture(const account_state& account, const reservation_state& reservation, const confirm_reservation& c,
                     const request_context& ctx) {
  const amount_t excess = c.actual_amount - reservation.amount;
  auto draws = draw_in_burn_order(account, excess, ctx.now);
  if (!draws)
    return reject(error_code::insufficient_credits, "insufficient credits for the amount above the hold",
                  "actualAmount", {{"needed", excess}, {"available", spendable(account, ctx.now)}});
  std::vector<event> events;
  const amount_t after_hold = account.balance - reservation.amount;
  events.push_back(make_event(ctx, account.id,
                              reservation_confirmed{c.reservation_id, c.transaction_id, reservation.amount, 0,
                                                    after_hold, reservation.draws, excess}));
  credits_deducted extra{derived_transaction_id(account.id, c.transaction_id, reason_overcapture),
                         excess,
                         after_hold - excess,
                         "over-capture of " + c.reservation_id,
                         nlohmann::json::object(),
                         std::move(draws),
                         std::string(reason_overcapture),
                         {},
                         c.reservation_id};
  events.push_back(make_event(follower(ctx), account.id, std::move(extra)));
  return events;
}

decision decide_one(const ledger_state& state, const confirm_reservation& c, const request_context& ctx) {
  auto found = find_pending(state, c.reservation_id, ctx);
  if (auto* r = std::get_if<rejection>(&found)) return std::move(*r);
  const auto [account, reservation] = std::get<pending_reservation>(found);
  if (c.actual_amount > reservation->amount) {
    if (c.allow_overcapture) return overcapture(*account, *reservation, c, ctx);
    return reject(error_code::invalid_request, "actualAmount exceeds the reserved amount", "actualAmount",
                  {{"reserved", reservation->amount}, {"actualAmount", c.actual_amount}});
  }
  auto charged = first_of(reservation->draws, c.actual_amount);
  const auto released = rest_of(reservation->draws, charged);
  amount_t balance = account->balance - c.actual_amount;
  std::vector<event> events;
  events.push_back(
      make_event(ctx, account->id,
                 reservation_confirmed{c.reservation_id, c.transaction_id, c.actual_amount,
                                       reservation->amount - c.actual_amount, balance, std::move(charged)}));
  remove_returned(events, *account, released, c.reservation_id, balance, ctx);
  return events;
}

decision decide_one(const ledger_state& state, const cancel_reservation& c, const request_context& ctx) {
  auto found = find_pending(state, c.reservation_id, ctx);
  if (auto* r = std::get_if<rejection>(&found)) return std::move(*r);
  const auto [account, reservation] = std::get<pending_reservation>(found);
  std::vector<event> events;
  events.push_back(
      make_event(ctx, account->id, reservation_cancelled{c.reservation_id, reservation->amount, reservation->draws}));
  amount_t balance = account->balance;
  remove_returned(events, *account, reservation->draws, c.reservation_id, balance, ctx);
  return events;
}

// A refund returns to the grants the original took from, last drawn first.
grant_draws refund_draws(const transaction_state& original, amount_t amount) {
  grant_draws out;
  for (auto it = original.draws.rbegin(); it != original.draws.rend() && amount > 0; ++it) {
    const amount_t part = std::min(amount, it->amount);
    out.push_back({it->grant_id, part});
    amount -= part;
  }
  CREDITS_ASSERT(amount == 0, "a charge's draws hold less than what is left to refund of it");
  return out;
}

decision decide_one(const ledger_state& state, const void_grant& c, const request_context& ctx) {
  const auto account_id = account_of("grt", c.grant_id);
  const auto* account = account_id ? find_account(state, *account_id, ctx.tenant) : nullptr;
  const auto* g = account ? find_grant(*account, c.grant_id) : nullptr;
  if (!g) return reject(error_code::grant_not_found, "grant not found", "grantId");
  if (g->status == grant_status::voided || g->status == grant_status::expired || g->expired_at(ctx.now)) {
    const auto status = g->status == grant_status::voided ? grant_status::voided : grant_status::expired;
    return reject(error_code::grant_not_active, "grant is already " + std::string(to_string(status)), "grantId",
                  {{"status", to_string(status)}});
  }
  grant_draws draws;
  if (g->remaining > 0) draws.push_back({g->id, g->remaining});
  return one(make_event(ctx, account->id,
                        credits_deducted{c.transaction_id,
                                         g->remaining,
                                         account->balance - g->remaining,
                                         "grant voided",
                                         nlohmann::json::object(),
                                         std::move(draws),
                                         std::string(reason_grant_voided),
                                         g->id,
                                         {}}));
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
  if (original.reason == reason_grant_expired || original.reason == reason_grant_voided)
    return reject(error_code::invalid_request, "the " + original.reason + " of a grant cannot be reversed",
                  "transactionId", {{"type", original.type}, {"reason", original.reason}});
  const amount_t remaining = original.amount - original.reversed;
  const amount_t amount = c.amount == 0 ? remaining : c.amount;
  if (amount == 0 || amount > remaining)
    return reject(error_code::invalid_request,
                  remaining == 0 ? "the transaction is already fully reversed"
                                 : "amount exceeds what is left to reverse of the transaction",
                  "amount", {{"original", original.amount}, {"reversed", original.reversed}, {"remaining", remaining}});
  transaction_reversed r{c.reversal_id, c.transaction_id, original.type, amount, 0, c.description, c.metadata};
  const amount_t delta = balance_delta(r);
  if (delta < 0) {
    // A correction takes from the grant the credits were added as; what of it is used or held stays.
    const auto* g = find_grant(*account, grant_id_of(c.transaction_id));
    const amount_t left = g ? g->remaining : 0;
    if (-delta > left)
      return reject(error_code::insufficient_credits, "the grant has less left than the correction", "amount",
                    {{"needed", -delta}, {"available", left}});
    r.draws = grant_draws{{g->id, -delta}};
  }
  if (delta > 0 && delta > amount_max - account->balance)
    return reject(error_code::invalid_request, "the balance would exceed the maximum of 2^53-1 credits", "amount",
                  {{"balance", account->balance}, {"max", amount_max}});
  if (delta > 0) r.draws = refund_draws(original, amount);
  amount_t balance = account->balance + delta;
  r.balance_after = balance;
  const auto returned = delta > 0 ? *r.draws : grant_draws{};
  std::vector<event> events;
  events.push_back(make_event(ctx, account->id, std::move(r)));
  remove_returned(events, *account, returned, c.reversal_id, balance, ctx);
  return events;
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

void post(account_state& account, const std::string& transaction_id, const char* type, amount_t amount,
          std::string reason = {}, grant_draws draws = {}) {
  account.transactions.emplace(transaction_id, transaction_state{type, amount, 0, std::move(reason), std::move(draws)});
}

void release(ledger_state& state, account_state& account, reservation_state& r, reservation_status status) {
  account.reserved -= r.amount;
  r.status = status;
  state.pending_by_expiry.erase({r.expires_at, r.id});
}

// Moves a grant's remaining by `delta`, keeping the account's burn index, the expiry index and the sums.
void adjust_remaining(ledger_state& state, account_state& account, grant_state& g, amount_t delta) {
  const bool had = g.remaining > 0;
  g.remaining += delta;
  account.grants_remaining += delta;
  CREDITS_ASSERT(g.remaining >= 0, "a grant's remaining went negative");
  const bool has = g.remaining > 0;
  if (had == has) return;
  if (has) {
    account.burnable.insert(burn_key_of(g));
    if (g.expires_at) state.grants_by_expiry.emplace(*g.expires_at, g.id);
  } else {
    account.burnable.erase(burn_key_of(g));
    if (g.expires_at) state.grants_by_expiry.erase({*g.expires_at, g.id});
  }
}

grant_state& grant_in(account_state& account, const std::string& id) {
  const auto it = account.grants.find(id);
  CREDITS_ASSERT(it != account.grants.end(), "a draw names an unknown grant");
  return it->second;
}

// The grant a CreditsAdded creates: named by the event, or derived from its transaction id when written before
// grants (and, for a hand-made transaction id that names no account, still unique per transaction).

// How much each grant in `draws` accounts for, summed: one grant may appear more than once in a hand-made event.
std::map<std::string, amount_t> per_grant(const grant_draws& draws) {
  std::map<std::string, amount_t> out;
  for (const auto& d : draws) out[d.grant_id] += d.amount;
  return out;
}

amount_t total_of(const grant_draws& draws) {
  amount_t sum = 0;
  for (const auto& d : draws) sum += d.amount;
  return sum;
}

// The draws an event written before grants would have carried: the burn order at its time, then (for an event a
// writer decided by balance alone while a grant's expiry was not yet written) the expired grants in burn order.
// `skip` is already taken. Deterministic, so every fold of the same log computes the same draws.
grant_draws legacy_take(const account_state& account, amount_t amount, time_ms at, const grant_draws& skip = {}) {
  grant_draws out;
  const auto taken = per_grant(skip);
  for (const bool expired_pass : {false, true})
    for (const auto& key : account.burnable) {
      if (amount == 0) return out;
      const auto& g = account.grants.at(key.grant_id);
      if (g.expired_at(at) != expired_pass) continue;
      const auto t = taken.find(g.id);
      const amount_t left = g.remaining - (t == taken.end() ? 0 : t->second);
      if (left <= 0) continue;
      const amount_t part = std::min(amount, left);
      out.push_back({g.id, part});
      amount -= part;
    }
  return out;
}

// The grant side of an event as every fold applies it: the event's own draws, or those it would have carried.
// For a reservation's release (confirm, cancel, expiry) these are what it charges, or returns.
grant_draws draws_of(const account_state& account, const event& e) {
  return std::visit(
      overloaded{
          [&](const credits_deducted& p) {
            if (p.draws) return *p.draws;
            if (!p.grant_id.empty()) return p.amount > 0 ? grant_draws{{p.grant_id, p.amount}} : grant_draws{};
            return legacy_take(account, p.amount, e.occurred_at);
          },
          [&](const credits_reserved& p) { return p.draws ? *p.draws : legacy_take(account, p.amount, e.occurred_at); },
          [&](const reservation_confirmed& p) {
            if (p.draws) return *p.draws;
            const auto r = account.reservations.find(p.reservation_id);
            return r == account.reservations.end() ? grant_draws{} : first_of(r->second.draws, p.charged);
          },
          [&](const reservation_cancelled& p) {
            const auto r = account.reservations.find(p.reservation_id);
            return r == account.reservations.end() ? grant_draws{} : r->second.draws;
          },
          [&](const reservation_expired& p) {
            const auto r = account.reservations.find(p.reservation_id);
            return r == account.reservations.end() ? grant_draws{} : r->second.draws;
          },
          [&](const transaction_reversed& p) {
            if (p.draws) return *p.draws;
            if (balance_delta(p) < 0) {
              // A correction written before grants: from its grant first, then by burn order.
              grant_draws out;
              const auto* g = find_grant(account, grant_id_of(p.original_transaction_id));
              if (g && g->remaining > 0) out.push_back({g->id, std::min(p.amount, g->remaining)});
              auto rest = legacy_take(account, p.amount - total_of(out), e.occurred_at, out);
              out.insert(out.end(), rest.begin(), rest.end());
              return out;
            }
            // A refund written before grants: to the original's draws, last drawn first; what they cannot take
            // goes to the newest grant.
            grant_draws out;
            amount_t left = p.amount;
            if (const auto o = account.transactions.find(p.original_transaction_id); o != account.transactions.end())
              for (auto it = o->second.draws.rbegin(); it != o->second.draws.rend() && left > 0; ++it) {
                const amount_t part = std::min(left, it->amount);
                out.push_back({it->grant_id, part});
                left -= part;
              }
            if (left > 0) {
              const grant_state* newest = nullptr;
              for (const auto& [id, g] : account.grants)
                if (!newest || g.sequence > newest->sequence) newest = &g;
              if (newest) out.push_back({newest->id, left});
            }
            return out;
          },
          [](const auto&) { return grant_draws{}; },
      },
      e.payload);
}

// Why the grant side of `e` does not hold, or nullopt. The money side is checked by violation() itself.
std::optional<std::string> grant_violation(const account_state& account, const event& e) {
  if (const auto* added = std::get_if<credits_added>(&e.payload)) {
    if (account.grants.contains(grant_of(*added))) return "grant " + grant_of(*added) + " is created twice";
    // The expiry scan finds a grant's account by its id.
    if (added->expires_at && account_of("grt", grant_of(*added)) != account.id)
      return "grant " + grant_of(*added) + " expires but does not name its account " + account.id;
    if (const auto priority = added->priority.value_or(grant_priority_default);
        priority < grant_priority_min || priority > grant_priority_max)
      return "grant priority " + std::to_string(priority) + " is out of range";
    return std::nullopt;
  }
  if (!std::holds_alternative<credits_deducted>(e.payload) && !std::holds_alternative<credits_reserved>(e.payload) &&
      !std::holds_alternative<reservation_confirmed>(e.payload) &&
      !std::holds_alternative<reservation_cancelled>(e.payload) &&
      !std::holds_alternative<reservation_expired>(e.payload) &&
      !std::holds_alternative<transaction_reversed>(e.payload))
    return std::nullopt;
  const auto draws = draws_of(account, e);
  for (const auto& d : draws)
    if (d.amount <= 0 || !account.grants.contains(d.grant_id))
      return "a draw of " + std::to_string(d.amount) + " from grant " + d.grant_id + " that is unknown or not positive";
  const auto sums = per_grant(draws);
  const auto takes_remaining = [&](amount_t amount) -> std::optional<std::string> {
    if (total_of(draws) != amount)
      return "the draws account for " + std::to_string(total_of(draws)) + " of " + std::to_string(amount);
    for (const auto& [id, sum] : sums)
      if (sum > account.grants.at(id).remaining)
        return "grant " + id + " has " + std::to_string(account.grants.at(id).remaining) + " left, the event takes " +
               std::to_string(sum);
    return std::nullopt;
  };
  return std::visit(
      overloaded{
          [&](const credits_deducted& p) -> std::optional<std::string> {
            if (p.reason == reason_grant_expired || p.reason == reason_grant_voided) {
              if (!account.grants.contains(p.grant_id)) return "the expiry or void names no grant of the account";
              for (const auto& d : draws)
                if (d.grant_id != p.grant_id) return "an expiry or a void takes from another grant than its own";
            }
            return takes_remaining(p.amount);
          },
          [&](const credits_reserved& p) { return takes_remaining(p.amount); },
          [&](const reservation_confirmed& p) -> std::optional<std::string> {
            const auto r = account.reservations.find(p.reservation_id);
            if (r == account.reservations.end()) return std::nullopt;  // violation() reports it
            if (total_of(draws) != p.charged)
              return "the draws account for " + std::to_string(total_of(draws)) + " of the charge " +
                     std::to_string(p.charged);
            const auto held = per_grant(r->second.draws);
            for (const auto& [id, sum] : sums)
              if (const auto h = held.find(id); h == held.end() || h->second < sum)
                return "the confirm charges grant " + id + " more than the hold holds of it";
            return std::nullopt;
          },
          [&](const reservation_cancelled& p) -> std::optional<std::string> {
            const auto r = account.reservations.find(p.reservation_id);
            if (p.draws && r != account.reservations.end() && per_grant(*p.draws) != per_grant(r->second.draws))
              return "the release returns other draws than the hold holds";
            return std::nullopt;
          },
          [&](const reservation_expired& p) -> std::optional<std::string> {
            const auto r = account.reservations.find(p.reservation_id);
            if (p.draws && r != account.reservations.end() && per_grant(*p.draws) != per_grant(r->second.draws))
              return "the release returns other draws than the hold holds";
            return std::nullopt;
          },
          [&](const transaction_reversed& p) -> std::optional<std::string> {
            if (balance_delta(p) < 0) return takes_remaining(p.amount);
            if (total_of(draws) != p.amount)
              return "the refund returns " + std::to_string(total_of(draws)) + " of " + std::to_string(p.amount);
            return std::nullopt;
          },
          [](const auto&) -> std::optional<std::string> { return std::nullopt; },
      },
      e.payload);
}

}  // namespace

// The first `amount` of a hold's draws, in their order: what a confirm charges.
grant_draws first_of(const grant_draws& held, amount_t amount) {
  grant_draws out;
  for (const auto& d : held) {
    if (amount == 0) break;
    const amount_t part = std::min(amount, d.amount);
    out.push_back({d.grant_id, part});
    amount -= part;
  }
  return out;
}

// What is left of `held` per grant after `taken`, in the order of `held`.
grant_draws rest_of(const grant_draws& held, const grant_draws& taken) {
  grant_draws out;
  for (const auto& d : held) {
    amount_t left = d.amount;
    for (const auto& t : taken)
      if (t.grant_id == d.grant_id) left -= t.amount;
    if (left > 0) out.push_back({d.grant_id, left});
  }
  return out;
}

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
    case error_code::grant_not_found:
      return "grant_not_found";
    case error_code::grant_not_active:
      return "grant_not_active";
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

std::string_view to_string(grant_status status) {
  switch (status) {
    case grant_status::active:
      return "active";
    case grant_status::expired:
      return "expired";
    case grant_status::voided:
      return "voided";
  }
  return "active";
}

burn_key burn_key_of(const grant_state& g) {
  return burn_key{g.priority, g.expires_at.value_or(time_never), g.sequence, g.id};
}

namespace {

// Calls `f` with each grant in burn order at `now` until it returns false. The index holds every grant with
// something left in burn order; the expired ones are skipped.
template <typename F>
void in_burn_order(const account_state& account, time_ms now, F f) {
  for (const auto& key : account.burnable) {
    const auto& g = account.grants.at(key.grant_id);
    if (g.expired_at(now) || g.status != grant_status::active) continue;
    if (!f(g)) return;
  }
}

}  // namespace

std::vector<const grant_state*> burn_order(const account_state& account, time_ms now) {
  std::vector<const grant_state*> out;
  in_burn_order(account, now, [&](const grant_state& g) {
    out.push_back(&g);
    return true;
  });
  return out;
}

amount_t spendable(const account_state& account, time_ms now) {
  amount_t sum = 0;
  in_burn_order(account, now, [&](const grant_state& g) {
    sum += g.remaining;
    return true;
  });
  return sum;
}

std::optional<grant_draws> draw_in_burn_order(const account_state& account, amount_t amount, time_ms now) {
  grant_draws out;
  // Stops at the last grant it needs: a deduction reads the few grants it takes from, not all of them.
  in_burn_order(account, now, [&](const grant_state& g) {
    if (amount == 0) return false;
    const amount_t part = std::min(amount, g.remaining);
    out.push_back({g.id, part});
    amount -= part;
    return amount > 0;
  });
  if (amount > 0) return std::nullopt;
  return out;
}

std::string target_account(const command& cmd) {
  return std::visit(overloaded{
                        [](const confirm_reservation& c) { return account_of("rsv", c.reservation_id).value_or(""); },
                        [](const cancel_reservation& c) { return account_of("rsv", c.reservation_id).value_or(""); },
                        [](const reverse_transaction& c) { return account_of("txn", c.transaction_id).value_or(""); },
                        [](const void_grant& c) { return account_of("grt", c.grant_id).value_or(""); },
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
  // Only a deduction, a new hold, a correction or a void lowers `available`; confirming, cancelling and expiring
  // raise it, and what a release or a refund returns to an expired grant leaves at once (no change). An
  // over-capture lowers it by its excess: the confirm of the whole hold changes nothing, its deduction does.
  const event* found_cause = &events->front();
  if (std::holds_alternative<reservation_confirmed>(found_cause->payload))
    for (const auto& e : *events)
      if (const auto* p = std::get_if<credits_deducted>(&e.payload); p && p->reason == reason_overcapture)
        found_cause = &e;
  const auto& cause = *found_cause;
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
    events->push_back(make_event(follower(ctx), cause.account_id, std::move(*lowered)));
  }
  return d;
}

namespace {

request_context system_context(const account_state& account, time_ms now) {
  return request_context{.tenant = account.tenant,
                         .api_key_id = "system",
                         .request_id = {},
                         .idempotency_key = {},
                         .request_hash = {},
                         .now = now};
}

// The balance of each account after the events decided so far in one scan: the state is folded only once the
// scan's events are in the log, and each balanceAfter must count those before it.
amount_t& running_balance(std::unordered_map<std::string, amount_t>& balances, const account_state& account) {
  return balances.try_emplace(account.id, account.balance).first->second;
}

}  // namespace

std::vector<event> expire_due(const ledger_state& state, time_ms now, std::size_t max_events) {
  std::vector<event> events;
  std::unordered_map<std::string, amount_t> balances;
  for (const auto& [expires_at, id] : state.pending_by_expiry) {
    if (expires_at > now || events.size() >= max_events) break;
    const auto account_id = account_of("rsv", id);
    CREDITS_ASSERT(account_id.has_value(), "indexed reservation id is malformed");
    if (state.quarantined.contains(*account_id)) continue;  // paused until the account is served again
    const auto& account = state.accounts.at(*account_id);
    const auto& r = account.reservations.at(id);
    const auto ctx = system_context(account, now);
    events.push_back(make_event(ctx, account.id, reservation_expired{id, r.amount, r.draws}));
    remove_returned(events, account, r.draws, id, running_balance(balances, account), ctx);
  }
  return events;
}

std::vector<event> expire_grants_due(const ledger_state& state, time_ms now, std::size_t max_events) {
  std::vector<event> events;
  std::unordered_map<std::string, amount_t> balances;
  for (const auto& [expires_at, id] : state.grants_by_expiry) {
    if (expires_at > now || events.size() >= max_events) break;
    const auto account_id = account_of("grt", id);
    CREDITS_ASSERT(account_id.has_value(), "indexed grant id is malformed");
    if (state.quarantined.contains(*account_id)) continue;  // paused until the account is served again
    const auto& account = state.accounts.at(*account_id);
    const auto& g = account.grants.at(id);
    CREDITS_ASSERT(g.remaining > 0, "an indexed grant has nothing left");
    auto& balance = running_balance(balances, account);
    balance -= g.remaining;
    events.push_back(make_event(system_context(account, now), account.id,
                                credits_deducted{derived_transaction_id(account.id, "expiry", id),
                                                 g.remaining,
                                                 balance,
                                                 "grant expired",
                                                 nlohmann::json::object(),
                                                 grant_draws{{id, g.remaining}},
                                                 std::string(reason_grant_expired),
                                                 id,
                                                 {}}));
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
  std::optional<std::string> refused = grant_violation(account, e);
  if (refused) return refused;
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

void apply_to(ledger_state& state, account_state& account, const event& e, const credits_added& p) {
  account.balance += p.amount;
  post(account, p.transaction_id, "CreditsAdded", p.amount);
  const auto id = grant_of(p);
  auto& g = account.grants[id];
  g.id = id;
  g.transaction_id = p.transaction_id;
  g.sequence = ++account.grants_created;
  g.created_at = e.occurred_at;
  g.expires_at = p.expires_at;
  g.priority = p.priority.value_or(grant_priority_default);
  g.category = p.category.value_or(grant_category::paid);
  g.cost = p.cost;
  g.granted = p.amount;
  adjust_remaining(state, account, g, p.amount);
}

void apply_to(ledger_state& state, account_state& account, const event& e, const credits_deducted& p) {
  auto draws = draws_of(account, e);
  for (const auto& d : draws) {
    auto& g = grant_in(account, d.grant_id);
    adjust_remaining(state, account, g, -d.amount);
    if (p.reason == reason_grant_expired)
      g.expired += d.amount;
    else if (p.reason == reason_grant_voided)
      g.voided += d.amount;
    else
      g.charged += d.amount;
  }
  if (p.reason == reason_grant_voided) grant_in(account, p.grant_id).status = grant_status::voided;
  if (p.reason == reason_grant_expired) {
    auto& g = grant_in(account, p.grant_id);
    if (g.status == grant_status::active) g.status = grant_status::expired;
  }
  account.balance -= p.amount;
  const bool charge = p.reason != reason_grant_expired && p.reason != reason_grant_voided;
  post(account, p.transaction_id, "CreditsDeducted", p.amount, p.reason, charge ? std::move(draws) : grant_draws{});
}

void apply_to(ledger_state& state, account_state& account, const event& e, const credits_reserved& p) {
  auto draws = draws_of(account, e);
  for (const auto& d : draws) {
    auto& g = grant_in(account, d.grant_id);
    adjust_remaining(state, account, g, -d.amount);
    g.held += d.amount;
    account.grants_held += d.amount;
  }
  account.reserved += p.amount;
  account.reservations.emplace(p.reservation_id, reservation_state{p.reservation_id, p.amount, e.occurred_at,
                                                                   p.expires_at, reservation_status::pending, 0,
                                                                   p.operation, p.model, p.metadata, std::move(draws)});
  state.pending_by_expiry.emplace(p.expires_at, p.reservation_id);
}

// A hold's draws leave `held`: `charged` of them is charged, the rest returns to each grant's remaining.
void settle_hold(ledger_state& state, account_state& account, const reservation_state& r, const grant_draws& charged) {
  const auto charged_by_grant = per_grant(charged);
  for (const auto& [id, held] : per_grant(r.draws)) {
    auto& g = grant_in(account, id);
    const auto c = charged_by_grant.find(id);
    const amount_t charge = c == charged_by_grant.end() ? 0 : c->second;
    g.held -= held;
    account.grants_held -= held;
    g.charged += charge;
    adjust_remaining(state, account, g, held - charge);
    CREDITS_ASSERT(g.held >= 0, "a grant's held went negative");
  }
}

void apply_to(ledger_state& state, account_state& account, const event& e, const reservation_confirmed& p) {
  auto charged = draws_of(account, e);
  auto& r = pending_in(account, p.reservation_id);
  settle_hold(state, account, r, charged);
  release(state, account, r, reservation_status::confirmed);
  r.charged = p.charged;
  account.balance -= p.charged;
  post(account, p.transaction_id, "ReservationConfirmed", p.charged, {}, std::move(charged));
}

void apply_to(ledger_state& state, account_state& account, const event& e, const transaction_reversed& p) {
  const auto draws = draws_of(account, e);
  const auto original = account.transactions.find(p.original_transaction_id);
  for (const auto& d : draws) {
    auto& g = grant_in(account, d.grant_id);
    if (balance_delta(p) < 0) {
      adjust_remaining(state, account, g, -d.amount);
      g.granted -= d.amount;
      continue;
    }
    adjust_remaining(state, account, g, d.amount);
    g.refunded += d.amount;
    if (original == account.transactions.end()) continue;
    // The original's draws keep what is not refunded yet: the next refund starts where this one stopped.
    amount_t left = d.amount;
    auto& taken = original->second.draws;
    for (auto it = taken.rbegin(); it != taken.rend() && left > 0; ++it) {
      if (it->grant_id != d.grant_id) continue;
      const amount_t part = std::min(left, it->amount);
      it->amount -= part;
      left -= part;
    }
    std::erase_if(taken, [](const grant_draw& t) { return t.amount == 0; });
  }
  // decide() reverses only what it knows; the folds judge a reversal by its money alone, as the projector can.
  if (original != account.transactions.end()) original->second.reversed += p.amount;
  account.balance += balance_delta(p);
  post(account, p.transaction_id, "TransactionReversed", p.amount);
}

void apply_to(ledger_state& state, account_state& account, const event&, const reservation_cancelled& p) {
  auto& r = pending_in(account, p.reservation_id);
  settle_hold(state, account, r, {});
  release(state, account, r, reservation_status::cancelled);
}

void apply_to(ledger_state& state, account_state& account, const event&, const reservation_expired& p) {
  auto& r = pending_in(account, p.reservation_id);
  settle_hold(state, account, r, {});
  release(state, account, r, reservation_status::expired);
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
  CREDITS_ASSERT(account.grants_remaining + account.grants_held == account.balance,
                 "the grants hold other credits than the balance");
  CREDITS_ASSERT(account.grants_held == account.reserved, "the grants hold other credits than the reservations");
}

}  // namespace credits
