#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include "credits/common/clock.hpp"
#include "http_impl.hpp"

// The query endpoints: reads of the read model (Redis) on the blocking pool, with read-your-writes through log
// positions (Credits-Min-Position, or the last one this instance wrote for the account).
// GCC 12 at -O2 reports asio's coroutine frame as freed by a mismatched function in this file's coroutines: it
// inlines the frame's operator new (asio's recycling allocator over aligned_alloc) and pairs it with the class's
// own operator delete, which frees it correctly. A false positive of that compiler; the frames of the same
// coroutines were not flagged while they lived in one file with the rest of the server.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace credits::api {
namespace {

using namespace http_detail;

json next_cursor(const read_model::page& page) { return page.next ? json(page.next->to_string()) : json(nullptr); }

// The client's Credits-Min-Position: none, a position, or a refusal of a malformed one.
std::variant<std::optional<log_position>, rejection> client_position(const request& req) {
  const auto header = req["Credits-Min-Position"];
  if (header.empty()) return std::optional<log_position>();
  if (auto target = log_position::parse(header)) return target;
  return rejection{error_code::invalid_request, "Credits-Min-Position is not topic:partition:offset",
                   "Credits-Min-Position", nullptr};
}

// A blocked account's answers say so (its balance may miss the event that could not be applied); others carry
// no such fields.
void mark_blocked(json& body, const read_model::account_view& view) {
  if (!view.blocked) return;
  body["blocked"] = true;
  body["blockedAt"] = view.blocked_at;
  body["blockedReason"] = view.blocked_reason;
}

json balance_body(const read_model::account_view& view, amount_t balance, amount_t reserved) {
  json body = {{"success", true},    {"accountId", view.id}, {"externalId", view.external_id},
               {"balance", balance}, {"reserved", reserved}, {"available", balance - reserved}};
  mark_blocked(body, view);
  return body;
}

json account_get_body(const read_model::account_view& view) {
  json body = {
      {"success", true},
      {"account", account_json(view.id, view.name, view.external_id, view.email, view.metadata, view.created_at)}};
  body["account"]["balance"] = view.balance;
  body["account"]["reserved"] = view.reserved;
  body["account"]["available"] = view.balance - view.reserved;
  mark_blocked(body["account"], view);
  return body;
}

}  // namespace

// Waits (bounded) until the projector has applied `target`; false if it has not in time.
asio::awaitable<bool> http_api::impl::wait_for_projection(const log_position& target) {
  const auto deadline = std::chrono::steady_clock::now() + cfg.read_wait_ms;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    // The operation is built in a statement of its own: GCC 12 destroys closure temporaries inside a
    // co_await expression twice.
    auto read = with_redis<std::int64_t>([target](read_model::redis_connection& c) {
      return read_model::applied_offset(c, target.topic, target.partition);
    });
    const auto applied = co_await std::move(read);
    if (applied >= target.offset) co_return true;
    if (std::chrono::steady_clock::now() >= deadline) co_return false;
    timer.expires_after(cfg.read_poll_interval_ms);
    co_await timer.async_wait(asio::use_awaitable);
  }
}

// Waits for the projection to reach `target` when it is a ledger position; true if it did not in time.
asio::awaitable<bool> http_api::impl::projection_behind(const std::optional<log_position>& target) {
  if (!target || target->topic != cfg.ledger_topic) co_return false;
  co_return !co_await wait_for_projection(*target);
}

