#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "credits/common/ids.hpp"
#include "credits/projector/fold.hpp"
#include "credits/projector/projector.hpp"
#include "credits/read_model/layout.hpp"
#include "credits/read_model/reads.hpp"
#include "credits/read_model/redis.hpp"

namespace credits {
namespace {

using commands = std::vector<std::vector<std::string>>;
using words = std::vector<std::string>;

const std::string account = "acc_0123456789abcdef01234567";
const std::string account_hash = "credits:account:{acc_0123456789abcdef01234567}";
const std::string rsv_hash = "credits:reservation:{acc_0123456789abcdef01234567}:rsv_1";

// 2025-11-29T16:01:22.123Z
constexpr time_ms occurred = 1'764'432'082'123;

event sample(event_payload payload) {
  return event{
      "8d6f1f7e-0000-4000-8000-000000000001", 1, "t1", account, "key_1", "req_1", "", "", occurred, std::move(payload)};
}

// The fields an HSET sets, as a map, so tests need not depend on their order.
std::map<std::string, std::string> hset_fields(const words& command) {
  std::map<std::string, std::string> out;
  for (std::size_t i = 2; i + 1 < command.size(); i += 2) out[command[i]] = command[i + 1];
  return out;
}

const words* find(const commands& cs, const std::string& verb, const std::string& key, const std::string& field = "") {
  const auto it = std::find_if(cs.begin(), cs.end(), [&](const words& c) {
    return c.size() >= 2 && c[0] == verb && c[1] == key && (field.empty() || (c.size() > 2 && c[2] == field));
  });
  return it == cs.end() ? nullptr : &*it;
}

// The delta of the one HINCRBY on key/field; fails the test when there is none or more than one.
std::string delta(const commands& cs, const std::string& key, const std::string& field) {
  const auto n = std::count_if(cs.begin(), cs.end(), [&](const words& c) {
    return c.size() == 4 && c[0] == "HINCRBY" && c[1] == key && c[2] == field;
  });
  EXPECT_EQ(n, 1) << "HINCRBY " << key << " " << field;
  const auto* c = find(cs, "HINCRBY", key, field);
  return c ? (*c)[3] : std::string("<none>");
}

TEST(fold, account_created_sets_the_profile_and_creates_zero_balances_by_increment) {
  const auto cs = read_model::fold(sample(account_created{"Alice", "user_1", "a@example.com", {{"plan", "pro"}}}), 0);
  ASSERT_EQ(cs.size(), 5u);
  EXPECT_EQ(*find(cs, "ZADD", "credits:accounts:{t1}"),
            (words{"ZADD", "credits:accounts:{t1}", "1764432082123", account}));
  const auto* hset = find(cs, "HSET", account_hash);
  ASSERT_NE(hset, nullptr);
  const auto f = hset_fields(*hset);
  EXPECT_EQ(f.at("id"), account);
  EXPECT_EQ(f.at("tenant"), "t1");
  EXPECT_EQ(f.at("name"), "Alice");
  EXPECT_EQ(f.at("externalId"), "user_1");
  EXPECT_EQ(f.at("email"), "a@example.com");
  EXPECT_EQ(nlohmann::json::parse(f.at("metadata")), (nlohmann::json{{"plan", "pro"}}));
  EXPECT_EQ(f.at("createdAt"), "2025-11-29T16:01:22.123Z");
  // Absolute writes of balance or reserved would make the fold depend on event order; only deltas are allowed.
  EXPECT_FALSE(f.contains("balance"));
  EXPECT_FALSE(f.contains("reserved"));
  EXPECT_EQ(delta(cs, account_hash, "balance"), "0");
  EXPECT_EQ(delta(cs, account_hash, "reserved"), "0");
  EXPECT_EQ(delta(cs, account_hash, "promotional"), "0");
}

TEST(fold, credits_added_increments_the_balance) {
  const auto cs = read_model::fold(sample(credits_added{"txn_1", 1000, 1000, "d", "card", {}}), 42);
  ASSERT_EQ(cs.size(), 6u);  // the balance, the grant (hash, listing), the day's report, the entry (index, body)
  EXPECT_EQ(delta(cs, account_hash, "balance"), "1000");
  // Listed under the account, ordered by time and then by log offset.
  EXPECT_EQ(*find(cs, "ZADD", "credits:transactions:{acc_0123456789abcdef01234567}"),
            (words{"ZADD", "credits:transactions:{acc_0123456789abcdef01234567}", "1764432082123",
                   "0000000000000000042:txn_1"}));
  const auto* entry = find(cs, "HSET", "credits:transaction:{acc_0123456789abcdef01234567}");
  ASSERT_NE(entry, nullptr);
  const auto j = nlohmann::json::parse(entry->at(3));
  EXPECT_EQ(j["id"], "txn_1");
  EXPECT_EQ(j["type"], "credit");
  EXPECT_EQ(j["amount"], 1000);
  EXPECT_EQ(j["balanceAfter"], 1000);
  EXPECT_EQ(j["description"], "d");
  EXPECT_EQ(j["createdAt"], "2025-11-29T16:01:22.123Z");
  EXPECT_EQ(j["grantId"], grant_of(credits_added{"txn_1", 1000, 1000, "d", "card", {}}));
  // What the entry does not have is absent, not null or empty (the reads put it back).
  for (const char* absent : {"reservationId", "reversalOf", "reason", "draws", "metadata"})
    EXPECT_FALSE(j.contains(absent)) << absent;
  // The grant: one field of the account's grants hash, its terms; its counters come with the first draw. Only
  // what the reads cannot know: no default, no creation time (the listing's score). The transaction id is there
  // because "txn_1" names no grant id of its own.
  const auto* grant = find(cs, "HSET", "credits:grant:{acc_0123456789abcdef01234567}");
  ASSERT_NE(grant, nullptr);
  ASSERT_EQ(grant->size(), 4u);
  EXPECT_EQ(grant->at(2), j["grantId"]);
  EXPECT_EQ(nlohmann::json::parse(grant->at(3)), (nlohmann::json{{"amount", 1000}, {"transactionId", "txn_1"}}));
  const auto read = read_model::grant_hash(grant->at(2), {grant->at(3)});
  EXPECT_EQ(read.at("priority"), "50");
  EXPECT_EQ(read.at("category"), "paid");
  EXPECT_EQ(read.at("status"), "active");
  EXPECT_EQ(read.at("transactionId"), "txn_1");
}

TEST(fold, a_grant_named_after_its_transaction_does_not_repeat_it) {
  const std::string txn = "txn_0123456789abcdef01234567_00000000000000a1";
  credits_added p{txn, 5, 5, "", "", {}};
  p.priority = 7;
  p.category = grant_category::promotional;
  const auto cs = read_model::fold(sample(p), 0);
  const auto* grant = find(cs, "HSET", "credits:grant:{acc_0123456789abcdef01234567}");
  ASSERT_NE(grant, nullptr);
  EXPECT_EQ(grant->at(2), grant_id_of(txn));
  EXPECT_EQ(transaction_id_of_grant(grant_id_of(txn)), txn);
  EXPECT_EQ(transaction_id_of_grant("grt:txn_1"), "");  // a legacy grant's id names no transaction of its own
  EXPECT_EQ(nlohmann::json::parse(grant->at(3)),
            (nlohmann::json{{"amount", 5}, {"priority", 7}, {"category", "promotional"}}));
  const auto read = read_model::grant_hash(grant->at(2), {grant->at(3)});
  EXPECT_EQ(read.at("transactionId"), txn);
  EXPECT_EQ(read.at("priority"), "7");
  EXPECT_EQ(read.at("category"), "promotional");
}

TEST(fold, credits_deducted_decrements_the_balance) {
  const auto cs = read_model::fold(sample(credits_deducted{"txn_2", 5, 995, "fee", {}}), 0);
  // With the day's report (written before grants, so paid credits) and the grant side, left to Redis.
  ASSERT_EQ(cs.size(), 5u);
  const auto* grant_side = find(cs, "CREDITS.LEGACY", "credits:grants:{acc_0123456789abcdef01234567}");
  ASSERT_NE(grant_side, nullptr);
  EXPECT_EQ(*grant_side,
            (words{"CREDITS.LEGACY", "credits:grants:{acc_0123456789abcdef01234567}", "take-charge",
                   "credits:grant:{acc_0123456789abcdef01234567}", "5", "txn_2", "", "2025-11-29T16:01:22.123Z", "",
                   "credits:legacy-draws:{acc_0123456789abcdef01234567}"}));
  const auto j = nlohmann::json::parse(find(cs, "HSET", "credits:transaction:{acc_0123456789abcdef01234567}")->at(3));
  EXPECT_EQ(j["type"], "debit");
  EXPECT_EQ(j["amount"], -5);
  EXPECT_EQ(delta(cs, account_hash, "balance"), "-5");
}

TEST(fold, credits_reserved_holds_the_amount_and_records_a_pending_reservation) {
  const time_ms expires = occurred + 60'000;
  const auto cs = read_model::fold(sample(credits_reserved{"rsv_1", 500, expires, "chat", "gpt-4o", {{"k", 1}}}), 0);
  ASSERT_EQ(cs.size(), 4u);  // and the grant side of a hold made before grants, left to Redis
  const auto* grant_side = find(cs, "CREDITS.LEGACY", "credits:grants:{acc_0123456789abcdef01234567}");
  ASSERT_NE(grant_side, nullptr);
  EXPECT_EQ((*grant_side)[2], "take-hold");
  EXPECT_EQ((*grant_side)[5], rsv_hash);
  EXPECT_EQ(delta(cs, account_hash, "reserved"), "500");
  EXPECT_EQ(find(cs, "HINCRBY", account_hash, "balance"), nullptr);
  const auto* hset = find(cs, "HSET", rsv_hash);
  ASSERT_NE(hset, nullptr);
  const auto f = hset_fields(*hset);
  EXPECT_EQ(f.at("id"), "rsv_1");
  EXPECT_EQ(f.at("accountId"), account);
  EXPECT_EQ(f.at("amount"), "500");
  EXPECT_EQ(f.at("status"), "pending");
  EXPECT_EQ(f.at("createdAt"), "2025-11-29T16:01:22.123Z");
  EXPECT_EQ(f.at("expiresAt"), "2025-11-29T16:02:22.123Z");
  EXPECT_EQ(f.at("operation"), "chat");
  EXPECT_EQ(f.at("model"), "gpt-4o");
  EXPECT_EQ(nlohmann::json::parse(f.at("metadata")), (nlohmann::json{{"k", 1}}));
  const auto* zadd = find(cs, "ZADD", "credits:reservations:{acc_0123456789abcdef01234567}");
  ASSERT_NE(zadd, nullptr);
  EXPECT_EQ(*zadd, (words{"ZADD", "credits:reservations:{acc_0123456789abcdef01234567}", "1764432082123", "rsv_1"}));
}

TEST(fold, confirming_320_of_500_releases_the_whole_hold_and_charges_320) {
  const auto cs = read_model::fold(sample(reservation_confirmed{"rsv_1", "txn_3", 320, 180, 680}), 0);
  ASSERT_EQ(cs.size(), 7u);  // with the day's report and the grant side, left to Redis (no hold draws known)
  const auto* grant_side = find(cs, "CREDITS.LEGACY", "credits:grants:{acc_0123456789abcdef01234567}");
  ASSERT_NE(grant_side, nullptr);
  EXPECT_EQ((*grant_side)[2], "confirm");
  const auto j = nlohmann::json::parse(find(cs, "HSET", "credits:transaction:{acc_0123456789abcdef01234567}")->at(3));
  EXPECT_EQ(j["type"], "charge");
  EXPECT_EQ(j["amount"], -320);
  EXPECT_EQ(j["balanceAfter"], 680);
  EXPECT_EQ(j["reservationId"], "rsv_1");
  EXPECT_EQ(delta(cs, account_hash, "reserved"), "-500");
  EXPECT_EQ(delta(cs, account_hash, "balance"), "-320");
  const auto* hset = find(cs, "HSET", rsv_hash);
  ASSERT_NE(hset, nullptr);
  const auto f = hset_fields(*hset);
  EXPECT_EQ(f.at("status"), "confirmed");
  EXPECT_EQ(f.at("charged"), "320");
  EXPECT_EQ(f.at("released"), "180");
  EXPECT_EQ(f.at("transactionId"), "txn_3");
  EXPECT_EQ(f.at("resolvedAt"), "2025-11-29T16:01:22.123Z");
}

TEST(fold, cancelling_releases_the_hold_without_touching_the_balance) {
  const auto cs = read_model::fold(sample(reservation_cancelled{"rsv_1", 500}), 0);
  ASSERT_EQ(cs.size(), 3u);  // with the grant side, left to Redis
  EXPECT_EQ(cs.back()[2], "release");
  EXPECT_EQ(delta(cs, account_hash, "reserved"), "-500");
  EXPECT_EQ(find(cs, "HINCRBY", account_hash, "balance"), nullptr);
  const auto f = hset_fields(*find(cs, "HSET", rsv_hash));
  EXPECT_EQ(f.at("status"), "cancelled");
  EXPECT_EQ(f.at("released"), "500");
  EXPECT_EQ(f.at("resolvedAt"), "2025-11-29T16:01:22.123Z");
}

TEST(fold, expiry_releases_the_hold_without_touching_the_balance) {
  const auto cs = read_model::fold(sample(reservation_expired{"rsv_1", 250}), 0);
  ASSERT_EQ(cs.size(), 3u);  // with the grant side, left to Redis
  EXPECT_EQ(cs.back()[2], "release");
  EXPECT_EQ(delta(cs, account_hash, "reserved"), "-250");
  EXPECT_EQ(find(cs, "HINCRBY", account_hash, "balance"), nullptr);
  const auto f = hset_fields(*find(cs, "HSET", rsv_hash));
  EXPECT_EQ(f.at("status"), "expired");
  EXPECT_EQ(f.at("released"), "250");
}

TEST(fold, usage_records_the_usage_and_counts_it_per_model_on_its_utc_day) {
  // 23:59:59.999 UTC on 2025-11-29: the day is the UTC date, not a local one.
  auto e = sample(usage_recorded{"use_1", "customer", "txn_3", "gpt-4o", "text", 1000, 320, 7, {}});
  e.occurred_at = 1'764'460'799'999;
  const auto cs = read_model::fold(e, 0);
  ASSERT_EQ(cs.size(), 14u);  // the record, 4 daily counters, its index entry, 4 + 4 summary counters
  const std::string summary = "credits:usage-summary:{acc_0123456789abcdef01234567}:2025-11-29";
  EXPECT_EQ(delta(cs, summary, "customer|inputTokens|gpt-4o"), "1000");
  EXPECT_EQ(delta(cs, summary, "customer|records|gpt-4o"), "1");
  EXPECT_EQ(delta(cs, "credits:usage-summary:tenant:{t1}:2025-11-29", "customer|outputTokens|gpt-4o"), "320");
  const auto* hset = find(cs, "HSET", "credits:usage:{acc_0123456789abcdef01234567}:use_1");
  ASSERT_NE(hset, nullptr);
  const auto f = hset_fields(*hset);
  EXPECT_EQ(f.at("id"), "use_1");
  EXPECT_EQ(f.at("accountId"), account);
  EXPECT_EQ(f.at("context"), "customer");
  EXPECT_EQ(f.at("transactionId"), "txn_3");
  EXPECT_EQ(f.at("modelId"), "gpt-4o");
  EXPECT_EQ(f.at("usageType"), "text");
  EXPECT_EQ(f.at("inputTokens"), "1000");
  EXPECT_EQ(f.at("outputTokens"), "320");
  EXPECT_EQ(f.at("cachedTokens"), "7");
  EXPECT_EQ(f.at("createdAt"), "2025-11-29T23:59:59.999Z");
  const std::string daily = "credits:usage-daily:{acc_0123456789abcdef01234567}:2025-11-29";
  EXPECT_EQ(delta(cs, daily, "gpt-4o:inputTokens"), "1000");
  EXPECT_EQ(delta(cs, daily, "gpt-4o:outputTokens"), "320");
  EXPECT_EQ(delta(cs, daily, "gpt-4o:cachedTokens"), "7");
  EXPECT_EQ(delta(cs, daily, "gpt-4o:records"), "1");
  EXPECT_EQ(find(cs, "HINCRBY", account_hash), nullptr);  // usage moves no credits
}

TEST(fold, a_reservation_lifecycle_sums_to_the_domain_balance) {
  // Replaying the fold's deltas by hand must give what the domain says: 1000 - 320 = 680, nothing held.
  std::map<std::string, std::int64_t> sums;
  for (const auto& payload : std::vector<event_payload>{
           account_created{"A", "u", "", {}}, credits_added{"txn_1", 1000, 1000, "", "", {}},
           credits_reserved{"rsv_1", 500, occurred, "", "", {}}, reservation_confirmed{"rsv_1", "txn_2", 320, 180, 680},
           credits_reserved{"rsv_2", 100, occurred, "", "", {}}, reservation_cancelled{"rsv_2", 100}})
    for (const auto& c : read_model::fold(sample(payload), 0))
      if (c[0] == "HINCRBY" && c[1] == account_hash) sums[c[2]] += std::stoll(c[3]);
  EXPECT_EQ(sums["balance"], 680);
  EXPECT_EQ(sums["reserved"], 0);
}

// What a pipeline of the fold's write commands leaves in Redis, for comparing two pipelines.
class write_model {
 public:
  void run(const words& c) {
    const auto& verb = c.at(0);
    const auto& key = c.at(1);
    if (verb == "HSET") {
      for (std::size_t i = 2; i + 1 < c.size(); i += 2) hashes_[key][c[i]] = c[i + 1];
    } else if (verb == "HSETNX") {
      hashes_[key].try_emplace(c.at(2), c.at(3));
    } else if (verb == "HINCRBY") {
      auto& v = hashes_[key][c.at(2)];
      v = std::to_string((v.empty() ? 0 : std::stoll(v)) + std::stoll(c.at(3)));
    } else if (verb == "ZADD") {
      for (std::size_t i = 2; i + 1 < c.size(); i += 2) zsets_[key][c[i + 1]] = c[i];
    } else if (verb == "ZREM") {
      for (std::size_t i = 2; i < c.size(); ++i) zsets_[key].erase(c[i]);
    } else if (verb == "SADD") {
      for (std::size_t i = 2; i < c.size(); ++i) sets_[key].insert(c[i]);
    } else {
      ADD_FAILURE() << "unexpected command " << verb;
    }
  }
  void run(const commands& cs) {
    for (const auto& c : cs) run(c);
  }
  bool operator==(const write_model&) const = default;
  std::string field(const std::string& key, const std::string& name) const {
    const auto h = hashes_.find(key);
    if (h == hashes_.end()) return "";
    const auto f = h->second.find(name);
    return f == h->second.end() ? "" : f->second;
  }
  bool in_zset(const std::string& key, const std::string& member) const {
    const auto z = zsets_.find(key);
    return z != zsets_.end() && z->second.contains(member);
  }

