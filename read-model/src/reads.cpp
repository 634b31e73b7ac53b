#include "credits/read_model/reads.hpp"

#include <algorithm>
#include <charconv>
#include <functional>
#include <iterator>
#include <optional>
#include <unordered_map>

#include "credits/read_model/layout.hpp"

namespace credits::read_model {
namespace {

using command_list = std::vector<std::vector<std::string>>;
using hash_fields = std::unordered_map<std::string, std::string>;

std::string num(std::int64_t n) { return std::to_string(n); }

// An empty id is no id: null in JSON.
nlohmann::json nullable(const std::string& s) { return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s); }

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

// The view keeps no `remaining` for a grant (layout.hpp): it is what the other counters leave of the amount.
std::int64_t grant_remaining(const hash_fields& h, const std::string& key) {
  std::int64_t n = integer(h, "amount", key) + integer(h, "refunded", key);
  for (const auto* field : {"held", "charged", "expired", "voided", "corrected"}) n -= integer(h, field, key);
  return n;
}

nlohmann::json json_field(const hash_fields& h, const char* field) {
  auto j = nlohmann::json::parse(text(h, field), nullptr, false);
  return j.is_object() ? j : nlohmann::json::object();
}

}  // namespace

std::optional<account_view> get_account(redis_connection& redis, std::string_view account_id) {
  const auto key = account_key(account_id);
  const auto h = read_hash(redis, key);
  // Only AccountCreated writes the id; a hash without it is not an account the read model knows yet.
  if (!h.contains("id")) return std::nullopt;
  account_view view{text(h, "id"),
                    text(h, "tenant"),
                    text(h, "name"),
                    text(h, "externalId"),
                    text(h, "email"),
                    json_field(h, "metadata"),
                    text(h, "createdAt"),
                    integer(h, "balance", key),
                    integer(h, "reserved", key),
                    integer(h, "promotional", key),
                    text(h, "blocked") == "1",
                    text(h, "blockedAt"),
                    {}};
  if (view.blocked && !view.blocked_at.empty()) {
    const auto entry = redis.run({"HGET", std::string(poison_key), view.blocked_at}).value;
    const auto j = nlohmann::json::parse(entry.value_or(""), nullptr, false);
    if (j.is_object()) view.blocked_reason = j.value("reason", "");
  }
  return view;
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

view_status view_status_of(const std::vector<std::optional<std::string>>& id_since_reason) {
  view_status v;
  const auto field = [&](std::size_t i) {
    return i < id_since_reason.size() && id_since_reason[i] ? *id_since_reason[i] : std::string();
  };
  v.id = field(0);
  v.since = field(1);
  v.reason = field(2);
  if (!v.id.empty())
    v.state = view_status::state_t::ready;
  else if (!v.since.empty())
    v.state = view_status::state_t::rebuilding;
  return v;
}

view_status read_view_status(redis_connection& redis) {
  return view_status_of(redis.run({"HMGET", std::string(view_key), "id", "rebuildingSince", "reason"}).array);
}

std::string view_status::describe() const {
  switch (state) {
    case state_t::ready:
      return "";
    case state_t::rebuilding:
      return "the read model is being rebuilt from the log (since " + since + (reason.empty() ? "" : ": " + reason) +
             ")";
    case state_t::missing:
      break;
  }
  return "the read model has no view marker (credits:view): it lost its data, or no projector has built it yet; "
         "the projector rebuilds it from the log";
}

// ---- lists --------------------------------------------------------------------------------------------

std::string page_cursor::to_string() const { return std::to_string(score) + "." + member; }

std::optional<page_cursor> page_cursor::parse(std::string_view text) {
  // "<score>.<member>": the score in decimal digits alone, short enough to fit (docs/openapi.yaml states the same
  // pattern), and a member that is not empty.
  const auto dot = text.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot > score_digits_max || dot + 1 == text.size())
    return std::nullopt;
  if (text.substr(0, dot).find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
  page_cursor c;
  const auto [p, ec] = std::from_chars(text.data(), text.data() + dot, c.score);
  if (ec != std::errc{} || p != text.data() + dot) return std::nullopt;
  c.member = std::string(text.substr(dot + 1));
  return c;
}

namespace {

struct scored_member {
  std::string member;
  time_ms score = 0;
};

// Up to `count` members of `key` strictly after `after` in (score desc, member desc) order, within [from, to].
std::vector<scored_member> newest_first(redis_connection& redis, const std::string& key,
                                        const std::optional<page_cursor>& after, time_ms from, time_ms to,
                                        std::size_t count) {
  std::vector<scored_member> out;
  if (from > to) return out;
  std::string upper = num(to);
  if (after && after->score <= to) {
    // Ties at the cursor's time: those sorting below its member come next.
    const auto ties = redis.run({"ZRANGE", key, num(after->score), num(after->score), "BYSCORE"});
    for (auto it = ties.array.rbegin(); it != ties.array.rend() && out.size() < count; ++it)
      if (*it && **it < after->member) out.push_back({**it, after->score});
    upper = "(" + num(after->score);
  } else if (after) {
    upper = num(to);
  }
  if (out.size() >= count) return out;
  const auto r = redis.run({"ZRANGE", key, upper, num(from), "BYSCORE", "REV", "LIMIT", "0",
                            num(static_cast<std::int64_t>(count - out.size())), "WITHSCORES"});
  for (std::size_t i = 0; i + 1 < r.array.size(); i += 2) {
    if (!r.array[i] || !r.array[i + 1]) continue;
    time_ms score = 0;
    const auto& t = *r.array[i + 1];
    std::from_chars(t.data(), t.data() + t.size(), score);
    out.push_back({*r.array[i], score});
  }
  return out;
}

using loader =
    std::function<std::vector<std::optional<nlohmann::json>>(redis_connection&, const std::vector<scored_member>&)>;

page scan(redis_connection& redis, const std::string& key, const list_query& q, const loader& load,
          const item_filter& keep) {
  page out;
  auto cursor = q.after;
  std::size_t scanned = 0;
  const std::size_t chunk = std::clamp<std::size_t>(q.limit + 1, 16, 500);
  for (;;) {
    const auto batch = newest_first(redis, key, cursor, q.from, q.to, chunk);
    const auto items = load(redis, batch);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      cursor = page_cursor{batch[i].score, batch[i].member};
      ++scanned;
      if (!items[i] || (keep && !keep(*items[i]))) continue;
      out.items.push_back(*items[i]);
      if (out.items.size() >= q.limit) {
        out.next = cursor;
        return out;
      }
    }
    if (batch.size() < chunk) return out;  // the end of the list
    if (scanned >= list_scan_max) {
      out.next = cursor;
      return out;
    }
  }
}

// HGETALL of each key, in one round trip.
std::vector<hash_fields> read_hashes(redis_connection& redis, const std::vector<std::string>& keys) {
  std::vector<std::vector<std::string>> commands;
  commands.reserve(keys.size());
  for (const auto& k : keys) commands.push_back({"HGETALL", k});
  std::vector<hash_fields> out;
  if (commands.empty()) return out;
  for (const auto& r : redis.pipeline(commands)) {
    hash_fields h;
    for (std::size_t i = 0; i + 1 < r.array.size(); i += 2)
      if (r.array[i] && r.array[i + 1]) h.emplace(*r.array[i], *r.array[i + 1]);
    out.push_back(std::move(h));
  }
  return out;
}

// A list whose entries are hashes: `key_of` names each index member's hash, `render` turns a hash that exists
// (has an id) into the list item.
page scan_hashes(redis_connection& redis, const std::string& index, const list_query& q,
                 const std::function<std::string(const std::string&)>& key_of,
                 const std::function<nlohmann::json(const hash_fields&)>& render, const item_filter& keep) {
  return scan(
      redis, index, q,
      [&](redis_connection& r, const std::vector<scored_member>& batch) {
        std::vector<std::string> keys;
        for (const auto& m : batch) keys.push_back(key_of(m.member));
        std::vector<std::optional<nlohmann::json>> out;
        for (const auto& h : read_hashes(r, keys))
          out.push_back(h.contains("id") ? std::optional(render(h)) : std::nullopt);
        return out;
      },
      keep);
}

}  // namespace

