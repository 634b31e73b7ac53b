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
  std::chrono::milliseconds timeout_ms{30'000};  // reading the key log, or appending to it
};

// Reads CREDITS_KAFKA_BROKERS, CREDITS_KEYS_TOPIC, CREDITS_ADMIN_TRANSACTIONAL_ID, CREDITS_ADMIN_TIMEOUT_MS.
// Throws std::invalid_argument naming a bad variable.
options load_options(const std::function<const char*(const char*)>& getenv);

struct command {
  enum class verb { create, list, revoke } what = verb::list;
  std::string tenant;  // required for create and revoke; list without it lists every tenant
  key_scope scope = key_scope::read_write;
  std::string key_id;      // revoke
  bool bootstrap = false;  // revoke a CREDITS_API_KEYS key, which the log does not know
};

// "keys create --tenant T [--scope read-only|read-write]", "keys list [--tenant T]",
// "keys revoke --tenant T --key KEY_ID [--bootstrap]". Throws std::invalid_argument with the usage problem.
command parse_args(const std::vector<std::string>& args);

inline constexpr std::string_view usage =
    "usage: credits-admin keys create --tenant T [--scope read-write|read-only]\n"
    "       credits-admin keys list [--tenant T]\n"
    "       credits-admin keys revoke --tenant T --key KEY_ID [--bootstrap]\n";

// The revocation to append, or why not (a key of another tenant, unknown, already revoked).
struct refusal {
  std::string why;
};
std::variant<key_event, refusal> decide_revoke(const key_log_state& state, const command& c);

// Runs the command against Kafka; prints results to `out` (JSON), problems to `err`. Returns the exit code.
int run(const options& o, const command& c, std::ostream& out, std::ostream& err);

}  // namespace credits::admin
