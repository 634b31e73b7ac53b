// libFuzzer target for request validation (common/src/requests.cpp): bytes as the body of any mutation.
//
// The body goes through parse_json() and, if that accepts it, through every endpoint's parser, exactly as
// command-api does (fixed tenant, deterministic random bits). Properties, for every input:
//  - nothing throws, crashes or hangs; a refusal is invalid_request or account_not_found, with a message;
//  - an accepted body is one JSON text: followed by any other byte it is refused;
//  - an accepted command keeps the documented limits (amounts 1..2^53-1, counts 0..2^53-1, strings of at most
//    256 bytes, metadata an object of at most 4096 bytes, well-formed ids naming the command's account);
//  - decided against a funded account, it yields events that round-trip the codec and keep the money
//    invariants when applied (apply() asserts them).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "credits/common/domain.hpp"
#include "credits/common/ids.hpp"
#include "credits/common/requests.hpp"
#include "fuzz_check.hpp"

namespace {

using nlohmann::json;
using namespace credits;

constexpr std::string_view tenant = "tenant_fuzz";
constexpr time_ms now_ms = 1'764'432'082'123;  // 2025-11-29T16:01:22.123Z

// splitmix64: deterministic, so a crash reproduces from its input alone.
struct bit_source {
  std::uint64_t state = 0x9e3779b97f4a7c15;
  std::uint64_t operator()() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    return z ^ (z >> 31);
  }
};

template <class... F>
struct overloaded : F... {
  using F::operator()...;
};

void check_text(const std::string& s, const request_limits& limits) {
  FUZZ_CHECK(s.size() <= limits.string_bytes_max, "an accepted string above the limit");
}

void check_metadata(const json& m, const request_limits& limits) {
  FUZZ_CHECK(m.is_object(), "accepted metadata that is not an object");
  FUZZ_CHECK(m.dump().size() <= limits.metadata_bytes_max, "accepted metadata above the limit");
}

void check_amount(amount_t a, amount_t min) { FUZZ_CHECK(a >= min && a <= amount_max, "an amount out of range"); }

void check_child(std::string_view prefix, const std::string& id, const std::string& account_id) {
  FUZZ_CHECK(account_of(prefix, id) == account_id, "a new id that does not embed its account");
}

