// libFuzzer target for the writer's replay path (common/src/replay.cpp): a partition of the ledger topic as a
// buggy producer could have left it. The input is split at '\n' into records; a record's first byte picks its key
// (one of a few accounts, or none) and its partition (its key's or another), the rest is its value, often an event
// of the seed corpus with a field changed.
//
// Properties, for every input:
//  - replay() never throws, aborts or hangs, whatever a record holds (an abort is the bug it exists to prevent);
//  - every account keeps the money invariants after every record: 0 <= reserved <= balance <= 2^53-1, and reserved
//    is the sum of its pending holds, each indexed by expiry;
//  - a refused record changes no account: the fold of the applied records alone is the state;
//  - a refused record with a key quarantines that key's account, and only an EventVoided takes it off again.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "credits/common/replay.hpp"
#include "fuzz_check.hpp"

namespace {

using namespace credits;

constexpr std::string_view accounts[] = {"acc_000000000000000000000001", "acc_000000000000000000000002",
                                         "acc_000000000000000000000003"};
constexpr std::int32_t home = 0;  // every key's partition here; the other partition is 1

void check_invariants(const ledger_state& state) {
  std::size_t pending = 0;
  for (const auto& [id, a] : state.accounts) {
    FUZZ_CHECK(0 <= a.reserved && a.reserved <= a.balance && a.balance <= amount_max,
               "an account breaks the money rules");
    amount_t held = 0;
    for (const auto& [rid, r] : a.reservations)
      if (r.status == reservation_status::pending) {
        held += r.amount;
        ++pending;
        FUZZ_CHECK(state.pending_by_expiry.contains({r.expires_at, rid}), "a pending hold is not indexed by expiry");
      }
    FUZZ_CHECK(held == a.reserved, "reserved is not the sum of the pending holds");
  }
  FUZZ_CHECK(pending == state.pending_by_expiry.size(), "the expiry index holds a hold that is not pending");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  ledger_state state;
  ledger_state applied_only;  // the fold of the records replay() applied, by apply() alone
  std::int64_t offset = 0;
  for (const auto line : lines_of(input)) {
    if (line.empty()) continue;
    const auto pick = static_cast<unsigned char>(line[0]);
    const std::string_view key = pick % 4 == 3 ? std::string_view() : accounts[pick % 4];
    const std::int32_t partition = (pick / 4) % 8 == 7 ? 1 : home;  // mostly in the right partition
    const log_record r{"credits.ledger", stream::ledger, partition, home, offset++, key, line.substr(1)};
    const auto quarantined_before =
        key.empty()
            ? 0
            : (state.quarantined.contains(std::string(key)) ? state.quarantined.at(std::string(key)).size() : 0);
    const auto out = replay(state, r);
    check_invariants(state);
    if (out.result == replayed::outcome::applied) {
      FUZZ_CHECK(out.e.has_value(), "an applied record without its event");
      FUZZ_CHECK(!violation(applied_only, *out.e), "replay() applied what apply() refuses");
      apply(applied_only, *out.e);
    } else {
      FUZZ_CHECK(!out.reason.empty(), "a refusal without a reason");
      if (out.result == replayed::outcome::quarantined) {
        FUZZ_CHECK(!key.empty(), "a record without a key quarantined an account");
        FUZZ_CHECK(state.quarantined.at(std::string(key)).size() >= quarantined_before,
                   "a refused record took a quarantined record off");
      }
    }
    FUZZ_CHECK(state.accounts == applied_only.accounts, "a refused record changed an account");
  }
  return 0;
}
