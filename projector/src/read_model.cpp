#include "credits/read_model.hpp"

#include <algorithm>
#include <charconv>
#include <iterator>
#include <optional>
#include <unordered_map>

namespace credits::read_model {
namespace {

template <class... F>
struct overloaded : F... {
  using F::operator()...;
};

using command_list = std::vector<std::vector<std::string>>;
using hash_fields = std::unordered_map<std::string, std::string>;

std::string tagged(std::string_view prefix, std::string_view account_id) {
  std::string key;
  key.reserve(prefix.size() + account_id.size() + 2);
  key.append(prefix).append("{").append(account_id).append("}");
  return key;
}

std::string num(std::int64_t n) { return std::to_string(n); }

std::string meta(const nlohmann::json& m) { return m.is_null() ? std::string("{}") : m.dump(); }

// HGETALL's flat field/value list as a map. A missing hash reads as empty.
hash_fields read_hash(redis_connection& redis, const std::string& key) {
  const auto r = redis.run({"HGETALL", key});
  hash_fields out;
  for (std::size_t i = 0; i + 1 < r.array.size(); i += 2)
    if (r.array[i] && r.array[i + 1]) out.emplace(*r.array[i], *r.array[i + 1]);
  return out;
}

std::string text(const hash_fields& h, const char* field) {
  const auto it = h.find(field);
  return it == h.end() ? std::string() : it->second;
}

// The projector writes every number itself, so one that does not parse means the read model is damaged;
// that is reported, never read as zero.
std::int64_t integer(const hash_fields& h, const char* field, const std::string& key) {
  const auto it = h.find(field);
  if (it == h.end()) return 0;
  std::int64_t n = 0;
  const auto& s = it->second;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc{} || p != s.data() + s.size())
    throw std::runtime_error("read model: " + key + " field " + field + " is not an integer: " + s);
  return n;
}

nlohmann::json json_field(const hash_fields& h, const char* field) {
  auto j = nlohmann::json::parse(text(h, field), nullptr, false);
  return j.is_object() ? j : nlohmann::json::object();
}

// Creating the balance fields with a zero increment, rather than setting them, keeps the fold a pure sum of
// deltas: the account hash never depends on which event happened to arrive first.
command_list fold_payload(const event& e, const account_created& p) {
  const auto key = account_key(e.account_id);
  return {{"HSET", key, "id", e.account_id, "tenant", e.tenant, "name", p.name, "externalId", p.external_id, "email",
           p.email, "metadata", meta(p.metadata), "createdAt", format_time(e.occurred_at)},
          {"HINCRBY", key, "balance", "0"},
          {"HINCRBY", key, "reserved", "0"}};
}

command_list fold_payload(const event& e, const credits_added& p) {
  return {{"HINCRBY", account_key(e.account_id), "balance", num(p.amount)}};
}

command_list fold_payload(const event& e, const credits_deducted& p) {
  return {{"HINCRBY", account_key(e.account_id), "balance", num(-p.amount)}};
}

command_list fold_payload(const event& e, const credits_reserved& p) {
  return {{"HINCRBY", account_key(e.account_id), "reserved", num(p.amount)},
          {"HSET", reservation_key(e.account_id, p.reservation_id), "id", p.reservation_id, "accountId", e.account_id,
           "amount", num(p.amount), "status", "pending", "createdAt", format_time(e.occurred_at), "expiresAt",
           format_time(p.expires_at), "operation", p.operation, "model", p.model, "metadata", meta(p.metadata)},
          {"ZADD", reservations_key(e.account_id), num(e.occurred_at), p.reservation_id}};
}

// The whole hold leaves `reserved`; only the charged part leaves the balance.
command_list fold_payload(const event& e, const reservation_confirmed& p) {
  const auto key = account_key(e.account_id);
  return {{"HINCRBY", key, "reserved", num(-(p.charged + p.released))},
          {"HINCRBY", key, "balance", num(-p.charged)},
          {"HSET", reservation_key(e.account_id, p.reservation_id), "status", "confirmed", "charged", num(p.charged),
           "released", num(p.released), "transactionId", p.transaction_id, "resolvedAt", format_time(e.occurred_at)}};
}

command_list fold_release(const event& e, const std::string& reservation_id, amount_t released, const char* status) {
  return {{"HINCRBY", account_key(e.account_id), "reserved", num(-released)},
          {"HSET", reservation_key(e.account_id, reservation_id), "status", status, "released", num(released),
           "resolvedAt", format_time(e.occurred_at)}};
}

command_list fold_payload(const event& e, const reservation_cancelled& p) {
  return fold_release(e, p.reservation_id, p.released, "cancelled");
}

command_list fold_payload(const event& e, const reservation_expired& p) {
  return fold_release(e, p.reservation_id, p.released, "expired");
}

command_list fold_payload(const event& e, const usage_recorded& p) {
  const auto when = format_time(e.occurred_at);
  const auto daily = usage_daily_key(e.account_id, std::string_view(when).substr(0, 10));
  const auto counter = [&](const char* field) { return p.model_id + ":" + field; };
  return {{"HSET", usage_key(e.account_id, p.usage_id), "id", p.usage_id, "accountId", e.account_id, "context",
           p.context, "transactionId", p.transaction_id, "modelId", p.model_id, "usageType", p.usage_type,
           "inputTokens", num(p.input_tokens), "outputTokens", num(p.output_tokens), "cachedTokens",
           num(p.cached_tokens), "metadata", meta(p.metadata), "createdAt", when},
          {"HINCRBY", daily, counter("inputTokens"), num(p.input_tokens)},
          {"HINCRBY", daily, counter("outputTokens"), num(p.output_tokens)},
          {"HINCRBY", daily, counter("cachedTokens"), num(p.cached_tokens)},
          {"HINCRBY", daily, counter("records"), "1"}};
}

// A signal for downstream consumers; the credits moved with the event that caused it.
command_list fold_payload(const event&, const balance_low&) { return {}; }

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

// Usage moves no credits and credits::apply checks nothing about it; neither does the view.
guard_list guard_payload(const event&, const usage_recorded&) { return {}; }

}  // namespace

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

