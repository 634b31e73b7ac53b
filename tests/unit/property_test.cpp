#include <random>

#include "test_ledger.hpp"

namespace credits {
namespace {

// Random command sequences against a handful of accounts: whatever is accepted, money is conserved (each
// balance equals credits in minus credits out, as tracked independently here) and available never goes
// below zero. apply() asserts the second after every event; this test checks the first.
TEST(property, random_command_sequences_conserve_money_and_never_overdraw) {
  for (std::uint32_t seed = 1; seed <= 40; ++seed) {
    std::mt19937_64 rng(seed);
    testing::test_ledger l;
    std::vector<std::string> accounts;
    std::map<std::string, amount_t> expected;
    for (int i = 0; i < 4; ++i) {
      accounts.push_back(l.open_account("user_" + std::to_string(i)));
      expected[accounts.back()] = 0;
    }
    std::vector<std::string> reservations;
    auto pick = [&](auto& v) -> auto& { return v[rng() % v.size()]; };
    for (int step = 0; step < 400; ++step) {
      const auto& account = pick(accounts);
      const amount_t amount = static_cast<amount_t>(rng() % 300);  // 0 is invalid and must be refused upstream
      l.now += static_cast<time_ms>(rng() % 50);
      decision d;
      switch (rng() % 6) {
        case 0:
          d = l.run(add_credits{account, amount + 1, "", "", {}, l.txn(account)});
          break;
        case 1:
          d = l.run(deduct_credits{account, amount + 1, "", {}, l.txn(account)});
          break;
        case 2: {
          const auto id = l.rsv(account);
          d = l.run(
              create_reservation{account, amount + 1, static_cast<std::int64_t>(rng() % 2000) + 1, "", "", {}, id});
          if (std::holds_alternative<std::vector<event>>(d)) reservations.push_back(id);
          break;
        }
        case 3:
          if (!reservations.empty()) d = l.run(confirm_reservation{pick(reservations), amount, l.txn(account)});
          break;
        case 4:
          if (!reservations.empty()) d = l.run(cancel_reservation{pick(reservations)});
          break;
        case 5:
          for (const auto& e : expire_due(l.state, l.now, 1000)) apply(l.state, e);
          break;
      }
      if (const auto* events = std::get_if<std::vector<event>>(&d)) {
        for (const auto& e : *events) {
          if (const auto* p = std::get_if<credits_added>(&e.payload)) expected[e.account_id] += p->amount;
          if (const auto* p = std::get_if<credits_deducted>(&e.payload)) expected[e.account_id] -= p->amount;
          if (const auto* p = std::get_if<reservation_confirmed>(&e.payload)) expected[e.account_id] -= p->charged;
        }
      }
      for (const auto& id : accounts) {
        const auto& a = l.account(id);
        ASSERT_EQ(a.balance, expected[id]) << "seed " << seed << " step " << step;
        ASSERT_GE(a.available(), 0);
        amount_t pending = 0;
        for (const auto& [rid, r] : a.reservations)
          if (r.status == reservation_status::pending) pending += r.amount;
        ASSERT_EQ(a.reserved, pending) << "seed " << seed << " step " << step;
      }
    }
  }
}

// Replaying the accepted events into a fresh state gives the same balances: the fold is deterministic.
TEST(property, replaying_the_log_rebuilds_the_same_state) {
  std::mt19937_64 rng(7);
  testing::test_ledger l;
  std::vector<event> log;
  const auto id = derive_account_id("t1", "u");
  auto record = [&](const decision& d) {
    if (const auto* events = std::get_if<std::vector<event>>(&d)) log.insert(log.end(), events->begin(), events->end());
  };
  record(l.run(create_account{id, "A", "u", "", {}}));
  for (int i = 0; i < 300; ++i) {
    const amount_t amount = static_cast<amount_t>(rng() % 100) + 1;
    if (rng() % 2)
      record(l.run(add_credits{id, amount, "", "", {}, l.txn(id)}));
    else
      record(l.run(create_reservation{id, amount, 10'000, "", "", {}, l.rsv(id)}));
  }
  ledger_state replayed;
  for (const auto& e : log) apply(replayed, e);
  EXPECT_EQ(replayed.accounts.at(id).balance, l.account(id).balance);
  EXPECT_EQ(replayed.accounts.at(id).reserved, l.account(id).reserved);
  EXPECT_EQ(replayed.pending_by_expiry, l.state.pending_by_expiry);
}

}  // namespace
}  // namespace credits
