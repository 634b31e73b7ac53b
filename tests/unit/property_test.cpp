#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <vector>

#include "credits/common/replay.hpp"
#include "test_ledger.hpp"

// Random command sequences against a small model of the ledger written here, independently of decide() and
// apply(): it predicts each command's outcome (accepted, or which rejection) from the commands alone and
// updates itself from the command it predicted accepted, never from the events decide() made. After every step
// the fold's state must be the model's: each balance, reserved, every hold and every ledger transaction. The
// writer's replay of the log those steps wrote must rebuild the model's state too.
namespace credits {
namespace {

enum class kind { add, deduct, reserve, confirm, cancel, expire, usage, reverse, quarantine, void_record, count };
constexpr std::string_view kind_names[] = {"add",    "deduct", "reserve", "confirm",    "cancel",
                                           "expire", "usage",  "reverse", "quarantine", "void"};

// What a command must come to, as the model sees it.
using outcome = std::optional<error_code>;  // nullopt: accepted

std::string describe(const outcome& o) { return o ? std::string(to_string(*o)) : std::string("accepted"); }

// (grant id, credits): what a movement took from one grant. Every grant here is made by a plain addCredits, so
// none expires and all have the default priority: the burn order is simply oldest first.
using model_draws = std::vector<std::pair<std::string, amount_t>>;

struct model_hold {
  amount_t amount = 0;
  time_ms expires_at = 0;
  reservation_status status = reservation_status::pending;
  amount_t charged = 0;
  model_draws draws = {};
};

struct model_transaction {
  std::string account;
  std::string type;
  amount_t amount = 0;
  amount_t reversed = 0;
  model_draws draws = {};  // a charge: what it took and is not refunded yet
};

struct model_account {
  amount_t balance = 0;
  std::map<std::string, model_hold> holds;
  std::vector<std::string> quarantined;                  // event ids of the records that block it, in log order
  std::vector<std::pair<std::string, amount_t>> grants;  // (grant id, unused and unheld), oldest first

  // Takes n from the grants, oldest first (the caller made sure they hold it).
  model_draws take(amount_t n) {
    model_draws out;
    for (auto& [id, left] : grants) {
      const auto part = std::min(n, left);
      if (part == 0) continue;
      left -= part;
      n -= part;
      out.emplace_back(id, part);
    }
    return out;
  }
  void give_back(const model_draws& draws) {
    for (const auto& [id, part] : draws) grant(id) += part;
  }
  amount_t& grant(const std::string& id) {
    for (auto& [gid, left] : grants)
      if (gid == id) return left;
    throw std::logic_error("no grant " + id);
  }

  amount_t reserved() const {
    amount_t sum = 0;
    for (const auto& [id, h] : holds)
      if (h.status == reservation_status::pending) sum += h.amount;
    return sum;
  }
  amount_t available() const { return balance - reserved(); }
  bool blocked() const { return !quarantined.empty(); }
};

// The ledger as a plain bookkeeper would keep it: every account is tenant t1's.
struct model {
  std::map<std::string, model_account> accounts;
  std::map<std::string, model_transaction> transactions;
  amount_t low_threshold = 0;

  // The account of a reservation id: the test makes them with child_id, so it can keep them in a map.
  std::map<std::string, std::string> hold_accounts;

  model_hold* hold(const std::string& id) {
    const auto it = hold_accounts.find(id);
    if (it == hold_accounts.end()) return nullptr;
    auto& holds = accounts.at(it->second).holds;
    const auto h = holds.find(id);
    return h == holds.end() ? nullptr : &h->second;
  }

  // A hold that is still pending but whose time has come is expired for every command, as it is for the client.
  static outcome resolvable(const model_hold* h, time_ms now) {
    if (!h) return error_code::reservation_not_found;
    if (h->status == reservation_status::expired || (h->status == reservation_status::pending && now >= h->expires_at))
      return error_code::reservation_expired;
    if (h->status != reservation_status::pending) return error_code::reservation_not_pending;
    return std::nullopt;
  }