page list_transactions(redis_connection& redis, std::string_view account_id, const list_query& q,
                       const item_filter& keep) {
  const auto entries = transaction_entries_key(account_id);
  return scan(
      redis, transactions_key(account_id), q,
      [&](redis_connection& r, const std::vector<scored_member>& batch) {
        std::vector<std::optional<nlohmann::json>> out;
        if (batch.empty()) return out;
        std::vector<std::string> args{"HMGET", entries};
        for (const auto& m : batch) args.emplace_back(sequenced_id(m.member));
        for (const auto& v : r.run(args).array) {
          auto j = v ? nlohmann::json::parse(*v, nullptr, false) : nlohmann::json();
          if (j.is_object()) {  // the fold leaves out what an entry does not have (and before grants, these)
            for (const char* field : {"reservationId", "reversalOf", "grantId", "reason"}) j.emplace(field, nullptr);
            j.emplace("metadata", nlohmann::json::object());
            j.emplace("draws", nlohmann::json::array());
          }
          out.push_back(j.is_object() ? std::optional(std::move(j)) : std::nullopt);
        }
        return out;
      },
      keep);
}

page list_usage(redis_connection& redis, std::string_view account_id, const list_query& q, const item_filter& keep) {
  return scan_hashes(
      redis, usage_records_key(account_id), q,
      [&](const std::string& member) { return usage_key(account_id, sequenced_id(member)); },
      [](const hash_fields& h) {
        const auto key = text(h, "id");
        const auto input = integer(h, "inputTokens", key), output = integer(h, "outputTokens", key);
        return nlohmann::json{{"id", key},
                              {"accountId", text(h, "accountId")},
                              {"context", text(h, "context")},
                              {"transactionId", nullable(text(h, "transactionId"))},
                              {"modelId", text(h, "modelId")},
                              {"usageType", text(h, "usageType")},
                              {"inputTokens", input},
                              {"outputTokens", output},
                              {"cachedTokens", integer(h, "cachedTokens", key)},
                              {"totalTokens", input + output},
                              {"metadata", json_field(h, "metadata")},
                              {"costCredits", h.contains("costCredits") ? nlohmann::json(integer(h, "costCredits", key))
                                                                        : nlohmann::json(nullptr)},
                              {"createdAt", text(h, "createdAt")}};
      },
      keep);
}