// Tenant-wide reads: the account listing and the tenant's usage summary. Read-your-writes only through an
// explicit Credits-Min-Position (no one account's position applies).
asio::awaitable<response> http_api::impl::tenant_route(const request& req, std::string_view path, const list_params& p,
                                                       const api_key& key) {
  auto position = client_position(req);
  if (auto* r = std::get_if<rejection>(&position)) co_return reject(*r, req);
  const bool behind = co_await projection_behind(std::get<std::optional<log_position>>(position));
  json body;
  if (path == "/v1/accounts") {
    auto read = with_view<read_model::page>([tenant = key.tenant, q = p.query](read_model::redis_connection& c) {
      return read_model::list_accounts(c, tenant, q);
    });
    auto page = co_await std::move(read);
    body = {{"success", true}, {"accounts", std::move(page.items)}, {"nextCursor", next_cursor(page)}};
  } else if (path == "/v1/reports/credits") {
    auto read = with_view<json>([tenant = key.tenant, days = p.days](read_model::redis_connection& c) {
      return read_model::credits_report(c, tenant, days);
    });
    auto report = co_await std::move(read);
    body = {{"success", true},
            {"startDate", p.days.front()},
            {"endDate", p.days.back()},
            {"totals", std::move(report["totals"])},
            {"byDay", std::move(report["byDay"])}};
  } else {
    auto read = with_view<json>([tenant = key.tenant, p](read_model::redis_connection& c) {
      return read_model::usage_summary(c, tenant, "", p.days, p.model_id, p.context);
    });
    auto summary = co_await std::move(read);  // never co_await inside a braced list: GCC 12 miscompiles it
    body = {{"success", true}, {"startDate", p.days.front()}, {"endDate", p.days.back()}, {"summary", summary}};
  }
  auto res = make(200, body, req);
  if (behind || !kafka.reachable() || !w.ready()) res.set("Credits-Stale", "true");
  co_return res;
}

// The list and report endpoints of one account; the account is known to exist and be the caller's.
asio::awaitable<json> http_api::impl::account_report(std::string_view path, const list_params& p,
                                                     const read_model::account_view& account) {
  const auto id = account.id;
  if (path == "/v1/transactions") {
    auto read = with_view<read_model::page>([id, p](read_model::redis_connection& c) {
      return read_model::list_transactions(
          c, id, p.query, [&](const json& t) { return p.type.empty() || t.value("type", "") == p.type; });
    });
    auto page = co_await std::move(read);
    for (auto& t : page.items) t["accountId"] = id;
    co_return json{{"success", true},
                   {"accountId", id},
                   {"externalId", account.external_id},
                   {"transactions", std::move(page.items)},
                   {"nextCursor", next_cursor(page)}};
  }
  if (path == "/v1/accounts/grants") {
    auto read = with_view<read_model::page>([id, p, now = wall_clock_ms()](read_model::redis_connection& c) {
      return read_model::list_grants(
          c, id, p.query, now, [&](const json& g) { return p.status.empty() || g.value("status", "") == p.status; });
    });
    auto page = co_await std::move(read);
    co_return json{{"success", true},
                   {"accountId", id},
                   {"externalId", account.external_id},
                   {"grants", std::move(page.items)},
                   {"nextCursor", next_cursor(page)}};
  }
  if (path == "/v1/reservations") {
    const auto now = format_time(wall_clock_ms());
    auto read = with_view<read_model::page>([id, p, now](read_model::redis_connection& c) {
      return read_model::list_reservations(c, id, p.query, [&](const json& r) {
        return !p.active_only || (r.value("status", "") == "pending" && r.value("expiresAt", "") > now);
      });
    });
    auto page = co_await std::move(read);
    for (auto& r : page.items) r["externalId"] = account.external_id;
    co_return json{{"success", true}, {"reservations", std::move(page.items)}, {"nextCursor", next_cursor(page)}};
  }
  if (p.summary) {  // /v1/usage?summary=true
    auto read = with_view<json>([tenant = account.tenant, id, p](read_model::redis_connection& c) {
      return read_model::usage_summary(c, tenant, id, p.days, p.model_id, p.context);
    });
    auto summary = co_await std::move(read);
    co_return json{{"success", true},
                   {"accountId", id},
                   {"externalId", account.external_id},
                   {"startDate", p.days.front()},
                   {"endDate", p.days.back()},
                   {"summary", summary}};
  }
  auto read = with_view<read_model::page>([id, p](read_model::redis_connection& c) {
    return read_model::list_usage(c, id, p.query, [&](const json& u) {
      return (p.model_id.empty() || u.value("modelId", "") == p.model_id) &&
             (p.context.empty() || u.value("context", "") == p.context) &&
             (p.usage_type.empty() || u.value("usageType", "") == p.usage_type);
    });
  });
  auto page = co_await std::move(read);
  co_return json{{"success", true}, {"usage", std::move(page.items)}, {"nextCursor", next_cursor(page)}};
}