  // Whether a command lowering `available` from `before` to `after` also signals BalanceLow.
  bool signals_low(amount_t before, amount_t after) const {
    return low_threshold > 0 && before >= low_threshold && after < low_threshold;
  }
};

// One command as the generator made it, with the account it addresses (for the blocked check) and the model's
// prediction; `apply_model` then books it in the model if the ledger accepted it.
struct step_plan {
  kind k = kind::add;
  command cmd;
  std::string tenant = "t1";
  outcome expected;
  std::size_t expected_events = 1;  // with its BalanceLow signal, when it lowers available below the threshold
  std::function<void()> apply_model;
};

// Compares the fold with the model: every account's money, holds and ledger transactions, and the expiry index.
::testing::AssertionResult same_state(const ledger_state& state, const model& m) {
  std::set<std::pair<time_ms, std::string>> pending;
  for (const auto& [id, expected] : m.accounts) {
    const auto it = state.accounts.find(id);
    if (it == state.accounts.end()) return ::testing::AssertionFailure() << "no account " << id << " in the fold";
    const auto& a = it->second;
    if (a.balance != expected.balance)
      return ::testing::AssertionFailure() << id << " balance " << a.balance << ", model " << expected.balance;
    if (a.reserved != expected.reserved())
      return ::testing::AssertionFailure() << id << " reserved " << a.reserved << ", model " << expected.reserved();
    if (a.reservations.size() != expected.holds.size())
      return ::testing::AssertionFailure()
             << id << " has " << a.reservations.size() << " holds, model " << expected.holds.size();
    for (const auto& [rid, h] : expected.holds) {
      const auto r = a.reservations.find(rid);
      if (r == a.reservations.end()) return ::testing::AssertionFailure() << "no hold " << rid << " in the fold";
      if (r->second.amount != h.amount || r->second.expires_at != h.expires_at || r->second.status != h.status ||
          r->second.charged != h.charged)
        return ::testing::AssertionFailure()
               << "hold " << rid << ": fold " << r->second.amount << "/" << r->second.expires_at << "/"
               << to_string(r->second.status) << "/charged " << r->second.charged << ", model " << h.amount << "/"
               << h.expires_at << "/" << to_string(h.status) << "/charged " << h.charged;
      if (h.status == reservation_status::pending) pending.emplace(h.expires_at, rid);
    }
    for (const auto& [gid, left] : expected.grants) {
      const auto g = a.grants.find(gid);
      if (g == a.grants.end()) return ::testing::AssertionFailure() << "no grant " << gid << " in the fold";
      if (g->second.remaining != left)
        return ::testing::AssertionFailure()
               << "grant " << gid << " has " << g->second.remaining << " left, model " << left;
    }
    if (a.grants.size() != expected.grants.size())
      return ::testing::AssertionFailure()
             << id << " has " << a.grants.size() << " grants, model " << expected.grants.size();
    const auto q = state.quarantined.find(id);
    std::vector<std::string> quarantined;
    if (q != state.quarantined.end())
      for (const auto& record : q->second) quarantined.push_back(record.event_id);
    if (quarantined != expected.quarantined)
      return ::testing::AssertionFailure()
             << id << " has " << quarantined.size() << " quarantined records, model " << expected.quarantined.size();
  }
  std::map<std::string, std::size_t> transactions;  // by account
  for (const auto& [tid, t] : m.transactions) {
    ++transactions[t.account];
    const auto& posted = state.accounts.at(t.account).transactions;
    const auto found = posted.find(tid);
    if (found == posted.end())
      return ::testing::AssertionFailure() << "no ledger transaction " << tid << " in the fold";
    if (found->second.type != t.type || found->second.amount != t.amount || found->second.reversed != t.reversed)
      return ::testing::AssertionFailure() << "ledger transaction " << tid << ": fold " << found->second.type << " "
                                           << found->second.amount << " reversed " << found->second.reversed
                                           << ", model " << t.type << " " << t.amount << " reversed " << t.reversed;
  }
  for (const auto& [id, a] : state.accounts)
    if (a.transactions.size() != transactions[id])
      return ::testing::AssertionFailure()
             << id << " has " << a.transactions.size() << " ledger transactions, model " << transactions[id];
  if (state.pending_by_expiry != pending)
    return ::testing::AssertionFailure() << "the expiry index holds " << state.pending_by_expiry.size()
                                         << " holds, the model " << pending.size() << " pending ones";
  return ::testing::AssertionSuccess();
}

// A seeded run: the ledger (decide and apply, as the writer drives them), the model, and the log the ledger
// wrote, as records the writer's replay reads back.
class random_run {
 public:
  static constexpr std::size_t accounts_total = 4;
  static constexpr amount_t low_threshold = 150;

