#include "credits/projector/fold.hpp"

#include <algorithm>
#include <charconv>
#include <map>
#include <optional>
#include <unordered_map>

#include "credits/common/domain.hpp"
#include "credits/common/ids.hpp"
#include "credits/common/overloaded.hpp"
#include "credits/read_model/layout.hpp"

namespace credits::read_model {
namespace {

using command_list = std::vector<std::vector<std::string>>;

std::string num(std::int64_t n) { return std::to_string(n); }

std::string meta(const nlohmann::json& m) { return m.is_null() ? std::string("{}") : m.dump(); }

// Creating the balance fields with a zero increment, rather than setting them, keeps the fold a pure sum of
// deltas: the account hash never depends on which event happened to arrive first.
command_list fold_payload(const event& e, std::int64_t, const fold_context&, const account_created& p) {
  const auto key = account_key(e.account_id);
  return {{"HSET", key, "id", e.account_id, "tenant", e.tenant, "name", p.name, "externalId", p.external_id, "email",
           p.email, "metadata", meta(p.metadata), "createdAt", format_time(e.occurred_at)},
          {"HINCRBY", key, "balance", "0"},
          {"HINCRBY", key, "reserved", "0"},
          {"HINCRBY", key, "promotional", "0"},
          {"ZADD", accounts_key(e.tenant), num(e.occurred_at), e.account_id}};
}

// ---- grants: where each credit of the balance is (layout.hpp: the grant hashes, the balance by category and
// the tenant's daily report). Events written before grants carry no draws: their credits count as paid, the
// category of every grant made before grants existed.

std::string_view category_of(const fold_context& context, const std::string& grant_id) {
  const auto it = context.categories.find(grant_id);
  return to_string(it == context.categories.end() ? grant_category::paid : it->second);
}

// The balance of one category moves by `delta`; the tenant's report counts `reported` under `metric` that day.
// Only the promotional part is kept: the paid part is the rest of the balance, so a view folded before grants
// (every credit paid) needs no migration.
void account_for(command_list& out, const event& e, std::string_view category, amount_t delta, const char* metric,
                 amount_t reported) {
  if (category == to_string(grant_category::promotional) && delta != 0)
    out.push_back({"HINCRBY", account_key(e.account_id), "promotional", num(delta)});
  out.push_back({"HINCRBY", grant_report_key(e.tenant, format_time(e.occurred_at).substr(0, 10)),
                 grant_report_field(metric, category), num(reported)});
}

void count(command_list& out, const event& e, const std::string& grant_id, std::string_view field, amount_t delta) {
  out.push_back({"HINCRBY", grant_key(e.account_id), grant_field(grant_id, field), num(delta)});
}

// `amount` of a grant moves from one counter to another. The view keeps no `remaining`: it is what the other
// counters leave of the amount (layout.hpp), so a move from or into it is one increment.
constexpr std::string_view remaining = "remaining";
void move(command_list& out, const event& e, const std::string& grant_id, std::string_view from, std::string_view into,
          amount_t amount) {
  for (const auto& [field, delta] : {std::pair{from, -amount}, std::pair{into, amount}})
    if (field != remaining) count(out, e, grant_id, field, delta);
}

// Credits leave the balance: from each draw's `remaining` (or, for a charge of a hold, `held`) into `into`; the
// report counts them under `metric`. Without draws (an event written before grants) they were paid credits.
void take(command_list& out, const event& e, const fold_context& context, const std::optional<grant_draws>& draws,
          amount_t amount, const char* from, const char* into, const char* metric) {
  if (!draws) return account_for(out, e, to_string(grant_category::paid), -amount, metric, amount);
  for (const auto& d : *draws) {
    move(out, e, d.grant_id, from, into, d.amount);
    account_for(out, e, category_of(context, d.grant_id), -d.amount, metric, d.amount);
  }
}

// The grant side of an event written before grants, done by Redis (legacy_lua).
std::vector<std::string> legacy(const event& e, const char* kind, amount_t amount, std::string id1,
                                std::string id2 = {}, std::string given = {}) {
  return {std::string(legacy_command),
          grants_key(e.account_id),
          kind,
          grant_key(e.account_id),
          num(amount),
          std::move(id1),
          std::move(id2),
          format_time(e.occurred_at),
          std::move(given),
          legacy_draws_key(e.account_id)};
}

// Credits move between a grant's `remaining` and `held` (a hold, or its release): the balance does not move.
void shift(command_list& out, const event& e, const std::optional<grant_draws>& draws, const char* from,
           const char* into) {
  for (const auto& d : draws.value_or(grant_draws{})) move(out, e, d.grant_id, from, into, d.amount);
}

// What an entry says of credit grants: the grant it created, expired or voided, why a deduction was made, and
// what it took from (or returned to) each grant. Events written before grants say none of it.
struct grant_facts {
  const std::optional<grant_draws>& draws;
  std::string grant_id = {};
  std::string reason = {};
};

// One entry of the account's transaction list: the index (by time) and the entry itself. What an entry does not
// have (no metadata, no reservation, no reversal, no grant, no reason, no draws) is absent rather than null or
// empty: read_model::list_transactions puts it back. Every byte here is written for each event, also to the AOF.
command_list transaction(const event& e, std::int64_t offset, const std::string& id, const char* type, amount_t amount,
                         amount_t balance_after, const std::string& description, const nlohmann::json& metadata,
                         const std::string& reservation_id, const grant_facts& grants,
                         const std::string& reversal_of = {}) {
  nlohmann::json entry{{"id", id},
                       {"type", type},
                       {"amount", amount},
                       {"balanceAfter", balance_after},
                       {"description", description},
                       {"createdAt", format_time(e.occurred_at)}};
  if (!metadata.is_null() && metadata != nlohmann::json::object()) entry["metadata"] = metadata;
  for (const auto& [field, value] : {std::pair{"reservationId", &reservation_id},
                                     {"reversalOf", &reversal_of},
                                     {"grantId", &grants.grant_id},
                                     {"reason", &grants.reason}})
    if (!value->empty()) entry[field] = *value;
  if (grants.draws && !grants.draws->empty()) entry["draws"] = draws_json(*grants.draws);
  return {{"ZADD", transactions_key(e.account_id), num(e.occurred_at), sequenced(offset, id)},
          {"HSET", transaction_entries_key(e.account_id), id, entry.dump()}};
}

command_list& operator+=(command_list& a, command_list b) {
  for (auto& c : b) a.push_back(std::move(c));
  return a;
}

command_list fold_payload(const event& e, std::int64_t offset, const fold_context&, const credits_added& p) {
  const auto grant_id = grant_of(p);
  const auto category = to_string(p.category.value_or(grant_category::paid));
  // The terms, in one field of the account's grants. Only what the reads cannot know is written (layout.hpp): no
  // default (priority, category), no transaction id that follows from the grant's id, no creation time (the
  // listing's score), no expiry or cost basis it does not have. Every add writes them, also to the AOF.
  nlohmann::json terms{{"amount", p.amount}};
  if (p.priority && *p.priority != grant_priority_default) terms["priority"] = *p.priority;
  if (p.category && *p.category != grant_category::paid) terms["category"] = category;
  if (grant_id_of(p.transaction_id) != grant_id) terms["transactionId"] = p.transaction_id;
  if (p.expires_at) terms["expiresAt"] = format_time(*p.expires_at);
  if (p.cost) {
    terms["costAmount"] = p.cost->amount;
    terms["costCurrency"] = p.cost->currency;
  }
  command_list out{{"HINCRBY", account_key(e.account_id), "balance", num(p.amount)},
                   {"HSET", grant_key(e.account_id), grant_id, terms.dump()},
                   {"ZADD", grants_key(e.account_id), num(e.occurred_at), sequenced(offset, grant_id)}};
  if (p.expires_at) out.push_back({"ZADD", grant_expiries_key(e.account_id), num(*p.expires_at), grant_id});
  account_for(out, e, category, p.amount, "granted", p.amount);
  return out += transaction(e, offset, p.transaction_id, "credit", p.amount, p.balance_after, p.description, p.metadata,
                            "", {std::nullopt, grant_id});
}

command_list fold_payload(const event& e, std::int64_t offset, const fold_context& context, const credits_deducted& p) {
  command_list out{{"HINCRBY", account_key(e.account_id), "balance", num(-p.amount)}};
  auto draws = p.draws;
  if (!draws && !p.grant_id.empty()) draws = p.amount > 0 ? grant_draws{{p.grant_id, p.amount}} : grant_draws{};
  const bool expiry = p.reason == reason_grant_expired, void_ = p.reason == reason_grant_voided;
  const char* into = expiry ? "expired" : void_ ? "voided" : "charged";
  const char* metric = expiry ? "expired" : void_ ? "voided" : "consumed";
  take(out, e, context, draws, p.amount, "remaining", into, metric);
  if (!draws) out.push_back(legacy(e, "take-charge", p.amount, p.transaction_id));
  if ((expiry || void_) && !p.grant_id.empty()) {
    out.push_back({"HSET", grant_key(e.account_id), grant_field(p.grant_id, "status"), expiry ? "expired" : "voided"});
    out.push_back({"ZREM", grant_expiries_key(e.account_id), p.grant_id});
  }
  return out += transaction(e, offset, p.transaction_id, "debit", -p.amount, p.balance_after, p.description, p.metadata,
                            p.reservation_id, {p.draws, p.grant_id, p.reason});
}

command_list fold_payload(const event& e, std::int64_t, const fold_context&, const credits_reserved& p) {
  command_list out{{"HINCRBY", account_key(e.account_id), "reserved", num(p.amount)},
                   {"HSET",      reservation_key(e.account_id, p.reservation_id),
                    "id",        p.reservation_id,
                    "accountId", e.account_id,
                    "amount",    num(p.amount),
                    "status",    "pending",
                    "createdAt", format_time(e.occurred_at),
                    "expiresAt", format_time(p.expires_at),
                    "operation", p.operation,
                    "model",     p.model,
                    "metadata",  meta(p.metadata)},
                   {"ZADD", reservations_key(e.account_id), num(e.occurred_at), p.reservation_id}};
  if (p.draws) out[1].insert(out[1].end(), {"draws", draws_json(*p.draws).dump()});
  shift(out, e, p.draws, "remaining", "held");
  if (!p.draws) out.push_back(legacy(e, "take-hold", p.amount, reservation_key(e.account_id, p.reservation_id)));
  return out;
}

// The whole hold leaves `reserved`; only the charged part leaves the balance. The charge comes from the hold's
// draws in their order (the event's draws say which); the rest of each returns to its grant.
command_list fold_payload(const event& e, std::int64_t offset, const fold_context& context,
                          const reservation_confirmed& p) {
  const auto key = account_key(e.account_id);
  command_list out{
      {"HINCRBY", key, "reserved", num(-(p.charged + p.released))},
      {"HINCRBY", key, "balance", num(-p.charged)},
      {"HSET", reservation_key(e.account_id, p.reservation_id), "status", "confirmed", "charged", num(p.charged),
       "released", num(p.released), "transactionId", p.transaction_id, "resolvedAt", format_time(e.occurred_at)}};
  if (!context.hold) {
    // A hold made before grants: Redis knows what it took.
    for (const auto& d : p.draws.value_or(grant_draws{}))
      account_for(out, e, category_of(context, d.grant_id), -d.amount, "consumed", d.amount);
    if (!p.draws) account_for(out, e, to_string(grant_category::paid), -p.charged, "consumed", p.charged);
    out.push_back(legacy(e, "confirm", p.charged, reservation_key(e.account_id, p.reservation_id), p.transaction_id,
                         p.draws ? draws_json(*p.draws).dump() : std::string()));
  } else {
    const auto charged = p.draws ? *p.draws : first_of(*context.hold, p.charged);
    // One increment per counter and grant: the whole hold leaves `held` (or the charge, where a hand-made one
    // takes more from a grant than the hold did), the charge goes to `charged`, and the rest of the hold returns
    // to what is left of its grant, which is not kept. A hand-made hold may name a grant twice.
    std::map<std::string, std::pair<amount_t, amount_t>> per_grant;  // grant -> (held by the hold, charged)
    for (const auto& d : *context.hold) per_grant[d.grant_id].first += d.amount;
    for (const auto& d : charged) per_grant[d.grant_id].second += d.amount;
    for (const auto& [grant_id, amounts] : per_grant) {
      const auto [held, into] = amounts;
      if (const auto leaves = std::max(held, into); leaves != 0) count(out, e, grant_id, "held", -leaves);
      if (into != 0) count(out, e, grant_id, "charged", into);
    }
    for (const auto& d : charged)
      account_for(out, e, category_of(context, d.grant_id), -d.amount, "consumed", d.amount);
    // A confirm written before grants is a charge a later refund written before grants returns, last drawn first.
    if (!p.draws) out.push_back({"HSET", legacy_draws_key(e.account_id), p.transaction_id, draws_json(charged).dump()});
  }
  return out += transaction(e, offset, p.transaction_id, "charge", -p.charged, p.balance_after, "", nullptr,
                            p.reservation_id, {p.draws});
}

command_list fold_release(const event& e, const std::string& reservation_id, amount_t released, const char* status,
                          const std::optional<grant_draws>& draws) {
  command_list out{{"HINCRBY", account_key(e.account_id), "reserved", num(-released)},
                   {"HSET", reservation_key(e.account_id, reservation_id), "status", status, "released", num(released),
                    "resolvedAt", format_time(e.occurred_at)}};
  shift(out, e, draws, "held", "remaining");
  if (!draws) out.push_back(legacy(e, "release", released, reservation_key(e.account_id, reservation_id)));
  return out;
}

command_list fold_payload(const event& e, std::int64_t, const fold_context&, const reservation_cancelled& p) {
  return fold_release(e, p.reservation_id, p.released, "cancelled", p.draws);
}

command_list fold_payload(const event& e, std::int64_t, const fold_context&, const reservation_expired& p) {
  return fold_release(e, p.reservation_id, p.released, "expired", p.draws);
}

command_list fold_payload(const event& e, std::int64_t offset, const fold_context&, const usage_recorded& p) {
  const auto when = format_time(e.occurred_at);
  const auto daily = usage_daily_key(e.account_id, std::string_view(when).substr(0, 10));
  const auto counter = [&](const char* field) { return p.model_id + ":" + field; };
  command_list out{{"HSET",
                    usage_key(e.account_id, p.usage_id),
                    "id",
                    p.usage_id,
                    "accountId",
                    e.account_id,
                    "context",
                    p.context,
                    "transactionId",
                    p.transaction_id,
                    "modelId",
                    p.model_id,
                    "usageType",
                    p.usage_type,
                    "inputTokens",
                    num(p.input_tokens),
                    "outputTokens",
                    num(p.output_tokens),
                    "cachedTokens",
                    num(p.cached_tokens),
                    "metadata",
                    meta(p.metadata),
                    "createdAt",
                    when},
                   {"HINCRBY", daily, counter("inputTokens"), num(p.input_tokens)},
                   {"HINCRBY", daily, counter("outputTokens"), num(p.output_tokens)},
                   {"HINCRBY", daily, counter("cachedTokens"), num(p.cached_tokens)},
                   {"HINCRBY", daily, counter("records"), "1"},
                   {"ZADD", usage_records_key(e.account_id), num(e.occurred_at), sequenced(offset, p.usage_id)}};
  if (p.cost_credits) out[0].insert(out[0].end(), {"costCredits", num(*p.cost_credits)});
  // Summaries by model, context and day, for the account and for its tenant (see usage_summary_field).
  const auto day = std::string_view(when).substr(0, 10);
  for (const auto& key : {usage_summary_key(e.account_id, day), tenant_usage_summary_key(e.tenant, day)}) {
    out.push_back({"HINCRBY", key, usage_summary_field(p.context, "inputTokens", p.model_id), num(p.input_tokens)});
    out.push_back({"HINCRBY", key, usage_summary_field(p.context, "outputTokens", p.model_id), num(p.output_tokens)});
    out.push_back({"HINCRBY", key, usage_summary_field(p.context, "cachedTokens", p.model_id), num(p.cached_tokens)});
    out.push_back({"HINCRBY", key, usage_summary_field(p.context, "records", p.model_id), "1"});
    if (p.cost_credits)
      out.push_back({"HINCRBY", key, usage_summary_field(p.context, "costCredits", p.model_id), num(*p.cost_credits)});
  }
  return out;
}

// A refund returns credits to the grants they were drawn from; a correction of added credits takes them back.
command_list fold_payload(const event& e, std::int64_t offset, const fold_context& context,
                          const transaction_reversed& p) {
  command_list out{{"HINCRBY", account_key(e.account_id), "balance", num(balance_delta(p))}};
  if (balance_delta(p) < 0) {
    take(out, e, context, p.draws, p.amount, "remaining", "corrected", "corrected");
    if (!p.draws) out.push_back(legacy(e, "correct", p.amount, grant_id_of(p.original_transaction_id)));
  } else if (!p.draws) {
    account_for(out, e, to_string(grant_category::paid), p.amount, "refunded", p.amount);
    out.push_back(legacy(e, "refund", p.amount, p.original_transaction_id));
  } else {
    for (const auto& d : *p.draws) {
      count(out, e, d.grant_id, "refunded", d.amount);
      account_for(out, e, category_of(context, d.grant_id), d.amount, "refunded", d.amount);
    }
  }
  auto entry = transaction(e, offset, p.transaction_id, "reversal", balance_delta(p), p.balance_after, p.description,
                           p.metadata, "", {p.draws}, p.original_transaction_id);
  return out += std::move(entry);
}

// A signal for downstream consumers; the credits moved with the event that caused it.
command_list fold_payload(const event&, std::int64_t, const fold_context&, const balance_low&) { return {}; }

// The void is audited on the account (its key, time and reason); the view-wide marks are void_marks'.
command_list fold_payload(const event& e, std::int64_t, const fold_context&, const event_voided& p) {
  const nlohmann::json audit{{"eventId", p.voided_event_id},
                             {"reason", p.reason},
                             {"apiKeyId", e.api_key_id},
                             {"voidedAt", format_time(e.occurred_at)},
                             {"voidEventId", e.event_id}};
  command_list out{{"HSET", voided_key(e.account_id), p.voided_position,
                    audit.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)}};
  if (p.account_unblocked) out.push_back({"HDEL", account_key(e.account_id), "blocked", "blockedAt"});
  return out;
}

using guard_list = std::vector<std::vector<std::string>>;

guard_list account_must_exist(const event& e) {
  return {{"present", account_key(e.account_id), "id", "no account " + e.account_id}};
}

std::vector<std::string> money(const event& e, amount_t balance_delta, amount_t reserved_delta,
                               std::optional<amount_t> balance_after) {
  return {"money",
          account_key(e.account_id),
          num(balance_delta),
          num(reserved_delta),
          balance_after ? num(*balance_after) : std::string(),
          std::string(type_name(e.payload)) + " breaks the money invariants"};
}

std::vector<std::string> must_be_pending(const event& e, const std::string& reservation_id) {
  return {"equals", reservation_key(e.account_id, reservation_id), "status", "pending",
          "reservation " + reservation_id + " is unknown or not pending"};
}

std::vector<std::string> hold_must_be(const event& e, const std::string& reservation_id, amount_t amount) {
  return {"equals", reservation_key(e.account_id, reservation_id), "amount", num(amount),
          std::string(type_name(e.payload)) + " accounts for " + num(amount) + " of the hold " + reservation_id};
}

// Amounts reach here only after admission (0 .. amount_max each), so these sums cannot overflow.
guard_list guard_payload(const event& e, const account_created&) {
  return {{"absent", account_key(e.account_id), "id", "account " + e.account_id + " is created twice"}};
}

guard_list guard_payload(const event& e, const credits_added& p) {
  auto g = account_must_exist(e);
  g.push_back(money(e, p.amount, 0, p.balance_after));
  return g;
}

guard_list guard_payload(const event& e, const credits_deducted& p) {
  auto g = account_must_exist(e);
  g.push_back(money(e, -p.amount, 0, p.balance_after));
  return g;
}

guard_list guard_payload(const event& e, const credits_reserved& p) {
  auto g = account_must_exist(e);
  g.push_back({"absent", reservation_key(e.account_id, p.reservation_id), "id",
               "reservation " + p.reservation_id + " is created twice"});
  g.push_back(money(e, 0, p.amount, std::nullopt));
  return g;
}

guard_list guard_payload(const event& e, const reservation_confirmed& p) {
  auto g = account_must_exist(e);
  g.push_back(must_be_pending(e, p.reservation_id));
  g.push_back(hold_must_be(e, p.reservation_id, p.charged + p.released));
  g.push_back(money(e, -p.charged, -(p.charged + p.released), p.balance_after));
  return g;
}

guard_list guard_release(const event& e, const std::string& reservation_id, amount_t released) {
  auto g = account_must_exist(e);
  g.push_back(must_be_pending(e, reservation_id));
  g.push_back(hold_must_be(e, reservation_id, released));
  g.push_back(money(e, 0, -released, std::nullopt));
  return g;
}

guard_list guard_payload(const event& e, const reservation_cancelled& p) {
  return guard_release(e, p.reservation_id, p.released);
}

guard_list guard_payload(const event& e, const reservation_expired& p) {
  return guard_release(e, p.reservation_id, p.released);
}

guard_list guard_payload(const event& e, const balance_low&) { return account_must_exist(e); }

guard_list guard_payload(const event& e, const transaction_reversed& p) {
  auto g = account_must_exist(e);
  g.push_back(money(e, balance_delta(p), 0, p.balance_after));
  return g;
}

// Usage moves no credits and credits::apply checks nothing about it; neither does the view.
guard_list guard_payload(const event&, const usage_recorded&) { return {}; }

// A void names a record no fold applied; it moves no credits and its account need not exist.
guard_list guard_payload(const event&, const event_voided&) { return {}; }

}  // namespace