void check_command(const command& cmd, const request_limits& limits) {
  std::visit(overloaded{
                 [&](const create_account& c) {
                   FUZZ_CHECK(is_account_id(c.account_id), "a malformed new account id");
                   FUZZ_CHECK(!c.name.empty(), "an account without a name");
                   check_text(c.name, limits);
                   check_text(c.external_id, limits);
                   check_text(c.email, limits);
                   FUZZ_CHECK(c.email.empty() || c.email.find('@') != std::string::npos, "an e-mail without @");
                   if (!c.external_id.empty())
                     FUZZ_CHECK(c.account_id == derive_account_id(tenant, c.external_id), "an underived account id");
                   check_metadata(c.metadata, limits);
                 },
                 [&](const add_credits& c) {
                   FUZZ_CHECK(is_account_id(c.account_id), "a malformed account id");
                   check_amount(c.amount, 1);
                   check_text(c.description, limits);
                   check_text(c.payment_method, limits);
                   check_metadata(c.metadata, limits);
                   check_child("txn", c.transaction_id, c.account_id);
                   FUZZ_CHECK(c.priority >= grant_priority_min && c.priority <= grant_priority_max,
                              "a grant priority out of range");
                   FUZZ_CHECK(!(c.expires_at && c.expires_in_ms), "a grant with two expiries");
                   FUZZ_CHECK(!c.expires_in_ms ||
                                  (*c.expires_in_ms >= 1000 && *c.expires_in_ms <= 1000 * limits.grant_expiry_s_max),
                              "a grant's expiresInSeconds out of range");
                   if (c.cost) {
                     check_amount(c.cost->amount, 0);
                     FUZZ_CHECK(is_currency_code(c.cost->currency), "a cost basis without an ISO 4217 currency");
                   }
                 },
                 [&](const deduct_credits& c) {
                   FUZZ_CHECK(is_account_id(c.account_id), "a malformed account id");
                   check_amount(c.amount, 1);
                   check_text(c.description, limits);
                   check_metadata(c.metadata, limits);
                   check_child("txn", c.transaction_id, c.account_id);
                 },
                 [&](const create_reservation& c) {
                   FUZZ_CHECK(is_account_id(c.account_id), "a malformed account id");
                   check_amount(c.amount, 1);
                   FUZZ_CHECK(c.expires_in_ms >= 1000 && c.expires_in_ms <= 1000 * limits.reservation_timeout_s_max,
                              "a hold outside 1 s..7 days");
                   check_text(c.operation, limits);
                   check_text(c.model, limits);
                   check_metadata(c.metadata, limits);
                   check_child("rsv", c.reservation_id, c.account_id);
                 },
                 [&](const confirm_reservation& c) {
                   FUZZ_CHECK(!c.reservation_id.empty(), "an empty reservation id");
                   check_text(c.reservation_id, limits);
                   check_amount(c.actual_amount, 0);
                   FUZZ_CHECK(account_of("txn", c.transaction_id).has_value(), "a malformed new transaction id");
                 },
                 [&](const cancel_reservation& c) {
                   FUZZ_CHECK(!c.reservation_id.empty(), "an empty reservation id");
                   check_text(c.reservation_id, limits);
                 },
                 [&](const record_usage& c) {
                   FUZZ_CHECK(is_account_id(c.account_id), "a malformed account id");
                   FUZZ_CHECK(c.context == "customer" || c.context == "system", "an undocumented context");
                   FUZZ_CHECK(!c.model_id.empty() && !c.usage_type.empty(), "an empty modelId or usageType");
                   check_text(c.model_id, limits);
                   check_text(c.usage_type, limits);
                   check_text(c.transaction_id, limits);
                   check_amount(c.input_tokens, 0);
                   check_amount(c.output_tokens, 0);
                   check_amount(c.cached_tokens, 0);
                   check_metadata(c.metadata, limits);
                   check_child("use", c.usage_id, c.account_id);
                 },
                 [&](const reverse_transaction& c) {
                   FUZZ_CHECK(!c.transaction_id.empty(), "an empty transaction id");
                   check_text(c.transaction_id, limits);
                   check_text(c.description, limits);
                   check_amount(c.amount, 0);
                   check_metadata(c.metadata, limits);
                   FUZZ_CHECK(account_of("txn", c.reversal_id).has_value(), "a malformed new transaction id");
                 },
                 [&](const void_grant& c) {
                   FUZZ_CHECK(!c.grant_id.empty(), "an empty grant id");
                   check_text(c.grant_id, limits);
                   FUZZ_CHECK(account_of("txn", c.transaction_id).has_value(), "a malformed new transaction id");
                 },
                 [&](const void_event& c) {
                   FUZZ_CHECK(!c.event_id.empty() && !c.reason.empty(), "an empty event id or reason");
                   check_text(c.event_id, limits);
                   check_text(c.reason, limits);
                   check_text(c.account_id, limits);
                 },
             },
             cmd);
}

event system_event(const std::string& account_id, event_payload payload) {
  return event{"00000000-0000-4000-8000-000000000000",
               event_schema_version,
               std::string(tenant),
               account_id,
               "key_fuzz",
               "req_fuzz",
               "",
               "",
               now_ms - 1000,
               std::move(payload)};
}

