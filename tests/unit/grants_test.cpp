#include <fstream>

#include "test_ledger.hpp"

namespace credits {
namespace {

using testing::accepted;
using testing::rejected;
using testing::test_ledger;

constexpr time_ms hour_ms = 3'600'000;

// A ledger with one account and helpers that add grants with terms.
struct grants_ledger : test_ledger {
  std::string account = open_account("u");

  std::string grant(amount_t amount, std::optional<time_ms> expires_in_ms = std::nullopt,
                    int priority = grant_priority_default, grant_category category = grant_category::paid) {
    add_credits c{account, amount, "", "", {}, txn(account)};
    if (expires_in_ms) c.expires_at = now + *expires_in_ms;
    c.priority = priority;
    c.category = category;
    const auto events = accepted(run(c));
    EXPECT_EQ(events.size(), 1u);
    return events.empty() ? "" : std::get<credits_added>(events[0].payload).grant_id;
  }
  // As run(), with an Idempotency-Key on the request.
  decision run_with_key(const command& cmd) {
    auto with_key = ctx();
    with_key.idempotency_key = "key-1";
    with_key.request_hash = "hash-1";
    auto d = decide(state, cmd, with_key, rules);
    if (const auto* events = std::get_if<std::vector<event>>(&d))
      for (const auto& e : *events) apply(state, e);
    return d;
  }
  const grant_state& g(const std::string& id) const { return account_state_().grants.at(id); }
  const account_state& account_state_() const { return state.accounts.at(account); }
  grant_draws deduct(amount_t amount) {
    const auto events = accepted(run(deduct_credits{account, amount, "", {}, txn(account)}));
    return events.empty() ? grant_draws{} : *std::get<credits_deducted>(events[0].payload).draws;
  }
  const reservation_state& hold(const std::string& id) const { return account_state_().reservations.at(id); }
  std::vector<event> expire_grants() {
    auto events = expire_grants_due(state, now, 1000);
    for (const auto& e : events) apply(state, e);
    return events;
  }
  std::vector<event> expire_holds() {
    auto events = expire_due(state, now, 1000);
    for (const auto& e : events) apply(state, e);
    return events;
  }
};

grant_draws draws(std::initializer_list<std::pair<std::string, amount_t>> list) {
  grant_draws out;
  for (const auto& [id, amount] : list) out.push_back({id, amount});
  return out;
}

// Every grant of the account conserves its credits, and the grants add up to the balance and reserved.
void expect_consistent(const account_state& a) {
  amount_t remaining = 0, held = 0;
  for (const auto& [id, g] : a.grants) {
    EXPECT_EQ(g.granted, g.remaining + g.held + g.charged - g.refunded + g.expired + g.voided) << id;
    EXPECT_GE(g.remaining, 0) << id;
    EXPECT_GE(g.held, 0) << id;
    remaining += g.remaining;
    held += g.held;
  }
  EXPECT_EQ(remaining + held, a.balance);
  EXPECT_EQ(held, a.reserved);
  EXPECT_GE(a.balance, 0);
}

TEST(grants, every_added_credit_is_a_grant_named_after_its_transaction) {
  grants_ledger l;
  const auto txn = l.txn(l.account);
  const auto events = accepted(l.run(add_credits{l.account, 100, "", "", {}, txn}));
  const auto& added = std::get<credits_added>(events.at(0).payload);
  EXPECT_EQ(added.grant_id, "grt" + txn.substr(3));
  EXPECT_EQ(account_of("grt", added.grant_id), l.account);
  const auto& g = l.g(added.grant_id);
  EXPECT_EQ(g.remaining, 100);
  EXPECT_EQ(g.priority, 50);
  EXPECT_EQ(g.category, grant_category::paid);
  EXPECT_FALSE(g.expires_at);
}

TEST(grants, an_expiry_in_the_past_is_refused) {
  grants_ledger l;
  add_credits c{l.account, 100, "", "", {}, l.txn(l.account)};
  c.expires_at = l.now;
  const auto r = rejected(l.run(c));
  EXPECT_EQ(r.code, error_code::invalid_request);
  EXPECT_EQ(r.field, "expiresAt");
}

TEST(burn_order, lower_priority_then_sooner_expiry_then_older_with_never_expiring_last) {
  grants_ledger l;
  const auto paid = l.grant(10);                     // 50, never, oldest
  const auto soon = l.grant(10, hour_ms);            // 50, in 1h
  const auto promo = l.grant(10, std::nullopt, 10);  // 10, never
  const auto later = l.grant(10, 2 * hour_ms);       // 50, in 2h
  const auto paid_newer = l.grant(10);               // 50, never, newer
  const auto last = l.grant(10, hour_ms / 2, 100);   // 100, expiring soonest: priority wins
  std::vector<std::string> order;
  for (const auto* g : burn_order(l.account_state_(), l.now)) order.push_back(g->id);
  EXPECT_EQ(order, (std::vector<std::string>{promo, soon, later, paid, paid_newer, last}));
  EXPECT_EQ(l.deduct(25), draws({{promo, 10}, {soon, 10}, {later, 5}}));
  EXPECT_EQ(l.deduct(30), draws({{later, 5}, {paid, 10}, {paid_newer, 10}, {last, 5}}));
  expect_consistent(l.account_state_());
}

TEST(burn_order, an_expired_grant_is_not_spent_even_before_its_expiry_is_written) {
  grants_ledger l;
  const auto trial = l.grant(100, 1000);
  const auto paid = l.grant(50);
  l.now += 1000;
  const auto r = rejected(l.run(deduct_credits{l.account, 60, "", {}, l.txn(l.account)}));
  EXPECT_EQ(r.code, error_code::insufficient_credits);
  EXPECT_EQ(r.details["available"], 50);
  EXPECT_EQ(l.deduct(50), draws({{paid, 50}}));
  EXPECT_EQ(l.g(trial).remaining, 100);  // until the expiry scan writes its expiry
}

TEST(grant_expiry, expires_only_the_unused_unheld_remainder_at_its_time) {
  grants_ledger l;
  const auto trial = l.grant(100, 1000);
  l.deduct(30);
  const auto rsv = l.reserve(l.account, 20);
  l.now += 999;
  EXPECT_TRUE(l.expire_grants().empty());
  l.now += 1;
  const auto events = l.expire_grants();
  ASSERT_EQ(events.size(), 1u);
  const auto& p = std::get<credits_deducted>(events[0].payload);
  EXPECT_EQ(p.reason, reason_grant_expired);
  EXPECT_EQ(p.grant_id, trial);
  EXPECT_EQ(p.amount, 50);
  EXPECT_EQ(p.balance_after, 20);
  EXPECT_EQ(p.draws, draws({{trial, 50}}));
  EXPECT_EQ(p.transaction_id, derived_transaction_id(l.account, "expiry", trial));
  EXPECT_EQ(l.g(trial).status, grant_status::expired);
  EXPECT_EQ(l.g(trial).held, 20);
  EXPECT_EQ(l.hold(rsv).status, reservation_status::pending);
  EXPECT_TRUE(l.expire_grants().empty()) << "expired once";
  expect_consistent(l.account_state_());
}

TEST(grant_expiry, a_grant_with_nothing_left_expires_without_an_event) {
  grants_ledger l;
  const auto trial = l.grant(10, 1000);
  l.deduct(10);
  l.now += 5000;
  EXPECT_TRUE(l.expire_grants().empty());
  EXPECT_TRUE(l.state.grants_by_expiry.empty());
  EXPECT_EQ(rejected(l.run(void_grant{trial, l.txn(l.account)})).code, error_code::grant_not_active);
}

TEST(grant_expiry, several_grants_of_one_account_in_one_scan_each_say_the_balance_after_them) {
  grants_ledger l;
  l.grant(10, 1000);
  l.grant(20, 1000);
  l.grant(5);
  l.now += 1000;
  const auto events = expire_grants_due(l.state, l.now, 1000);
  ASSERT_EQ(events.size(), 2u);
  const auto& first = std::get<credits_deducted>(events[0].payload);
  const auto& second = std::get<credits_deducted>(events[1].payload);
  EXPECT_EQ(first.balance_after, 35 - first.amount);
  EXPECT_EQ(second.balance_after, first.balance_after - second.amount);
  EXPECT_EQ(second.balance_after, 5);
  for (const auto& e : events) apply(l.state, e);
  EXPECT_EQ(l.account_state_().balance, 5);
}

TEST(grant_expiry, the_scan_respects_its_batch_limit) {
  grants_ledger l;
  for (int i = 0; i < 5; ++i) l.grant(1, 1000);
  l.now += 1000;
  EXPECT_EQ(expire_grants_due(l.state, l.now, 3).size(), 3u);
}

TEST(holds, a_hold_across_two_grants_keeps_exactly_what_it_took) {
  grants_ledger l;
  const auto promo = l.grant(30, std::nullopt, 10, grant_category::promotional);
  const auto paid = l.grant(100);
  const auto rsv = l.reserve(l.account, 50);
  EXPECT_EQ(l.hold(rsv).draws, draws({{promo, 30}, {paid, 20}}));
  EXPECT_EQ(l.g(promo).held, 30);
  EXPECT_EQ(l.g(promo).remaining, 0);
  EXPECT_EQ(l.g(paid).held, 20);
  EXPECT_EQ(l.g(paid).remaining, 80);
  expect_consistent(l.account_state_());
}

TEST(holds, confirm_below_the_hold_charges_the_held_draws_in_order_and_returns_the_rest) {
  grants_ledger l;
  const auto promo = l.grant(30, std::nullopt, 10);
  const auto paid = l.grant(100);
  const auto rsv = l.reserve(l.account, 50);
  const auto events = accepted(l.run(confirm_reservation{rsv, 40, l.txn(l.account)}));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(std::get<reservation_confirmed>(events[0].payload).draws, draws({{promo, 30}, {paid, 10}}));
  EXPECT_EQ(l.g(promo).charged, 30);
  EXPECT_EQ(l.g(paid).charged, 10);
  EXPECT_EQ(l.g(paid).remaining, 90);
  EXPECT_EQ(l.g(paid).held, 0);
  expect_consistent(l.account_state_());
}

TEST(holds, cancel_returns_every_draw) {
  grants_ledger l;
  const auto promo = l.grant(30, std::nullopt, 10);
  const auto paid = l.grant(100);
  const auto rsv = l.reserve(l.account, 50);
  const auto events = accepted(l.run(cancel_reservation{rsv}));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(std::get<reservation_cancelled>(events[0].payload).draws, draws({{promo, 30}, {paid, 20}}));
  EXPECT_EQ(l.g(promo).remaining, 30);
  EXPECT_EQ(l.g(paid).remaining, 100);
  expect_consistent(l.account_state_());
}

TEST(overcapture, without_the_flag_todays_refusal_stays) {
  grants_ledger l;
  l.grant(100);
  const auto rsv = l.reserve(l.account, 50);
  const auto r = rejected(l.run(confirm_reservation{rsv, 60, l.txn(l.account)}));
  EXPECT_EQ(r.code, error_code::invalid_request);
  EXPECT_EQ(r.field, "actualAmount");
}

TEST(overcapture, charges_the_whole_hold_and_deducts_the_excess_in_burn_order) {
  grants_ledger l;
  const auto paid = l.grant(60);
  const auto rsv = l.reserve(l.account, 50);
  const auto promo = l.grant(20, std::nullopt, 10);
  const auto txn = l.txn(l.account);
  const auto events = accepted(l.run_with_key(confirm_reservation{rsv, 75, txn, true}));
  ASSERT_EQ(events.size(), 2u);
  const auto& confirmed = std::get<reservation_confirmed>(events[0].payload);
  EXPECT_EQ(confirmed.charged, 50);
  EXPECT_EQ(confirmed.released, 0);
  EXPECT_EQ(confirmed.balance_after, 30);
  EXPECT_EQ(confirmed.draws, draws({{paid, 50}}));
  const auto& excess = std::get<credits_deducted>(events[1].payload);
  EXPECT_EQ(excess.reason, reason_overcapture);
  EXPECT_EQ(excess.reservation_id, rsv);
  EXPECT_EQ(excess.amount, 25);
  EXPECT_EQ(excess.balance_after, 5);
  EXPECT_EQ(excess.draws, draws({{promo, 20}, {paid, 5}}));
  EXPECT_EQ(excess.transaction_id, derived_transaction_id(l.account, txn, reason_overcapture));
  // Only the command's own event carries its Idempotency-Key: a retry is answered by the confirm.
  EXPECT_EQ(events[0].idempotency_key, "key-1");
  EXPECT_TRUE(events[1].idempotency_key.empty());
  EXPECT_TRUE(events[1].request_hash.empty());
  EXPECT_EQ(l.account_state_().balance, 5);
  expect_consistent(l.account_state_());
}

TEST(overcapture, more_than_available_is_refused_and_the_hold_stays_pending) {
  grants_ledger l;
  l.grant(60);
  const auto rsv = l.reserve(l.account, 50);
  const auto r = rejected(l.run(confirm_reservation{rsv, 61, l.txn(l.account), true}));
  EXPECT_EQ(r.code, error_code::insufficient_credits);
  EXPECT_EQ(r.details["needed"], 11);
  EXPECT_EQ(r.details["available"], 10);
  EXPECT_EQ(l.hold(rsv).status, reservation_status::pending);
  EXPECT_EQ(l.account_state_().balance, 60);
  accepted(l.run(confirm_reservation{rsv, 60, l.txn(l.account), true}));
  EXPECT_EQ(l.account_state_().balance, 0);
}

TEST(overcapture, the_excess_may_cross_the_balance_low_threshold) {
  grants_ledger l;
  l.rules.balance_low_threshold = 20;
  l.grant(60);
  const auto rsv = l.reserve(l.account, 30);
  const auto events = accepted(l.run(confirm_reservation{rsv, 45, l.txn(l.account), true}));
  ASSERT_EQ(events.size(), 3u);
  const auto& low = std::get<balance_low>(events[2].payload);
  EXPECT_EQ(low.cause_id, std::get<credits_deducted>(events[1].payload).transaction_id);
  EXPECT_EQ(low.available, 15);
}

TEST(expiry_while_held, confirm_after_expiry_charges_the_held_part_and_expires_what_it_returns) {
  grants_ledger l;
  const auto trial = l.grant(100, 1000, 10);
  const auto paid = l.grant(100);
  const auto rsv = l.reserve(l.account, 150, 60'000);
  EXPECT_EQ(l.hold(rsv).draws, draws({{trial, 100}, {paid, 50}}));
  l.now += 2000;
  EXPECT_TRUE(l.expire_grants().empty()) << "all of the trial is held";
  const auto events = accepted(l.run(confirm_reservation{rsv, 120, l.txn(l.account)}));
  ASSERT_EQ(events.size(), 1u) << "the trial is charged in full: nothing returns to it";
  EXPECT_EQ(std::get<reservation_confirmed>(events[0].payload).draws, draws({{trial, 100}, {paid, 20}}));
  EXPECT_EQ(l.g(trial).charged, 100);
  EXPECT_EQ(l.account_state_().balance, 80);
  expect_consistent(l.account_state_());
}

TEST(expiry_while_held, what_a_partial_confirm_returns_to_an_expired_grant_expires_at_once) {
  grants_ledger l;
  const auto trial = l.grant(100, 1000, 10);
  const auto paid = l.grant(100);
  const auto rsv = l.reserve(l.account, 150, 60'000);
  l.now += 2000;
  const auto events = accepted(l.run_with_key(confirm_reservation{rsv, 60, l.txn(l.account)}));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(std::get<reservation_confirmed>(events[0].payload).draws, draws({{trial, 60}}));
  const auto& gone = std::get<credits_deducted>(events[1].payload);
  EXPECT_EQ(gone.reason, reason_grant_expired);
  EXPECT_EQ(gone.grant_id, trial);
  EXPECT_EQ(gone.amount, 40);
  EXPECT_TRUE(events[1].idempotency_key.empty());
  EXPECT_EQ(gone.balance_after, 100);
  EXPECT_EQ(l.g(trial).expired, 40);
  EXPECT_EQ(l.g(paid).remaining, 100);
  expect_consistent(l.account_state_());
}

TEST(expiry_while_held, cancel_after_expiry_returns_all_and_the_expired_part_leaves_at_once) {
  grants_ledger l;
  const auto trial = l.grant(100, 1000, 10);
  const auto paid = l.grant(100);
  const auto rsv = l.reserve(l.account, 150, 60'000);
  l.now += 2000;
  const auto events = accepted(l.run(cancel_reservation{rsv}));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(std::get<credits_deducted>(events[1].payload).amount, 100);
  EXPECT_EQ(std::get<credits_deducted>(events[1].payload).balance_after, 100);
  EXPECT_EQ(l.g(trial).expired, 100);
  EXPECT_EQ(l.g(trial).status, grant_status::expired);
  EXPECT_EQ(l.g(paid).remaining, 100);
  expect_consistent(l.account_state_());
}

TEST(expiry_while_held, two_holds_expiring_in_one_scan_each_say_the_balance_after_them) {
  grants_ledger l;
  l.grant(100, 1000, 10);
  l.grant(100);
  l.reserve(l.account, 30, 5000);
  l.reserve(l.account, 30, 5000);
  l.now += 5000;
  const auto events = l.expire_holds();
  ASSERT_EQ(events.size(), 4u);  // ReservationExpired, then the trial's part leaves, twice
  EXPECT_EQ(std::get<credits_deducted>(events[1].payload).balance_after, 170);
  EXPECT_EQ(std::get<credits_deducted>(events[3].payload).balance_after, 140);
  EXPECT_EQ(l.account_state_().balance, 140);
  EXPECT_EQ(l.expire_grants().size(), 1u) << "the trial's unheld 40";
  EXPECT_EQ(l.account_state_().balance, 100);
  expect_consistent(l.account_state_());
}

TEST(void_grant, removes_the_unused_unheld_remainder_and_later_returns_to_it) {
  grants_ledger l;
  const auto promo = l.grant(100, std::nullopt, 10);
  const auto rsv = l.reserve(l.account, 30);
  const auto txn = l.txn(l.account);
  const auto events = accepted(l.run(void_grant{promo, txn}));
  ASSERT_EQ(events.size(), 1u);
  const auto& p = std::get<credits_deducted>(events[0].payload);
  EXPECT_EQ(p.transaction_id, txn);
  EXPECT_EQ(p.reason, reason_grant_voided);
  EXPECT_EQ(p.amount, 70);
  EXPECT_EQ(p.balance_after, 30);
  EXPECT_EQ(l.g(promo).status, grant_status::voided);
  EXPECT_EQ(l.g(promo).held, 30);
  const auto cancelled = accepted(l.run(cancel_reservation{rsv}));
  ASSERT_EQ(cancelled.size(), 2u);
  EXPECT_EQ(std::get<credits_deducted>(cancelled[1].payload).reason, reason_grant_voided);
  EXPECT_EQ(l.g(promo).voided, 100);
  EXPECT_EQ(l.account_state_().balance, 0);
  expect_consistent(l.account_state_());
}

TEST(void_grant, twice_or_after_expiry_is_a_conflict_and_another_tenants_grant_is_not_found) {
  grants_ledger l;
  const auto paid = l.grant(100);
  const auto trial = l.grant(10, 1000);
  accepted(l.run(void_grant{paid, l.txn(l.account)}));
  auto r = rejected(l.run(void_grant{paid, l.txn(l.account)}));
  EXPECT_EQ(r.code, error_code::grant_not_active);
  EXPECT_EQ(r.details["status"], "voided");
  EXPECT_EQ(rejected(l.run(void_grant{trial, l.txn(l.account)}, "t2")).code, error_code::grant_not_found);
  EXPECT_EQ(rejected(l.run(void_grant{"grt_nonsense", l.txn(l.account)})).code, error_code::grant_not_found);
  l.now += 1000;
  r = rejected(l.run(void_grant{trial, l.txn(l.account)}));
  EXPECT_EQ(r.code, error_code::grant_not_active);
  EXPECT_EQ(r.details["status"], "expired");
}

TEST(void_grant, a_grant_with_nothing_left_is_voided_by_an_event_of_zero) {
  grants_ledger l;
  const auto paid = l.grant(10);
  l.deduct(10);
  const auto events = accepted(l.run(void_grant{paid, l.txn(l.account)}));
  EXPECT_EQ(std::get<credits_deducted>(events.at(0).payload).amount, 0);
  EXPECT_EQ(std::get<credits_deducted>(events.at(0).payload).draws, grant_draws{});
  EXPECT_EQ(l.g(paid).status, grant_status::voided);
}

TEST(refunds, a_refund_returns_to_the_charges_grants_last_drawn_first) {
  grants_ledger l;
  const auto promo = l.grant(30, std::nullopt, 10);
  const auto paid = l.grant(100);
  const auto txn = l.txn(l.account);
  accepted(l.run(deduct_credits{l.account, 50, "", {}, txn}));
  auto events = accepted(l.run(reverse_transaction{txn, 25, "", {}, l.txn(l.account)}));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(std::get<transaction_reversed>(events[0].payload).draws, draws({{paid, 20}, {promo, 5}}));
  events = accepted(l.run(reverse_transaction{txn, 0, "", {}, l.txn(l.account)}));
  EXPECT_EQ(std::get<transaction_reversed>(events.at(0).payload).draws, draws({{promo, 25}}));
  EXPECT_EQ(l.g(promo).remaining, 30);
  EXPECT_EQ(l.g(paid).remaining, 100);
  expect_consistent(l.account_state_());
}

TEST(refunds, what_a_refund_returns_to_an_expired_grant_expires_at_once) {
  grants_ledger l;
  const auto trial = l.grant(50, 1000, 10);
  const auto paid = l.grant(50);
  const auto rsv = l.reserve(l.account, 80);
  const auto txn = l.txn(l.account);
  accepted(l.run(confirm_reservation{rsv, 80, txn}));
  l.now += 1000;
  const auto reversal = l.txn(l.account);
  const auto events = accepted(l.run(reverse_transaction{txn, 0, "", {}, reversal}));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(std::get<transaction_reversed>(events[0].payload).draws, draws({{paid, 30}, {trial, 50}}));
  const auto& gone = std::get<credits_deducted>(events[1].payload);
  EXPECT_EQ(gone.reason, reason_grant_expired);
  EXPECT_EQ(gone.amount, 50);
  EXPECT_EQ(gone.transaction_id, derived_transaction_id(l.account, reversal, trial));
  EXPECT_EQ(l.account_state_().balance, 50);
  EXPECT_EQ(l.g(trial).refunded, 50);
  EXPECT_EQ(l.g(trial).expired, 50);
  // An expiry is no charge: it cannot be refunded.
  EXPECT_EQ(rejected(l.run(reverse_transaction{gone.transaction_id, 0, "", {}, l.txn(l.account)})).code,
            error_code::invalid_request);
  expect_consistent(l.account_state_());
}

TEST(refunds, an_overcapture_is_refunded_to_its_own_draws) {
  grants_ledger l;
  const auto paid = l.grant(100);
  const auto rsv = l.reserve(l.account, 10);
  const auto txn = l.txn(l.account);
  const auto events = accepted(l.run(confirm_reservation{rsv, 30, txn, true}));
  const auto excess = std::get<credits_deducted>(events.at(1).payload).transaction_id;
  const auto refund = accepted(l.run(reverse_transaction{excess, 0, "", {}, l.txn(l.account)}));
  EXPECT_EQ(std::get<transaction_reversed>(refund.at(0).payload).draws, draws({{paid, 20}}));
  EXPECT_EQ(l.account_state_().balance, 90);
}

TEST(corrections, reversing_added_credits_takes_from_that_grant_only) {
  grants_ledger l;
  const auto first = l.grant(50);
  const auto second = l.grant(50);
  l.deduct(30);  // from the first
  const auto r = rejected(l.run(reverse_transaction{l.g(first).transaction_id, 25, "", {}, l.txn(l.account)}));
  EXPECT_EQ(r.code, error_code::insufficient_credits);
  EXPECT_EQ(r.details["available"], 20);
  const auto events = accepted(l.run(reverse_transaction{l.g(first).transaction_id, 20, "", {}, l.txn(l.account)}));
  EXPECT_EQ(std::get<transaction_reversed>(events.at(0).payload).draws, draws({{first, 20}}));
  EXPECT_EQ(l.g(first).granted, 30);
  EXPECT_EQ(l.g(second).remaining, 50);
  expect_consistent(l.account_state_());
}

// Events as a writer before grants wrote them: no grantId, no draws.
event legacy(const event& e) {
  auto j = to_json(e);
  for (const char* key : {"grantId", "priority", "category", "draws"}) j["payload"].erase(key);
  auto back = decode(j.dump());
  EXPECT_TRUE(back);
  return back ? *back : e;
}

TEST(legacy_events, fold_as_never_expiring_grants_with_draws_by_the_burn_order) {
  grants_ledger l;
  ledger_state old_log;  // the same events, as written before grants
  const auto run = [&](const command& c) {
    for (const auto& e : accepted(l.run(c))) apply(old_log, legacy(e));
  };
  run(create_account{derive_account_id("t1", "v"), "V", "v", "", {}});
  const auto account = derive_account_id("t1", "v");
  const auto first = l.txn(account), second = l.txn(account), charge = l.txn(account), confirm = l.txn(account);
  run(add_credits{account, 100, "", "", {}, first});
  run(add_credits{account, 100, "", "", {}, second});
  run(deduct_credits{account, 120, "", {}, charge});
  const auto rsv = l.rsv(account);
  run(create_reservation{account, 50, 60'000, "", "", {}, rsv});
  run(confirm_reservation{rsv, 30, confirm});
  run(reverse_transaction{charge, 110, "", {}, l.txn(account)});
  run(reverse_transaction{first, 20, "", {}, l.txn(account)});
  const auto& folded = old_log.accounts.at(account);
  const auto& decided = l.state.accounts.at(account);
  EXPECT_EQ(folded.grants, decided.grants);
  EXPECT_EQ(folded.transactions, decided.transactions);
  EXPECT_EQ(folded.balance, decided.balance);
  const auto& g = folded.grants.at(grant_id_of(first));
  EXPECT_FALSE(g.expires_at);
  EXPECT_EQ(g.priority, 50);
  EXPECT_EQ(g.category, grant_category::paid);
  expect_consistent(folded);
}

TEST(legacy_events, a_deduction_an_old_writer_allowed_from_an_unswept_expired_grant_still_folds) {
  // A writer that knew no grants judged by balance alone: the draws fall back to expired grants after the rest.
  grants_ledger l;
  const auto trial = l.grant(100, 1000);
  const auto paid = l.grant(10);
  l.now += 2000;
  auto e = accepted(decide(l.state, deduct_credits{l.account, 10, "", {}, l.txn(l.account)}, l.ctx())).at(0);
  auto& p = std::get<credits_deducted>(e.payload);
  p.amount = 50;
  p.balance_after = 60;
  p.draws.reset();
  ASSERT_FALSE(violation(l.state, e)) << *violation(l.state, e);
  apply(l.state, e);
  EXPECT_EQ(l.g(paid).remaining, 0);
  EXPECT_EQ(l.g(trial).remaining, 60);
  expect_consistent(l.account_state_());
}

TEST(grant_violations, draws_that_disagree_with_the_grants_are_refused) {
  grants_ledger l;
  const auto paid = l.grant(100);
  auto e = accepted(decide(l.state, deduct_credits{l.account, 10, "", {}, l.txn(l.account)}, l.ctx())).at(0);
  auto& p = std::get<credits_deducted>(e.payload);
  EXPECT_FALSE(violation(l.state, e));
  p.draws = draws({{paid, 9}});
  EXPECT_TRUE(violation(l.state, e));
  p.draws = draws({{paid, 5}, {"grt_000000000000000000000000_0000000000000000", 5}});
  EXPECT_TRUE(violation(l.state, e));
  p.amount = 200;
  p.balance_after = -100;
  p.draws = draws({{paid, 200}});
  EXPECT_TRUE(violation(l.state, e));
}

TEST(grant_codec, new_fields_round_trip_and_appear_only_where_meaningful) {
  grants_ledger l;
  add_credits c{l.account, 100, "", "", {}, l.txn(l.account)};
  c.expires_at = l.now + 1000;
  c.priority = 7;
  c.category = grant_category::promotional;
  c.cost = cost_basis{1999, "EUR"};
  const auto added = accepted(l.run(c)).at(0);
  const auto j = to_json(added);
  EXPECT_EQ(j["payload"]["priority"], 7);
  EXPECT_EQ(j["payload"]["category"], "promotional");
  EXPECT_EQ(j["payload"]["costBasis"]["currency"], "EUR");
  EXPECT_FALSE(j["payload"].contains("draws"));
  const auto back = decode(encode(added));
  ASSERT_TRUE(back);
  const auto& p = std::get<credits_added>(back->payload);
  EXPECT_EQ(p.expires_at, c.expires_at);
  EXPECT_EQ(p.cost, c.cost);
  EXPECT_EQ(p.category, grant_category::promotional);
  const auto deducted = accepted(l.run(deduct_credits{l.account, 10, "", {}, l.txn(l.account)})).at(0);
  const auto dj = to_json(deducted);
  EXPECT_TRUE(dj["payload"].contains("draws"));
  EXPECT_FALSE(dj["payload"].contains("reason"));
  EXPECT_FALSE(dj["payload"].contains("grantId"));
  EXPECT_EQ(std::get<credits_deducted>(decode(encode(deducted))->payload).draws,
            std::get<credits_deducted>(deducted.payload).draws);
}

TEST(grant_codec, bad_terms_do_not_decode) {
  grants_ledger l;
  const auto added = to_json(accepted(l.run(add_credits{l.account, 100, "", "", {}, l.txn(l.account)})).at(0));
  const auto broken = [&](const char* key, nlohmann::json value) {
    auto j = added;
    j["payload"][key] = std::move(value);
    return !decode(j.dump());
  };
  EXPECT_TRUE(broken("priority", 101));
  EXPECT_TRUE(broken("priority", -1));
  EXPECT_TRUE(broken("category", "gift"));
  EXPECT_TRUE(broken("costBasis", {{"amount", 5}, {"currency", "eur"}}));
  EXPECT_TRUE(broken("costBasis", {{"amount", -5}, {"currency", "EUR"}}));
  EXPECT_TRUE(broken("expiresAt", "tomorrow"));
  EXPECT_FALSE(broken("priority", 0));
  const auto deducted = to_json(accepted(l.run(deduct_credits{l.account, 10, "", {}, l.txn(l.account)})).at(0));
  auto j = deducted;
  j["payload"]["reason"] = "gift";
  EXPECT_FALSE(decode(j.dump()));
  j = deducted;
  j["payload"]["reason"] = "grant_expired";
  EXPECT_FALSE(decode(j.dump())) << "an expiry names its grant";
  j = deducted;
  j["payload"]["draws"] = {{{"grantId", "grt_x"}, {"amount", 0}}};
  EXPECT_FALSE(decode(j.dump()));
}

// The replay fuzzer's grant seed (tests/fuzz/corpus/replay/sequence_grants.txt): a log written with every grant
// field, as JSON, folds record by record to the grants it describes.
TEST(grant_log, the_fuzz_seed_with_every_grant_field_folds_to_its_grants) {
  std::ifstream in(std::string(CREDITS_SOURCE_DIR) + "/tests/fuzz/corpus/replay/sequence_grants.txt");
  ASSERT_TRUE(in) << "the seed file is missing";
  ledger_state state;
  std::string line;
  std::size_t records = 0;
  while (std::getline(in, line)) {
    std::string error;
    const auto e = decode(line.substr(1), &error);  // the first byte picks the fuzzer's key and partition
    ASSERT_TRUE(e) << error;
    ASSERT_FALSE(violation(state, *e)) << *violation(state, *e);
    apply(state, *e);
    ++records;
  }
  EXPECT_EQ(records, 9u);
  const auto& a = state.accounts.at("acc_000000000000000000000001");
  const auto& trial = a.grants.at("grt_000000000000000000000001_0000000000000001");
  const auto& paid = a.grants.at("grt_000000000000000000000001_0000000000000002");
  EXPECT_EQ(trial.charged, 100);
  EXPECT_EQ(trial.status, grant_status::expired);
  EXPECT_EQ(trial.cost, (cost_basis{0, "USD"}));
  EXPECT_EQ(paid.charged, 25);
  EXPECT_EQ(paid.refunded, 5);
  EXPECT_EQ(paid.voided, 30);
  EXPECT_EQ(paid.status, grant_status::voided);
  EXPECT_EQ(a.balance, 0);
}

}  // namespace
}  // namespace credits
