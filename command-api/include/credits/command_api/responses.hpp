#pragma once

#include <nlohmann/json.hpp>

#include "credits/common/domain.hpp"

namespace credits::api {

// The one place where a domain error becomes an HTTP status.
unsigned http_status(error_code code);

// { "success": false, "error": { "code", "message", "field"?, "details"? } }
nlohmann::json error_body(const rejection& r);

// The success body of the command that produced `e`, as the REST reference shapes it. `account` is the
// account's state after the event; only its immutable fields (externalId) and the reservation it names are
// read, so rendering again after a restart gives the same body.
nlohmann::json render(const event& e, const account_state& account);

nlohmann::json account_json(const std::string& id, const std::string& name, const std::string& external_id,
                            const std::string& email, const nlohmann::json& metadata, const std::string& created_at);

}  // namespace credits::api
