#include <gtest/gtest.h>

#include "credits/common/ids.hpp"
#include "credits/common/requests.hpp"

namespace credits {
namespace {

using nlohmann::json;

struct requests : ::testing::Test {
  request_limits limits;
  std::uint64_t n = 1;
  random_bits bits = [this] { return n++; };

  template <class C>
  C ok(const parsed& p) {
    if (auto* r = std::get_if<rejection>(&p)) ADD_FAILURE() << "rejected: " << r->message;
    const auto* c = std::get_if<command>(&p);
    return c && std::holds_alternative<C>(*c) ? std::get<C>(*c) : C{};
  }
  rejection bad(const parsed& p) {
    const auto* r = std::get_if<rejection>(&p);
    if (!r) ADD_FAILURE() << "accepted, a rejection was expected";
    return r ? *r : rejection{};
  }
};

TEST_F(requests, add_credits_by_external_id_derives_the_account) {
  const auto c = ok<add_credits>(parse_add_credits(json{{"externalId", "user_abc123"},
                                                        {"amount", 1000},
                                                        {"description", "Starter credits"},
                                                        {"metadata", {{"source", "onboarding"}}}},
                                                   "demo", bits, limits));
  EXPECT_EQ(c.account_id, derive_account_id("demo", "user_abc123"));
  EXPECT_EQ(c.amount, 1000);
  EXPECT_EQ(account_of("txn", c.transaction_id), c.account_id);
}

TEST_F(requests, amounts_must_be_positive_integers_up_to_2_pow_53) {
  const auto account = derive_account_id("demo", "u");
  for (json amount : {json(0), json(-5), json(1.5), json(10.0), json("100"), json(true), json(nullptr),
                      json(amount_max + 1), json(std::numeric_limits<std::uint64_t>::max())}) {
    const auto r = bad(parse_add_credits(json{{"accountId", account}, {"amount", amount}}, "demo", bits, limits));
    EXPECT_EQ(r.code, error_code::invalid_request) << amount;
    EXPECT_EQ(r.field, "amount") << amount;
  }
  EXPECT_EQ(
      ok<add_credits>(parse_add_credits(json{{"accountId", account}, {"amount", amount_max}}, "demo", bits, limits))
          .amount,
      amount_max);
}

TEST_F(requests, add_credits_takes_grant_terms) {
  const auto account = derive_account_id("demo", "u");
  const auto c = ok<add_credits>(parse_add_credits(json{{"accountId", account},
                                                        {"amount", 10},
                                                        {"expiresAt", "2027-01-31T00:00:00Z"},
                                                        {"priority", 0},
                                                        {"category", "promotional"},
                                                        {"costBasis", {{"amount", 999}, {"currency", "USD"}}}},
                                                   "demo", bits, limits));
  EXPECT_EQ(c.expires_at, parse_time("2027-01-31T00:00:00Z"));
  EXPECT_EQ(c.expires_in_ms, std::nullopt);
  EXPECT_EQ(c.priority, 0);
  EXPECT_EQ(c.category, grant_category::promotional);
  EXPECT_EQ(c.cost, (cost_basis{999, "USD"}));
  const auto relative = ok<add_credits>(
      parse_add_credits(json{{"accountId", account}, {"amount", 10}, {"expiresInSeconds", 60}}, "demo", bits, limits));
  EXPECT_EQ(relative.expires_in_ms, 60'000);
  const auto plain =
      ok<add_credits>(parse_add_credits(json{{"accountId", account}, {"amount", 10}}, "demo", bits, limits));
  EXPECT_EQ(plain.expires_at, std::nullopt);
  EXPECT_EQ(plain.priority, grant_priority_default);
  EXPECT_EQ(plain.category, grant_category::paid);
  EXPECT_EQ(plain.cost, std::nullopt);
}

TEST_F(requests, bad_grant_terms_name_their_field) {
  const auto account = derive_account_id("demo", "u");
  const std::pair<json, std::string> cases[] = {
      {{{"expiresAt", "soon"}}, "expiresAt"},
      {{{"expiresAt", 5}}, "expiresAt"},
      {{{"expiresAt", "2027-01-31T00:00:00Z"}, {"expiresInSeconds", 5}}, "expiresAt"},
      {{{"expiresInSeconds", 0}}, "expiresInSeconds"},
      {{{"expiresInSeconds", limits.grant_expiry_s_max + 1}}, "expiresInSeconds"},
      {{{"priority", 101}}, "priority"},
      {{{"priority", -1}}, "priority"},
      {{{"priority", 1.5}}, "priority"},
      {{{"category", "free"}}, "category"},
      {{{"category", true}}, "category"},
      {{{"costBasis", "999 USD"}}, "costBasis"},
      {{{"costBasis", {{"amount", 1}}}}, "costBasis.currency"},
      {{{"costBasis", {{"amount", 1}, {"currency", "dollars"}}}}, "costBasis.currency"},
      {{{"costBasis", {{"amount", -1}, {"currency", "USD"}}}}, "costBasis.amount"},
      {{{"costBasis", {{"amount", "1"}, {"currency", "USD"}}}}, "costBasis.amount"},
      {{{"costBasis", {{"amount", 1}, {"currency", "USD"}, {"net", 1}}}}, "costBasis.net"},
  };
  for (const auto& [terms, field] : cases) {
    auto body = json{{"accountId", account}, {"amount", 10}};
    body.update(terms);
    const auto r = bad(parse_add_credits(body, "demo", bits, limits));
    EXPECT_EQ(r.code, error_code::invalid_request) << terms;
    EXPECT_EQ(r.field, field) << terms;
  }
}

TEST_F(requests, over_capture_is_asked_for_with_a_boolean) {
  const auto rsv = child_id("rsv", derive_account_id("demo", "u"), 7);
  EXPECT_FALSE(ok<confirm_reservation>(
                   parse_confirm_reservation(json{{"reservationId", rsv}, {"actualAmount", 5}}, bits, limits))
                   .allow_overcapture);
  EXPECT_TRUE(ok<confirm_reservation>(
                  parse_confirm_reservation(
                      json{{"reservationId", rsv}, {"actualAmount", 5}, {"allowOvercapture", true}}, bits, limits))
                  .allow_overcapture);
  for (json flag : {json("true"), json(1), json::object()})
    EXPECT_EQ(bad(parse_confirm_reservation(
                      json{{"reservationId", rsv}, {"actualAmount", 5}, {"allowOvercapture", flag}}, bits, limits))
                  .field,
              "allowOvercapture")
        << flag;
}

TEST_F(requests, void_grant_names_the_grant_and_a_transaction_of_its_account) {
  const auto account = derive_account_id("demo", "u");
  const auto grant = "grt" + child_id("txn", account, 9).substr(3);
  const auto c = ok<void_grant>(parse_void_grant(json{{"grantId", grant}}, bits, limits));
  EXPECT_EQ(c.grant_id, grant);
  EXPECT_EQ(account_of("txn", c.transaction_id), account);
  EXPECT_EQ(bad(parse_void_grant(json::object(), bits, limits)).field, "grantId");
}

TEST_F(requests, missing_account_is_invalid_and_malformed_account_is_not_found) {
  EXPECT_EQ(bad(parse_add_credits(json{{"amount", 1}}, "demo", bits, limits)).field, "accountId");
  EXPECT_EQ(bad(parse_add_credits(json{{"accountId", "x"}, {"amount", 1}}, "demo", bits, limits)).code,
            error_code::account_not_found);
  EXPECT_EQ(bad(parse_add_credits(json{{"accountId", 7}, {"amount", 1}}, "demo", bits, limits)).code,
            error_code::invalid_request);
}

TEST_F(requests, account_id_and_external_id_must_agree) {
  const auto r = bad(parse_add_credits(
      json{{"accountId", derive_account_id("demo", "a")}, {"externalId", "b"}, {"amount", 1}}, "demo", bits, limits));
  EXPECT_EQ(r.field, "externalId");
}

TEST_F(requests, body_must_be_an_object) {
  EXPECT_EQ(bad(parse_add_credits(json::array(), "demo", bits, limits)).code, error_code::invalid_request);
}

TEST_F(requests, strings_and_metadata_have_limits) {
  const auto account = derive_account_id("demo", "u");
  EXPECT_EQ(bad(parse_add_credits(json{{"accountId", account}, {"amount", 1}, {"description", std::string(257, 'x')}},
                                  "demo", bits, limits))
                .field,
            "description");
  EXPECT_EQ(bad(parse_add_credits(json{{"accountId", account}, {"amount", 1}, {"metadata", "x"}}, "demo", bits, limits))
                .field,
            "metadata");
  EXPECT_EQ(
      bad(parse_add_credits(json{{"accountId", account}, {"amount", 1}, {"metadata", {{"k", std::string(5000, 'x')}}}},
                            "demo", bits, limits))
          .field,
      "metadata");
}

TEST_F(requests, create_account_requires_a_name_and_checks_email) {
  EXPECT_EQ(bad(parse_create_account(json{{"externalId", "u"}}, "demo", bits, limits)).field, "name");
  EXPECT_EQ(bad(parse_create_account(json{{"name", "A"}, {"email", "nope"}}, "demo", bits, limits)).field, "email");
  const auto with_external = ok<create_account>(parse_create_account(
      json{{"name", "Alice"}, {"externalId", "user_abc123"}, {"email", "a@b.c"}}, "demo", bits, limits));
  EXPECT_EQ(with_external.account_id, derive_account_id("demo", "user_abc123"));
  const auto without = ok<create_account>(parse_create_account(json{{"name", "Bob"}}, "demo", bits, limits));
  EXPECT_TRUE(is_account_id(without.account_id));
}

TEST_F(requests, reservation_expiry_defaults_and_is_bounded) {
  const auto account = derive_account_id("demo", "u");
  EXPECT_EQ(ok<create_reservation>(
                parse_create_reservation(json{{"accountId", account}, {"amount", 5}}, "demo", bits, limits))
                .expires_in_ms,
            limits.reservation_timeout_s * 1000);
  EXPECT_EQ(ok<create_reservation>(
                parse_create_reservation(json{{"accountId", account}, {"amount", 5}, {"expiresInSeconds", 30}}, "demo",
                                         bits, limits))
                .expires_in_ms,
            30'000);
  EXPECT_EQ(bad(parse_create_reservation(json{{"accountId", account}, {"amount", 5}, {"expiresInSeconds", 0}}, "demo",
                                         bits, limits))
                .field,
            "expiresInSeconds");
}

TEST_F(requests, confirm_needs_reservation_and_non_negative_actual_amount) {
  const auto rsv = child_id("rsv", derive_account_id("demo", "u"), 9);
  EXPECT_EQ(bad(parse_confirm_reservation(json{{"actualAmount", 1}}, bits, limits)).field, "reservationId");
  EXPECT_EQ(bad(parse_confirm_reservation(json{{"reservationId", rsv}}, bits, limits)).field, "actualAmount");
  EXPECT_EQ(bad(parse_confirm_reservation(json{{"reservationId", rsv}, {"actualAmount", -1}}, bits, limits)).field,
            "actualAmount");
  const auto c = ok<confirm_reservation>(
      parse_confirm_reservation(json{{"reservationId", rsv}, {"actualAmount", 0}}, bits, limits));
  EXPECT_EQ(account_of("txn", c.transaction_id), account_of("rsv", rsv));
}

TEST_F(requests, usage_context_must_be_customer_or_system) {
  const auto account = derive_account_id("demo", "u");
  EXPECT_EQ(bad(parse_record_usage(json{{"accountId", account}, {"context", "other"}, {"modelId", "m"}}, "demo", bits,
                                   limits))
                .field,
            "context");
  EXPECT_EQ(bad(parse_record_usage(json{{"accountId", account}, {"context", "customer"}}, "demo", bits, limits)).field,
            "modelId");
  EXPECT_EQ(bad(parse_record_usage(
                    json{{"accountId", account}, {"context", "customer"}, {"modelId", "m"}, {"inputTokens", -1}},
                    "demo", bits, limits))
                .field,
            "inputTokens");
  const auto u = ok<record_usage>(parse_record_usage(json{{"accountId", account},
                                                          {"context", "customer"},
                                                          {"modelId", "gpt-4o"},
                                                          {"inputTokens", 1000},
                                                          {"outputTokens", 320}},
                                                     "demo", bits, limits));
  EXPECT_EQ(u.usage_type, "text");
  EXPECT_EQ(u.input_tokens, 1000);
}

TEST_F(requests, json_parser_refuses_garbage_and_deep_nesting) {
  EXPECT_TRUE(std::holds_alternative<rejection>(parse_json("{", limits)));
  EXPECT_TRUE(std::holds_alternative<rejection>(parse_json(std::string(100, '[') + std::string(100, ']'), limits)));
  EXPECT_TRUE(std::holds_alternative<json>(parse_json(R"({"a":{"b":[1,2]}})", limits)));
}

// Found by tests/fuzz/requests_fuzz.cpp and tests/integration/test_hostile.py: the JSON parser ended the input
// at a NUL byte, so whatever followed it was accepted unread.
TEST_F(requests, a_nul_byte_anywhere_makes_the_body_invalid) {
  using namespace std::string_literals;
  const auto valid = R"({"externalId":"u","amount":5})"s;
  for (const auto& body : {valid + '\0', valid + '\0' + R"({"amount":999999})", '\0' + valid,
                           R"({"externalId":"u)"s + '\0' + R"(","amount":5})"}) {
    const auto p = parse_json(body, limits);
    ASSERT_TRUE(std::holds_alternative<rejection>(p)) << body.size();
    EXPECT_EQ(std::get<rejection>(p).code, error_code::invalid_request);
  }
  // An escaped NUL inside a string is valid JSON and stays accepted.
  EXPECT_TRUE(std::holds_alternative<json>(parse_json(R"({"name":"a\u0000b"})", limits)));
}

}  // namespace
}  // namespace credits
