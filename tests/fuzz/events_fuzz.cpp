// libFuzzer target for the event codec (common/src/events.cpp): bytes as they could come out of a Kafka record.
//
// Properties, for every input:
//  - decode() never throws, crashes or hangs; a refusal always says why; an event is one JSON text (followed
//    by any other byte it is refused);
//  - an event that decodes reads every value faithfully: what encode() writes back for each field is the value
//    the input held (times as instants, and only real calendar dates), and metadata is an object on the wire;
//  - it round-trips: decode(encode(e)) succeeds, yields the same event, and encode() of that is byte-identical.
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "credits/common/events.hpp"
#include "fuzz_check.hpp"

namespace {

using nlohmann::json;
using namespace credits;

bool is_time_field(const std::string& key) { return key == "occurredAt" || key == "expiresAt"; }

// Exact equality: nlohmann's operator== compares an unsigned and a signed integer after a cast, so
// 18446744073709551615 would equal -1. The serialised forms differ whenever the values do.
bool same(const json& a, const json& b) { return a.dump() == b.dump(); }

bool same_ignoring_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

// A time decode() accepted must be a real RFC 3339 date and time: its calendar fields are those format_time()
// writes back for the same instant (only a leap second, :60, rolls over into the next minute).
void check_time(const std::string& read, const std::string& written) {
  const auto t = parse_time(read);
  const auto back = parse_time(written);
  FUZZ_CHECK(t.has_value(), "decode() accepted a time that parse_time refuses");
  FUZZ_CHECK(back.has_value(), "encode() wrote a time that parse_time refuses");
  FUZZ_CHECK(*t == *back, "a time changed in decoding");
  const bool leap_second = read.size() > 18 && read.compare(17, 2, "60") == 0;
  if (!leap_second)
    FUZZ_CHECK(same_ignoring_case(std::string_view(read).substr(0, 19), std::string_view(written).substr(0, 19)),
               "decode() accepted a time whose fields are not a calendar date and time");
}

// `out` is what encode() wrote for an event decoded from `in`; every field of `out` must hold the input's value.
void check_faithful(const json& in, const json& out) {
  FUZZ_CHECK(in.is_object() && out.is_object(), "a decoded event or payload that was not an object");
  for (const auto& [key, written] : out.items()) {
    const auto it = in.find(key);
    if (key == "metadata") {
      FUZZ_CHECK(written.is_object(), "metadata decoded to something other than an object");
      if (it == in.end() || it->is_null()) {
        FUZZ_CHECK(written.empty(), "absent metadata did not decode to {}");
      } else {
        FUZZ_CHECK(same(*it, written), "metadata changed in decoding");
      }
      continue;
    }
    FUZZ_CHECK(it != in.end(), "encode() wrote a field the decoded input did not have");
    if (key == "payload" || (written.is_object() && it->is_object())) {
      check_faithful(*it, written);  // a nested object (costBasis) keeps the fields it reads, drops the others
    } else if (written.is_array() && it->is_array() && !written.empty() && written.front().is_object()) {
      FUZZ_CHECK(written.size() == it->size(), "a list changed its length in decoding");
      for (std::size_t i = 0; i < written.size(); ++i) check_faithful(it->at(i), written.at(i));  // draws
    } else if (is_time_field(key)) {
      FUZZ_CHECK(it->is_string() && written.is_string(), "a time that is not a string");
      check_time(it->get<std::string>(), written.get<std::string>());
    } else {
      FUZZ_CHECK(same(*it, written), "a field changed in decoding");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string error;
  const auto e = decode(text, &error);
  if (!e) {
    FUZZ_CHECK(!error.empty(), "a refused event without a reason");
    return 0;
  }

  FUZZ_CHECK(!decode(std::string(text) + "]"), "an event followed by garbage still decodes");

  // decode() parsed it, so the text is JSON; nothing it read may differ from what it holds.
  const json in = json::parse(text);
  const json out = to_json(*e);
  check_faithful(in, out);

  const std::string once = encode(*e);
  std::string again_error;
  const auto again = decode(once, &again_error);
  FUZZ_CHECK(again.has_value(), "encode() wrote an event that decode() refuses");
  FUZZ_CHECK(again->occurred_at == e->occurred_at, "occurredAt changed in a round trip");
  FUZZ_CHECK(again->payload.index() == e->payload.index(), "the event type changed in a round trip");
  if (const auto* r = std::get_if<credits_reserved>(&e->payload))
    FUZZ_CHECK(std::get<credits_reserved>(again->payload).expires_at == r->expires_at,
               "expiresAt changed in a round trip");
  FUZZ_CHECK(same(to_json(*again), out), "a field changed in a round trip");
  FUZZ_CHECK(encode(*again) == once, "encode() is not a fixed point of decode()");
  return 0;
}