 private:
  std::map<std::string, std::map<std::string, std::string>> hashes_;
  std::map<std::string, std::map<std::string, std::string>> zsets_;  // member -> score
  std::map<std::string, std::set<std::string>> sets_;
};

TEST(coalesce, random_pipelines_leave_the_same_writes_in_fewer_commands) {
  std::mt19937 rng(20261129);
  const auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  for (int round = 0; round < 1000; ++round) {
    commands cs;
    const int length = 1 + pick(30);
    for (int i = 0; i < length; ++i) {
      const auto key = "k" + std::to_string(pick(4));
      const auto field = [&] { return "f" + std::to_string(pick(3)); };
      switch (pick(6)) {
        case 0:
          cs.push_back({"HSET", key, field(), std::to_string(pick(9))});
          break;
        case 1:
          cs.push_back({"HSET", key, field(), "7", field(), "8"});
          break;
        case 2:
          cs.push_back({"HINCRBY", key, field(), std::to_string(pick(11) - 5)});
          break;
        case 3:
          cs.push_back({"ZADD", "z" + key, std::to_string(pick(9)), field(), std::to_string(pick(9)), field()});
          break;
        case 4:
          cs.push_back({"HSETNX", key, field(), "5"});
          break;
        default:
          cs.push_back({"SADD", "s" + key, field()});
          break;
      }
    }
    write_model plain, merged;
    plain.run(cs);
    const auto coalesced = read_model::coalesce(cs);
    merged.run(coalesced);
    ASSERT_TRUE(plain == merged) << "round " << round;
    EXPECT_LE(coalesced.size(), cs.size());
  }
}

TEST(coalesce, an_accounts_events_in_one_batch_share_their_commands) {
  commands cs;
  std::int64_t offset = 0;
  const std::string g1 = "grt_0123456789abcdef01234567a1";
  read_model::fold_memory memory(100);
  for (const auto& payload :
       std::vector<event_payload>{account_created{"A", "u", "", {}}, credits_added{"txn_1", 1000, 1000, "", "", {}, g1},
                                  credits_added{"txn_2", 50, 1050, "", "", {}},
                                  credits_reserved{"rsv_1", 500, occurred, "", "", {}, grant_draws{{g1, 500}}},
                                  reservation_confirmed{"rsv_1", "txn_3", 320, 180, 730, grant_draws{{g1, 320}}}}) {
    read_model::fold_facts missing;
    const auto e = sample(payload);
    for (auto& c : read_model::fold(e, offset++, memory.context(e, missing))) cs.push_back(std::move(c));
    memory.learn(e);
  }
  const auto coalesced = read_model::coalesce(cs);
  write_model plain, merged;
  plain.run(cs);
  merged.run(coalesced);
  EXPECT_TRUE(plain == merged);
  EXPECT_EQ(delta(coalesced, account_hash, "balance"), "730");
  EXPECT_EQ(delta(coalesced, account_hash, "reserved"), "0");
  // Each key keeps one HSET, one ZADD and one HINCRBY per field: the account (4), the tenant's accounts (1), the
  // account's grants hash (both grants' terms in one HSET, g1's held and charged: 3), the grants listing (1), the
  // day's report (2), the reservation and its index (2), the transactions and their entries (2).
  EXPECT_EQ(coalesced.size(), 15u) << cs.size() << " commands became " << coalesced.size();
}

// A grant's life folded as the projector folds it (contexts from a fold_memory that learns as it goes), checked
// field by field: each grant's counters, the balance by category and the tenant's report of the day.
TEST(fold_grants, every_movement_lands_on_its_grant_its_category_and_the_days_report) {
  const std::string g1 = "grt_0123456789abcdef01234567a1", g2 = "grt_0123456789abcdef01234567a2";
  const time_ms expires = occurred + 3'600'000;
  auto promo = credits_added{"txn_a1", 100, 100, "trial", "", {}, g1, expires, 10, grant_category::promotional};
  auto paid = credits_added{
      "txn_a2", 50, 150, "top-up", "card", {}, g2, std::nullopt, 50, grant_category::paid, cost_basis{999, "USD"}};
  auto deduct = credits_deducted{"txn_d", 50, 100, "", {}, grant_draws{{g1, 40}, {g2, 10}}};
  auto confirm = reservation_confirmed{"rsv_1", "txn_c", 20, 40, 80, grant_draws{{g1, 20}}};
  auto expiry = credits_deducted{"txn_x", 40, 40, "", {}, grant_draws{{g1, 40}}, std::string(reason_grant_expired), g1};
  auto refund = transaction_reversed{"txn_r", "txn_d", "CreditsDeducted", 10, 50, "", {}, grant_draws{{g2, 10}}};
  auto correct = transaction_reversed{"txn_k", "txn_a2", "CreditsAdded", 5, 45, "", {}, grant_draws{{g2, 5}}};
  const std::vector<event_payload> log{account_created{"A", "u", "", {}},
                                       promo,
                                       paid,
                                       credits_reserved{"rsv_1", 60, expires, "", "", {}, grant_draws{{g1, 60}}},
                                       deduct,
                                       confirm,
                                       expiry,
                                       refund,
                                       correct};
  read_model::fold_memory memory(100);
  write_model view;
  std::int64_t offset = 0;
  for (const auto& payload : log) {
    const auto e = sample(payload);
    read_model::fold_facts missing;
    const auto context = memory.context(e, missing);
    EXPECT_TRUE(missing.grants.empty() && missing.reservation.empty()) << type_name(e.payload);
    view.run(read_model::fold(e, offset++, context));
    memory.learn(e);
  }
  // A grant as the reads see it: its terms, counters and status from the account's grants hash (layout.hpp).
  const auto grant = [&](const std::string& id, const char* name) {
    std::vector<std::optional<std::string>> values;
    for (const auto& f : read_model::grant_fields(id)) {
      auto v = view.field(read_model::grant_key(account), f);
      values.push_back(v.empty() ? std::nullopt : std::optional(std::move(v)));
    }
    const auto h = read_model::grant_hash(id, values);
    const auto it = h.find(name);
    return it == h.end() ? std::string() : it->second;
  };
  // What is left is not kept (layout.hpp): amount + refunded - held - charged - expired - voided - corrected.
  const auto left = [&](const std::string& id) {
    const auto n = [&](const char* name) { return grant(id, name).empty() ? 0 : std::stoll(grant(id, name)); };
    EXPECT_EQ(grant(id, "remaining"), "");
    return n("amount") + n("refunded") - n("held") - n("charged") - n("expired") - n("voided") - n("corrected");
  };
  // g1 (promotional, 100): 60 held, of which 20 charged and 40 returned; 40 deducted; the 40 returned expired.
  EXPECT_EQ(left(g1), 0);
  EXPECT_EQ(grant(g1, "held"), "0");
  EXPECT_EQ(grant(g1, "charged"), "60");
  EXPECT_EQ(grant(g1, "expired"), "40");
  EXPECT_EQ(grant(g1, "status"), "expired");
  EXPECT_EQ(grant(g1, "category"), "promotional");
  EXPECT_EQ(grant(g1, "priority"), "10");
  EXPECT_EQ(grant(g1, "expiresAt"), format_time(expires));
  EXPECT_FALSE(view.in_zset(read_model::grant_expiries_key(account), g1)) << "an expired grant expires no more";
  // g2 (paid, 50): 10 deducted and refunded, 5 corrected.
  EXPECT_EQ(left(g2), 45);
  EXPECT_EQ(grant(g2, "charged"), "10");
  EXPECT_EQ(grant(g2, "refunded"), "10");
  EXPECT_EQ(grant(g2, "corrected"), "5");
  EXPECT_EQ(grant(g2, "costAmount"), "999");
  EXPECT_EQ(grant(g2, "costCurrency"), "USD");
  EXPECT_EQ(grant(g2, "status"), "active");
  EXPECT_EQ(view.field(rsv_hash, "draws"), R"([{"amount":60,"grantId":")" + g1 + R"("}])");
  // The balance is 45, all of it paid: the promotional part went to charges.
  EXPECT_EQ(view.field(account_hash, "balance"), "45");
  EXPECT_EQ(view.field(account_hash, "promotional"), "0");
  const auto report = read_model::grant_report_key("t1", "2025-11-29");
  const auto figure = [&](const char* metric, const char* category) {
    return view.field(report, read_model::grant_report_field(metric, category));
  };
  EXPECT_EQ(figure("granted", "promotional"), "100");
  EXPECT_EQ(figure("granted", "paid"), "50");
  EXPECT_EQ(figure("consumed", "promotional"), "60");
  EXPECT_EQ(figure("consumed", "paid"), "10");
  EXPECT_EQ(figure("expired", "promotional"), "40");
  EXPECT_EQ(figure("refunded", "paid"), "10");
  EXPECT_EQ(figure("corrected", "paid"), "5");
}

TEST(fold_grants, the_memory_names_what_it_lacks_and_a_lookup_completes_the_context) {
  const std::string g1 = "grt_0123456789abcdef01234567a1";
  const auto confirm = sample(reservation_confirmed{"rsv_1", "txn_c", 20, 40, 40, grant_draws{{g1, 20}}});
  read_model::fold_memory memory(100);
  read_model::fold_facts missing;
  auto context = memory.context(confirm, missing);
  EXPECT_EQ(missing.grants, words{g1});
  EXPECT_EQ(missing.reservation, "rsv_1");
  const auto reads = read_model::fold_memory::lookups(account, missing);
  ASSERT_EQ(reads.size(), 2u);
  EXPECT_EQ(reads[0], (words{"HGET", read_model::grant_key(account), g1}));  // its terms
  EXPECT_EQ(reads[1], (words{"HGET", rsv_hash, "draws"}));
  memory.complete(context, missing,
                  {R"({"amount":100,"category":"promotional"})", R"([{"grantId":")" + g1 + R"(","amount":60}])"});
  EXPECT_EQ(context.categories.at(g1), grant_category::promotional);
  ASSERT_TRUE(context.hold);
  EXPECT_EQ(*context.hold, (grant_draws{{g1, 60}}));
  // The charge from the hold, the rest back to the grant, the promotional balance down by the charge.
  const auto cs = read_model::fold(confirm, 0, context);
  write_model view;
  view.run(cs);
  // (What is left of the grant, not kept, grows by the 40 returned: 60 less held, 20 more charged.)
  EXPECT_EQ(view.field(read_model::grant_key(account), read_model::grant_field(g1, "held")), "-60");
  EXPECT_EQ(view.field(read_model::grant_key(account), read_model::grant_field(g1, "charged")), "20");
  // One increment of each: the charged part and the rest leave `held` together.
  for (const char* counter : {"held", "charged"})
    EXPECT_EQ(
        std::count_if(cs.begin(), cs.end(),
                      [&](const words& c) { return c.size() > 2 && c[2] == read_model::grant_field(g1, counter); }),
        1)
        << counter;
  EXPECT_EQ(view.field(account_hash, "promotional"), "-20");
  // Remembered: the next look needs no lookup. Past its size, trim() forgets everything.
  EXPECT_EQ(memory.size(), 2u);
  memory.context(confirm, missing);
  EXPECT_TRUE(missing.grants.empty() && missing.reservation.empty());
  read_model::fold_memory small(1);
  small.complete(context, missing = read_model::fold_facts{{g1}, "rsv_1"}, {std::nullopt, std::nullopt});
  EXPECT_EQ(context.categories.at(g1), grant_category::paid) << "a grant the view does not hold counts as paid";
  EXPECT_FALSE(context.hold) << "a hold the view holds no draws of was made before grants";
  small.trim();
  EXPECT_EQ(small.size(), 0u);
}

TEST(coalesce, a_field_both_set_and_incremented_keeps_its_keys_commands_in_order) {
  const commands cs{{"HINCRBY", "k", "f", "1"},
                    {"HSET", "k", "f", "10"},
                    {"HINCRBY", "k", "f", "2"},
                    {"HINCRBY", "other", "g", "1"},
                    {"HINCRBY", "other", "g", "1"}};
  const commands expected{
      {"HINCRBY", "k", "f", "1"}, {"HSET", "k", "f", "10"}, {"HINCRBY", "k", "f", "2"}, {"HINCRBY", "other", "g", "2"}};
  EXPECT_EQ(read_model::coalesce(cs), expected);
}

TEST(guarded_apply, arguments_carry_the_position_then_each_command_prefixed_by_its_length) {
  const auto args = read_model::fold(sample(reservation_cancelled{"rsv_1", 500}), 0);
  const auto call = guarded_apply_args("sha1", "v1", "credits.ledger:3", 42, 40, args);
  // "v1" is the view's id and "1" the number of events; then the event's offset, the offset it follows, the number
  // of words after the next one, and the number of guards: none here.
  const words head{"EVALSHA", "sha1", "2", "credits:positions", "credits:view", "credits.ledger:3", "v1",
                   "1",       "42",   "40"};
  ASSERT_GE(call.size(), head.size() + 2);
  EXPECT_EQ(words(call.begin(), call.begin() + static_cast<std::ptrdiff_t>(head.size())), head);
  EXPECT_EQ(call[head.size()], std::to_string(call.size() - head.size() - 2));
  EXPECT_EQ(call[head.size() + 1], "0");
  std::size_t i = head.size() + 2;
  for (const auto& c : args) {
    ASSERT_LT(i, call.size());
    EXPECT_EQ(call[i], std::to_string(c.size()));
    EXPECT_EQ(words(call.begin() + static_cast<std::ptrdiff_t>(i + 1),
                    call.begin() + static_cast<std::ptrdiff_t>(i + 1 + c.size())),
              c);
    i += 1 + c.size();
  }
  EXPECT_EQ(i, call.size());
}

TEST(guarded_apply, a_call_with_no_guards_and_no_commands_only_advances_the_position) {
  EXPECT_EQ(guarded_apply_args("sha1", "v1", "credits.usage:0", 7, -1, {}),
            (words{"EVALSHA", "sha1", "2", "credits:positions", "credits:view", "credits.usage:0", "v1", "1", "7", "-1",
                   "0", "0"}));
}

TEST(guarded_apply, a_run_carries_each_event_after_the_one_before_it_and_tallies_lose_their_verb) {
  const commands first{{"HINCRBY", "credits:account:{a}", "balance", "5"}};
  const commands second{
      {"HINCRBY", std::string(read_model::grant_report_prefix) + "tenant:{t}:2026-12-05", "granted|paid", "5"}};
  const commands none;
  const auto call =
      guarded_apply_args("sha1", "v1", "credits.ledger:3", {{42, 40, first, none, none}, {43, 42, second, none, none}});
  const words expected{"EVALSHA", "sha1", "2", "credits:positions", "credits:view", "credits.ledger:3", "v1", "2",
                       // the first event: a command of 4 words
                       "42", "40", "5", "0", "4", "HINCRBY", "credits:account:{a}", "balance", "5",
                       // the second: a tally, -3 then its key, field and delta
                       "43", "42", "4", "0", "-3", second[0][1], "granted|paid", "5"};
  EXPECT_EQ(call, expected);
}

TEST(guarded_apply, the_wire_form_is_the_arguments_in_resp) {
  EXPECT_EQ(read_model::resp({"HGET", "k", ""}), "*3\r\n$4\r\nHGET\r\n$1\r\nk\r\n$0\r\n\r\n");
  const auto first = read_model::fold(sample(credits_added{"txn_1", 1000, 1000, "d", "card", {}}), 41);
  const auto second =
      read_model::fold(sample(usage_recorded{"use_1", "customer", "txn_3", "gpt-4o", "text", 1000, 320, 7, {}}), 42);
  const commands none, guards{{"present", "k", "id", "why"}};
  const std::vector<guarded_event> run{{41, 40, first, guards, none}, {42, 41, second, none, none}};
  EXPECT_EQ(guarded_apply_command("sha1", "v1", "credits.ledger:3", run),
            read_model::resp(guarded_apply_args("sha1", "v1", "credits.ledger:3", run)));
}

TEST(guarded_apply, tallies_are_the_report_counters_only) {
  const auto e = sample(usage_recorded{"use_1", "customer", "txn_3", "gpt-4o", "text", 1000, 320, 7, {}});
  std::size_t tallies = 0;
  for (const auto& c : read_model::fold(e, 5))
    if (read_model::is_tally(c)) {
      ++tallies;
      EXPECT_EQ(c[0], "HINCRBY");
    }
  EXPECT_EQ(tallies, 12u);  // daily usage (4) and the account's and the tenant's summaries (4 each)
  EXPECT_FALSE(read_model::is_tally({"HINCRBY", read_model::account_key("a"), "balance", "1"}));
  EXPECT_FALSE(read_model::is_tally({"HINCRBY", read_model::grant_key("a"), "grt_1|held", "1"}));
  EXPECT_FALSE(read_model::is_tally({"HSET", read_model::usage_daily_key("a", "2026-12-05"), "f", "1"}));
}

// ---- Redis Cluster ----------------------------------------------------------------------------------------

TEST(split_by_tag, the_account_part_comes_first_with_the_guards_and_the_tenant_counters_go_apart) {
  const auto e = sample(usage_recorded{"use_1", "customer", "txn_3", "gpt-4o", "text", 1000, 320, 7, {}});
  const auto cs = read_model::fold(e, 5);
  const commands guards{{"present", account_hash, "id", "no account"}};
  const auto parts = split_by_tag(cs, guards, account);
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].tag, account);
  EXPECT_EQ(parts[0].guards, guards);
  EXPECT_EQ(parts[1].tag, "t1");
  EXPECT_TRUE(parts[1].guards.empty());
  EXPECT_EQ(parts[0].commands.size() + parts[1].commands.size(), cs.size());
  for (const auto& part : parts)
    for (const auto& c : part.commands) EXPECT_EQ(read_model::hash_tag(c[1]), part.tag) << c[1];
  EXPECT_EQ(parts[1].commands.size(), 4u);  // the tenant's four summary counters
}

