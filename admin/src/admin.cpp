#include "credits/admin/admin.hpp"

#include <openssl/rand.h>
#include <pwd.h>
#include <unistd.h>

#include <array>
#include <charconv>
#include <cstdio>
#include <ostream>
#include <stdexcept>

#include "credits/common/clock.hpp"
#include "credits/common/contract.hpp"
#include "credits/common/env.hpp"
#include "credits/common/ids.hpp"
#include "credits/event_store/event_store.hpp"

namespace credits::admin {
namespace {

using nlohmann::json;

std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) throw std::runtime_error("no randomness (RAND_bytes)");
  std::string out;
  for (const auto b : raw) {
    std::array<char, 3> buf{};
    std::snprintf(buf.data(), buf.size(), "%02x", b);
    out += buf.data();
  }
  return out;
}

std::string new_event_id() {
  std::array<std::uint64_t, 2> bits{};
  if (RAND_bytes(reinterpret_cast<unsigned char*>(bits.data()), sizeof bits) != 1)
    throw std::runtime_error("no randomness (RAND_bytes)");
  return uuid_v4(bits[0], bits[1]);
}

std::string actor() {
  const passwd* pw = getpwuid(getuid());
  return "credits-admin:" + std::string(pw && pw->pw_name ? pw->pw_name : std::to_string(getuid()));
}

key_log_state read_log(const options& o, std::ostream& err) {
  key_log_state state;
  store::read_to_end(
      o.kafka_brokers, {o.keys_topic},
      [&](const store::message& m) {
        std::string error;
        if (auto e = decode_key_event(m.value, &error))
          apply(state, *e);
        else
          err << "credits-admin: skipped an undecodable record at offset " << m.offset << ": " << error << "\n";
      },
      o.timeout_ms);
  return state;
}

store::record to_record(const options& o, const key_event& e) {
  const auto* type = find_event_type(type_name(e.payload));
  return store::record{o.keys_topic,
                       e.key_id,
                       encode(e),
                       {{"ce_specversion", "1.0"},
                        {"ce_id", e.event_id},
                        {"ce_type", cloudevents_type(*type)},
                        {"ce_source", "/credits/admin"},
                        {"ce_time", format_time(e.occurred_at)},
                        {"ce_subject", e.key_id},
                        {"ce_dataschema", schema_uri(*type)},
                        {"ce_partitionkey", e.key_id},
                        {"content-type", "application/json"}}};
}

void append(const options& o, const key_event& e) {
  store::transactional_producer producer(o.kafka_brokers, o.transactional_id, o.timeout_ms, o.timeout_ms);
  const std::array records{to_record(o, e)};
  const auto result = producer.append(records, o.timeout_ms);
  if (result.status != store::append_status::committed)
    throw std::runtime_error(
        "appending to " + o.keys_topic + " failed" +
        (result.status == store::append_status::unknown ? " or its outcome is unknown (run list)" : "") + ": " +
        result.error);
}

json key_json(const key_record& k) {
  return {{"keyId", k.key_id},
          {"tenant", k.tenant},
          {"scope", k.secret_hash.empty() ? json(nullptr) : json(to_string(k.scope))},
          {"source", k.secret_hash.empty() ? "bootstrap" : "key-log"},
          {"createdAt", k.secret_hash.empty() ? json(nullptr) : json(format_time(k.created_at))},
          {"revokedAt", k.revoked_at ? json(format_time(*k.revoked_at)) : json(nullptr)}};
}

}  // namespace

