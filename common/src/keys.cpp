#include "credits/common/keys.hpp"

#include <openssl/crypto.h>

#include <algorithm>

#include "credits/common/contract.hpp"
#include "credits/common/ids.hpp"

namespace credits {
namespace {

using nlohmann::json;

bool lower_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

constexpr std::string_view key_id_prefix = "key_";

}  // namespace

std::string_view to_string(key_scope scope) {
  switch (scope) {
    case key_scope::read_only:
      return "read-only";
    case key_scope::admin:
      return "admin";
    case key_scope::read_write:
      break;
  }
  return "read-write";
}

std::optional<key_scope> parse_key_scope(std::string_view text) {
  if (text == "read-only") return key_scope::read_only;
  if (text == "read-write") return key_scope::read_write;
  if (text == "admin") return key_scope::admin;
  return std::nullopt;
}

std::string key_token(std::string_view id_hex, std::string_view secret_hex) {
  return std::string(key_token_prefix) + std::string(id_hex) + "_" + std::string(secret_hex);
}

std::optional<std::string> key_id_of_token(std::string_view token) {
  if (token.size() != key_token_prefix.size() + key_id_hex_len + 1 + key_secret_hex_len ||
      !token.starts_with(key_token_prefix))
    return std::nullopt;
  const auto id = token.substr(key_token_prefix.size(), key_id_hex_len);
  const auto secret = token.substr(key_token_prefix.size() + key_id_hex_len + 1);
  if (token[key_token_prefix.size() + key_id_hex_len] != '_' || !lower_hex(id) || !lower_hex(secret))
    return std::nullopt;
  return std::string(key_id_prefix) + std::string(id);
}

bool is_key_id(std::string_view key_id) {
  return key_id.size() == key_id_prefix.size() + key_id_hex_len && key_id.starts_with(key_id_prefix) &&
         lower_hex(key_id.substr(key_id_prefix.size()));
}

std::string key_token_hash(std::string_view token) { return sha256_hex(token); }

bool hashes_equal(std::string_view a, std::string_view b) {
  // The lengths are public (always 64 hex digits); only the contents must not leak through timing.
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string_view type_name(const key_event_payload& payload) {
  return std::holds_alternative<api_key_created>(payload) ? "ApiKeyCreated" : "ApiKeyRevoked";
}

json to_json(const key_event& e) {
  json payload = json::object();
  if (const auto* c = std::get_if<api_key_created>(&e.payload))
    payload = {{"secretHash", c->secret_hash}, {"scope", to_string(c->scope)}};
  return {{"eventId", e.event_id},
          {"type", type_name(e.payload)},
          {"schemaVersion", e.schema_version},
          {"tenant", e.tenant},
          {"keyId", e.key_id},
          {"actor", e.actor},
          {"occurredAt", format_time(e.occurred_at)},
          {"payload", std::move(payload)}};
}

std::string encode(const key_event& e) { return to_json(e).dump(); }

std::optional<key_event> decode_key_event(std::string_view text, std::string* error) {
  const auto fail = [&](std::string why) {
    if (error) *error = std::move(why);
    return std::nullopt;
  };
  if (text.find('\0') != std::string_view::npos) return fail("a NUL byte in the event");
  try {
    const json j = json::parse(text);
    key_event e;
    const auto type = j.at("type").get<std::string>();
    const auto* info = find_event_type(type);
    if (!info || info->topic != stream::keys) return fail("not a key event type: " + type);
    const auto& version = j.at("schemaVersion");
    if (!version.is_number_integer() || version.get<std::int64_t>() != info->version)
      return fail("unsupported schema version of " + type);
    e.event_id = j.at("eventId").get<std::string>();
    e.tenant = j.at("tenant").get<std::string>();
    e.key_id = j.at("keyId").get<std::string>();
    e.actor = j.at("actor").get<std::string>();
    const auto at = parse_time(j.at("occurredAt").get<std::string>());
    if (!at) return fail("occurredAt is not an RFC 3339 time");
    e.occurred_at = *at;
    if (e.tenant.empty() || !is_key_id(e.key_id)) return fail("a key event without a tenant or a well-formed keyId");
    const auto& p = j.at("payload");
    if (type == "ApiKeyCreated") {
      const auto hash = p.at("secretHash").get<std::string>();
      const auto scope = parse_key_scope(p.at("scope").get<std::string>());
      if (hash.size() != 64 || !lower_hex(hash)) return fail("secretHash is not a SHA-256 in hex");
      if (!scope) return fail("unknown scope");
      e.payload = api_key_created{hash, *scope};
    } else {
      e.payload = api_key_revoked{};
    }
    return e;
  } catch (const std::exception& ex) {
    return fail(ex.what());
  }
}

bool apply(key_log_state& state, const key_event& e, std::string* why) {
  const auto ignore = [&](std::string reason) {
    if (why) *why = std::move(reason);
    return false;
  };
  auto it = state.keys.find(e.key_id);
  if (const auto* c = std::get_if<api_key_created>(&e.payload)) {
    if (it != state.keys.end()) return ignore(e.key_id + " exists already; key ids are never reused");
    state.keys.emplace(e.key_id, key_record{e.key_id, e.tenant, c->secret_hash, c->scope, e.occurred_at, std::nullopt});
    return true;
  }
  if (it == state.keys.end()) {
    // A bootstrap key (CREDITS_API_KEYS) is named only by its id: remember it revoked for that tenant.
    state.keys.emplace(e.key_id, key_record{e.key_id, e.tenant, {}, key_scope::read_only, 0, e.occurred_at});
    return true;
  }
  if (it->second.tenant != e.tenant) return ignore(e.key_id + " belongs to another tenant");
  if (it->second.revoked_at) return ignore(e.key_id + " is revoked already");
  it->second.revoked_at = e.occurred_at;
  return true;
}

}  // namespace credits
