#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "credits/command_api/command_result.hpp"
#include "credits/common/domain.hpp"

namespace credits::api {

// Refusals only the HTTP server makes, before anything reaches the ledger: the domain's error_code does not
// know them. Their JSON codes sit beside the domain's in the same "error" object.
enum class http_error {
  unauthorized,        // no X-API-Key, or an unknown or revoked one
  forbidden,           // a read-only key asked for a command
  rate_limited,        // the key's request budget is spent for now
  route_not_found,     // no such endpoint
  method_not_allowed,  // the endpoint takes the other method
  payload_too_large,   // the body is above CREDITS_BODY_BYTES_MAX
};

std::string_view to_string(http_error code);

// The one place where an error becomes an HTTP status.
unsigned http_status(error_code code);
unsigned http_status(http_error code);

// { "success": false, "error": { "code", "message", "field"?, "details"? } }
nlohmann::json error_body(const rejection& r);
nlohmann::json error_body(http_error code, const std::string& message, const nlohmann::json& details = nullptr);

// The success body of the command that produced `e`, as the REST reference shapes it. `account` holds the
// account's immutable fields (externalId) and the reservation the event names, so rendering again after a
// restart gives the same body.
nlohmann::json render(const event& e, const account_facts& account);

// A command's answer as the client sees it: the status, the body, and for an accepted command where its event
// sits in the log and whether it was answered from a first attempt. `elsewhere` has no answer of its own: the
// HTTP side forwards the request instead (http_forward.cpp).
struct command_answer {
  unsigned status = 200;
  nlohmann::json body;
  std::string position;  // empty when nothing was written
  bool replayed = false;
};
command_answer answer_of(const command_result& result);

nlohmann::json account_json(const std::string& id, const std::string& name, const std::string& external_id,
                            const std::string& email, const nlohmann::json& metadata, const std::string& created_at);

}  // namespace credits::api
