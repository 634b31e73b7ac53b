#include <gtest/gtest.h>

#include <random>

#include "credits/common/events.hpp"
#include "credits/common/ids.hpp"

namespace credits {
namespace {

event sample(event_payload payload) {
  return event{"8d6f1f7e-0000-4000-8000-000000000001",
               1,
               "t1",
               "acc_0123456789abcdef01234567",
               "key_1",
               "req_1",
               "idem_1",
               "hash_1",
               1'764'432'082'123,
               std::move(payload)};
}

void expect_round_trip(const event& e) {
  std::string error;
  const auto back = decode(encode(e), &error);
  ASSERT_TRUE(back.has_value()) << error;
  EXPECT_EQ(encode(*back), encode(e));
  EXPECT_EQ(back->payload.index(), e.payload.index());
}

TEST(codec, every_event_type_round_trips) {
  expect_round_trip(sample(account_created{"Alice", "user_abc123", "alice@example.com", {{"plan", "pro"}}}));
  expect_round_trip(sample(credits_added{"txn_1", 1000, 1000, "Starter credits", "card", {{"source", "onboarding"}}}));
  expect_round_trip(sample(credits_deducted{"txn_2", 5, 995, "fee", {}}));
  expect_round_trip(sample(credits_reserved{"rsv_1", 500, 1'764'432'982'123, "chat", "gpt-4o", {}}));
  expect_round_trip(sample(reservation_confirmed{"rsv_1", "txn_3", 320, 180, 675}));
  expect_round_trip(sample(reservation_cancelled{"rsv_1", 500}));
  expect_round_trip(sample(reservation_expired{"rsv_1", 500}));
  expect_round_trip(sample(usage_recorded{"use_1", "customer", "txn_3", "gpt-4o", "text", 1000, 320, 0, {}}));
  expect_round_trip(sample(balance_low{100, 675, 0, 675, "CreditsDeducted", "txn_2"}));
  expect_round_trip(sample(transaction_reversed{"txn_4", "txn_2", "CreditsDeducted", 5, 680, "refund", {{"k", 1}}}));
}

TEST(codec, envelope_has_the_documented_fields) {
  const auto j = to_json(sample(credits_added{"txn_1", 1000, 1000, "d", "", {}}));
  for (const char* key : {"eventId", "type", "schemaVersion", "tenant", "accountId", "apiKeyId", "requestId",
                          "idempotencyKey", "occurredAt", "payload"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j["type"], "CreditsAdded");
  EXPECT_EQ(j["occurredAt"], "2025-11-29T16:01:22.123Z");
}

TEST(codec, amounts_up_to_2_pow_53_survive_exactly) {
  expect_round_trip(sample(credits_added{"txn_1", amount_max, amount_max, "", "", {}}));
}

TEST(codec, malformed_events_are_refused_with_a_reason) {
  std::string error;
  EXPECT_FALSE(decode("not json", &error));
  EXPECT_FALSE(error.empty());
  auto j = to_json(sample(reservation_cancelled{"rsv_1", 500}));
  j["type"] = "Teleported";
  EXPECT_FALSE(decode(j.dump(), &error));
  EXPECT_NE(error.find("unknown event type"), std::string::npos);
  j = to_json(sample(reservation_cancelled{"rsv_1", 500}));
  j["payload"]["released"] = "500";
  EXPECT_FALSE(decode(j.dump()));
  j = to_json(sample(reservation_cancelled{"rsv_1", 500}));
  j["schemaVersion"] = 2;
  EXPECT_FALSE(decode(j.dump()));
  j = to_json(sample(reservation_cancelled{"rsv_1", 500}));
  j.erase("tenant");
  EXPECT_FALSE(decode(j.dump()));
}

// Found by tests/fuzz/events_fuzz.cpp: each of these decoded, but to a value other than the one written.
TEST(codec, values_that_do_not_fit_are_refused_not_reinterpreted) {
  auto j = to_json(sample(credits_added{"txn_1", 1000, 1000, "", "", {}}));
  j["payload"]["amount"] = std::uint64_t{18'446'744'073'709'551'615u};  // was read as -1
  EXPECT_FALSE(decode(j.dump()));
  j = to_json(sample(credits_added{"txn_1", 1000, 1000, "", "", {}}));
  j["schemaVersion"] = std::int64_t{4'294'967'297};  // was narrowed to 1
  EXPECT_FALSE(decode(j.dump()));
  j = to_json(sample(credits_added{"txn_1", 1000, 1000, "", "", {}}));
  j["occurredAt"] = "2025-11-29T-6:01:22.123Z";  // a negative hour
  EXPECT_FALSE(decode(j.dump()));
}

TEST(codec, an_event_with_a_nul_byte_is_refused) {
  const auto text = encode(sample(reservation_cancelled{"rsv_1", 500}));
  std::string error;
  EXPECT_FALSE(decode(text + '\0' + "junk", &error));  // the parser would stop at the NUL and accept the rest
  EXPECT_FALSE(error.empty());
  EXPECT_TRUE(decode(text));
}

TEST(codec, metadata_is_an_object_or_absent) {
  auto j = to_json(sample(account_created{"Alice", "", "", {}}));
  for (const auto& bad : {nlohmann::json(5), nlohmann::json("x"), nlohmann::json::array()}) {
    j["payload"]["metadata"] = bad;
    EXPECT_FALSE(decode(j.dump())) << bad;
  }
  j["payload"]["metadata"] = nullptr;
  ASSERT_TRUE(decode(j.dump()));
  EXPECT_EQ(std::get<account_created>(decode(j.dump())->payload).metadata, nlohmann::json::object());
  j["payload"].erase("metadata");
  EXPECT_TRUE(decode(j.dump()));
}

TEST(time, formats_rfc3339_utc_with_milliseconds) {
  EXPECT_EQ(format_time(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(format_time(951'782'400'000), "2000-02-29T00:00:00.000Z");
  EXPECT_EQ(format_time(-1), "1969-12-31T23:59:59.999Z");
}

TEST(time, format_agrees_with_the_calendar_across_years) {
  // From year 0 to 9999 (digits written by hand) and past either end (printf), every sampled time reads back.
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<time_ms> any(-62'200'000'000'000LL, 253'500'000'000'000LL);
  for (int i = 0; i < 20'000; ++i) {
    const auto t = any(rng);
    const auto text = format_time(t);
    if (t >= -62'167'219'200'000LL && t <= 253'402'300'799'999LL) {
      EXPECT_EQ(parse_time(text), t) << text;
    }
  }
  EXPECT_EQ(format_time(-62'167'219'200'000LL), "0000-01-01T00:00:00.000Z");
  EXPECT_EQ(format_time(253'402'300'799'999LL), "9999-12-31T23:59:59.999Z");
  EXPECT_EQ(format_time(253'402'300'800'000LL), "10000-01-01T00:00:00.000Z");
}

TEST(time, parse_inverts_format) {
  for (time_ms t : {0LL, 1LL, 951'782'400'000LL, 1'764'432'082'123LL, 4'102'444'799'999LL})
    EXPECT_EQ(parse_time(format_time(t)), t);
  EXPECT_EQ(parse_time("2026-11-29T16:01:22Z"), parse_time("2026-11-29T16:01:22.000Z"));
  EXPECT_FALSE(parse_time("2026-11-29 16:01:22Z"));
  EXPECT_FALSE(parse_time("2026-13-01T00:00:00Z"));
  EXPECT_FALSE(parse_time("2026-11-29T16:01:22+01:00"));
}

TEST(time, parse_refuses_what_format_cannot_write_back) {
  EXPECT_FALSE(parse_time("2025-11-29T-6:01:22.123Z"));  // from_chars takes a sign; a time field has none
  EXPECT_FALSE(parse_time("2025-11-29T16:-1:22Z"));
  EXPECT_FALSE(parse_time("2025-11-29T16:01:-2Z"));
  EXPECT_FALSE(parse_time("-999-01-01T00:00:00Z"));
  EXPECT_FALSE(parse_time("2025-02-29T00:00:00Z"));  // not a leap year
  EXPECT_FALSE(parse_time("2025-04-31T00:00:00Z"));
  EXPECT_TRUE(parse_time("2024-02-29T00:00:00Z"));
  EXPECT_FALSE(parse_time("9999-12-31T23:59:60Z"));  // would be year 10000, which format_time writes in 5 digits
  EXPECT_EQ(parse_time("9999-12-31T23:59:59.999Z"), 253'402'300'799'999);
  EXPECT_EQ(format_time(253'402'300'799'999), "9999-12-31T23:59:59.999Z");
  EXPECT_EQ(parse_time("2016-12-31T23:59:60Z"), parse_time("2017-01-01T00:00:00Z"));  // a leap second still is one
}

TEST(ids, children_embed_their_account) {
  const auto account = derive_account_id("t1", "user_abc123");
  EXPECT_TRUE(is_account_id(account));
  const auto rsv = child_id("rsv", account, 0xabcdef);
  EXPECT_EQ(account_of("rsv", rsv), account);
  EXPECT_FALSE(account_of("txn", rsv));
  EXPECT_FALSE(account_of("rsv", rsv.substr(1)));
  EXPECT_FALSE(account_of("rsv", "rsv_zz3456789abcdef01234567_0000000000abcdef"));
  EXPECT_FALSE(is_account_id("acc_short"));
}

TEST(ids, an_idempotency_key_names_one_account_per_tenant) {
  const auto id = idempotent_account_id("demo", "key-1");
  EXPECT_TRUE(is_account_id(id));
  EXPECT_EQ(id, idempotent_account_id("demo", "key-1"));  // a retry, on any instance, names the same account
  EXPECT_NE(id, idempotent_account_id("other", "key-1"));
  EXPECT_NE(id, idempotent_account_id("demo", "key-2"));
  EXPECT_NE(id, derive_account_id("demo", "key-1"));  // an externalId equal to the key is another account
}

TEST(ids, derived_account_id_is_stable) {
  // Changing the derivation would orphan every account created with an externalId: pin it.
  EXPECT_EQ(derive_account_id("demo", "user_abc123"), derive_account_id("demo", "user_abc123"));
  EXPECT_EQ(derive_account_id("demo", "user_abc123").size(), 28u);
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(ids, an_event_id_is_a_version_4_uuid_of_the_given_bits) {
  EXPECT_EQ(uuid_v4(0, 0), "00000000-0000-4000-8000-000000000000");
  EXPECT_EQ(uuid_v4(~0ULL, ~0ULL), "ffffffff-ffff-4fff-bfff-ffffffffffff");
  EXPECT_EQ(uuid_v4(0x0123456789abcdefULL, 0xfedcba9876543210ULL), "01234567-89ab-4def-bedc-ba9876543210");
}

}  // namespace
}  // namespace credits
