#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "credits/common/events.hpp"
#include "credits/read_model/redis.hpp"

// The reads of the Redis read model that the API's query endpoints and the operator commands make: accounts,
// reservations, balances as of a time, the time-ordered listings and usage summaries, and the projector's
// positions. Each takes the connection it reads through; none writes.
namespace credits::read_model {

struct account_view {
  std::string id;
  std::string tenant;
  std::string name;
  std::string external_id;
  std::string email;
  nlohmann::json metadata = nlohmann::json::object();
  std::string created_at;  // RFC 3339
  amount_t balance = 0;
  amount_t reserved = 0;
  amount_t promotional = 0;    // the part of the balance in promotional grants; the rest is paid
  bool blocked = false;        // one of its events could not be applied: its balance may miss that event
  std::string blocked_at;      // when blocked: "<topic>:<partition>:<offset>" of the first such event
  std::string blocked_reason;  // when blocked: why it could not be applied, as the view recorded it
};

struct reservation_view {
  std::string id;
  std::string account_id;
  amount_t amount = 0;
  std::string status;
  std::string created_at;
  std::string expires_at;
  std::string operation;
  std::string model;
  nlohmann::json metadata = nlohmann::json::object();
  amount_t charged = 0;
  amount_t released = 0;
  std::string transaction_id;
};

std::optional<account_view> get_account(redis_connection& redis, std::string_view account_id);
std::optional<reservation_view> get_reservation(redis_connection& redis, std::string_view account_id,
                                                std::string_view reservation_id);
// ---- lists --------------------------------------------------------------------------------------------
// Every list is a time-scored ZSET read newest first, in (time desc, member desc) order. A cursor names the
// last entry a page returned, so the next page starts strictly after it: entries that arrive meanwhile are
// newer and never shift a page, so paging never loses or repeats one.
struct page_cursor {
  static constexpr std::size_t score_digits_max = 18;  // the longest score parse() takes: it always fits

  time_ms score = 0;
  std::string member;
  std::string to_string() const;  // "<score>.<member>", URL-safe
  static std::optional<page_cursor> parse(std::string_view text);
};

struct list_query {
  std::size_t limit = 50;
  std::optional<page_cursor> after;
  time_ms from = std::numeric_limits<time_ms>::min();  // inclusive
  time_ms to = std::numeric_limits<time_ms>::max();    // inclusive
};

struct page {
  std::vector<nlohmann::json> items;
  std::optional<page_cursor> next;  // absent: nothing more
};

// Filters look at the rendered item. A page examines at most `list_scan_max` entries, then returns what it
// found with a cursor to go on from, so a rare filter costs bounded work per request.
inline constexpr std::size_t list_scan_max = 5'000;
using item_filter = std::function<bool(const nlohmann::json&)>;

page list_transactions(redis_connection& redis, std::string_view account_id, const list_query& q,
                       const item_filter& keep);
page list_usage(redis_connection& redis, std::string_view account_id, const list_query& q, const item_filter& keep);
page list_reservations(redis_connection& redis, std::string_view account_id, const list_query& q,
                       const item_filter& keep);
page list_accounts(redis_connection& redis, std::string_view tenant, const list_query& q);
// An account's grants, newest first. A grant whose expiresAt is at or before `now` reads as expired, though its
// expiry may not be written yet.
page list_grants(redis_connection& redis, std::string_view account_id, const list_query& q, time_ms now,
                 const item_filter& keep);

// The credits of the balance (held ones included) in the account's grants that expire after `now` and at or
// before `until`, and have not expired or been voided.
amount_t expiring_between(redis_connection& redis, std::string_view account_id, time_ms now, time_ms until);

// The tenant's credits report over `days` (yyyy-mm-dd, UTC): {totals, byDay}, each figure (granted, consumed,
// refunded, expired, voided, corrected) split {paid, promotional}; byDay only has the days with activity.
nlohmann::json credits_report(redis_connection& redis, std::string_view tenant, const std::vector<std::string>& days);

// Usage totals per model, per context and per day over [from_day, to_day] (yyyy-mm-dd, UTC), from the daily
// summary hashes of one account (or, with an empty account id, of the whole tenant). Empty model / context
// filters match everything.
nlohmann::json usage_summary(redis_connection& redis, std::string_view tenant, std::string_view account_id,
                             const std::vector<std::string>& days, std::string_view model_id, std::string_view context);

struct balance_at {
  amount_t balance = 0;
  amount_t reserved = 0;
};
// The balance and reserved amount of an account right after its last event at or before `as_of`: the balance
// from the last ledger transaction's balanceAfter, the holds from the reservations created within
// `hold_max_ms` before it and not resolved by then.
balance_at balance_as_of(redis_connection& redis, std::string_view account_id, time_ms as_of, time_ms hold_max_ms);

// The offset of the last event the projector applied from (topic, partition); -1 when none.
std::int64_t applied_offset(redis_connection& redis, std::string_view topic, std::int32_t partition);

// What the view's marker (credits:view, layout.hpp) says: a view to read (`ready`, with its id), one a projector is
// rebuilding from the log after it lost its data, or none at all (lost, and no projector has noticed yet; or never
// built). Only a ready view may be read: the others answer every query with nothing.
struct view_status {
  enum class state_t { ready, rebuilding, missing };
  state_t state = state_t::missing;
  std::string id;      // ready: the view's id
  std::string since;   // rebuilding: since when (RFC 3339)
  std::string reason;  // rebuilding: why
  // One sentence for a person (readiness, 503 bodies, logs); empty when ready.
  std::string describe() const;
};
view_status read_view_status(redis_connection& redis);
// From HMGET credits:view id rebuildingSince reason.
view_status view_status_of(const std::vector<std::optional<std::string>>& id_since_reason);

}  // namespace credits::read_model
