// The published event contract: the BalanceLow signal, the type registry against docs/events/, and the
// CloudEvents headers.
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "credits/common/contract.hpp"
#include "test_ledger.hpp"

namespace credits {
namespace {

using testing::accepted;
using testing::test_ledger;

std::vector<std::string> types_of(const std::vector<event>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) out.emplace_back(type_name(e.payload));
  return out;
}

TEST(balance_low, a_deduction_crossing_the_threshold_signals_after_its_cause) {
  test_ledger l;
  l.rules.balance_low_threshold = 100;
  const auto id = l.open_account("u", 150);
  EXPECT_EQ(types_of(accepted(l.run(deduct_credits{id, 50, "", {}, l.txn(id)}))),
            std::vector<std::string>{"CreditsDeducted"});  // 100 left: not below the threshold yet
  const auto txn = l.txn(id);
  const auto events = accepted(l.run(deduct_credits{id, 1, "", {}, txn}));
  ASSERT_EQ(types_of(events), (std::vector<std::string>{"CreditsDeducted", "BalanceLow"}));
  const auto& low = std::get<balance_low>(events[1].payload);
  EXPECT_EQ(low.threshold, 100);
  EXPECT_EQ(low.balance, 99);
  EXPECT_EQ(low.reserved, 0);
  EXPECT_EQ(low.available, 99);
  EXPECT_EQ(low.cause_type, "CreditsDeducted");
  EXPECT_EQ(low.cause_id, txn);
  EXPECT_EQ(events[1].account_id, id);
  EXPECT_EQ(l.account(id).balance, 99);  // the signal moved nothing
  // Already below: a further deduction does not repeat the signal.
  EXPECT_EQ(types_of(accepted(l.run(deduct_credits{id, 9, "", {}, l.txn(id)}))),
            std::vector<std::string>{"CreditsDeducted"});
}

TEST(balance_low, a_hold_crossing_signals_again_after_a_top_up) {
  test_ledger l;
  l.rules.balance_low_threshold = 100;
  const auto id = l.open_account("u", 1000);
  const auto rsv = l.rsv(id);
  const auto events = accepted(l.run(create_reservation{id, 950, 60'000, "", "", {}, rsv}));
  ASSERT_EQ(types_of(events), (std::vector<std::string>{"CreditsReserved", "BalanceLow"}));
  const auto& low = std::get<balance_low>(events[1].payload);
  EXPECT_EQ(low.balance, 1000);
  EXPECT_EQ(low.reserved, 950);
  EXPECT_EQ(low.available, 50);
  EXPECT_EQ(low.cause_id, rsv);
  // Releasing, confirming and adding raise `available`: never a signal.
  EXPECT_EQ(types_of(accepted(l.run(confirm_reservation{rsv, 900, l.txn(id)}))),
            std::vector<std::string>{"ReservationConfirmed"});
  EXPECT_EQ(types_of(accepted(l.run(add_credits{id, 500, "", "", {}, l.txn(id)}))),
            std::vector<std::string>{"CreditsAdded"});
  EXPECT_EQ(types_of(accepted(l.run(deduct_credits{id, 550, "", {}, l.txn(id)}))),
            (std::vector<std::string>{"CreditsDeducted", "BalanceLow"}));
}

TEST(balance_low, off_at_zero_and_never_answers_for_the_request) {
  test_ledger l;
  const auto id = l.open_account("u", 10);
  EXPECT_EQ(accepted(l.run(deduct_credits{id, 10, "", {}, l.txn(id)})).size(), 1u);

  l.rules.balance_low_threshold = 5;
  const auto other = l.open_account("v", 10);
  auto ctx = l.ctx();
  ctx.idempotency_key = "idem-1";
  ctx.request_hash = "hash-1";
  const auto d = decide(l.state, deduct_credits{other, 6, "", {}, l.txn(other)}, ctx, l.rules);
  const auto events = accepted(d);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].idempotency_key, "idem-1");
  EXPECT_EQ(events[1].idempotency_key, "");  // a retry is answered from the cause, never from the signal
  EXPECT_EQ(events[1].request_hash, "");
  EXPECT_EQ(events[1].request_id, ctx.request_id);
  EXPECT_EQ(events[1].api_key_id, ctx.api_key_id);
}

// One sample of every payload type, in registry order.
std::vector<event_payload> one_of_each() {
  return {account_created{"A", "u", "a@example.com", {}},
          credits_added{"txn_1", 10, 10, "", "", {}},
          credits_deducted{"txn_2", 1, 9, "", {}},
          credits_reserved{"rsv_1", 5, 1'700'000'060'000, "", "", {}},
          reservation_confirmed{"rsv_1", "txn_3", 2, 3, 7},
          reservation_cancelled{"rsv_2", 1},
          reservation_expired{"rsv_3", 1},
          balance_low{100, 7, 0, 7, "CreditsDeducted", "txn_2"},
          transaction_reversed{"txn_4", "txn_2", "CreditsDeducted", 1, 8, "refund", {}},
          usage_recorded{"use_1", "customer", "txn_3", "gpt-4o", "text", 1, 2, 0, {}},
          event_voided{"0b7c6a0e-6d2f-4d8e-9a41-3f1e2d5c7b90", "credits.ledger:3:17", "hand-made record", true}};
}

TEST(registry, names_every_payload_type_once_with_its_topic) {
  std::set<std::string_view> seen;
  for (const auto& payload : one_of_each()) {
    const auto* type = find_event_type(type_name(payload));
    ASSERT_NE(type, nullptr) << type_name(payload);
    EXPECT_EQ(type->topic, stream_of(payload)) << type->name;
    EXPECT_TRUE(seen.insert(type->name).second) << type->name;
  }
  for (const key_event_payload& payload :
       {key_event_payload{api_key_created{}}, key_event_payload{api_key_revoked{}}}) {
    const auto* type = find_event_type(type_name(payload));
    ASSERT_NE(type, nullptr) << type_name(payload);
    EXPECT_EQ(type->topic, stream::keys) << type->name;
    EXPECT_TRUE(seen.insert(type->name).second) << type->name;
  }
  EXPECT_EQ(seen.size(), event_types.size());
  EXPECT_EQ(find_event_type("Teleported"), nullptr);
}

// The schemas are the published half of the contract: a type without a schema, or a schema without a type,
// fails here. Each schema's $id, its "type" constant and its version must match the registry.
TEST(registry, has_exactly_one_schema_per_type_in_docs_events) {
  const std::filesystem::path dir = std::filesystem::path(CREDITS_SOURCE_DIR) / "docs" / "events";
  std::set<std::string> schema_types;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const auto name = entry.path().filename().string();
    const std::string suffix = ".schema.json";
    if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0 ||
        name.starts_with("envelope."))
      continue;
    std::ifstream in(entry.path());
    const auto schema = nlohmann::json::parse(in);
    const auto type_const = schema.at("properties").at("type").at("const").get<std::string>();
    const auto* type = find_event_type(type_const);
    ASSERT_NE(type, nullptr) << name << " describes a type the code does not have: " << type_const;
    EXPECT_EQ(name, std::string(type->name) + ".v" + std::to_string(type->version) + suffix);
    EXPECT_EQ(schema.at("$id"), schema_uri(*type)) << name;
    EXPECT_EQ(schema.at("properties").at("schemaVersion").at("const"), type->version) << name;
    schema_types.insert(type_const);
  }
  for (const auto& type : event_types)
    EXPECT_TRUE(schema_types.contains(std::string(type.name))) << type.name << " has no schema in " << dir;
}

