#pragma once

// Key log events for the tests of API keys: common's key log (keys_test), the API's registry
// (key_registry_test) and credits-admin (admin_test).
#include <string>

#include "credits/common/keys.hpp"

namespace credits::test {

inline const std::string token_a = key_token("0123456789abcdef", std::string(64, 'a'));
inline const std::string token_b = key_token("fedcba9876543210", std::string(64, 'b'));

inline key_event created(const std::string& tenant, const std::string& token, key_scope scope = key_scope::read_write) {
  return key_event{"8d6f1f7e-0000-4000-8000-000000000001",
                   1,
                   tenant,
                   *key_id_of_token(token),
                   "credits-admin:test",
                   1'764'432'082'123,
                   api_key_created{key_token_hash(token), scope}};
}

inline key_event revoked(const std::string& tenant, const std::string& key_id) {
  return key_event{"8d6f1f7e-0000-4000-8000-000000000002",
                   1,
                   tenant,
                   key_id,
                   "credits-admin:test",
                   1'764'432'090'000,
                   api_key_revoked{}};
}

}  // namespace credits::test