// The command's account exists in the tenant (unless the command creates it), funded (near the maximum balance
// for odd-sized inputs, to reach the overflow refusal), with a pending hold under the reservation id the command
// names, if it names one, and the ledger transaction a usage record links to.
ledger_state funded_state(const command& cmd, std::size_t input_size) {
  ledger_state state;
  const auto account_id = target_account(cmd);
  if (std::holds_alternative<create_account>(cmd) || !is_account_id(account_id)) return state;
  const amount_t balance = input_size % 2 ? amount_max - 7 : 1000;
  // The transaction a usage record links to, or a reversal undoes.
  std::string named_txn;
  if (const auto* c = std::get_if<record_usage>(&cmd)) named_txn = c->transaction_id;
  if (const auto* c = std::get_if<reverse_transaction>(&cmd)) named_txn = c->transaction_id;
  if (const auto* c = std::get_if<void_grant>(&cmd); c && c->grant_id.starts_with("grt"))
    named_txn = "txn" + c->grant_id.substr(3);  // the grant it names is the funding one
  const auto funding_txn = account_of("txn", named_txn) == account_id ? named_txn : child_id("txn", account_id, 1);
  apply(state, system_event(account_id, account_created{"Fuzz", "", "", json::object()}));
  apply(state, system_event(account_id, credits_added{funding_txn, balance, balance, "", "", json::object()}));
  std::string hold;
  if (const auto* c = std::get_if<confirm_reservation>(&cmd)) hold = c->reservation_id;
  if (const auto* c = std::get_if<cancel_reservation>(&cmd)) hold = c->reservation_id;
  if (!hold.empty())
    apply(state, system_event(account_id, credits_reserved{hold, 600, now_ms + 60'000, "", "", json::object()}));
  return state;
}

void check_decision(const command& cmd, std::size_t input_size) {
  ledger_state state = funded_state(cmd, input_size);
  const request_context ctx{std::string(tenant), "key_fuzz", "req_fuzz", "idem_fuzz", "hash_fuzz", now_ms};
  const auto d = decide(state, cmd, ctx);
  if (std::holds_alternative<rejection>(d)) return;
  for (const auto& e : std::get<std::vector<event>>(d)) {
    std::string error;
    const auto back = decode(encode(e), &error);
    FUZZ_CHECK(back.has_value(), "a decided event that does not decode");
    FUZZ_CHECK(encode(*back) == encode(e), "a decided event that does not round-trip");
    apply(state, *back);  // asserts balance >= 0, available >= 0, balance <= 2^53-1
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  const request_limits limits;
  const auto j = parse_json(body, limits);
  if (const auto* r = std::get_if<rejection>(&j)) {
    FUZZ_CHECK(r->code == error_code::invalid_request && !r->message.empty(), "an unexplained JSON refusal");
    return 0;
  }
  const json& doc = std::get<json>(j);
  // A JSON text ends where its value does, up to whitespace: what follows an accepted body must be refused,
  // or a body could carry bytes that the ledger never validated.
  FUZZ_CHECK(std::holds_alternative<rejection>(parse_json(std::string(body) + "]", limits)),
             "an accepted body followed by garbage is still accepted");

  bit_source source;
  const random_bits bits = [&source] { return source(); };
  const parsed results[] = {
      parse_create_account(doc, tenant, bits, limits),
      parse_add_credits(doc, tenant, bits, limits),
      parse_deduct_credits(doc, tenant, bits, limits),
      parse_create_reservation(doc, tenant, bits, limits),
      parse_confirm_reservation(doc, bits, limits),
      parse_cancel_reservation(doc, limits),
      parse_record_usage(doc, tenant, bits, limits),
      parse_reverse_transaction(doc, bits, limits),
      parse_void_grant(doc, bits, limits),
      parse_void_event(doc, limits),
  };
  for (const auto& p : results) {
    if (const auto* r = std::get_if<rejection>(&p)) {
      FUZZ_CHECK(r->code == error_code::invalid_request || r->code == error_code::account_not_found,
                 "a refusal with an undocumented code");
      FUZZ_CHECK(!r->message.empty(), "a refusal without a message");
      if (!doc.is_object()) FUZZ_CHECK(r->code == error_code::invalid_request, "a non-object body not refused");
      continue;
    }
    FUZZ_CHECK(doc.is_object(), "a command from a body that is not an object");
    const auto& cmd = std::get<command>(p);
    check_command(cmd, limits);
    check_decision(cmd, size);
  }
  return 0;
}