TEST(cloudevents, headers_carry_the_required_attributes) {
  event e{"8d6f1f7e-0000-4000-8000-000000000001",
          1,
          "t1",
          "acc_0123456789abcdef01234567",
          "key_1",
          "req_1",
          "",
          "",
          1'764'432'082'123,
          credits_added{"txn_1", 10, 10, "", "", {}}};
  const auto headers = cloudevents_headers(e, "/credits/test");
  const std::map<std::string, std::string> h(headers.begin(), headers.end());
  EXPECT_EQ(h.size(), headers.size()) << "a header is repeated";
  EXPECT_EQ(h.at("ce_specversion"), "1.0");
  EXPECT_EQ(h.at("ce_id"), e.event_id);
  EXPECT_EQ(h.at("ce_type"), "dev.credits.CreditsAdded.v1");
  EXPECT_EQ(h.at("ce_source"), "/credits/test");
  EXPECT_EQ(h.at("ce_time"), "2025-11-29T16:01:22.123Z");
  EXPECT_EQ(h.at("ce_subject"), e.account_id);
  EXPECT_EQ(h.at("ce_partitionkey"), e.account_id);
  EXPECT_EQ(h.at("ce_dataschema"), "https://credits.dev/schemas/events/CreditsAdded.v1.schema.json");
  EXPECT_EQ(h.at("content-type"), "application/json");
}

}  // namespace
}  // namespace credits