  explicit random_run(std::uint64_t seed) : rng_(seed) {
    l_.rules.balance_low_threshold = low_threshold;
    m_.low_threshold = low_threshold;
    for (std::size_t i = 0; i < accounts_total; ++i) {
      const auto id = derive_account_id("t1", "user_" + std::to_string(i));
      const auto d = decide(l_.state, create_account{id, "A", "user_" + std::to_string(i), "", {}}, l_.ctx());
      append(std::get<std::vector<event>>(d));
      accounts_.push_back(id);
      m_.accounts[id];
    }
  }

  const ledger_state& state() const { return l_.state; }
  const model& expected() const { return m_; }
  const std::vector<std::pair<std::string, std::string>>& log() const { return log_; }  // (key, value)

  // Makes one random command (or expiry run, or quarantined record), checks the ledger's outcome against the
  // model's, and books it in both.
  void step(std::map<kind, std::size_t>& accepted, std::map<error_code, std::size_t>& rejected) {
    ++steps_;
    l_.now += static_cast<time_ms>(rng_() % 40);
    const auto roll = rng_() % 100;
    if (roll < 4) return expire(accepted);
    if (roll < 5) return quarantine(accepted);
    auto plan = make_plan(roll);
    const auto d = decide(l_.state, plan.cmd, l_.ctx(plan.tenant), l_.rules);
    const auto* events = std::get_if<std::vector<event>>(&d);
    const outcome got = events ? outcome() : outcome(std::get<rejection>(d).code);
    ASSERT_EQ(describe(got), describe(plan.expected)) << kind_names[static_cast<int>(plan.k)] << " at step " << steps_
                                                      << (events ? "" : ": " + std::get<rejection>(d).message);
    if (!events) {
      ++rejected[*got];
      return;
    }
    ASSERT_EQ(events->size(), plan.expected_events) << kind_names[static_cast<int>(plan.k)] << " at step " << steps_;
    ++accepted[plan.k];
    append(*events);
    plan.apply_model();
  }

 private:
  template <class V>
  auto& pick(V& v) {
    return v[rng_() % v.size()];
  }
  amount_t amount(amount_t max) { return static_cast<amount_t>(rng_() % static_cast<std::uint64_t>(max)) + 1; }

  // Folds the events as the writer does and records them in the log.
  void append(const std::vector<event>& events) {
    for (auto e : events) {
      e.event_id = "evt-" + std::to_string(++events_total_);
      const auto why = violation(l_.state, e);
      ASSERT_FALSE(why.has_value()) << *why;
      apply(l_.state, e);
      log_.emplace_back(e.account_id, encode(e));
    }
  }

  void expire(std::map<kind, std::size_t>& accepted) {
    std::set<std::string> due;
    for (auto& [id, a] : m_.accounts)
      for (auto& [rid, h] : a.holds)
        if (!a.blocked() && h.status == reservation_status::pending && h.expires_at <= l_.now) due.insert(rid);
    const auto events = expire_due(l_.state, l_.now, 1000);
    std::set<std::string> emitted;
    for (const auto& e : events) emitted.insert(std::get<reservation_expired>(e.payload).reservation_id);
    ASSERT_EQ(emitted, due) << "expiry at step " << steps_;
    append(events);
    for (const auto& rid : due) {
      auto* h = m_.hold(rid);
      h->status = reservation_status::expired;
      m_.accounts.at(m_.hold_accounts.at(rid)).give_back(h->draws);
    }
    accepted[kind::expire] += due.size();
  }

  // A record the fold cannot apply (its balanceAfter disagrees with the balance), as a buggy producer could have
  // left it in the log: the writer's replay quarantines the account until an operator voids it.
  void quarantine(std::map<kind, std::size_t>& accepted) {
    const auto& account = pick(accounts_);
    auto bad = event{"bad-" + std::to_string(++events_total_),
                     event_schema_version,
                     "t1",
                     account,
                     "key_1",
                     "req_1",
                     "",
                     "",
                     l_.now,
                     credits_added{l_.txn(account), 5, m_.accounts[account].balance + 6, "", "", {}}};
    const auto value = encode(bad);
    const auto r = replay(l_.state, log_record{"credits.ledger", stream::ledger, 0, 0,
                                               static_cast<std::int64_t>(log_.size()), account, value});
    ASSERT_EQ(r.result, replayed::outcome::quarantined) << r.reason;
    log_.emplace_back(account, value);
    m_.accounts[account].quarantined.push_back(bad.event_id);
    ++accepted[kind::quarantine];
  }