// Lua 5.1 numbers are doubles, exact to 2^53 like every amount; '%d' writes them without the exponent that
// tostring() would use above 10^14.
const std::string_view legacy_lua = R"lua(
local function legacy(w)
  local grants, kind, book, amount, id1, id2, at, given, drawn = w[1], w[2], w[3], tonumber(w[4]), w[5], w[6],
                                                                   w[7], w[8], w[9]
  local function int(n) return string.format('%d', n) end
  -- An RFC 3339 time of format_time's fixed width as its digits alone: strings of digits of one length compare
  -- as their numbers under any collation (Lua compares strings with strcoll, which follows Redis's locale).
  local function digits(text) return text and (string.gsub(text, '%D', '')) or '' end
  local now = digits(at)
  local function encode(draws)
    local parts = {}
    for _, d in ipairs(draws) do
      parts[#parts + 1] = '{"amount":' .. int(d.amount) .. ',"grantId":' .. cjson.encode(d.grantId) .. '}'
    end
    return '[' .. table.concat(parts, ',') .. ']'
  end
  local function decode(text)
    local out = {}
    if not text or text == '' then return out end
    local ok, list = pcall(cjson.decode, text)
    if not ok or type(list) ~= 'table' then return out end
    for _, d in ipairs(list) do
      if type(d) == 'table' and type(d.grantId) == 'string' and type(d.amount) == 'number' then
        out[#out + 1] = {grantId = d.grantId, amount = d.amount}
      end
    end
    return out
  end
  -- The view keeps no `remaining` (layout.hpp): a move from or into it is one increment ('' is no counter).
  local function move(draws, from, into)
    for _, d in ipairs(draws) do
      if from ~= '' and from ~= 'remaining' then
        redis.call('HINCRBY', book, d.grantId .. '|' .. from, int(-d.amount))
      end
      if into ~= 'remaining' then redis.call('HINCRBY', book, d.grantId .. '|' .. into, int(d.amount)) end
    end
  end
  -- A grant's terms and what it has left: amount + refunded - held - charged - expired - voided - corrected.
  local function grant(id)
    local g = redis.call('HMGET', book, id, id .. '|refunded', id .. '|held', id .. '|charged', id .. '|expired',
                         id .. '|voided', id .. '|corrected')
    local ok, terms = pcall(cjson.decode, g[1] or '{}')
    if not ok or type(terms) ~= 'table' then terms = {} end
    local left = (tonumber(terms.amount) or 0) + tonumber(g[2] or '0')
    for i = 3, 7 do left = left - tonumber(g[i] or '0') end
    local expires = type(terms.expiresAt) == 'string' and terms.expiresAt or nil
    return left, tonumber(terms.priority) or 50, expires
  end
  -- The domain's legacy_take: the grants with something left in burn order (lower priority, sooner expiry, never
  -- last, older), those unexpired at the event's time first, then the expired ones; `skip` is already taken.
  local function burn(n, skip)
    local list = {}
    for _, member in ipairs(redis.call('ZRANGE', grants, 0, -1)) do
      local id = string.sub(member, 21)
      local left, priority, expires = grant(id)
      left = left - (skip[id] or 0)
      if left > 0 then
        list[#list + 1] = {id = id, left = left, priority = priority, expires = digits(expires),
                           seq = string.sub(member, 1, 19)}
      end
    end
    table.sort(list, function(x, y)
      if x.priority ~= y.priority then return x.priority < y.priority end
      if x.expires ~= y.expires then
        if x.expires == '' or y.expires == '' then return y.expires == '' end
        return x.expires < y.expires
      end
      return x.seq < y.seq
    end)
    local out = {}
    for pass = 1, 2 do
      for _, g in ipairs(list) do
        if n == 0 then return out end
        local expired = g.expires ~= '' and g.expires <= now
        if expired == (pass == 2) then
          local part = math.min(n, g.left)
          out[#out + 1] = {grantId = g.id, amount = part}
          n = n - part
        end
      end
    end
    return out
  end
  -- The first n of a hold's draws (what a confirm charges), and the rest of each (what it returns).
  local function split(held, n)
    local first, rest = {}, {}
    for _, d in ipairs(held) do
      local part = math.min(n, d.amount)
      if part > 0 then first[#first + 1] = {grantId = d.grantId, amount = part} end
      if d.amount > part then rest[#rest + 1] = {grantId = d.grantId, amount = d.amount - part} end
      n = n - part
    end
    return first, rest
  end
  if kind == 'take-charge' then
    local draws = burn(amount, {})
    move(draws, 'remaining', 'charged')
    redis.call('HSET', drawn, id1, encode(draws))
  elseif kind == 'take-hold' then
    local draws = burn(amount, {})
    move(draws, 'remaining', 'held')
    redis.call('HSET', id1, 'draws', encode(draws))
  elseif kind == 'confirm' then
    local held = decode(redis.call('HGET', id1, 'draws'))
    local charged, rest = split(held, amount)
    if given ~= '' then
      -- The charge names its draws (a writer of grants confirmed a hold made before them): the rest of the hold
      -- per grant returns.
      charged = decode(given)
      local left = {}
      for _, d in ipairs(held) do left[d.grantId] = (left[d.grantId] or 0) + d.amount end
      for _, d in ipairs(charged) do left[d.grantId] = (left[d.grantId] or 0) - d.amount end
      rest = {}
      for _, d in ipairs(held) do
        local part = math.min(left[d.grantId] or 0, d.amount)
        if part > 0 then
          rest[#rest + 1] = {grantId = d.grantId, amount = part}
          left[d.grantId] = left[d.grantId] - part
        end
      end
    end
    move(charged, 'held', 'charged')
    move(rest, 'held', 'remaining')
    redis.call('HSET', drawn, id2, encode(charged))
  elseif kind == 'release' then
    move(decode(redis.call('HGET', id1, 'draws')), 'held', 'remaining')
  elseif kind == 'refund' then
    -- To the original's draws, last drawn first; what they cannot take goes to the newest grant.
    local left = decode(redis.call('HGET', drawn, id1))
    local back, n = {}, amount
    for i = #left, 1, -1 do
      if n == 0 then break end
      local part = math.min(n, left[i].amount)
      back[#back + 1] = {grantId = left[i].grantId, amount = part}
      left[i].amount = left[i].amount - part
      n = n - part
    end
    if n > 0 then
      local newest = nil  -- the last created, by log order (the members' offsets), as the domain's sequence
      for _, member in ipairs(redis.call('ZRANGE', grants, 0, -1)) do
        if not newest or string.sub(member, 1, 19) > string.sub(newest, 1, 19) then newest = member end
      end
      if newest then back[#back + 1] = {grantId = string.sub(newest, 21), amount = n} end
    end
    local kept = {}
    for _, d in ipairs(left) do if d.amount > 0 then kept[#kept + 1] = d end end
    if #kept > 0 or redis.call('HEXISTS', drawn, id1) == 1 then redis.call('HSET', drawn, id1, encode(kept)) end
    move(back, '', 'refunded')
  elseif kind == 'correct' then
    -- From its grant first, then by burn order.
    local draws = {}
    local own = id1 ~= '' and grant(id1) or 0
    if id1 ~= '' and own > 0 then draws[1] = {grantId = id1, amount = math.min(amount, own)} end
    local skip = {}
    if draws[1] then skip[id1] = draws[1].amount end
    for _, d in ipairs(burn(amount - (draws[1] and draws[1].amount or 0), skip)) do draws[#draws + 1] = d end
    move(draws, 'remaining', 'corrected')
  end
end
)lua";

std::string legacy_script() { return std::string(legacy_lua) + "legacy(ARGV)\nreturn 1\n"; }

bool is_legacy(const std::vector<std::string>& command) { return !command.empty() && command[0] == legacy_command; }

std::optional<std::string> guard_state::check(const std::vector<std::vector<std::string>>& guards) const {
  const auto field = [&](const std::string& key, const std::string& name) -> const std::string* {
    const auto h = hashes_.find(key);
    if (h == hashes_.end()) return nullptr;
    const auto f = h->second.find(name);
    return f == h->second.end() ? nullptr : &f->second;
  };
  const auto number = [&](const std::string& key, const char* name) {
    const auto* v = field(key, name);
    return v ? std::stoll(*v) : std::int64_t{0};
  };
  for (const auto& g : guards) {
    const auto& kind = g.at(0);
    const auto& key = g.at(1);
    if (kind == "absent" && !field(key, g.at(2))) continue;
    if (kind == "present" && field(key, g.at(2))) continue;
    if (kind == "equals") {
      const auto* v = field(key, g.at(2));
      if (v && *v == g.at(3)) continue;
    }
    if (kind == "money") {
      // The script's arithmetic, in integers: every operand is within 2^53 after admission.
      const auto balance = number(key, "balance") + std::stoll(g.at(2));
      const auto reserved = number(key, "reserved") + std::stoll(g.at(3));
      if (reserved >= 0 && reserved <= balance && balance <= amount_max &&
          (g.at(4).empty() || balance == std::stoll(g.at(4))))
        continue;
      return g.back() + " (balance " + std::to_string(balance) + ", reserved " + std::to_string(reserved) +
             " after it)";
    }
    if (kind != "absent" && kind != "present" && kind != "equals") return "unknown guard " + kind;
    return g.back();
  }
  return std::nullopt;
}

void guard_state::apply(const std::vector<std::vector<std::string>>& commands) {
  const auto guarded = [](const std::string& name) {
    return std::find(std::begin(guarded_fields), std::end(guarded_fields), name) != std::end(guarded_fields);
  };
  for (const auto& c : commands) {
    if (c.size() < 4) continue;
    const auto& verb = c[0];
    if (verb == "HINCRBY" && guarded(c[2])) {
      auto& v = hashes_[c[1]][c[2]];
      v = std::to_string((v.empty() ? 0 : std::stoll(v)) + std::stoll(c[3]));
    } else if (verb == "HSET" || verb == "HSETNX") {
      for (std::size_t i = 2; i + 1 < c.size(); i += 2) {
        if (!guarded(c[i])) continue;
        auto& h = hashes_[c[1]];
        if (verb == "HSET")
          h[c[i]] = c[i + 1];
        else
          h.try_emplace(c[i], c[i + 1]);
      }
    }
  }
}

bool is_tally(const std::vector<std::string>& command) {
  if (command.size() != 4 || command[0] != "HINCRBY") return false;
  const std::string_view key = command[1];
  return key.starts_with(usage_summary_prefix) || key.starts_with(usage_daily_prefix) ||
         key.starts_with(grant_report_prefix);
}

namespace {

// One key's commands while a batch is coalesced.
struct key_writes {
  std::vector<std::size_t> original;                       // indices of its commands, in order
  bool plain = true;                                       // only HSET/HINCRBY/ZADD, no field both set and added
  std::vector<std::pair<std::string, std::string>> sets;   // field -> value, first-set order
  std::unordered_map<std::string, std::size_t> set_at;     // field -> index in `sets`
  std::vector<std::pair<std::string, std::int64_t>> adds;  // field -> summed delta
  std::unordered_map<std::string, std::size_t> add_at;
  std::vector<std::pair<std::string, std::string>> scores;  // member -> score
  std::unordered_map<std::string, std::size_t> score_at;
};

template <class V>
void put(std::vector<std::pair<std::string, V>>& list, std::unordered_map<std::string, std::size_t>& at,
         const std::string& name, V value) {
  const auto [it, fresh] = at.try_emplace(name, list.size());
  if (fresh)
    list.emplace_back(name, std::move(value));
  else
    list[it->second].second = std::move(value);
}

// Folds command `c` into `w`; false when the key must keep its commands as they are.
bool absorb(key_writes& w, const std::vector<std::string>& c) {
  const auto& verb = c[0];
  if (verb == "HSET" && c.size() >= 4 && c.size() % 2 == 0) {
    for (std::size_t i = 2; i < c.size(); i += 2) {
      if (w.add_at.contains(c[i])) return false;
      put(w.sets, w.set_at, c[i], c[i + 1]);
    }
    return true;
  }
  if (verb == "HINCRBY" && c.size() == 4) {
    if (w.set_at.contains(c[2])) return false;
    std::int64_t delta = 0;
    const auto [p, ec] = std::from_chars(c[3].data(), c[3].data() + c[3].size(), delta);
    if (ec != std::errc{} || p != c[3].data() + c[3].size()) return false;
    const auto [it, fresh] = w.add_at.try_emplace(c[2], w.adds.size());
    if (fresh) {
      w.adds.emplace_back(c[2], delta);
    } else if (__builtin_add_overflow(w.adds[it->second].second, delta, &w.adds[it->second].second)) {
      return false;  // Redis would refuse the sum where it overflows; keep the commands and let it
    }
    return true;
  }
  if (verb == "ZADD" && c.size() >= 4 && c.size() % 2 == 0) {
    for (std::size_t i = 2; i < c.size(); i += 2) {
      if (c[i].empty() || !(std::isdigit(static_cast<unsigned char>(c[i][0])) || c[i][0] == '-'))
        return false;  // a flag
      put(w.scores, w.score_at, c[i + 1], c[i]);
    }
    return true;
  }
  return false;
}

}  // namespace

std::vector<std::vector<std::string>> coalesce(std::vector<std::vector<std::string>> commands) {
  std::vector<std::string> order;  // keys by first appearance
  std::unordered_map<std::string, key_writes> keys;
  std::vector<std::vector<std::string>> out;
  for (std::size_t i = 0; i < commands.size(); ++i) {
    const auto& c = commands[i];
    if (c.size() < 2) {  // no key: nothing to merge it with
      out.push_back(c);
      continue;
    }
    auto [it, fresh] = keys.try_emplace(c[1]);
    if (fresh) order.push_back(c[1]);
    auto& w = it->second;
    w.original.push_back(i);
    if (w.plain) w.plain = absorb(w, c);
  }
  out.reserve(out.size() + keys.size());
  for (const auto& key : order) {
    auto& w = keys.at(key);
    if (!w.plain) {
      for (const auto i : w.original) out.push_back(std::move(commands[i]));
      continue;
    }
    if (!w.sets.empty()) {
      std::vector<std::string> hset{"HSET", key};
      for (auto& [field, value] : w.sets) {
        hset.push_back(field);
        hset.push_back(std::move(value));
      }
      out.push_back(std::move(hset));
    }
    for (const auto& [field, delta] : w.adds) out.push_back({"HINCRBY", key, field, std::to_string(delta)});
    if (!w.scores.empty()) {
      std::vector<std::string> zadd{"ZADD", key};
      for (auto& [member, score] : w.scores) {
        zadd.push_back(std::move(score));
        zadd.push_back(member);
      }
      out.push_back(std::move(zadd));
    }
  }
  return out;
}

std::vector<std::vector<std::string>> guards(const event& e) {
  return std::visit([&](const auto& p) { return guard_payload(e, p); }, e.payload);
}

std::vector<std::vector<std::string>> poison_marks(std::string_view topic, std::int32_t partition, std::int64_t offset,
                                                   std::string_view key, std::string_view reason) {
  const auto where = poison_field(topic, partition, offset);
  // The key and reason may be any bytes; the JSON text must stay valid, so invalid UTF-8 is replaced.
  const auto entry =
      nlohmann::json{{"key", key}, {"reason", reason}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  command_list out{{"HSET", std::string(poison_key), where, entry}};
  if (!key.empty()) {
    const auto account = account_key(key);
    out.push_back({"HSET", account, "blocked", "1"});
    out.push_back({"HSETNX", account, "blockedAt", where});
    out.push_back({"SADD", std::string(blocked_key), std::string(key)});
  }
  return out;
}

std::vector<std::vector<std::string>> void_marks(const event& e) {
  const auto* v = std::get_if<event_voided>(&e.payload);
  if (!v) return {};
  command_list out{{"HDEL", std::string(poison_key), v->voided_position}};
  if (v->account_unblocked) out.push_back({"SREM", std::string(blocked_key), e.account_id});
  return out;
}

std::vector<std::vector<std::string>> fold(const event& e, std::int64_t offset, const fold_context& context) {
  return std::visit([&](const auto& p) { return fold_payload(e, offset, context, p); }, e.payload);
}

fold_facts facts_of(const event& e) {
  fold_facts out;
  const auto add = [&](const std::optional<grant_draws>& draws) {
    for (const auto& d : draws.value_or(grant_draws{}))
      if (std::find(out.grants.begin(), out.grants.end(), d.grant_id) == out.grants.end())
        out.grants.push_back(d.grant_id);
  };
  std::visit(overloaded{[&](const credits_deducted& p) {
                          add(p.draws);
                          if (!p.draws && !p.grant_id.empty()) out.grants.push_back(p.grant_id);
                        },
                        [&](const reservation_confirmed& p) {
                          add(p.draws);
                          out.reservation = p.reservation_id;
                        },
                        [&](const transaction_reversed& p) { add(p.draws); }, [](const auto&) {}},
             e.payload);
  return out;
}

fold_context fold_memory::context(const event& e, fold_facts& missing) const {
  const auto facts = facts_of(e);
  fold_context out;
  missing = {};
  const std::lock_guard lock(mutex_);
  for (const auto& id : facts.grants) {
    if (const auto it = categories_.find(id); it != categories_.end())
      out.categories.emplace(id, it->second);
    else
      missing.grants.push_back(id);
  }
  if (!facts.reservation.empty()) {
    if (const auto it = holds_.find(facts.reservation); it != holds_.end())
      out.hold = it->second;
    else
      missing.reservation = facts.reservation;
  }
  return out;
}

void fold_memory::learn(const event& e) {
  const std::lock_guard lock(mutex_);
  // Facts are written once: a hand-made duplicate (which the script refuses) must not replace the first.
  if (const auto* added = std::get_if<credits_added>(&e.payload))
    categories_.try_emplace(grant_of(*added), added->category.value_or(grant_category::paid));
  else if (const auto* held = std::get_if<credits_reserved>(&e.payload))
    holds_.try_emplace(held->reservation_id, held->draws);
  else if (const auto* confirmed = std::get_if<reservation_confirmed>(&e.payload))
    holds_.erase(confirmed->reservation_id);
}

void fold_memory::trim() {
  const std::lock_guard lock(mutex_);
  if (categories_.size() + holds_.size() <= facts_max_) return;
  categories_.clear();
  holds_.clear();
}

std::size_t fold_memory::size() const {
  const std::lock_guard lock(mutex_);
  return categories_.size() + holds_.size();
}

std::vector<std::vector<std::string>> fold_memory::lookups(const std::string& account_id, const fold_facts& missing) {
  std::vector<std::vector<std::string>> out;
  for (const auto& id : missing.grants) out.push_back({"HGET", grant_key(account_id), id});
  if (!missing.reservation.empty()) out.push_back({"HGET", reservation_key(account_id, missing.reservation), "draws"});
  return out;
}

void fold_memory::complete(fold_context& context, const fold_facts& missing,
                           const std::vector<std::optional<std::string>>& replies) {
  std::size_t i = 0;
  const auto reply = [&]() -> const std::optional<std::string>& {
    static const std::optional<std::string> none;
    return i < replies.size() ? replies[i++] : none;
  };
  for (const auto& id : missing.grants) {
    const auto& r = reply();
    // The grant's terms (layout.hpp); a view without them (or with damaged ones) gives the default.
    const auto terms = r ? nlohmann::json::parse(*r, nullptr, false) : nlohmann::json();
    const auto* category = terms.is_object() && terms.contains("category") && terms["category"].is_string()
                               ? terms["category"].get_ptr<const std::string*>()
                               : nullptr;
    context.categories[id] =
        category ? grant_category_from(*category).value_or(grant_category::paid) : grant_category::paid;
  }
  if (!missing.reservation.empty()) {
    const auto& r = reply();
    const auto j = r ? nlohmann::json::parse(*r, nullptr, false) : nlohmann::json();
    context.hold.reset();
    if (j.is_array()) {
      context.hold.emplace();
      for (const auto& d : j)
        if (d.is_object() && d.contains("grantId") && d.contains("amount") && d["grantId"].is_string() &&
            d["amount"].is_number_integer())
          context.hold->push_back({d["grantId"].get<std::string>(), d["amount"].get<amount_t>()});
    }
  }
  // Only what the view held is remembered: a default read from a view that lost its data would outlive its rebuild.
  const std::lock_guard lock(mutex_);
  for (std::size_t k = 0; k < missing.grants.size(); ++k)
    if (k < replies.size() && replies[k]) categories_[missing.grants[k]] = context.categories.at(missing.grants[k]);
  if (!missing.reservation.empty() && missing.grants.size() < replies.size() && replies[missing.grants.size()])
    holds_[missing.reservation] = context.hold;
}

void fold_memory::clear() {
  const std::lock_guard lock(mutex_);
  categories_.clear();
  holds_.clear();
}

}  // namespace credits::read_model
