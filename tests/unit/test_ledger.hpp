#pragma once

#include <gtest/gtest.h>

#include "credits/common/domain.hpp"
#include "credits/common/ids.hpp"
#include "credits/common/requests.hpp"

namespace credits::testing {

// A ledger driven through decide/apply with a fixed clock and counting id source, as the writer does.
struct test_ledger {
  ledger_state state;
  time_ms now = 1'700'000'000'000;
  std::uint64_t next_bits = 1;
  request_limits limits;
  policy rules;

  random_bits bits() {
    return [this] { return next_bits++; };
  }
  request_context ctx(std::string tenant = "t1") const {
    return request_context{std::move(tenant), "key_1", "req_1", "", "", now};
  }

  // Decides and, if accepted, applies. Returns the events or the rejection.
  decision run(const command& cmd, const std::string& tenant = "t1") {
    auto d = decide(state, cmd, ctx(tenant), rules);
    if (auto* events = std::get_if<std::vector<event>>(&d))
      for (const auto& e : *events) apply(state, e);
    return d;
  }

  std::string open_account(const std::string& external_id, amount_t credits = 0) {
    const auto id = derive_account_id("t1", external_id);
    EXPECT_TRUE(std::holds_alternative<std::vector<event>>(run(create_account{id, "A", external_id, "", {}})));
    if (credits > 0) {
      EXPECT_TRUE(std::holds_alternative<std::vector<event>>(run(add_credits{id, credits, "", "", {}, txn(id)})));
    }
    return id;
  }
  std::string txn(const std::string& account) { return child_id("txn", account, next_bits++); }
  std::string rsv(const std::string& account) { return child_id("rsv", account, next_bits++); }

  // Reserves and returns the reservation id; fails the test if refused.
  std::string reserve(const std::string& account, amount_t amount, std::int64_t expires_in_ms = 60'000) {
    auto id = rsv(account);
    auto d = run(create_reservation{account, amount, expires_in_ms, "", "", {}, id});
    EXPECT_TRUE(std::holds_alternative<std::vector<event>>(d));
    return id;
  }
  const account_state& account(const std::string& id) const { return state.accounts.at(id); }
};

// Both return copies: callers pass temporaries.
inline rejection rejected(const decision& d) {
  static const rejection none{error_code::internal, "accepted", "", nullptr};
  const auto* r = std::get_if<rejection>(&d);
  EXPECT_NE(r, nullptr) << "the command was accepted, a rejection was expected";
  return r ? *r : none;
}

inline std::vector<event> accepted(const decision& d) {
  static const std::vector<event> none;
  const auto* e = std::get_if<std::vector<event>>(&d);
  EXPECT_NE(e, nullptr) << "rejected: " << (e ? "" : std::get<rejection>(d).message);
  return e ? *e : none;
}

}  // namespace credits::testing