  // An outcome that every command addressing a blocked account of t1 gets first.
  outcome blocked_or(const std::string& tenant, const std::string& account, outcome otherwise) {
    const auto it = m_.accounts.find(account);
    if (tenant == "t1" && it != m_.accounts.end() && it->second.blocked()) return error_code::account_blocked;
    return otherwise;
  }

  step_plan make_plan(std::uint64_t roll) {
    step_plan p;
    // One command in twelve comes from another tenant, to whom t1's accounts do not exist.
    if (rng_() % 12 == 0) p.tenant = "t2";
    const bool own = p.tenant == "t1";
    // A void mostly names a blocked account, for there are few.
    std::vector<std::string> blocked;
    for (const auto& [id, acc] : m_.accounts)
      if (acc.blocked()) blocked.push_back(id);
    const auto& account = roll >= 96 && !blocked.empty() && rng_() % 4 != 0 ? pick(blocked) : pick(accounts_);
    auto& a = m_.accounts[account];
    const auto now = l_.now;
    if (roll < 22) {
      p.k = kind::add;
      const auto id = l_.txn(account);
      const auto n = amount(300);
      p.cmd = add_credits{account, n, "", "", {}, id};
      p.expected = blocked_or(p.tenant, account, own ? outcome() : error_code::account_not_found);
      p.apply_model = [this, &a, id, n, account] {
        a.balance += n;
        a.grants.emplace_back(grant_id_of(id), n);
        m_.transactions[id] = {account, "CreditsAdded", n, 0};
      };
    } else if (roll < 36) {
      p.k = kind::deduct;
      const auto id = l_.txn(account);
      const auto n = amount(300);
      p.cmd = deduct_credits{account, n, "", {}, id};
      p.expected = blocked_or(p.tenant, account,
                              !own                ? outcome(error_code::account_not_found)
                              : n > a.available() ? outcome(error_code::insufficient_credits)
                                                  : outcome());
      p.expected_events = m_.signals_low(a.available(), a.available() - n) ? 2 : 1;
      p.apply_model = [this, &a, id, n, account] {
        a.balance -= n;
        m_.transactions[id] = {account, "CreditsDeducted", n, 0, a.take(n)};
      };
    } else if (roll < 52) {
      p.k = kind::reserve;
      const auto id = l_.rsv(account);
      const auto n = amount(300);
      const auto expires_in = static_cast<std::int64_t>(amount(1500));
      p.cmd = create_reservation{account, n, expires_in, "", "", {}, id};
      p.expected = blocked_or(p.tenant, account,
                              !own                ? outcome(error_code::account_not_found)
                              : n > a.available() ? outcome(error_code::insufficient_credits)
                                                  : outcome());
      p.expected_events = m_.signals_low(a.available(), a.available() - n) ? 2 : 1;
      p.apply_model = [this, &a, id, n, now, expires_in, account] {
        a.holds[id] = {n, now + expires_in, reservation_status::pending, 0, a.take(n)};
        m_.hold_accounts[id] = account;
      };
      holds_.push_back(id);
    } else if (roll < 78) {
      const bool confirm = roll < 66;
      p.k = confirm ? kind::confirm : kind::cancel;
      // Confirms and cancels mostly pick a pending hold; now and then any hold made so far (refused ones
      // included), or one never made.
      std::vector<std::string> pending;
      for (const auto& [id, acc] : m_.hold_accounts)
        if (m_.hold(id)->status == reservation_status::pending) pending.push_back(id);
      const auto r = rng_() % 10;
      const auto rid = r == 0 || holds_.empty()    ? l_.rsv(account)
                       : r < 7 && !pending.empty() ? pick(pending)
                                                   : pick(holds_);
      const auto owner = *account_of("rsv", rid);
      auto* h = m_.hold(rid);
      outcome why = own ? model::resolvable(h, now) : outcome(error_code::reservation_not_found);
      if (confirm) {
        const auto id = l_.txn(owner);
        // Now and then more than was held, which is refused.
        const amount_t actual = h ? static_cast<amount_t>(rng_() % static_cast<std::uint64_t>(h->amount + 20)) : 1;
        if (!why && actual > h->amount) why = error_code::invalid_request;
        p.cmd = confirm_reservation{rid, actual, id};
        p.apply_model = [this, h, actual, id, owner] {
          h->status = reservation_status::confirmed;
          h->charged = actual;
          auto& o = m_.accounts[owner];
          o.balance -= actual;
          // The charge takes the hold's draws in order; the rest goes back to its grants.
          o.give_back(h->draws);
          model_draws charged;
          for (amount_t to_charge = actual; const auto& [gid, part] : h->draws) {
            if (to_charge == 0) break;
            charged.emplace_back(gid, std::min(to_charge, part));
            o.grant(gid) -= charged.back().second;
            to_charge -= charged.back().second;
          }
          m_.transactions[id] = {owner, "ReservationConfirmed", actual, 0, std::move(charged)};
        };
      } else {
        p.cmd = cancel_reservation{rid};
        p.apply_model = [this, h, owner] {
          h->status = reservation_status::cancelled;
          m_.accounts[owner].give_back(h->draws);
        };
      }
      p.expected = blocked_or(p.tenant, owner, why);
    } else if (roll < 84) {
      p.k = kind::usage;
      // Linked to no ledger transaction, to one of this account's, or to one of another account's.
      std::string linked;
      if (const auto r = rng_() % 3; r == 1 && !m_.transactions.empty()) {
        auto it = m_.transactions.begin();
        std::advance(it, static_cast<std::ptrdiff_t>(rng_() % m_.transactions.size()));
        linked = it->first;
      } else if (r == 2) {
        linked = child_id("txn", account, 1'000'000 + rng_() % 1000);  // never made
      }
      p.cmd =
          record_usage{account, child_id("use", account, rng_()), "customer", linked, "gpt-4o", "text", 10, 5, 0, {}};
      outcome why;
      if (!own)
        why = error_code::account_not_found;
      else if (!linked.empty() && !m_.transactions.contains(linked))
        why = error_code::transaction_not_found;
      else if (!linked.empty() && m_.transactions.at(linked).account != account)
        why = error_code::transaction_account_mismatch;
      p.expected = blocked_or(p.tenant, account, why);
      p.apply_model = [] {};  // usage moves no credits
    } else if (roll < 96) {
      p.k = kind::reverse;
      // Any ledger transaction (a reversal too, which cannot be reversed) or one never made; all of what is left
      // of it, or a part, or more than is left.
      std::string tid = child_id("txn", account, 2'000'000 + rng_() % 1000);
      if (!m_.transactions.empty() && rng_() % 8 != 0) {
        auto it = m_.transactions.begin();
        std::advance(it, static_cast<std::ptrdiff_t>(rng_() % m_.transactions.size()));
        tid = it->first;
      }
      const auto owner = *account_of("txn", tid);
      const auto it = m_.transactions.find(tid);
      const auto left = it == m_.transactions.end() ? 0 : it->second.amount - it->second.reversed;
      const auto r = rng_() % 4;
      const amount_t asked = r == 0 ? 0 : r == 1 ? left + 1 + static_cast<amount_t>(rng_() % 5) : amount(left + 1);
      const auto id = l_.txn(owner);
      p.cmd = reverse_transaction{tid, asked, "", {}, id};
      outcome why;
      amount_t n = asked == 0 ? left : asked;
      amount_t delta = 0;
      if (!own || it == m_.transactions.end()) {
        why = error_code::transaction_not_found;
      } else if (const auto& type = it->second.type;
                 type != "CreditsAdded" && type != "CreditsDeducted" && type != "ReservationConfirmed") {
        why = error_code::invalid_request;
      } else if (n == 0 || n > left) {
        why = error_code::invalid_request;
      } else {
        delta = type == "CreditsAdded" ? -n : n;
        auto& o = m_.accounts[owner];
        // A correction of added credits takes them from that grant alone: only what is unused and unheld of it.
        if (delta < 0 && -delta > o.grant(grant_id_of(tid))) why = error_code::insufficient_credits;
        if (delta < 0) p.expected_events = m_.signals_low(o.available(), o.available() + delta) ? 2 : 1;
      }
      p.expected = blocked_or(p.tenant, owner, why);
      p.apply_model = [this, tid, id, n, delta, owner] {
        auto& o = m_.accounts[owner];
        o.balance += delta;
        auto& original = m_.transactions[tid];
        original.reversed += n;
        if (delta < 0) {
          o.grant(grant_id_of(tid)) -= n;
        } else {  // a refund goes back to the grants the charge took from, last drawn first
          for (amount_t to_refund = n; to_refund > 0;) {
            auto& [gid, part] = original.draws.back();
            const auto back = std::min(to_refund, part);
            o.grant(gid) += back;
            part -= back;
            to_refund -= back;
            if (part == 0) original.draws.pop_back();
          }
        }
        m_.transactions[id] = {owner, "TransactionReversed", n, 0};
      };
    } else {
      p.k = kind::void_record;
      // The account's first quarantined record, or an id it never had.
      const bool known = a.blocked() && rng_() % 4 != 0;
      const auto event_id = known ? a.quarantined[rng_() % a.quarantined.size()] : "bad-never";
      p.cmd = void_event{account, event_id, "test"};
      p.expected = known && own ? outcome() : outcome(error_code::event_not_found);
      p.apply_model = [&a, event_id] { std::erase(a.quarantined, event_id); };
    }
    return p;
  }