page list_reservations(redis_connection& redis, std::string_view account_id, const list_query& q,
                       const item_filter& keep) {
  return scan_hashes(
      redis, reservations_key(account_id), q,
      [&](const std::string& member) { return reservation_key(account_id, member); },
      [](const hash_fields& h) {
        const auto key = text(h, "id");
        return nlohmann::json{{"id", key},
                              {"accountId", text(h, "accountId")},
                              {"amount", integer(h, "amount", key)},
                              {"status", text(h, "status")},
                              {"createdAt", text(h, "createdAt")},
                              {"expiresAt", text(h, "expiresAt")},
                              {"operation", text(h, "operation")},
                              {"model", text(h, "model")},
                              {"metadata", json_field(h, "metadata")},
                              {"charged", integer(h, "charged", key)},
                              {"released", integer(h, "released", key)},
                              {"transactionId", nullable(text(h, "transactionId"))},
                              {"resolvedAt", nullable(text(h, "resolvedAt"))}};
      },
      keep);
}

page list_accounts(redis_connection& redis, std::string_view tenant, const list_query& q) {
  return scan_hashes(
      redis, accounts_key(tenant), q, [](const std::string& member) { return account_key(member); },
      [](const hash_fields& h) {
        const auto key = text(h, "id");
        const auto balance = integer(h, "balance", key), reserved = integer(h, "reserved", key);
        return nlohmann::json{{"id", key},
                              {"name", text(h, "name")},
                              {"externalId", text(h, "externalId")},
                              {"email", text(h, "email")},
                              {"metadata", json_field(h, "metadata")},
                              {"createdAt", text(h, "createdAt")},
                              {"balance", balance},
                              {"reserved", reserved},
                              {"available", balance - reserved}};
      },
      {});
}

namespace {

// The grants named by `ids`, read from the account's grants hash in one HMGET (layout.hpp): for each, its fields
// by name (grant_hash), empty when the view has no such grant.
std::vector<hash_fields> read_grants(redis_connection& redis, std::string_view account_id,
                                     const std::vector<std::string>& ids) {
  std::vector<hash_fields> out;
  if (ids.empty()) return out;
  std::vector<std::string> args{"HMGET", grant_key(account_id)};
  for (const auto& id : ids)
    for (auto& f : grant_fields(id)) args.push_back(std::move(f));
  const auto values = redis.run(args).array;
  const auto per_grant = (args.size() - 2) / ids.size();
  if (values.size() != ids.size() * per_grant) throw std::runtime_error("read model: malformed reply to HMGET");
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const auto first = values.begin() + static_cast<std::ptrdiff_t>(i * per_grant);
    const auto h = grant_hash(ids[i], {first, first + static_cast<std::ptrdiff_t>(per_grant)});
    out.emplace_back(h.begin(), h.end());
  }
  return out;
}

}  // namespace

