// libFuzzer target for the key log's codec and fold (common/src/keys.cpp): a key log as it could come out of
// Kafka, which every credits-api decodes and folds. The input is split at '\n' into records.
//
// Properties, for every input:
//  - decode_key_event() never throws, crashes or hangs, and a refusal says why; an event it accepts round-trips
//    (decode(encode(e)) succeeds and encodes byte-identically);
//  - folding the accepted events in order, a key never changes tenant, hash, scope or creation time once the log
//    has told them, and a revoked key stays revoked at the time of its first revocation;
//  - apply() says whether it changed the state, and an event applied again right after itself changes nothing;
//  - the log folded a second time over its own fold changes nothing (a restart that re-reads the log).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "credits/common/keys.hpp"
#include "fuzz_check.hpp"

namespace {

using namespace credits;

bool same(const key_record& a, const key_record& b) {
  return a.key_id == b.key_id && a.tenant == b.tenant && a.secret_hash == b.secret_hash && a.scope == b.scope &&
         a.created_at == b.created_at && a.revoked_at == b.revoked_at;
}

bool same(const key_log_state& a, const key_log_state& b) {
  if (a.keys.size() != b.keys.size()) return false;
  for (const auto& [id, k] : a.keys) {
    const auto it = b.keys.find(id);
    if (it == b.keys.end() || !same(k, it->second)) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<key_event> log;
  key_log_state state;
  for (const auto line : lines_of(input)) {
    std::string why;
    const auto e = decode_key_event(line, &why);
    if (!e) {
      FUZZ_CHECK(!why.empty(), "a key event refused without a reason");
      continue;
    }
    const auto once = encode(*e);
    const auto again = decode_key_event(once, &why);
    FUZZ_CHECK(again.has_value(), "an accepted key event does not decode after encoding");
    FUZZ_CHECK(encode(*again) == once, "a key event changed in a round trip");
    log.push_back(*e);

    const auto before = state;
    const bool changed = apply(state, *e);
    FUZZ_CHECK(changed != same(before, state), "apply() misreports whether it changed the state");
    for (const auto& [id, was] : before.keys) {
      const auto& now = state.keys.at(id);  // a key is never forgotten
      FUZZ_CHECK(now.tenant == was.tenant, "a key changed tenant");
      FUZZ_CHECK(now.secret_hash == was.secret_hash && now.scope == was.scope && now.created_at == was.created_at,
                 "a key changed its hash, scope or creation time");
      FUZZ_CHECK(!was.revoked_at || now.revoked_at == was.revoked_at, "a revoked key was unrevoked or revoked again");
    }
    const auto after = state;
    std::string ignored;
    FUZZ_CHECK(!apply(state, *e, &ignored), "an event applied twice in a row changed the state the second time");
    FUZZ_CHECK(!ignored.empty(), "an event ignored without a reason");
    FUZZ_CHECK(same(after, state), "an event applied twice in a row changed the state the second time");
  }

  const auto folded = state;
  for (const auto& e : log) apply(state, e);
  FUZZ_CHECK(same(folded, state), "folding the log again over its own fold changed it");
  return 0;
}