  std::mt19937_64 rng_;
  testing::test_ledger l_;
  model m_;
  std::vector<std::string> accounts_;
  std::vector<std::string> holds_;
  std::vector<std::pair<std::string, std::string>> log_;
  std::uint64_t events_total_ = 0;
  std::size_t steps_ = 0;
};

constexpr std::uint64_t seeds = 20;
constexpr int steps_per_seed = 300;

// Every kind of command is accepted often enough, and each refusal the model knows happens, or the generator
// has drifted into testing nothing (a run of rejections conserves money trivially).
void expect_coverage(const std::map<kind, std::size_t>& accepted, const std::map<error_code, std::size_t>& rejected) {
  for (int k = 0; k < static_cast<int>(kind::count); ++k) {
    const auto n = accepted.contains(static_cast<kind>(k)) ? accepted.at(static_cast<kind>(k)) : 0;
    EXPECT_GE(n, 30u) << "accepted " << kind_names[k];
  }
  for (const auto code :
       {error_code::insufficient_credits, error_code::reservation_expired, error_code::reservation_not_pending,
        error_code::reservation_not_found, error_code::invalid_request, error_code::transaction_not_found,
        error_code::transaction_account_mismatch, error_code::account_not_found, error_code::account_blocked,
        error_code::event_not_found})
    EXPECT_GE(rejected.contains(code) ? rejected.at(code) : 0, 20u) << "rejected with " << to_string(code);
}

TEST(property, random_command_sequences_do_what_an_independent_model_of_the_ledger_does) {
  std::map<kind, std::size_t> accepted;
  std::map<error_code, std::size_t> rejected;
  for (std::uint64_t seed = 1; seed <= seeds; ++seed) {
    random_run run(seed);
    for (int step = 0; step < steps_per_seed; ++step) {
      ASSERT_NO_FATAL_FAILURE(run.step(accepted, rejected)) << "seed " << seed;
      ASSERT_TRUE(same_state(run.state(), run.expected())) << "seed " << seed << " step " << step;
    }
  }
  expect_coverage(accepted, rejected);
}

// The writer's replay of the log a run wrote (quarantined records included) rebuilds the model's state, not
// merely the state the same fold reached the first time.
TEST(property, replaying_the_log_rebuilds_the_state_of_the_model) {
  for (std::uint64_t seed = 100; seed < 105; ++seed) {
    random_run run(seed);
    std::map<kind, std::size_t> accepted;
    std::map<error_code, std::size_t> rejected;
    for (int step = 0; step < steps_per_seed; ++step) ASSERT_NO_FATAL_FAILURE(run.step(accepted, rejected));
    ledger_state replayed_state;
    std::int64_t offset = 0;
    for (const auto& [key, value] : run.log()) {
      const auto e = decode(value);
      ASSERT_TRUE(e.has_value());
      const auto topic_stream = stream_of(e->payload);
      replay(replayed_state, log_record{topic_stream == stream::usage ? "credits.usage" : "credits.ledger",
                                        topic_stream, 0, 0, offset++, key, value});
    }
    EXPECT_TRUE(same_state(replayed_state, run.expected())) << "seed " << seed;
  }
}

}  // namespace
}  // namespace credits
