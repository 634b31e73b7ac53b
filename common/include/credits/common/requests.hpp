#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <variant>

#include "credits/common/domain.hpp"

namespace credits {

// Limits on what a request body may hold. Each is named with its unit last.
struct request_limits {
  std::size_t string_bytes_max = 256;
  std::size_t metadata_bytes_max = 4096;
  std::size_t json_depth_max = 16;
  std::int64_t reservation_timeout_s = 900;               // default hold when a request names none
  std::int64_t reservation_timeout_s_max = 7 * 86400;     // longest hold a request may ask for
  std::int64_t grant_expiry_s_max = 100LL * 366 * 86400;  // furthest expiresInSeconds of a grant (100 years)
};

// Random bits for new ids, injected so tests are deterministic.
using random_bits = std::function<std::uint64_t()>;

// Turns a request body into JSON, refusing malformed text and nesting deeper than the limit.
std::variant<nlohmann::json, rejection> parse_json(std::string_view body, const request_limits& limits);

// The account a request names with accountId or externalId (in a body or a query string). When both are
// given they must name the same account.
std::variant<std::string, rejection> resolve_account(std::string_view tenant, const nlohmann::json& fields);

// Each parser validates one endpoint's body into a command, or says which field is wrong and why.
using parsed = std::variant<command, rejection>;
parsed parse_create_account(const nlohmann::json& body, std::string_view tenant, const random_bits& bits,
                            const request_limits& limits);
parsed parse_add_credits(const nlohmann::json& body, std::string_view tenant, const random_bits& bits,
                         const request_limits& limits);
parsed parse_deduct_credits(const nlohmann::json& body, std::string_view tenant, const random_bits& bits,
                            const request_limits& limits);
parsed parse_create_reservation(const nlohmann::json& body, std::string_view tenant, const random_bits& bits,
                                const request_limits& limits);
parsed parse_confirm_reservation(const nlohmann::json& body, const random_bits& bits, const request_limits& limits);
parsed parse_cancel_reservation(const nlohmann::json& body, const request_limits& limits);
parsed parse_reverse_transaction(const nlohmann::json& body, const random_bits& bits, const request_limits& limits);
parsed parse_record_usage(const nlohmann::json& body, std::string_view tenant, const random_bits& bits,
                          const request_limits& limits);
// POST /v1/grants/void: {grantId}.
parsed parse_void_grant(const nlohmann::json& body, const random_bits& bits, const request_limits& limits);
// POST /v1/admin/events/void: {eventId, reason, accountId?}. Without accountId the server finds the account.
parsed parse_void_event(const nlohmann::json& body, const request_limits& limits);

}  // namespace credits