page list_grants(redis_connection& redis, std::string_view account_id, const list_query& q, time_ms now,
                 const item_filter& keep) {
  const auto render = [now, account_id](const hash_fields& h) {
    const auto key = text(h, "id");
    const auto expires_at = text(h, "expiresAt");
    auto status = text(h, "status");
    if (status == "active" && !expires_at.empty())
      if (const auto t = parse_time(expires_at); t && *t <= now) status = "expired";
    nlohmann::json cost = nullptr;
    if (!text(h, "costCurrency").empty())
      cost = {{"amount", integer(h, "costAmount", key)}, {"currency", text(h, "costCurrency")}};
    return nlohmann::json{{"id", key},
                          {"accountId", account_id},
                          {"transactionId", text(h, "transactionId")},
                          {"amount", integer(h, "amount", key)},
                          {"remaining", grant_remaining(h, key)},
                          {"held", integer(h, "held", key)},
                          {"charged", integer(h, "charged", key)},
                          {"refunded", integer(h, "refunded", key)},
                          {"expired", integer(h, "expired", key)},
                          {"voided", integer(h, "voided", key)},
                          {"corrected", integer(h, "corrected", key)},
                          {"expiresAt", nullable(expires_at)},
                          {"priority", integer(h, "priority", key)},
                          {"category", text(h, "category")},
                          {"costBasis", std::move(cost)},
                          {"status", std::move(status)},
                          {"createdAt", text(h, "createdAt")}};
  };
  return scan(
      redis, grants_key(account_id), q,
      [&](redis_connection& r, const std::vector<scored_member>& batch) {
        std::vector<std::string> ids;
        for (const auto& m : batch) ids.emplace_back(sequenced_id(m.member));
        std::vector<std::optional<nlohmann::json>> out;
        auto grants = read_grants(r, account_id, ids);
        for (std::size_t i = 0; i < grants.size(); ++i) {
          auto& h = grants[i];
          h.emplace("createdAt", format_time(batch[i].score));  // a grant's score is its creation time
          out.push_back(h.contains("id") ? std::optional(render(h)) : std::nullopt);
        }
        return out;
      },
      keep);
}

amount_t expiring_between(redis_connection& redis, std::string_view account_id, time_ms now, time_ms until) {
  if (until <= now) return 0;
  const auto listed = redis.run({"ZRANGE", grant_expiries_key(account_id), "(" + num(now), num(until), "BYSCORE"});
  std::vector<std::string> ids;
  for (const auto& id : listed.array)
    if (id) ids.push_back(*id);
  amount_t sum = 0;
  for (const auto& h : read_grants(redis, account_id, ids))
    if (text(h, "status") == "active") {
      const auto key = text(h, "id");
      sum += grant_remaining(h, key) + integer(h, "held", key);  // what is left of it, held or not
    }
  return sum;
}

nlohmann::json credits_report(redis_connection& redis, std::string_view tenant, const std::vector<std::string>& days) {
  static constexpr const char* metrics[] = {"granted", "consumed", "refunded", "expired", "voided", "corrected"};
  const auto zero = [] {
    nlohmann::json figures = nlohmann::json::object();
    for (const auto* metric : metrics) figures[metric] = {{"paid", 0}, {"promotional", 0}};
    return figures;
  };
  std::vector<std::string> keys;
  for (const auto& day : days) keys.push_back(grant_report_key(tenant, day));
  auto totals = zero();
  auto by_day = nlohmann::json::object();
  const auto hashes = read_hashes(redis, keys);
  for (std::size_t d = 0; d < hashes.size(); ++d) {
    for (const auto& [field, value] : hashes[d]) {
      const auto bar = field.find('|');
      if (bar == std::string::npos) continue;
      const auto metric = field.substr(0, bar), category = field.substr(bar + 1);
      if (!totals.contains(metric) || (category != "paid" && category != "promotional")) continue;
      const auto n = integer(hashes[d], field.c_str(), keys[d]);
      auto& day = by_day[days[d]];
      if (day.is_null()) day = zero();
      for (auto* figures : {&totals, &day})
        (*figures)[metric][category] = (*figures)[metric][category].get<std::int64_t>() + n;
    }
  }
  return {{"totals", std::move(totals)}, {"byDay", std::move(by_day)}};
}

