#include "test_ledger.hpp"

namespace credits {
namespace {

using testing::accepted;
using testing::rejected;
using testing::test_ledger;

TEST(account, created_with_external_id_is_found_by_the_derived_id) {
  test_ledger l;
  const auto id = l.open_account("user_abc123");
  EXPECT_EQ(id, derive_account_id("t1", "user_abc123"));
  EXPECT_EQ(l.account(id).external_id, "user_abc123");
  EXPECT_EQ(l.account(id).balance, 0);
}

TEST(account, second_account_with_same_external_id_is_a_conflict) {
  test_ledger l;
  const auto id = l.open_account("user_abc123");
  EXPECT_EQ(rejected(l.run(create_account{id, "B", "user_abc123", "", {}})).code, error_code::account_exists);
}

TEST(account, same_external_id_in_another_tenant_is_another_account) {
  EXPECT_NE(derive_account_id("t1", "u"), derive_account_id("t2", "u"));
}

TEST(account, another_tenants_account_is_not_found) {
  test_ledger l;
  const auto id = l.open_account("u", 100);
  const auto r = rejected(l.run(add_credits{id, 5, "", "", {}, l.txn(id)}, "t2"));
  EXPECT_EQ(r.code, error_code::account_not_found);
  EXPECT_EQ(l.account(id).balance, 100);
}

TEST(add_credits, raises_balance_and_records_balance_after) {
  test_ledger l;
  const auto id = l.open_account("u", 1000);
  const auto& events = accepted(l.run(add_credits{id, 250, "top up", "card", {}, l.txn(id)}));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(std::get<credits_added>(events[0].payload).balance_after, 1250);
  EXPECT_EQ(l.account(id).balance, 1250);
}

TEST(add_credits, unknown_account_is_rejected) {
  test_ledger l;
  const auto id = derive_account_id("t1", "nobody");
  EXPECT_EQ(rejected(l.run(add_credits{id, 5, "", "", {}, l.txn(id)})).code, error_code::account_not_found);
}

TEST(add_credits, balance_above_2_pow_53_is_rejected) {
  test_ledger l;
  const auto id = l.open_account("u", amount_max - 10);
  EXPECT_EQ(rejected(l.run(add_credits{id, 11, "", "", {}, l.txn(id)})).code, error_code::invalid_request);
  accepted(l.run(add_credits{id, 10, "", "", {}, l.txn(id)}));
  EXPECT_EQ(l.account(id).balance, amount_max);
}

TEST(deduct_credits, more_than_available_is_insufficient_with_details) {
  test_ledger l;
  const auto id = l.open_account("u", 100);
  l.reserve(id, 60);
  const auto r = rejected(l.run(deduct_credits{id, 41, "", {}, l.txn(id)}));
  EXPECT_EQ(r.code, error_code::insufficient_credits);
  EXPECT_EQ(r.details["needed"], 41);
  EXPECT_EQ(r.details["available"], 40);
  accepted(l.run(deduct_credits{id, 40, "", {}, l.txn(id)}));
  EXPECT_EQ(l.account(id).available(), 0);
}

TEST(reservation, holds_credits_until_confirmed) {
  test_ledger l;
  const auto id = l.open_account("u", 1000);
  const auto rsv = l.reserve(id, 500);
  EXPECT_EQ(l.account(id).reserved, 500);
  EXPECT_EQ(l.account(id).available(), 500);
  const auto& events = accepted(l.run(confirm_reservation{rsv, 320, l.txn(id)}));
  const auto& confirmed = std::get<reservation_confirmed>(events.at(0).payload);
  EXPECT_EQ(confirmed.charged, 320);
  EXPECT_EQ(confirmed.released, 180);
  EXPECT_EQ(l.account(id).balance, 680);
  EXPECT_EQ(l.account(id).reserved, 0);
  EXPECT_EQ(l.account(id).available(), 680);
}

TEST(reservation, above_available_is_insufficient) {
  test_ledger l;
  const auto id = l.open_account("u", 100);
  const auto r = rejected(l.run(create_reservation{id, 101, 1000, "", "", {}, l.rsv(id)}));
  EXPECT_EQ(r.code, error_code::insufficient_credits);
  EXPECT_EQ(l.account(id).reserved, 0);
}

TEST(reservation, confirm_above_reserved_amount_is_rejected) {
  test_ledger l;
  const auto id = l.open_account("u", 1000);
  const auto rsv = l.reserve(id, 500);
  const auto r = rejected(l.run(confirm_reservation{rsv, 501, l.txn(id)}));
  EXPECT_EQ(r.code, error_code::invalid_request);
  EXPECT_EQ(r.field, "actualAmount");
  EXPECT_EQ(l.account(id).reserved, 500);
}

TEST(reservation, confirm_of_zero_releases_everything) {
  test_ledger l;
  const auto id = l.open_account("u", 1000);
  accepted(l.run(confirm_reservation{l.reserve(id, 500), 0, l.txn(id)}));
  EXPECT_EQ(l.account(id).balance, 1000);
  EXPECT_EQ(l.account(id).reserved, 0);
}

TEST(reservation, resolves_at_most_once) {
  test_ledger l;
  const auto id = l.open_account("u", 1000);
  const auto rsv = l.reserve(id, 500);
  accepted(l.run(cancel_reservation{rsv}));
  EXPECT_EQ(rejected(l.run(confirm_reservation{rsv, 10, l.txn(id)})).code, error_code::reservation_not_pending);
  EXPECT_EQ(rejected(l.run(cancel_reservation{rsv})).code, error_code::reservation_not_pending);
  EXPECT_EQ(l.account(id).balance, 1000);
}

TEST(reservation, cancel_releases_the_whole_hold) {
  test_ledger l;
  const auto id = l.open_account("u", 1000);
  const auto& events = accepted(l.run(cancel_reservation{l.reserve(id, 500)}));
  EXPECT_EQ(std::get<reservation_cancelled>(events.at(0).payload).released, 500);
  EXPECT_EQ(l.account(id).available(), 1000);
}

TEST(reservation, unknown_or_malformed_id_is_not_found) {
  test_ledger l;
  const auto id = l.open_account("u", 1000);
  EXPECT_EQ(rejected(l.run(cancel_reservation{l.rsv(id)})).code, error_code::reservation_not_found);
  EXPECT_EQ(rejected(l.run(cancel_reservation{"rsv_nonsense"})).code, error_code::reservation_not_found);
}

TEST(reservation, another_tenants_reservation_is_not_found) {
  test_ledger l;
  const auto id = l.open_account("u", 1000);
  const auto rsv = l.reserve(id, 500);
  EXPECT_EQ(rejected(l.run(cancel_reservation{rsv}, "t2")).code, error_code::reservation_not_found);
}

TEST(reservation, confirm_after_expiry_is_rejected_before_the_expiry_event) {
  test_ledger l;
  const auto id = l.open_account("u", 1000);
  const auto rsv = l.reserve(id, 500, 1000);
  l.now += 1000;
  EXPECT_EQ(rejected(l.run(confirm_reservation{rsv, 100, l.txn(id)})).code, error_code::reservation_expired);
  EXPECT_EQ(rejected(l.run(cancel_reservation{rsv})).code, error_code::reservation_expired);
}

TEST(reservation, expire_due_releases_only_due_holds) {
  test_ledger l;
  const auto id = l.open_account("u", 1000);
  const auto soon = l.reserve(id, 100, 1000);
  const auto later = l.reserve(id, 200, 5000);
  auto events = expire_due(l.state, l.now + 999, 100);
  EXPECT_TRUE(events.empty());
  events = expire_due(l.state, l.now + 1000, 100);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(std::get<reservation_expired>(events[0].payload).reservation_id, soon);
  for (const auto& e : events) apply(l.state, e);
  EXPECT_EQ(l.account(id).reserved, 200);
  EXPECT_EQ(l.account(id).reservations.at(soon).status, reservation_status::expired);
  EXPECT_EQ(rejected(l.run(confirm_reservation{soon, 1, l.txn(id)})).code, error_code::reservation_expired);
  EXPECT_EQ(l.state.pending_by_expiry.size(), 1u);
  accepted(l.run(confirm_reservation{later, 200, l.txn(id)}));
  EXPECT_TRUE(l.state.pending_by_expiry.empty());
}

TEST(reservation, expire_due_respects_its_batch_limit) {
  test_ledger l;
  const auto id = l.open_account("u", 1000);
  for (int i = 0; i < 5; ++i) l.reserve(id, 10, 1);
  EXPECT_EQ(expire_due(l.state, l.now + 1, 3).size(), 3u);
}

TEST(usage, records_without_moving_credits) {
  test_ledger l;
  const auto id = l.open_account("u", 1000);
  const auto& events = accepted(l.run(record_usage{id, "use_1", "customer", "", "gpt-4o", "text", 1000, 320, 0, {}}));
  EXPECT_EQ(stream_of(events.at(0).payload), stream::usage);
  EXPECT_EQ(l.account(id).balance, 1000);
}

TEST(usage, links_to_a_transaction_of_the_same_account) {
  test_ledger l;
  const auto id = l.open_account("u", 1000);
  const auto txn = l.txn(id);
  accepted(l.run(confirm_reservation{l.reserve(id, 500), 320, txn}));
  accepted(l.run(record_usage{id, "use_1", "customer", txn, "gpt-4o", "text", 1000, 320, 0, {}}));
  accepted(l.run(record_usage{id, "use_2", "system", txn, "gpt-4o", "text", 10, 0, 0, {}}));
}

TEST(usage, unknown_transaction_is_not_found) {
  test_ledger l;
  const auto id = l.open_account("u", 1000);
  EXPECT_EQ(rejected(l.run(record_usage{id, "use_1", "customer", l.txn(id), "m", "text", 1, 1, 0, {}})).code,
            error_code::transaction_not_found);
  EXPECT_EQ(rejected(l.run(record_usage{id, "use_1", "customer", "txn_bad", "m", "text", 1, 1, 0, {}})).code,
            error_code::transaction_not_found);
}

TEST(usage, transaction_of_another_account_is_a_conflict) {
  test_ledger l;
  const auto a = l.open_account("a", 1000);
  const auto b = l.open_account("b", 1000);
  const auto txn = l.txn(a);
  accepted(l.run(deduct_credits{a, 1, "", {}, txn}));
  EXPECT_EQ(rejected(l.run(record_usage{b, "use_1", "customer", txn, "m", "text", 1, 1, 0, {}})).code,
            error_code::transaction_account_mismatch);
}

TEST(events, carry_the_request_context) {
  test_ledger l;
  const auto id = l.open_account("u");
  request_context ctx{"t1", "key_9", "req_9", "idem_9", "hash_9", 42};
  const auto d = decide(l.state, add_credits{id, 5, "", "", {}, l.txn(id)}, ctx);
  const auto e = accepted(d).at(0);
  EXPECT_EQ(e.tenant, "t1");
  EXPECT_EQ(e.account_id, id);
  EXPECT_EQ(e.api_key_id, "key_9");
  EXPECT_EQ(e.request_id, "req_9");
  EXPECT_EQ(e.idempotency_key, "idem_9");
  EXPECT_EQ(e.request_hash, "hash_9");
  EXPECT_EQ(e.occurred_at, 42);
}

TEST(target_account, of_a_reservation_command_is_embedded_in_its_id) {
  const auto account = derive_account_id("t1", "u");
  EXPECT_EQ(target_account(cancel_reservation{child_id("rsv", account, 7)}), account);
  EXPECT_EQ(target_account(add_credits{account, 1, "", "", {}, ""}), account);
}

TEST(apply, overdraft_in_the_log_is_an_invariant_violation) {
  test_ledger l;
  const auto id = l.open_account("u", 10);
  event bad{"e", 1, "t1", id, "k", "r", "", "", 0, credits_deducted{"txn", 11, -1, "", {}}};
  EXPECT_DEATH(apply(l.state, bad), "invariant violated");
}

TEST(reversal, refunds_a_deduction_in_parts_up_to_its_amount) {
  test_ledger l;
  const auto id = l.open_account("u", 100);
  const auto fee = l.txn(id);
  accepted(l.run(deduct_credits{id, 40, "", {}, fee}));
  const auto first = accepted(l.run(reverse_transaction{fee, 15, "partial refund", {}, l.txn(id)}));
  const auto& r = std::get<transaction_reversed>(first.at(0).payload);
  EXPECT_EQ(r.original_transaction_id, fee);
  EXPECT_EQ(r.original_type, "CreditsDeducted");
  EXPECT_EQ(r.amount, 15);
  EXPECT_EQ(r.balance_after, 75);
  EXPECT_EQ(l.account(id).balance, 75);
  const auto over = rejected(l.run(reverse_transaction{fee, 26, "", {}, l.txn(id)}));
  EXPECT_EQ(over.code, error_code::invalid_request);
  EXPECT_EQ(over.details["remaining"], 25);
  accepted(l.run(reverse_transaction{fee, 0, "the rest", {}, l.txn(id)}));  // 0: whatever is left
  EXPECT_EQ(l.account(id).balance, 100);
  EXPECT_EQ(rejected(l.run(reverse_transaction{fee, 0, "", {}, l.txn(id)})).message,
            "the transaction is already fully reversed");
}

TEST(reversal, of_a_charge_refunds_and_of_added_credits_corrects_without_overdraft) {
  test_ledger l;
  const auto id = l.open_account("u");
  const auto added = l.txn(id);
  accepted(l.run(add_credits{id, 100, "", "", {}, added}));
  const auto rsv = l.reserve(id, 80);
  const auto charge = l.txn(id);
  accepted(l.run(confirm_reservation{rsv, 60, charge}));
  EXPECT_EQ(l.account(id).balance, 40);
  accepted(l.run(reverse_transaction{charge, 10, "", {}, l.txn(id)}));
  EXPECT_EQ(l.account(id).balance, 50);
  // Taking back 100 added credits would overdraw the 50 left.
  EXPECT_EQ(rejected(l.run(reverse_transaction{added, 0, "", {}, l.txn(id)})).code, error_code::insufficient_credits);
  const auto fix = l.txn(id);
  accepted(l.run(reverse_transaction{added, 50, "wrong grant", {}, fix}));
  EXPECT_EQ(l.account(id).balance, 0);
  EXPECT_EQ(rejected(l.run(reverse_transaction{fix, 0, "", {}, l.txn(id)})).field, "transactionId");  // not twice
}

TEST(reversal, of_an_unknown_or_foreign_transaction_is_not_found) {
  test_ledger l;
  const auto id = l.open_account("u", 100);
  const auto fee = l.txn(id);
  accepted(l.run(deduct_credits{id, 40, "", {}, fee}));
  EXPECT_EQ(rejected(l.run(reverse_transaction{l.txn(id), 1, "", {}, l.txn(id)})).code,
            error_code::transaction_not_found);
  EXPECT_EQ(rejected(l.run(reverse_transaction{fee, 1, "", {}, l.txn(id)}, "t2")).code,
            error_code::transaction_not_found);
  EXPECT_EQ(rejected(l.run(reverse_transaction{"txn_garbage", 1, "", {}, "txn_x"})).code,
            error_code::transaction_not_found);
}

}  // namespace
}  // namespace credits
