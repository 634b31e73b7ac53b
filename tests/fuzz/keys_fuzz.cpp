// libFuzzer target for the key log's codec (common/src/keys.cpp): bytes as they could come out of a record of
// the key log, which every credits-api decodes.
//
// Properties, for every input: decode_key_event() never throws, crashes or hangs, and a refusal says why; an
// event it accepts round-trips (decode(encode(e)) succeeds and encodes byte-identically) and folds into a key
// log state without breaking its rules (a key keeps its tenant; a revoked key stays revoked).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "credits/common/keys.hpp"
#include "fuzz_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace credits;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string why;
  const auto e = decode_key_event(text, &why);
  if (!e) {
    FUZZ_CHECK(!why.empty(), "a key event refused without a reason");
    return 0;
  }
  const auto once = encode(*e);
  const auto again = decode_key_event(once, &why);
  FUZZ_CHECK(again.has_value(), "an accepted key event does not decode after encoding");
  FUZZ_CHECK(encode(*again) == once, "a key event changed in a round trip");

  key_log_state state;
  apply(state, *e);
  const auto before = state.keys.at(e->key_id);
  apply(state, *again);  // the same event twice: a create is ignored, a revocation changes nothing more
  const auto& after = state.keys.at(e->key_id);
  FUZZ_CHECK(after.tenant == before.tenant && after.secret_hash == before.secret_hash, "a key changed owner or hash");
  FUZZ_CHECK(after.revoked_at.has_value() == before.revoked_at.has_value(), "applying an event twice changed it");
  return 0;
}