// The body of a one-account query; the account is known to exist and be the caller's.
asio::awaitable<json> http_api::impl::account_body(std::string_view path, const list_params& p,
                                                   const read_model::account_view& view) {
  if (path == "/v1/accounts/balance" && p.as_of) {
    const auto as_of = *p.as_of;
    const auto hold_max_ms = cfg.limits.reservation_timeout_s_max * 1000;
    auto read_at =
        with_view<read_model::balance_at>([account_id = view.id, as_of, hold_max_ms](read_model::redis_connection& c) {
          return read_model::balance_as_of(c, account_id, as_of, hold_max_ms);
        });
    const auto at = co_await std::move(read_at);
    auto body = balance_body(view, at.balance, at.reserved);
    body["asOf"] = format_time(as_of);
    co_return body;
  }
  if (path == "/v1/accounts/balance" && p.include_grants) {
    // Now: the balance by grant category, and what of it expires within the window.
    const auto now = wall_clock_ms();
    const auto until = now + time_ms{p.expiring_within_days} * 86'400'000;
    auto read_soon = with_view<amount_t>([account_id = view.id, now, until](read_model::redis_connection& c) {
      return read_model::expiring_between(c, account_id, now, until);
    });
    const auto expiring = co_await std::move(read_soon);
    auto body = balance_body(view, view.balance, view.reserved);
    body["byCategory"] = {{"paid", view.balance - view.promotional}, {"promotional", view.promotional}};
    body["expiringSoon"] = expiring;
    body["expiringWithinDays"] = p.expiring_within_days;
    co_return body;
  }
  if (path == "/v1/accounts/balance") co_return balance_body(view, view.balance, view.reserved);
  if (path == "/v1/accounts/get") co_return account_get_body(view);
  co_return co_await account_report(path, p, view);
}

asio::awaitable<response> http_api::impl::query_route(const request& req, std::string_view path, std::string_view query,
                                                      const api_key& key) {
  try {
    co_return co_await view_query(req, path, query, key);
  } catch (const view_unavailable& e) {
    // The view lost its data or is being rebuilt (/readyz says which): the answer would be nothing at all.
    co_return reject(rejection{error_code::unavailable, std::string(e.what()) + "; retry shortly", "", nullptr}, req);
  }
}

asio::awaitable<response> http_api::impl::view_query(const request& req, std::string_view path, std::string_view query,
                                                     const api_key& key) {
  const auto params = query_params(query);
  auto listing = parse_list_params(params, wall_clock_ms(), path);
  if (auto* r = std::get_if<rejection>(&listing)) co_return reject(*r, req);
  const auto& p = std::get<list_params>(listing);
  const bool names_account = params.contains("accountId") || params.contains("externalId");
  if (path == "/v1/accounts" || path == "/v1/reports/credits" || (path == "/v1/usage" && p.summary && !names_account))
    co_return co_await tenant_route(req, path, p, key);

  auto resolved = resolve_account(key.tenant, params);
  if (auto* r = std::get_if<rejection>(&resolved)) co_return reject(*r, req);
  const auto account_id = std::get<std::string>(resolved);

  // Read-your-writes: the client's position if it sent one, else the last one this instance wrote.
  auto position = client_position(req);
  if (auto* r = std::get_if<rejection>(&position)) co_return reject(*r, req);
  auto target = std::get<std::optional<log_position>>(position);
  if (!target) target = w.latest_position(account_id);
  // `behind`: the projection has not reached the position we know of. `unconfirmed`: the position we know of
  // may not be the end of the log (Kafka cannot be asked, or the writer is rebuilding its state).
  const bool behind = co_await projection_behind(target);
  const bool unconfirmed = !kafka.reachable() || !w.ready();

  auto read = with_view<std::optional<read_model::account_view>>(
      [account_id](read_model::redis_connection& c) { return read_model::get_account(c, account_id); });
  const auto view = co_await std::move(read);
  if (!view && behind)  // the account may be in the log but not yet in the view: not found would be false
    co_return reject(rejection{error_code::unavailable, "the read model is behind the log; retry shortly", "", nullptr},
                     req);
  if (!view || view->tenant != key.tenant)
    co_return reject(rejection{error_code::account_not_found, "account not found", "", nullptr}, req);
  const json body = co_await account_body(path, p, *view);
  auto res = make(200, body, req);
  if (behind || unconfirmed) res.set("Credits-Stale", "true");
  co_return res;
}

}  // namespace credits::api