TEST(split_by_tag, an_event_without_commands_still_has_its_account_part) {
  const auto parts = split_by_tag({}, {}, account);
  ASSERT_EQ(parts.size(), 1u);
  EXPECT_EQ(parts[0].tag, account);
}

TEST(cluster_apply, declares_every_key_once_after_the_applied_key_then_the_layout_of_guarded_apply) {
  const tag_part part{account,
                      {{"HINCRBY", account_hash, "balance", "5"},
                       {"HSET", rsv_hash, "status", "x"},
                       {"HINCRBY", account_hash, "reserved", "1"}},
                      {{"present", account_hash, "id", "no account"}}};
  const auto call = cluster_apply_args("sha1", part, "account:credits.ledger:3", 42, std::nullopt);
  const words head{"EVALSHA",
                   "sha1",
                   "3",
                   "credits:applied:{" + account + "}",
                   account_hash,
                   rsv_hash,
                   "account:credits.ledger:3",
                   "42",
                   "",
                   "",
                   "1",
                   "4",
                   "present",
                   account_hash,
                   "id",
                   "no account"};
  ASSERT_GE(call.size(), head.size());
  EXPECT_EQ(words(call.begin(), call.begin() + static_cast<std::ptrdiff_t>(head.size())), head);
  EXPECT_EQ(call.size(), head.size() + 3 * 5);
  EXPECT_EQ(cluster_apply_args("sha1", part, "account:credits.ledger:3", 42, 40)[8], "40");
}