nlohmann::json usage_summary(redis_connection& redis, std::string_view tenant, std::string_view account_id,
                             const std::vector<std::string>& days, std::string_view model_id,
                             std::string_view context) {
  std::vector<std::string> keys;
  for (const auto& day : days)
    keys.push_back(account_id.empty() ? tenant_usage_summary_key(tenant, day) : usage_summary_key(account_id, day));
  const auto zero = [] {
    return nlohmann::json{{"inputTokens", 0}, {"outputTokens", 0}, {"cachedTokens", 0},
                          {"totalTokens", 0}, {"records", 0},      {"costCredits", 0}};
  };
  auto totals = zero();
  auto by_model = nlohmann::json::object(), by_context = nlohmann::json::object(), by_day = nlohmann::json::object();
  const auto hashes = read_hashes(redis, keys);
  for (std::size_t d = 0; d < hashes.size(); ++d) {
    for (const auto& [field, value] : hashes[d]) {
      const auto bar1 = field.find('|');
      const auto bar2 = bar1 == std::string::npos ? bar1 : field.find('|', bar1 + 1);
      if (bar2 == std::string::npos) continue;
      const auto ctx = std::string_view(field).substr(0, bar1);
      const auto metric = field.substr(bar1 + 1, bar2 - bar1 - 1);
      const auto model = field.substr(bar2 + 1);
      if ((!model_id.empty() && model != model_id) || (!context.empty() && ctx != context)) continue;
      const auto n = integer(hashes[d], field.c_str(), keys[d]);
      for (auto* group : {&totals, &by_model[model], &by_context[std::string(ctx)], &by_day[days[d]]}) {
        if (group->is_null()) *group = zero();
        (*group)[metric] = (*group)[metric].get<std::int64_t>() + n;
        if (metric == "inputTokens" || metric == "outputTokens")
          (*group)["totalTokens"] = (*group)["totalTokens"].get<std::int64_t>() + n;
      }
    }
  }
  return {{"totals", totals}, {"byModel", by_model}, {"byContext", by_context}, {"byDay", by_day}};
}

balance_at balance_as_of(redis_connection& redis, std::string_view account_id, time_ms as_of, time_ms hold_max_ms) {
  balance_at out;
  const auto last =
      redis.run({"ZRANGE", transactions_key(account_id), num(as_of), "-inf", "BYSCORE", "REV", "LIMIT", "0", "1"});
  if (!last.array.empty() && last.array[0]) {
    const auto entry =
        redis.run({"HGET", transaction_entries_key(account_id), std::string(sequenced_id(*last.array[0]))});
    const auto j = entry.value ? nlohmann::json::parse(*entry.value, nullptr, false) : nlohmann::json();
    if (!j.is_object() || !j.contains("balanceAfter"))
      throw std::runtime_error("read model: transaction entry " + *last.array[0] + " is damaged");
    out.balance = j["balanceAfter"].get<amount_t>();
  }
  const auto holds =
      redis.run({"ZRANGE", reservations_key(account_id), num(as_of - hold_max_ms), num(as_of), "BYSCORE"});
  std::vector<std::vector<std::string>> commands;
  std::vector<std::string> keys;
  for (const auto& id : holds.array)
    if (id) {
      keys.push_back(reservation_key(account_id, *id));
      commands.push_back({"HMGET", keys.back(), "amount", "resolvedAt"});
    }
  if (commands.empty()) return out;
  const auto replies = redis.pipeline(commands);
  for (std::size_t i = 0; i < replies.size(); ++i) {
    const auto& f = replies[i].array;
    if (f.size() != 2 || !f[0]) continue;
    const auto resolved = f[1] ? parse_time(*f[1]) : std::nullopt;
    if (resolved && *resolved <= as_of) continue;
    out.reserved += integer(hash_fields{{"amount", *f[0]}}, "amount", keys[i]);
  }
  return out;
}

}  // namespace credits::read_model