std::string poison_field(std::string_view topic, std::int32_t partition, std::int64_t offset) {
  return position_field(topic, partition).append(":").append(std::to_string(offset));
}

std::vector<std::vector<std::string>> guards(const event& e) {
  return std::visit([&](const auto& p) { return guard_payload(e, p); }, e.payload);
}

std::vector<std::vector<std::string>> poison_marks(std::string_view topic, std::int32_t partition,
                                                   std::int64_t offset, std::string_view key,
                                                   std::string_view reason) {
  const auto where = poison_field(topic, partition, offset);
  // The key and reason may be any bytes; the JSON text must stay valid, so invalid UTF-8 is replaced.
  const auto entry = nlohmann::json{{"key", key}, {"reason", reason}}.dump(-1, ' ', false,
                                                                              nlohmann::json::error_handler_t::replace);
  command_list out{{"HSET", std::string(poison_key), where, entry}};
  if (!key.empty()) {
    const auto account = account_key(key);
    out.push_back({"HSET", account, "blocked", "1"});
    out.push_back({"HSETNX", account, "blockedAt", where});
    out.push_back({"SADD", std::string(blocked_key), std::string(key)});
  }
  return out;
}

std::string account_key(std::string_view account_id) { return tagged("credits:account:", account_id); }

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
  return tagged("credits:usage-daily:", account_id).append(":").append(day);
}

std::optional<account_view> get_account(redis_connection& redis, std::string_view account_id) {
  const auto key = account_key(account_id);
  const auto h = read_hash(redis, key);
  // Only AccountCreated writes the id; a hash without it is not an account the read model knows yet.
  if (!h.contains("id")) return std::nullopt;
  return account_view{text(h, "id"),          text(h, "tenant"),       text(h, "name"),
                      text(h, "externalId"),  text(h, "email"),        json_field(h, "metadata"),
                      text(h, "createdAt"),   integer(h, "balance", key), integer(h, "reserved", key),
                      text(h, "blocked") == "1"};
}

std::optional<reservation_view> get_reservation(redis_connection& redis, std::string_view account_id,
                                                std::string_view reservation_id) {
  const auto key = reservation_key(account_id, reservation_id);
  const auto h = read_hash(redis, key);
  if (!h.contains("id")) return std::nullopt;
  return reservation_view{text(h, "id"),
                          text(h, "accountId"),
                          integer(h, "amount", key),
                          text(h, "status"),
                          text(h, "createdAt"),
                          text(h, "expiresAt"),
                          text(h, "operation"),
                          text(h, "model"),
                          json_field(h, "metadata"),
                          integer(h, "charged", key),
                          integer(h, "released", key),
                          text(h, "transactionId")};
}

std::int64_t applied_offset(redis_connection& redis, std::string_view topic, std::int32_t partition) {
  const auto field = position_field(topic, partition);
  const auto r = redis.run({"HGET", std::string(positions_key), field});
  if (!r.value) return -1;
  const hash_fields h{{field, *r.value}};
  return integer(h, field.c_str(), std::string(positions_key));
}

std::vector<std::vector<std::string>> fold(const event& e) {
  return std::visit([&](const auto& p) { return fold_payload(e, p); }, e.payload);
}

}  // namespace credits::read_model
