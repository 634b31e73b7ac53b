#pragma once

#include <chrono>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "credits/common/keys.hpp"

// credits-admin: manages API keys by appending ApiKeyCreated / ApiKeyRevoked to the key log, which every
// credits-api follows. The parsing and the decisions are pure (tested without Kafka); run() does the I/O.
namespace credits::admin {

struct options {
  std::string kafka_brokers = "127.0.0.1:9092";
  std::string keys_topic = "credits.keys";
  // One credits-admin at a time: a second one with the same id fences the first, which then fails cleanly.
  std::string transactional_id = "credits-admin";
  std::chrono::milliseconds timeout_ms{30'000};  // reading the key log, or appending to it; an HTTP call
  // events void asks a credits-api (plain HTTP) with an API key of the admin scope, from the environment so that
  // it never shows in a process listing.
  std::string api_url = "http://127.0.0.1:8080";
  std::string api_key;
};

// Reads CREDITS_KAFKA_BROKERS, CREDITS_KEYS_TOPIC, CREDITS_ADMIN_TRANSACTIONAL_ID, CREDITS_ADMIN_TIMEOUT_MS,
// CREDITS_ADMIN_API_URL, CREDITS_ADMIN_API_KEY.
// Throws std::invalid_argument naming a bad variable.
options load_options(const std::function<const char*(const char*)>& getenv);

struct command {
  enum class verb { create, list, revoke, void_event } what = verb::list;
  std::string tenant;  // required for create and revoke; list without it lists every tenant
  key_scope scope = key_scope::read_write;
  std::string key_id;      // revoke
  bool bootstrap = false;  // revoke a CREDITS_API_KEYS key, which the log does not know
  std::string event_id;    // events void
  std::string reason;      // events void
  std::string account_id;  // events void, optional
};

// "keys create --tenant T [--scope read-only|read-write|admin]", "keys list [--tenant T]",
// "keys revoke --tenant T --key KEY_ID [--bootstrap]", "events void --event-id ID --reason TEXT [--account-id A]".
// Throws std::invalid_argument with the usage problem.
command parse_args(const std::vector<std::string>& args);

inline constexpr std::string_view usage =
    "usage: credits-admin keys create --tenant T [--scope read-write|read-only|admin]\n"
    "       credits-admin keys list [--tenant T]\n"
    "       credits-admin keys revoke --tenant T --key KEY_ID [--bootstrap]\n"
    "       credits-admin events void --event-id ID --reason TEXT [--account-id ACCOUNT]\n"
    "         (asks CREDITS_ADMIN_API_URL with the admin-scope key in CREDITS_ADMIN_API_KEY)\n";

// The revocation to append, or why not (a key of another tenant, unknown, already revoked).
struct refusal {
  std::string why;
};
std::variant<key_event, refusal> decide_revoke(const key_log_state& state, const command& c);

// events void: POSTs /v1/admin/events/void to o.api_url with o.api_key; prints the answer. Returns the exit code.
int void_event(const options& o, const command& c, std::ostream& out, std::ostream& err);

// Runs the command against Kafka (events void: against the API); prints results to `out` (JSON), problems to `err`.
// Returns the exit code.
int run(const options& o, const command& c, std::ostream& out, std::ostream& err);

}  // namespace credits::admin
