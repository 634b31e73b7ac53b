#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

#include "credits/common/events.hpp"

// API keys as events: the key log (topic credits.keys) holds every key ever created and every revocation, so
// the keys a process accepts are a fold of that log, rebuilt at start-up like the ledger. Pure: no I/O.
namespace credits {

// What a key may do: read-only keys are refused every command (403); read-write keys may do everything.
// admin: read-write, and the operators' endpoints (POST /v1/admin/events/void).
enum class key_scope { read_only, read_write, admin };
std::string_view to_string(key_scope scope);                      // "read-only", "read-write", "admin"
std::optional<key_scope> parse_key_scope(std::string_view text);  // the same words

// A key as handed to its holder: "ck_live_" + 16 hex digits (the key id, public) + "_" + 64 hex digits (the
// secret, 256 random bits). Only SHA-256 of the whole token is ever stored.
inline constexpr std::string_view key_token_prefix = "ck_live_";
inline constexpr std::size_t key_id_hex_len = 16;
inline constexpr std::size_t key_secret_hex_len = 64;

// The token for an id and a secret (both lowercase hex of the lengths above).
std::string key_token(std::string_view id_hex, std::string_view secret_hex);
// "key_<id>" for a well-formed ck_live_ token, nullopt for anything else (bootstrap keys, garbage).
std::optional<std::string> key_id_of_token(std::string_view token);
bool is_key_id(std::string_view key_id);
// SHA-256 of the token, lowercase hex: what ApiKeyCreated stores.
std::string key_token_hash(std::string_view token);
// Compares two hashes in time independent of where they differ.
bool hashes_equal(std::string_view a, std::string_view b);

struct api_key_created {
  std::string secret_hash;  // key_token_hash of the token; the token itself is never stored
  key_scope scope = key_scope::read_write;
};

// Revokes a key for good, also one of the bootstrap keys (CREDITS_API_KEYS), which are named by their key id.
struct api_key_revoked {};

using key_event_payload = std::variant<api_key_created, api_key_revoked>;

// One record of the key log (Kafka key = key id). `actor` says who ran the change ("credits-admin:<user>").
struct key_event {
  std::string event_id;  // UUID
  int schema_version = 1;
  std::string tenant;
  std::string key_id;
  std::string actor;
  time_ms occurred_at = 0;
  key_event_payload payload;
};

std::string_view type_name(const key_event_payload& payload);
nlohmann::json to_json(const key_event& e);
std::string encode(const key_event& e);
// Never throws: a malformed record yields nullopt and why.
std::optional<key_event> decode_key_event(std::string_view text, std::string* error = nullptr);

// One key as the log tells it. A revocation of a key the log never created (a bootstrap key) is kept too, with
// an empty hash, so that key stays refused.
struct key_record {
  std::string key_id;
  std::string tenant;
  std::string secret_hash;
  key_scope scope = key_scope::read_write;
  time_ms created_at = 0;
  std::optional<time_ms> revoked_at;
};

// The fold of the key log. Key ids are never reused: a second ApiKeyCreated for an id is ignored, and a
// revocation naming another tenant than the key's is ignored (it revokes nothing).
struct key_log_state {
  std::map<std::string, key_record> keys;  // by key id
};

// Applies one event; false when it was ignored (and why in `why`).
bool apply(key_log_state& state, const key_event& e, std::string* why = nullptr);

}  // namespace credits
