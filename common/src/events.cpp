#include "credits/common/events.hpp"

#include "credits/common/contract.hpp"
#include "credits/common/ids.hpp"
#include "credits/common/overloaded.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>
#include <limits>

namespace credits {
namespace {

using nlohmann::json;

// Metadata is always an object on the wire, even when a caller built the event with a null one.
json meta(const json& m) { return m.is_null() ? json::object() : m; }

// The fields added within version 1 for grants appear only where they mean something: events written before
// grants decode without them.
void put_draws(json& j, const std::optional<grant_draws>& draws) {
  if (draws) j["draws"] = draws_json(*draws);
}

json payload_json(const account_created& p) {
  return {{"name", p.name}, {"externalId", p.external_id}, {"email", p.email}, {"metadata", meta(p.metadata)}};
}
json payload_json(const credits_added& p) {
  json j = {{"transactionId", p.transaction_id}, {"amount", p.amount},
            {"balanceAfter", p.balance_after},   {"description", p.description},
            {"paymentMethod", p.payment_method}, {"metadata", meta(p.metadata)}};
  if (!p.grant_id.empty()) j["grantId"] = p.grant_id;
  if (p.priority) j["priority"] = *p.priority;
  if (p.category) j["category"] = to_string(*p.category);
  if (p.expires_at) j["expiresAt"] = format_time(*p.expires_at);
  if (p.cost) j["costBasis"] = {{"amount", p.cost->amount}, {"currency", p.cost->currency}};
  return j;
}
json payload_json(const credits_deducted& p) {
  json j = {{"transactionId", p.transaction_id},
            {"amount", p.amount},
            {"balanceAfter", p.balance_after},
            {"description", p.description},
            {"metadata", meta(p.metadata)}};
  put_draws(j, p.draws);
  if (!p.reason.empty()) j["reason"] = p.reason;
  if (!p.grant_id.empty()) j["grantId"] = p.grant_id;
  if (!p.reservation_id.empty()) j["reservationId"] = p.reservation_id;
  return j;
}
json payload_json(const credits_reserved& p) {
  json j = {{"reservationId", p.reservation_id}, {"amount", p.amount}, {"expiresAt", format_time(p.expires_at)},
            {"operation", p.operation},          {"model", p.model},   {"metadata", meta(p.metadata)}};
  put_draws(j, p.draws);
  return j;
}
json payload_json(const reservation_confirmed& p) {
  json j = {{"reservationId", p.reservation_id},
            {"transactionId", p.transaction_id},
            {"charged", p.charged},
            {"released", p.released},
            {"balanceAfter", p.balance_after}};
  put_draws(j, p.draws);
  if (p.overcaptured != 0) j["overcaptured"] = p.overcaptured;
  return j;
}
json payload_json(const reservation_cancelled& p) {
  json j = {{"reservationId", p.reservation_id}, {"released", p.released}};
  put_draws(j, p.draws);
  return j;
}
json payload_json(const reservation_expired& p) {
  json j = {{"reservationId", p.reservation_id}, {"released", p.released}};
  put_draws(j, p.draws);
  return j;
}
json payload_json(const usage_recorded& p) {
  json j = {{"usageId", p.usage_id},
            {"context", p.context},
            {"transactionId", p.transaction_id},
            {"modelId", p.model_id},
            {"usageType", p.usage_type},
            {"inputTokens", p.input_tokens},
            {"outputTokens", p.output_tokens},
            {"cachedTokens", p.cached_tokens},
            {"metadata", meta(p.metadata)}};
  if (p.cost_credits) j["costCredits"] = *p.cost_credits;  // added within version 1: absent on older events
  return j;
}

json payload_json(const balance_low& p) {
  return {{"threshold", p.threshold}, {"balance", p.balance},      {"reserved", p.reserved},
          {"available", p.available}, {"causeType", p.cause_type}, {"causeId", p.cause_id}};
}

json payload_json(const transaction_reversed& p) {
  json j = {{"transactionId", p.transaction_id}, {"originalTransactionId", p.original_transaction_id},
            {"originalType", p.original_type},   {"amount", p.amount},
            {"balanceAfter", p.balance_after},   {"description", p.description},
            {"metadata", meta(p.metadata)}};
  put_draws(j, p.draws);
  return j;
}

json payload_json(const event_voided& p) {
  return {{"voidedEventId", p.voided_event_id},
          {"voidedPosition", p.voided_position},
          {"reason", p.reason},
          {"accountUnblocked", p.account_unblocked}};
}

// Readers for decoding: each throws json::exception on a missing field or a wrong type, and decode()
// turns that into a rejection of the whole event.
std::string str(const json& j, const char* key) { return j.at(key).get<std::string>(); }
std::int64_t num(const json& j, const char* key) {
  const auto& v = j.at(key);
  if (!v.is_number_integer()) throw std::invalid_argument(std::string("field is not an integer: ") + key);
  // get<int64_t> of an unsigned above 2^63-1 would wrap to a negative number instead of failing.
  constexpr auto int64_max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (v.is_number_unsigned() && v.get<std::uint64_t>() > int64_max)
    throw std::invalid_argument(std::string("field is out of range: ") + key);
  return v.get<std::int64_t>();
}
json obj(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return json::object();
  if (!it->is_object()) throw std::invalid_argument(std::string("field is not an object: ") + key);
  return *it;
}
time_ms when(const json& j, const char* key) {
  auto t = parse_time(str(j, key));
  if (!t) throw std::invalid_argument(std::string("field is not an RFC 3339 time: ") + key);
  return *t;
}

// Draws name a grant and a positive amount; a list may be empty (a void of a grant with nothing left).
std::optional<grant_draws> draws_from(const json& p) {
  const auto it = p.find("draws");
  if (it == p.end()) return std::nullopt;
  if (!it->is_array()) throw std::invalid_argument("field is not an array: draws");
  grant_draws out;
  for (const auto& d : *it) {
    auto draw = grant_draw{str(d, "grantId"), num(d, "amount")};
    if (draw.amount <= 0 || draw.amount > amount_max) throw std::invalid_argument("a draw's amount is out of range");
    out.push_back(std::move(draw));
  }
  return out;
}

std::string optional_str(const json& p, const char* key) { return p.contains(key) ? str(p, key) : std::string(); }

credits_added added_from(const json& p) {
  credits_added a{str(p, "transactionId"), num(p, "amount"),        num(p, "balanceAfter"),
                  str(p, "description"),   str(p, "paymentMethod"), obj(p, "metadata")};
  a.grant_id = optional_str(p, "grantId");
  if (p.contains("expiresAt")) a.expires_at = when(p, "expiresAt");
  if (p.contains("priority")) {
    const auto priority = num(p, "priority");
    if (priority < grant_priority_min || priority > grant_priority_max)
      throw std::invalid_argument("priority is out of range");
    a.priority = static_cast<int>(priority);
  }
  if (p.contains("category")) {
    const auto category = grant_category_from(str(p, "category"));
    if (!category) throw std::invalid_argument("category is not paid or promotional");
    a.category = *category;
  }
  if (p.contains("costBasis")) {
    const auto& c = p.at("costBasis");
    a.cost = cost_basis{num(c, "amount"), str(c, "currency")};
    if (a.cost->amount < 0 || !is_currency_code(a.cost->currency))
      throw std::invalid_argument("costBasis is not a non-negative amount and an ISO 4217 currency");
  }
  return a;
}

credits_deducted deducted_from(const json& p) {
  credits_deducted d{str(p, "transactionId"), num(p, "amount"), num(p, "balanceAfter"), str(p, "description"),
                     obj(p, "metadata")};
  d.draws = draws_from(p);
  d.reason = optional_str(p, "reason");
  d.grant_id = optional_str(p, "grantId");
  d.reservation_id = optional_str(p, "reservationId");
  if (!d.reason.empty() && d.reason != reason_grant_expired && d.reason != reason_grant_voided &&
      d.reason != reason_overcapture)
    throw std::invalid_argument("unknown deduction reason: " + d.reason);
  if ((d.reason == reason_grant_expired || d.reason == reason_grant_voided) && d.grant_id.empty())
    throw std::invalid_argument("an expiry or a void names no grantId");
  return d;
}

std::optional<event_payload> payload_from(std::string_view type, const json& p) {
  if (type == "AccountCreated")
    return account_created{str(p, "name"), str(p, "externalId"), str(p, "email"), obj(p, "metadata")};
  if (type == "CreditsAdded") return added_from(p);
  if (type == "CreditsDeducted") return deducted_from(p);
  if (type == "CreditsReserved")
    return credits_reserved{str(p, "reservationId"), num(p, "amount"),   when(p, "expiresAt"), str(p, "operation"),
                            str(p, "model"),         obj(p, "metadata"), draws_from(p)};
  if (type == "ReservationConfirmed")
    return reservation_confirmed{str(p, "reservationId"),
                                 str(p, "transactionId"),
                                 num(p, "charged"),
                                 num(p, "released"),
                                 num(p, "balanceAfter"),
                                 draws_from(p),
                                 p.contains("overcaptured") ? num(p, "overcaptured") : 0};
  if (type == "ReservationCancelled")
    return reservation_cancelled{str(p, "reservationId"), num(p, "released"), draws_from(p)};
  if (type == "ReservationExpired")
    return reservation_expired{str(p, "reservationId"), num(p, "released"), draws_from(p)};
  if (type == "UsageRecorded")
    return usage_recorded{
        str(p, "usageId"),       str(p, "context"),
        str(p, "transactionId"), str(p, "modelId"),
        str(p, "usageType"),     num(p, "inputTokens"),
        num(p, "outputTokens"),  num(p, "cachedTokens"),
        obj(p, "metadata"),      p.contains("costCredits") ? std::optional(num(p, "costCredits")) : std::nullopt};
  if (type == "TransactionReversed") {
    auto r = transaction_reversed{
        str(p, "transactionId"), str(p, "originalTransactionId"), str(p, "originalType"), num(p, "amount"),
        num(p, "balanceAfter"),  str(p, "description"),           obj(p, "metadata"),     draws_from(p)};
    if (r.original_type != "CreditsAdded" && r.original_type != "CreditsDeducted" &&
        r.original_type != "ReservationConfirmed")
      throw std::invalid_argument("originalType is not a reversible type: " + r.original_type);
    return r;
  }
  if (type == "EventVoided")
    return event_voided{str(p, "voidedEventId"), str(p, "voidedPosition"), str(p, "reason"),
                        p.at("accountUnblocked").get<bool>()};
  if (type == "BalanceLow")
    return balance_low{num(p, "threshold"), num(p, "balance"),   num(p, "reserved"),
                       num(p, "available"), str(p, "causeType"), str(p, "causeId")};
  return std::nullopt;
}

// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

int days_in_month(int y, int m) {
  constexpr int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
  return m == 2 && leap ? 29 : days[m - 1];
}

// 9999-12-31T23:59:59.999Z, the latest time with a four-digit year.
constexpr time_ms time_max = 253'402'300'799'999;

}  // namespace

json draws_json(const grant_draws& draws) {
  json out = json::array();
  for (const auto& d : draws) out.push_back({{"grantId", d.grant_id}, {"amount", d.amount}});
  return out;
}

std::string grant_of(const credits_added& p) {
  if (!p.grant_id.empty()) return p.grant_id;
  auto id = grant_id_of(p.transaction_id);
  return id.empty() ? "grt:" + p.transaction_id : id;
}

std::string_view to_string(grant_category category) {
  return category == grant_category::promotional ? "promotional" : "paid";
}

std::optional<grant_category> grant_category_from(std::string_view text) {
  if (text == "paid") return grant_category::paid;
  if (text == "promotional") return grant_category::promotional;
  return std::nullopt;
}

bool is_currency_code(std::string_view text) {
  return text.size() == 3 && std::all_of(text.begin(), text.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

std::string_view type_name(const event_payload& payload) {
  return std::visit(overloaded{
                        [](const account_created&) { return "AccountCreated"; },
                        [](const credits_added&) { return "CreditsAdded"; },
                        [](const credits_deducted&) { return "CreditsDeducted"; },
                        [](const credits_reserved&) { return "CreditsReserved"; },
                        [](const reservation_confirmed&) { return "ReservationConfirmed"; },
                        [](const reservation_cancelled&) { return "ReservationCancelled"; },
                        [](const reservation_expired&) { return "ReservationExpired"; },
                        [](const usage_recorded&) { return "UsageRecorded"; },
                        [](const balance_low&) { return "BalanceLow"; },
                        [](const transaction_reversed&) { return "TransactionReversed"; },
                        [](const event_voided&) { return "EventVoided"; },
                    },
                    payload);
}

stream stream_of(const event_payload& payload) {
  return std::holds_alternative<usage_recorded>(payload) ? stream::usage : stream::ledger;
}

json to_json(const event& e) {
  return {{"eventId", e.event_id},
          {"type", type_name(e.payload)},
          {"schemaVersion", e.schema_version},
          {"tenant", e.tenant},
          {"accountId", e.account_id},
          {"apiKeyId", e.api_key_id},
          {"requestId", e.request_id},
          {"idempotencyKey", e.idempotency_key},
          {"requestHash", e.request_hash},
          {"occurredAt", format_time(e.occurred_at)},
          {"payload", std::visit([](const auto& p) { return payload_json(p); }, e.payload)}};
}

std::string encode(const event& e) { return to_json(e).dump(); }

std::optional<event> decode(std::string_view text, std::string* error) {
  // nlohmann's lexer stops at a NUL byte as if the input ended there; JSON never holds a raw one.
  if (text.find('\0') != std::string_view::npos) {
    if (error) *error = "a NUL byte in the event";
    return std::nullopt;
  }
  try {
    const json j = json::parse(text);
    const auto type = str(j, "type");
    auto payload = payload_from(type, j.at("payload"));
    if (!payload) {
      if (error) *error = "unknown event type: " + type;
      return std::nullopt;
    }
    // Compared before narrowing to int, so that e.g. 2^32 + 1 is not taken for version 1.
    const auto version = num(j, "schemaVersion");
    if (version != find_event_type(type)->version) {
      if (error) *error = "unsupported schema version " + std::to_string(version);
      return std::nullopt;
    }
    return event{str(j, "eventId"),     event_schema_version, str(j, "tenant"),         str(j, "accountId"),
                 str(j, "apiKeyId"),    str(j, "requestId"),  str(j, "idempotencyKey"), str(j, "requestHash"),
                 when(j, "occurredAt"), std::move(*payload)};
  } catch (const std::exception& ex) {
    if (error) *error = ex.what();
    return std::nullopt;
  }
}

std::string format_time(time_ms t) {
  std::int64_t days = t >= 0 ? t / 86'400'000 : (t - 86'399'999) / 86'400'000;
  const std::int64_t ms_of_day = t - days * 86'400'000;
  // civil_from_days, the inverse of days_from_civil.
  days += 719468;
  const std::int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const auto doe = static_cast<unsigned>(days - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  const std::int64_t y = static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2);
  if (y >= 0 && y <= 9999) {  // every time a request can name (parse_time): digits written by hand, no printf
    std::string out = "0000-00-00T00:00:00.000Z";
    const auto put = [&](std::size_t end, std::int64_t n, int width) {
      for (int i = 1; i <= width; ++i, n /= 10)
        out[end - static_cast<std::size_t>(i)] = static_cast<char>('0' + n % 10);
    };
    put(4, y, 4);
    put(7, m, 2);
    put(10, d, 2);
    put(13, ms_of_day / 3'600'000, 2);
    put(16, ms_of_day / 60'000 % 60, 2);
    put(19, ms_of_day / 1000 % 60, 2);
    put(23, ms_of_day % 1000, 3);
    return out;
  }
  std::array<char, 64> buf{};
  std::snprintf(buf.data(), buf.size(), "%04lld-%02u-%02uT%02lld:%02lld:%02lld.%03lldZ", static_cast<long long>(y), m,
                d, static_cast<long long>(ms_of_day / 3'600'000), static_cast<long long>(ms_of_day / 60'000 % 60),
                static_cast<long long>(ms_of_day / 1000 % 60), static_cast<long long>(ms_of_day % 1000));
  return buf.data();
}

std::optional<time_ms> parse_time(std::string_view s) {
  // Accepts YYYY-MM-DDTHH:MM:SS[.fff]Z, the form format_time writes: digits only (from_chars alone would take
  // "-1" for an hour), a real calendar date, and no later than format_time can write back in four digits.
  auto field = [&](std::size_t pos, std::size_t len, int& out) {
    if (pos + len > s.size()) return false;
    for (std::size_t i = pos; i < pos + len; ++i)
      if (s[i] < '0' || s[i] > '9') return false;
    auto [p, ec] = std::from_chars(s.data() + pos, s.data() + pos + len, out);
    return ec == std::errc{} && p == s.data() + pos + len;
  };
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0, ms = 0;
  if (s.size() < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':')
    return std::nullopt;
  if (!field(0, 4, y) || !field(5, 2, mo) || !field(8, 2, d) || !field(11, 2, h) || !field(14, 2, mi) ||
      !field(17, 2, sec))
    return std::nullopt;
  std::size_t pos = 19;
  if (s[pos] == '.') {
    const std::size_t start = ++pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') ++pos;
    if (pos == start) return std::nullopt;
    std::string digits(s.substr(start, std::min<std::size_t>(pos - start, 3)));
    digits.resize(3, '0');
    ms = std::stoi(digits);
  }
  if (pos + 1 != s.size() || (s[pos] != 'Z' && s[pos] != 'z')) return std::nullopt;
  if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60) return std::nullopt;
  const auto days = days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
  const time_ms t = ((days * 24 + h) * 60 + mi) * 60'000 + sec * 1000 + ms;
  // A leap second on 9999-12-31 would roll over into year 10000.
  if (t > time_max) return std::nullopt;
  return t;
}

}  // namespace credits
