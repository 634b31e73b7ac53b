#include "credits/common/requests.hpp"

#include "credits/common/ids.hpp"

namespace credits {
namespace {

using nlohmann::json;

// Validation failures travel as this exception inside one parser and leave it as a rejection; no
// exception crosses a parser's boundary.
struct invalid : std::exception {
  rejection r;
  invalid(std::string field, std::string message)
      : r{error_code::invalid_request, std::move(message), std::move(field), nullptr} {}
  explicit invalid(rejection rej) : r(std::move(rej)) {}
};

const json* field_of(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

std::int64_t integer(const json& body, const char* name, std::int64_t min, std::int64_t max, bool required,
                     std::int64_t fallback = 0) {
  const json* v = field_of(body, name);
  if (!v) {
    if (required) throw invalid(name, std::string(name) + " is required");
    return fallback;
  }
  if (!v->is_number_integer())
    throw invalid(name,
                  std::string(name) + " must be an integer, not " + (v->is_number() ? "a fraction" : v->type_name()));
  if (v->is_number_unsigned() && v->get<std::uint64_t>() > static_cast<std::uint64_t>(max))
    throw invalid(name, std::string(name) + " must be at most " + std::to_string(max));
  const auto n = v->get<std::int64_t>();
  if (n < min) throw invalid(name, std::string(name) + " must be at least " + std::to_string(min));
  if (n > max) throw invalid(name, std::string(name) + " must be at most " + std::to_string(max));
  return n;
}

amount_t amount(const json& body, const char* name) { return integer(body, name, 1, amount_max, true); }

std::string text(const json& body, const char* name, const request_limits& limits, bool required) {
  const json* v = field_of(body, name);
  if (!v) {
    if (required) throw invalid(name, std::string(name) + " is required");
    return {};
  }
  if (!v->is_string()) throw invalid(name, std::string(name) + " must be a string");
  auto s = v->get<std::string>();
  if (required && s.empty()) throw invalid(name, std::string(name) + " must not be empty");
  if (s.size() > limits.string_bytes_max)
    throw invalid(name, std::string(name) + " is longer than " + std::to_string(limits.string_bytes_max) + " bytes");
  return s;
}

bool boolean(const json& body, const char* name) {
  const json* v = field_of(body, name);
  if (!v) return false;
  if (!v->is_boolean()) throw invalid(name, std::string(name) + " must be true or false, not " + v->type_name());
  return v->get<bool>();
}

json metadata(const json& body, const request_limits& limits) {
  const json* v = field_of(body, "metadata");
  if (!v) return json::object();
  if (!v->is_object()) throw invalid("metadata", "metadata must be an object");
  if (v->dump().size() > limits.metadata_bytes_max)
    throw invalid("metadata", "metadata is larger than " + std::to_string(limits.metadata_bytes_max) + " bytes");
  return *v;
}

std::string account(const json& body, std::string_view tenant) {
  auto resolved = resolve_account(tenant, body);
  if (auto* r = std::get_if<rejection>(&resolved)) throw invalid(std::move(*r));
  // A malformed id names no account: it is answered like any unknown one.
  if (!is_account_id(std::get<std::string>(resolved)))
    throw invalid(rejection{error_code::account_not_found, "account not found", "accountId", nullptr});
  return std::get<std::string>(resolved);
}

// A grant's terms on an addCredits: expiry (expiresAt or expiresInSeconds), priority, category, costBasis.
void grant_terms(const json& body, add_credits& c, const request_limits& limits) {
  const json* at = field_of(body, "expiresAt");
  const bool relative = field_of(body, "expiresInSeconds") != nullptr;
  if (at && relative) throw invalid("expiresAt", "give expiresAt or expiresInSeconds, not both");
  if (at) {
    const auto t = at->is_string() ? parse_time(at->get_ref<const std::string&>()) : std::nullopt;
    if (!t) throw invalid("expiresAt", "expiresAt must be an RFC 3339 time, e.g. 2027-01-31T00:00:00Z");
    c.expires_at = *t;  // in the future: decide() checks it against the request's time
  }
  if (relative) c.expires_in_ms = 1000 * integer(body, "expiresInSeconds", 1, limits.grant_expiry_s_max, true);
  c.priority = static_cast<int>(
      integer(body, "priority", grant_priority_min, grant_priority_max, false, grant_priority_default));
  if (const json* v = field_of(body, "category")) {
    const auto category = v->is_string() ? grant_category_from(v->get_ref<const std::string&>()) : std::nullopt;
    if (!category) throw invalid("category", "category must be \"paid\" or \"promotional\"");
    c.category = *category;
  }
  if (const json* v = field_of(body, "costBasis")) {
    if (!v->is_object())
      throw invalid("costBasis",
                    "costBasis must be an object {amount, currency}, e.g. {\"amount\": 999, \"currency\": \"USD\"}");
    for (const auto& [name, _] : v->items())
      if (name != "amount" && name != "currency")
        throw invalid("costBasis." + name, "costBasis has no field " + name + " (it takes amount and currency)");
    cost_basis cost;
    try {
      cost.amount = integer(*v, "amount", 0, amount_max, true);
    } catch (const invalid& e) {
      throw invalid("costBasis.amount", "costBasis." + e.r.message + " (integer minor units, e.g. cents)");
    }
    const json* currency = field_of(*v, "currency");
    if (!currency || !currency->is_string() || !is_currency_code(currency->get_ref<const std::string&>()))
      throw invalid("costBasis.currency", "costBasis.currency must be an ISO 4217 code of three capital letters");
    cost.currency = currency->get<std::string>();
    c.cost = std::move(cost);
  }
}

template <class F>
parsed guarded(const json& body, F&& build) {
  if (!body.is_object()) return rejection{error_code::invalid_request, "the body must be a JSON object", "", nullptr};
  try {
    return build();
  } catch (const invalid& e) {
    return e.r;
  }
}

}  // namespace

std::variant<json, rejection> parse_json(std::string_view body, const request_limits& limits) {
  // nlohmann's lexer takes a NUL byte for the end of the input and ignores whatever follows it, so
  // `{"amount":5}\0<anything>` would pass with bytes nobody validated. JSON never holds a raw NUL (in a
  // string it must be escaped), so a body with one is not JSON.
  if (body.find('\0') != std::string_view::npos)
    return rejection{error_code::invalid_request, "the body is not valid JSON", "", nullptr};
  bool too_deep = false;
  json::parser_callback_t limit_depth = [&](int depth, json::parse_event_t, json&) {
    if (static_cast<std::size_t>(depth) > limits.json_depth_max) too_deep = true;
    return !too_deep;
  };
  json j = json::parse(body, limit_depth, /*allow_exceptions=*/false);
  if (too_deep)
    return rejection{error_code::invalid_request,
                     "JSON nesting is deeper than " + std::to_string(limits.json_depth_max), "", nullptr};
  if (j.is_discarded()) return rejection{error_code::invalid_request, "the body is not valid JSON", "", nullptr};
  return j;
}

std::variant<std::string, rejection> resolve_account(std::string_view tenant, const json& fields) {
  auto str = [&](const char* name) -> std::variant<std::string, rejection> {
    const json* v = field_of(fields, name);
    if (!v) return std::string{};
    if (!v->is_string() || v->get_ref<const std::string&>().empty())
      return rejection{error_code::invalid_request, std::string(name) + " must be a non-empty string", name, nullptr};
    return v->get<std::string>();
  };
  auto account_id = str("accountId");
  if (auto* r = std::get_if<rejection>(&account_id)) return *r;
  auto external_id = str("externalId");
  if (auto* r = std::get_if<rejection>(&external_id)) return *r;
  const auto& by_id = std::get<std::string>(account_id);
  const auto& by_external = std::get<std::string>(external_id);
  if (by_id.empty() && by_external.empty())
    return rejection{error_code::invalid_request, "accountId or externalId is required", "accountId", nullptr};
  if (by_external.empty()) return by_id;
  auto derived = derive_account_id(tenant, by_external);
  if (!by_id.empty() && by_id != derived)
    return rejection{error_code::invalid_request, "accountId and externalId name different accounts", "externalId",
                     nullptr};
  return derived;
}

parsed parse_create_account(const json& body, std::string_view tenant, const random_bits& bits,
                            const request_limits& limits) {
  return guarded(body, [&]() -> parsed {
    create_account c;
    c.name = text(body, "name", limits, true);
    c.external_id = text(body, "externalId", limits, false);
    c.email = text(body, "email", limits, false);
    if (!c.email.empty() && c.email.find('@') == std::string::npos)
      throw invalid("email", "email must be an e-mail address");
    c.metadata = metadata(body, limits);
    c.account_id = c.external_id.empty() ? account_id_from_bits(bits(), static_cast<std::uint32_t>(bits()))
                                         : derive_account_id(tenant, c.external_id);
    return c;
  });
}

parsed parse_add_credits(const json& body, std::string_view tenant, const random_bits& bits,
                         const request_limits& limits) {
  return guarded(body, [&]() -> parsed {
    add_credits c;
    c.account_id = account(body, tenant);
    c.amount = amount(body, "amount");
    c.description = text(body, "description", limits, false);
    c.payment_method = text(body, "paymentMethod", limits, false);
    c.metadata = metadata(body, limits);
    grant_terms(body, c, limits);
    c.transaction_id = child_id("txn", c.account_id, bits());
    return c;
  });
}

parsed parse_deduct_credits(const json& body, std::string_view tenant, const random_bits& bits,
                            const request_limits& limits) {
  return guarded(body, [&]() -> parsed {
    deduct_credits c;
    c.account_id = account(body, tenant);
    c.amount = amount(body, "amount");
    c.description = text(body, "description", limits, false);
    c.metadata = metadata(body, limits);
    c.transaction_id = child_id("txn", c.account_id, bits());
    return c;
  });
}

parsed parse_create_reservation(const json& body, std::string_view tenant, const random_bits& bits,
                                const request_limits& limits) {
  return guarded(body, [&]() -> parsed {
    create_reservation c;
    c.account_id = account(body, tenant);
    c.amount = amount(body, "amount");
    c.expires_in_ms = 1000 * integer(body, "expiresInSeconds", 1, limits.reservation_timeout_s_max, false,
                                     limits.reservation_timeout_s);
    c.operation = text(body, "operation", limits, false);
    c.model = text(body, "model", limits, false);
    c.metadata = metadata(body, limits);
    c.reservation_id = child_id("rsv", c.account_id, bits());
    return c;
  });
}

parsed parse_confirm_reservation(const json& body, const random_bits& bits, const request_limits& limits) {
  return guarded(body, [&]() -> parsed {
    confirm_reservation c;
    c.reservation_id = text(body, "reservationId", limits, true);
    // Zero is a valid actual cost (the call was free); it charges nothing and releases the whole hold.
    c.actual_amount = integer(body, "actualAmount", 0, amount_max, true);
    c.allow_overcapture = boolean(body, "allowOvercapture");
    c.transaction_id =
        child_id("txn", account_of("rsv", c.reservation_id).value_or("acc_000000000000000000000000"), bits());
    return c;
  });
}

parsed parse_reverse_transaction(const json& body, const random_bits& bits, const request_limits& limits) {
  return guarded(body, [&]() -> parsed {
    reverse_transaction c;
    c.transaction_id = text(body, "transactionId", limits, true);
    // Absent: all of the transaction that is not reversed yet.
    c.amount = integer(body, "amount", 1, amount_max, false, 0);
    c.description = text(body, "description", limits, false);
    c.metadata = metadata(body, limits);
    c.reversal_id =
        child_id("txn", account_of("txn", c.transaction_id).value_or("acc_000000000000000000000000"), bits());
    return c;
  });
}

parsed parse_cancel_reservation(const json& body, const request_limits& limits) {
  return guarded(body, [&]() -> parsed { return cancel_reservation{text(body, "reservationId", limits, true)}; });
}

parsed parse_record_usage(const json& body, std::string_view tenant, const random_bits& bits,
                          const request_limits& limits) {
  return guarded(body, [&]() -> parsed {
    record_usage c;
    c.account_id = account(body, tenant);
    c.context = text(body, "context", limits, true);
    if (c.context != "customer" && c.context != "system")
      throw invalid("context", "context must be \"customer\" or \"system\"");
    c.transaction_id = text(body, "transactionId", limits, false);
    c.model_id = text(body, "modelId", limits, true);
    c.usage_type = text(body, "usageType", limits, false);
    if (c.usage_type.empty()) c.usage_type = "text";
    c.input_tokens = integer(body, "inputTokens", 0, amount_max, false);
    c.output_tokens = integer(body, "outputTokens", 0, amount_max, false);
    c.cached_tokens = integer(body, "cachedTokens", 0, amount_max, false);
    c.metadata = metadata(body, limits);
    c.usage_id = child_id("use", c.account_id, bits());
    return c;
  });
}

parsed parse_void_grant(const json& body, const random_bits& bits, const request_limits& limits) {
  return guarded(body, [&]() -> parsed {
    void_grant c;
    c.grant_id = text(body, "grantId", limits, true);
    c.transaction_id = child_id("txn", account_of("grt", c.grant_id).value_or("acc_000000000000000000000000"), bits());
    return c;
  });
}

parsed parse_void_event(const json& body, const request_limits& limits) {
  return guarded(body, [&]() -> parsed {
    void_event c;
    c.event_id = text(body, "eventId", limits, true);
    c.reason = text(body, "reason", limits, true);
    c.account_id = text(body, "accountId", limits, false);
    return c;
  });
}

}  // namespace credits