options load_options(const std::function<const char*(const char*)>& getenv) {
  options o;
  const env_reader r{getenv};
  r.text("CREDITS_KAFKA_BROKERS", o.kafka_brokers);
  r.text("CREDITS_KEYS_TOPIC", o.keys_topic);
  r.text("CREDITS_ADMIN_TRANSACTIONAL_ID", o.transactional_id);
  r.millis("CREDITS_ADMIN_TIMEOUT_MS", o.timeout_ms, 1000, 600'000);
  r.text("CREDITS_ADMIN_API_URL", o.api_url);
  r.text("CREDITS_ADMIN_API_KEY", o.api_key);
  return o;
}

namespace {

command parse_void(const std::vector<std::string>& args) {
  command c;
  c.what = command::verb::void_event;
  for (std::size_t i = 2; i < args.size(); ++i) {
    const auto& a = args[i];
    if (i + 1 >= args.size() || args[i + 1].empty()) throw std::invalid_argument(a + " needs a value");
    const auto& v = args[++i];
    if (a == "--event-id")
      c.event_id = v;
    else if (a == "--reason")
      c.reason = v;
    else if (a == "--account-id")
      c.account_id = v;
    else
      throw std::invalid_argument("unexpected argument: " + a);
  }
  if (c.event_id.empty() || c.reason.empty()) throw std::invalid_argument("--event-id and --reason are required");
  return c;
}

}  // namespace

command parse_args(const std::vector<std::string>& args) {
  if (args.size() == 2 && args[0] == "events" && args[1] != "void")
    throw std::invalid_argument("unknown command: events " + args[1]);
  if (args.size() >= 2 && args[0] == "events" && args[1] == "void") return parse_void(args);
  if (args.size() < 2 || args[0] != "keys")
    throw std::invalid_argument("expected: keys create|list|revoke, or events void");
  command c;
  if (args[1] == "create")
    c.what = command::verb::create;
  else if (args[1] == "list")
    c.what = command::verb::list;
  else if (args[1] == "revoke")
    c.what = command::verb::revoke;
  else
    throw std::invalid_argument("unknown command: keys " + args[1]);
  for (std::size_t i = 2; i < args.size(); ++i) {
    const auto& a = args[i];
    const auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size() || args[i + 1].empty()) throw std::invalid_argument(a + " needs a value");
      return args[++i];
    };
    if (a == "--tenant")
      c.tenant = value();
    else if (a == "--key" && c.what == command::verb::revoke)
      c.key_id = value();
    else if (a == "--bootstrap" && c.what == command::verb::revoke)
      c.bootstrap = true;
    else if (a == "--scope" && c.what == command::verb::create) {
      const auto scope = parse_key_scope(value());
      if (!scope) throw std::invalid_argument("--scope is read-write, read-only or admin");
      c.scope = *scope;
    } else {
      throw std::invalid_argument("unexpected argument: " + a);
    }
  }
  if (c.what != command::verb::list && c.tenant.empty()) throw std::invalid_argument("--tenant is required");
  if (c.what == command::verb::revoke && !is_key_id(c.key_id))
    throw std::invalid_argument("--key takes a key id (key_ and 16 hex digits), never the key itself");
  return c;
}

std::variant<key_event, refusal> decide_revoke(const key_log_state& state, const command& c) {
  const auto it = state.keys.find(c.key_id);
  if (it == state.keys.end() && !c.bootstrap)
    return refusal{c.key_id + " is not in the key log; to revoke a CREDITS_API_KEYS key pass --bootstrap"};
  if (it != state.keys.end() && it->second.tenant != c.tenant)
    return refusal{c.key_id + " is not a key of tenant " + c.tenant};
  if (it != state.keys.end() && it->second.revoked_at) return refusal{c.key_id + " is revoked already"};
  return key_event{new_event_id(), 1, c.tenant, c.key_id, actor(), wall_clock_ms(), api_key_revoked{}};
}

int run(const options& o, const command& c, std::ostream& out, std::ostream& err) {
  if (c.what == command::verb::void_event) return void_event(o, c, out, err);
  const auto state = read_log(o, err);
  switch (c.what) {
    case command::verb::list: {
      json keys = json::array();
      for (const auto& [id, k] : state.keys)
        if (c.tenant.empty() || k.tenant == c.tenant) keys.push_back(key_json(k));
      out << json{{"keys", std::move(keys)}}.dump(2) << "\n";
      return 0;
    }
    case command::verb::revoke: {
      auto decided = decide_revoke(state, c);
      if (auto* r = std::get_if<refusal>(&decided)) {
        err << "credits-admin: " << r->why << "\n";
        return 1;
      }
      const auto& e = std::get<key_event>(decided);
      append(o, e);
      out << json{{"keyId", e.key_id}, {"tenant", e.tenant}, {"revokedAt", format_time(e.occurred_at)}}.dump(2) << "\n";
      return 0;
    }
    case command::verb::create: {
      std::string id;
      do id = random_hex(key_id_hex_len / 2);
      while (state.keys.contains("key_" + id));
      const auto token = key_token(id, random_hex(key_secret_hex_len / 2));
      const key_event e{new_event_id(),
                        1,
                        c.tenant,
                        *key_id_of_token(token),
                        actor(),
                        wall_clock_ms(),
                        api_key_created{key_token_hash(token), c.scope}};
      append(o, e);
      // The only time the key exists outside its holder's hands: the log keeps its SHA-256 alone.
      out << json{{"keyId", e.key_id}, {"tenant", e.tenant}, {"scope", to_string(c.scope)}, {"apiKey", token}}.dump(2)
          << "\n";
      return 0;
    }
    case command::verb::void_event:
      break;
  }
  return 1;
}

}  // namespace credits::admin
