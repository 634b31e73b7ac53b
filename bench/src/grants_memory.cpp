// What accounts and credit grants cost in the writer's memory. Folds --accounts accounts, each given --grants
// grants (every other one expiring, half of them promotional) and one deduction that draws from several, exactly
// as the writer folds them (decide, then apply), and reports the allocator's bytes and the RSS per account
// (created, one grant) and per further grant. Pure: no Kafka, no Redis.
//
//   credits-bench-grants [--accounts 20000] [--grants 20]
#include <cstdio>
#include <stdexcept>
#include <string>
#include <variant>

#include <nlohmann/json.hpp>

#include "credits/bench/args.hpp"
#include "credits/bench/memory.hpp"
#include "credits/common/domain.hpp"
#include "credits/common/ids.hpp"

namespace {

using namespace credits;
using bench::memory_now;
using nlohmann::json;

constexpr time_ms now_ms = 1'764'432'082'123;

void apply_all(ledger_state& state, const command& cmd, std::uint64_t& events) {
  auto d = decide(state, cmd, request_context{"t1", "key", "req", "", "", now_ms});
  if (const auto* r = std::get_if<rejection>(&d)) throw std::runtime_error("refused: " + r->message);
  for (auto& e : std::get<std::vector<event>>(d)) {
    e.event_id = "evt-" + std::to_string(++events);
    apply(state, e);
  }
}

std::string account_id(std::size_t i) { return derive_account_id("t1", "user_" + std::to_string(i)); }

add_credits grant(const std::string& account, std::size_t i, std::uint64_t bits) {
  add_credits c{account, 100, "", "", json::object(), child_id("txn", account, bits)};
  if (i % 2) c.expires_at = now_ms + 86'400'000 * static_cast<time_ms>(1 + i % 30);
  c.priority = static_cast<int>(i % 3) * 25;
  c.category = i % 4 < 2 ? grant_category::promotional : grant_category::paid;
  return c;
}

}  // namespace

int main(int argc, char** argv) try {
  std::size_t accounts = 20'000, grants = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--accounts")
      accounts = static_cast<std::size_t>(bench::number("--accounts", argv[i + 1], 1, 10'000'000));
    else if (flag == "--grants")
      grants = static_cast<std::size_t>(bench::number("--grants", argv[i + 1], 2, 100'000));
    else
      throw std::invalid_argument("unknown flag " + flag);
  }
  ledger_state state;
  std::uint64_t events = 0, bits = 1;
  const auto empty = memory_now();
  for (std::size_t a = 0; a < accounts; ++a) {
    const auto id = account_id(a);
    apply_all(state, create_account{id, "A", "user_" + std::to_string(a), "", json::object()}, events);
    apply_all(state, grant(id, 0, bits++), events);
  }
  const auto with_one = memory_now();
  for (std::size_t a = 0; a < accounts; ++a) {
    const auto id = account_id(a);
    for (std::size_t g = 1; g < grants; ++g) apply_all(state, grant(id, g, bits++), events);
    // One charge across several grants, so transactions carry draws as they do in use.
    apply_all(state, deduct_credits{id, 250, "", json::object(), child_id("txn", id, bits++)}, events);
  }
  const auto full = memory_now();
  const auto n = static_cast<double>(accounts);
  const auto extra = n * static_cast<double>(grants - 1);
  const json out{
      {"allocator", bench::allocator_name()},
      {"accounts", accounts},
      {"grantsPerAccount", grants},
      {"events", events},
      {"perAccountWithOneGrant",
       {{"heapBytes", (with_one.heap_bytes - empty.heap_bytes) / n},
        {"rssBytes", (with_one.rss_bytes - empty.rss_bytes) / n}}},
      {"perFurtherGrant",
       {{"heapBytes", (full.heap_bytes - with_one.heap_bytes) / extra},
        {"rssBytes", (full.rss_bytes - with_one.rss_bytes) / extra},
        {"note", "each grant is also a ledger transaction (its CreditsAdded); the deduction's share is included"}}},
  };
  std::puts(out.dump(2).c_str());
  return 0;
} catch (const std::exception& ex) {
  std::fprintf(stderr, "credits-bench-grants: %s\n", ex.what());
  return 2;
}