TEST(describe, names_each_topic_once_and_shows_start_for_the_beginning) {
  EXPECT_EQ(describe({{"credits.ledger", 0, 12}, {"credits.ledger", 1, 0}, {"credits.usage", 0, 3}}),
            "credits.ledger 0@12 1@start; credits.usage 0@3");
}

env_lookup env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> const char* {
    const auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

TEST(projector_config, defaults_apply_when_nothing_is_set) {
  const auto parsed = projector_config_from_env(env({}));
  ASSERT_TRUE(std::holds_alternative<projector_config>(parsed)) << std::get<std::string>(parsed);
  const auto& c = std::get<projector_config>(parsed);
  EXPECT_EQ(c.brokers, "127.0.0.1:9092");
  EXPECT_EQ(c.redis_host, "127.0.0.1");
  EXPECT_EQ(c.redis_port, 6379);
  EXPECT_EQ(c.ledger_topic, "credits.ledger");
  EXPECT_EQ(c.usage_topic, "credits.usage");
  EXPECT_EQ(c.batch_events_max, 1000u);
  EXPECT_EQ(c.fetch_wait_ms, 10);
}

TEST(projector_config, every_variable_is_read) {
  const auto parsed = projector_config_from_env(env({{"CREDITS_KAFKA_BROKERS", "k:1"},
                                                     {"CREDITS_REDIS_HOST", "r"},
                                                     {"CREDITS_REDIS_PORT", "7000"},
                                                     {"CREDITS_LEDGER_TOPIC", "l"},
                                                     {"CREDITS_USAGE_TOPIC", "u"},
                                                     {"CREDITS_PROJECTOR_BATCH_EVENTS_MAX", "50"},
                                                     {"CREDITS_PROJECTOR_FETCH_WAIT_MS", "0"},
                                                     {"CREDITS_PROJECTOR_FOLD_FACTS_MAX", "1000"}}));
  ASSERT_TRUE(std::holds_alternative<projector_config>(parsed)) << std::get<std::string>(parsed);
  const auto& c = std::get<projector_config>(parsed);
  EXPECT_EQ(c.fold_facts_max, 1000u);
  EXPECT_EQ(c.brokers, "k:1");
  EXPECT_EQ(c.redis_host, "r");
  EXPECT_EQ(c.redis_port, 7000);
  EXPECT_EQ(c.ledger_topic, "l");
  EXPECT_EQ(c.usage_topic, "u");
  EXPECT_EQ(c.batch_events_max, 50u);
  EXPECT_EQ(c.fetch_wait_ms, 0);
}

TEST(projector_config, bad_values_are_rejected_with_the_variable_named) {
  const std::vector<std::pair<std::string, std::string>> bad{
      {"CREDITS_REDIS_PORT", "abc"},
      {"CREDITS_REDIS_PORT", "0"},
      {"CREDITS_REDIS_PORT", "65536"},
      {"CREDITS_REDIS_PORT", "63 79"},
      {"CREDITS_PROJECTOR_BATCH_EVENTS_MAX", "0"},
      {"CREDITS_PROJECTOR_BATCH_EVENTS_MAX", "-5"},
      {"CREDITS_PROJECTOR_BATCH_EVENTS_MAX", "100001"},
      {"CREDITS_PROJECTOR_BATCH_EVENTS_MAX", "99999999999999999999999"},
      {"CREDITS_PROJECTOR_FETCH_WAIT_MS", "-1"},
      {"CREDITS_PROJECTOR_FETCH_WAIT_MS", "10ms"},
      {"CREDITS_PROJECTOR_FETCH_WAIT_MS", ""},
      {"CREDITS_PROJECTOR_FOLD_FACTS_MAX", "0"},
      {"CREDITS_PROJECTOR_FOLD_FACTS_MAX", "100000001"},
      {"CREDITS_KAFKA_BROKERS", ""},
  };
  for (const auto& [name, value] : bad) {
    const auto parsed = projector_config_from_env(env({{name, value}}));
    ASSERT_TRUE(std::holds_alternative<std::string>(parsed)) << name << "=" << value;
    EXPECT_NE(std::get<std::string>(parsed).find(name), std::string::npos) << std::get<std::string>(parsed);
  }
}

TEST(projector_config, the_two_topics_must_differ) {
  const auto parsed = projector_config_from_env(env({{"CREDITS_USAGE_TOPIC", "credits.ledger"}}));
  ASSERT_TRUE(std::holds_alternative<std::string>(parsed));
}

TEST(projector_config, without_a_group_id_the_projector_reads_every_partition_as_before) {
  for (const auto& vars : {std::map<std::string, std::string>{}, {{"CREDITS_PROJECTOR_GROUP_ID", ""}}}) {
    const auto parsed = projector_config_from_env(env(vars));
    ASSERT_TRUE(std::holds_alternative<projector_config>(parsed)) << std::get<std::string>(parsed);
    const auto& c = std::get<projector_config>(parsed);
    EXPECT_EQ(c.group_id, "");
    EXPECT_EQ(c.group_session_timeout_ms, 45'000);
    EXPECT_EQ(c.group_max_poll_interval_ms, 300'000);
    EXPECT_EQ(c.instance_id, "");  // the projector makes one from the host name and process id
  }
}

TEST(projector_config, the_group_settings_are_read) {
  const auto parsed = projector_config_from_env(env({{"CREDITS_PROJECTOR_GROUP_ID", "credits-projectors"},
                                                     {"CREDITS_PROJECTOR_SESSION_TIMEOUT_MS", "6000"},
                                                     {"CREDITS_PROJECTOR_MAX_POLL_INTERVAL_MS", "6000"},
                                                     {"CREDITS_PROJECTOR_INSTANCE_ID", "projector-2.eu_west"}}));
  ASSERT_TRUE(std::holds_alternative<projector_config>(parsed)) << std::get<std::string>(parsed);
  const auto& c = std::get<projector_config>(parsed);
  EXPECT_EQ(c.group_id, "credits-projectors");
  EXPECT_EQ(c.group_session_timeout_ms, 6000);
  EXPECT_EQ(c.group_max_poll_interval_ms, 6000);
  EXPECT_EQ(c.instance_id, "projector-2.eu_west");
}

TEST(projector_config, bad_group_settings_are_rejected_with_the_variable_named) {
  const std::vector<std::map<std::string, std::string>> bad{
      {{"CREDITS_PROJECTOR_SESSION_TIMEOUT_MS", "5999"}},  // below the broker's minimum
      {{"CREDITS_PROJECTOR_SESSION_TIMEOUT_MS", "1800001"}},
      {{"CREDITS_PROJECTOR_SESSION_TIMEOUT_MS", "6s"}},
      {{"CREDITS_PROJECTOR_MAX_POLL_INTERVAL_MS", "0"}},
      {{"CREDITS_PROJECTOR_MAX_POLL_INTERVAL_MS", "86400001"}},
      {{"CREDITS_PROJECTOR_SESSION_TIMEOUT_MS", "60000"}, {"CREDITS_PROJECTOR_MAX_POLL_INTERVAL_MS", "59999"}},
      {{"CREDITS_PROJECTOR_INSTANCE_ID", ""}},
      {{"CREDITS_PROJECTOR_INSTANCE_ID", "a b"}},
      {{"CREDITS_PROJECTOR_INSTANCE_ID", "a:b"}},
      {{"CREDITS_PROJECTOR_INSTANCE_ID", std::string(201, 'a')}},
  };
  for (const auto& vars : bad) {
    const auto parsed = projector_config_from_env(env(vars));
    ASSERT_TRUE(std::holds_alternative<std::string>(parsed)) << vars.begin()->first << "=" << vars.begin()->second;
    const auto& error = std::get<std::string>(parsed);
    EXPECT_NE(error.find(vars.rbegin()->first), std::string::npos) << error;
  }
}

}  // namespace
}  // namespace credits
