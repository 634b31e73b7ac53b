#include <gtest/gtest.h>

#include <map>

#include "credits/command_api/api_config.hpp"
#include "credits/command_api/responses.hpp"
#include "credits/command_api/writer.hpp"

namespace credits::api {
namespace {

config load(std::map<std::string, std::string> env) {
  return load_config([env = std::move(env)](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

TEST(config, defaults_need_only_api_keys) {
  const auto c = load({{"CREDITS_API_KEYS", "demo:ck_demo_key_123"}});
  EXPECT_EQ(c.http_port, 8080);
  ASSERT_EQ(c.api_keys.size(), 1u);
  const auto& key = c.api_keys.begin()->second;
  EXPECT_EQ(key.tenant, "demo");
  EXPECT_EQ(key.key_id.rfind("key_", 0), 0u);
  EXPECT_EQ(key.key_id.find("ck_demo"), std::string::npos) << "the key id must not reveal the key";
}

TEST(config, bad_values_are_refused_with_the_variable_named) {
  const std::map<std::string, std::string> keys{{"CREDITS_API_KEYS", "demo:ck_demo_key_123"}};
  auto with = [&](const char* name, const char* value) {
    auto env = keys;
    env[name] = value;
    return env;
  };
  for (const auto& env :
       {with("CREDITS_HTTP_PORT", "http"), with("CREDITS_HTTP_PORT", "70000"), with("CREDITS_BATCH_COMMANDS_MAX", "0"),
        with("CREDITS_KAFKA_BROKERS", ""), with("CREDITS_READ_WAIT_MS", "-5")}) {
    try {
      load(env);
      ADD_FAILURE() << "accepted a bad configuration";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("CREDITS_"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(load({}), std::invalid_argument);
  EXPECT_THROW(load({{"CREDITS_API_KEYS", "no-colon"}}), std::invalid_argument);
  EXPECT_THROW(load({{"CREDITS_API_KEYS", "t:short"}}), std::invalid_argument);
  EXPECT_THROW(load({{"CREDITS_API_KEYS", "a:ck_same_key_1,b:ck_same_key_1"}}), std::invalid_argument);
}

TEST(config, a_group_member_advertises_where_it_listens_unless_told_otherwise) {
  const std::map<std::string, std::string> base{{"CREDITS_API_KEYS", "demo:ck_demo_key_123"},
                                                {"CREDITS_GROUP_ID", "credits-api"}};
  auto with = [&](std::map<std::string, std::string> more) {
    auto env = base;
    env.merge(more);
    return env;
  };
  EXPECT_EQ(load(with({{"CREDITS_HTTP_PORT", "8081"}})).advertised_address, "127.0.0.1:8081");
  EXPECT_EQ(load(with({{"CREDITS_HTTP_ADDRESS", "0.0.0.0"}, {"CREDITS_ADVERTISED_ADDRESS", "api-2.internal:8080"}}))
                .advertised_address,
            "api-2.internal:8080");
  EXPECT_TRUE(load({{"CREDITS_API_KEYS", "demo:ck_demo_key_123"}}).group_id.empty());
  // Others could not reach a wildcard address or port 0; a member forwards over plain HTTP only.
  EXPECT_THROW(load(with({{"CREDITS_HTTP_ADDRESS", "0.0.0.0"}})), std::invalid_argument);
  EXPECT_THROW(load(with({{"CREDITS_HTTP_PORT", "0"}})), std::invalid_argument);
  EXPECT_THROW(load(with({{"CREDITS_ADVERTISED_ADDRESS", "no-port"}})), std::invalid_argument);
  EXPECT_THROW(load(with({{"CREDITS_TLS_CERT_FILE", "/etc/hostname"}, {"CREDITS_TLS_KEY_FILE", "/etc/hostname"}})),
               std::invalid_argument);
  EXPECT_THROW(load(with({{"CREDITS_GROUP_SESSION_TIMEOUT_MS", "10"}})), std::invalid_argument);
}

TEST(config, several_tenants_each_with_keys) {
  const auto keys = parse_api_keys("a:ck_key_for_a_1,a:ck_key_for_a_2,b:ck_key_for_b_1");
  EXPECT_EQ(keys.size(), 3u);
}

TEST(log_position, round_trips_and_rejects_garbage) {
  const auto p = log_position::parse("credits.ledger:3:1234");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->topic, "credits.ledger");
  EXPECT_EQ(p->partition, 3);
  EXPECT_EQ(p->offset, 1234);
  EXPECT_EQ(p->to_string(), "credits.ledger:3:1234");
  for (const char* bad : {"", "x", "t:1", "t:x:1", "t:1:x", ":1:2", "t:-1:2", "t:1:2junk", "t:-0:2", "t:+1:2", "t:1: 2",
                          "t::2", "t:1234567890:2", "t:1:1234567890123456789"})
    EXPECT_FALSE(log_position::parse(bad)) << bad;
}

TEST(log_position, takes_the_longest_numbers_its_pattern_allows) {
  const auto p = log_position::parse("a:b:999999999:999999999999999999");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->topic, "a:b");
  EXPECT_EQ(p->partition, 999'999'999);
  EXPECT_EQ(p->offset, 999'999'999'999'999'999);
}

TEST(status_table, maps_each_error_once) {
  EXPECT_EQ(http_status(error_code::invalid_request), 400u);
  EXPECT_EQ(http_status(http_error::unauthorized), 401u);
  EXPECT_EQ(http_status(error_code::insufficient_credits), 402u);
  EXPECT_EQ(http_status(http_error::forbidden), 403u);
  EXPECT_EQ(http_status(error_code::account_not_found), 404u);
  EXPECT_EQ(http_status(http_error::route_not_found), 404u);
  EXPECT_EQ(http_status(http_error::method_not_allowed), 405u);
  EXPECT_EQ(http_status(error_code::reservation_expired), 409u);
  EXPECT_EQ(http_status(error_code::idempotency_key_reused), 409u);
  EXPECT_EQ(http_status(http_error::payload_too_large), 413u);
  EXPECT_EQ(http_status(http_error::rate_limited), 429u);
  EXPECT_EQ(http_status(error_code::unavailable), 503u);
}

TEST(error_body, http_errors_keep_the_codes_clients_know) {
  EXPECT_EQ(error_body(http_error::route_not_found, "no such endpoint")["error"]["code"], "not_found");
  EXPECT_EQ(error_body(http_error::unauthorized, "x")["error"]["code"], "unauthorized");
  EXPECT_EQ(error_body(http_error::payload_too_large, "x")["error"]["code"], "payload_too_large");
  const auto limited = error_body(http_error::rate_limited, "slow down", {{"retryAfterSeconds", 2}});
  EXPECT_EQ(limited["error"]["code"], "rate_limited");
  EXPECT_EQ(limited["error"]["details"]["retryAfterSeconds"], 2);
  EXPECT_FALSE(limited["error"].contains("field"));
}

TEST(answer_of, names_a_status_and_body_for_every_command_result) {
  EXPECT_EQ(answer_of(unavailable{unavailable_reason::busy}).status, 503u);
  EXPECT_EQ(answer_of(unavailable{unavailable_reason::outcome_unknown}).body["error"]["message"],
            "the outcome of the write is unknown; retry with the same Idempotency-Key");
  EXPECT_EQ(answer_of(in_flight{}).status, 409u);
  EXPECT_EQ(answer_of(in_flight{}).body["error"]["code"], "idempotency_key_in_flight");
  EXPECT_EQ(answer_of(elsewhere{}).status, 503u);
  EXPECT_EQ(answer_of(rejection{error_code::insufficient_credits, "no", "", nullptr}).status, 402u);
  event e{"id", 1, "t", "acc_1", "k", "r", "", "", 0, credits_added{"txn_1", 5, 5, "", "", nlohmann::json::object()}};
  const auto first = answer_of(accepted{e, account_facts{"acc_1", "x", std::nullopt}, {"l", 0, 3}, false});
  EXPECT_EQ(first.status, 200u);
  EXPECT_EQ(first.position, "l:0:3");
  EXPECT_FALSE(first.replayed);
  const auto again = answer_of(accepted{e, account_facts{"acc_1", "x", std::nullopt}, {"l", 0, 3}, true});
  EXPECT_EQ(again.body, first.body) << "a retry is answered with the first answer's body";
  EXPECT_TRUE(again.replayed);
}

TEST(error_body, carries_code_message_field_and_details) {
  const auto body = error_body(
      rejection{error_code::insufficient_credits, "insufficient credits", "amount", {{"needed", 5}, {"available", 1}}});
  EXPECT_EQ(body["success"], false);
  EXPECT_EQ(body["error"]["code"], "insufficient_credits");
  EXPECT_EQ(body["error"]["field"], "amount");
  EXPECT_EQ(body["error"]["details"]["available"], 1);
  EXPECT_FALSE(error_body(rejection{error_code::internal, "x", "", nullptr})["error"].contains("field"));
}

TEST(render, confirm_reports_charged_released_and_the_transaction) {
  account_state account;
  account.id = "acc_1";
  account.external_id = "user_abc123";
  event e{"id", 1, "t", "acc_1", "k", "r", "", "", 0, reservation_confirmed{"rsv_1", "txn_1", 320, 180, 680}};
  const auto body = render(e, facts_of(e, account));
  EXPECT_EQ(body["success"], true);
  EXPECT_EQ(body["reservationId"], "rsv_1");
  EXPECT_EQ(body["transactionId"], "txn_1");
  EXPECT_EQ(body["accountId"], "acc_1");
  EXPECT_EQ(body["amountCharged"], 320);
  EXPECT_EQ(body["amountReleased"], 180);
}

}  // namespace
}  // namespace credits::api
