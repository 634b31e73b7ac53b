#include "credits/common/assert.hpp"
#include "credits/common/ids.hpp"
#include "http_impl.hpp"

// The command endpoints: a request is validated and parsed into a command (common/requests.hpp), handed to the
// writer that owns its account (ownership.hpp), and its command_result answered (responses.hpp), or forwarded
// to the instance that owns the account.
namespace credits::api {
namespace {

using namespace http_detail;

constexpr std::size_t idempotency_key_bytes_max = 256;

// Delivers the writer's command_result (or submitting's own, when the command was not queued) back onto the
// coroutine's own executor.
template <class Token>
auto async_submit(ownership& w, command cmd, request_context ctx, Token&& token) {
  return asio::async_initiate<Token, void(command_result)>(
      [&w](auto handler, command c, request_context x) {
        auto ex = asio::get_associated_executor(handler);
        auto shared = std::make_shared<decltype(handler)>(std::move(handler));
        auto deliver = [shared, ex](command_result r) {
          asio::post(ex, [shared, r = std::move(r)]() mutable { (*shared)(std::move(r)); });
        };
        switch (w.submit(submission{std::move(c), std::move(x), deliver})) {
          case submit_result::queued:
            break;
          case submit_result::busy:
            deliver(unavailable{unavailable_reason::busy});
            break;
          case submit_result::in_flight:
            deliver(in_flight{});
            break;
          case submit_result::elsewhere:
            deliver(elsewhere{});
            break;
        }
      },
      token, std::move(cmd), std::move(ctx));
}

// The Idempotency-Key header, or why it is refused.
std::variant<std::string, rejection> idempotency_key_of(const request& req) {
  auto key = std::string(req["Idempotency-Key"]);
  if (!printable_ascii(key))
    return rejection{error_code::invalid_request, "Idempotency-Key must be printable ASCII", "Idempotency-Key",
                     nullptr};
  if (key.size() > idempotency_key_bytes_max)
    return rejection{error_code::invalid_request, "Idempotency-Key is too long", "Idempotency-Key", nullptr};
  return key;
}

}  // namespace

namespace http_detail {

// Each command endpoint and how its body becomes a command.
constexpr command_endpoint command_endpoints[] = {
    {"/v1/accounts/create", [](const json& j, std::string_view tenant, const random_bits& bits,
                               const request_limits& limits) { return parse_create_account(j, tenant, bits, limits); }},
    {"/v1/accounts/credits/add",
     [](const json& j, std::string_view tenant, const random_bits& bits, const request_limits& limits) {
       return parse_add_credits(j, tenant, bits, limits);
     }},
    {"/v1/accounts/credits/deduct",
     [](const json& j, std::string_view tenant, const random_bits& bits, const request_limits& limits) {
       return parse_deduct_credits(j, tenant, bits, limits);
     }},
    {"/v1/reservations/create",
     [](const json& j, std::string_view tenant, const random_bits& bits, const request_limits& limits) {
       return parse_create_reservation(j, tenant, bits, limits);
     }},
    {"/v1/reservations/confirm",
     [](const json& j, std::string_view, const random_bits& bits, const request_limits& limits) {
       return parse_confirm_reservation(j, bits, limits);
     }},
    {"/v1/reservations/cancel", [](const json& j, std::string_view, const random_bits&,
                                   const request_limits& limits) { return parse_cancel_reservation(j, limits); }},
    {"/v1/usage/record", [](const json& j, std::string_view tenant, const random_bits& bits,
                            const request_limits& limits) { return parse_record_usage(j, tenant, bits, limits); }},
    {"/v1/transactions/reverse",
     [](const json& j, std::string_view, const random_bits& bits, const request_limits& limits) {
       return parse_reverse_transaction(j, bits, limits);
     }},
    {"/v1/grants/void", [](const json& j, std::string_view, const random_bits& bits,
                           const request_limits& limits) { return parse_void_grant(j, bits, limits); }},
    {"/v1/admin/events/void",
     [](const json& j, std::string_view, const random_bits&, const request_limits& limits) {
       return parse_void_event(j, limits);
     },
     true},
};

const command_endpoint* command_endpoint_of(std::string_view path) {
  for (const auto& e : command_endpoints)
    if (e.path == path) return &e;
  return nullptr;
}

}  // namespace http_detail

parsed http_api::impl::parse_command(std::string_view path, const json& j, const api_key& key,
                                     const random_bits& bits) const {
  const auto* endpoint = command_endpoint_of(path);
  CREDITS_ASSERT(endpoint != nullptr, "the router sends only command paths here");
  return endpoint->parse(j, key.tenant, bits, cfg.limits);
}

http_api::impl::response http_api::impl::answer(const command_result& result, const request& req) {
  const auto a = answer_of(result);
  auto res = make(a.status, a.body, req);
  if (!a.position.empty()) res.set("Credits-Position", a.position);
  if (a.replayed) res.set("Idempotent-Replayed", "true");
  return res;
}

asio::awaitable<response> http_api::impl::command_route(const request& req, std::string_view path, const api_key& key,
                                                        session_state& s, const std::string& request_id) {
  const auto body = parse_json(req.body(), cfg.limits);
  if (auto* r = std::get_if<rejection>(&body)) co_return reject(*r, req);
  const random_bits bits = [&s] { return s.rng(); };
  auto p = parse_command(path, std::get<json>(body), key, bits);
  if (auto* r = std::get_if<rejection>(&p)) co_return reject(*r, req);
  const auto idempotency_key = idempotency_key_of(req);
  if (auto* r = std::get_if<rejection>(&idempotency_key)) co_return reject(*r, req);
  const auto& ikey = std::get<std::string>(idempotency_key);
  // Kafka known to be down: answer now instead of letting the writer wait out its append timeout.
  if (!kafka.reachable())
    co_return reject(
        rejection{error_code::unavailable, "the event log (Kafka) is unreachable; retry later", "", nullptr}, req);
  auto& cmd = std::get<command>(p);
  if (auto* c = std::get_if<create_account>(&cmd); c && c->external_id.empty()) {
    // A retry must name the same account, wherever it lands; without a key, one this instance writes.
    c->account_id = ikey.empty() ? w.new_account_id(bits) : idempotent_account_id(key.tenant, ikey);
  }
  if (auto* v = std::get_if<void_event>(&cmd); v && v->account_id.empty()) {
    const auto found = w.quarantined_account(v->event_id);
    if (!found)
      co_return reject(rejection{error_code::event_not_found,
                                 "no quarantined event with this id here; name its accountId (the account_blocked "
                                 "answer gives it)",
                                 "eventId", nullptr},
                       req);
    v->account_id = *found;
  }
  const auto account_id = target_account(cmd);
  request_context ctx{
      key.tenant, key.key_id, request_id, ikey, sha256_hex(std::string(req.target()) + '\n' + req.body()), 0};
  const command_result result = co_await async_submit(w, std::move(cmd), std::move(ctx), asio::use_awaitable);
  if (std::holds_alternative<elsewhere>(result)) co_return co_await forward(req, account_id);
  co_return answer(result, req);
}

}  // namespace credits::api
