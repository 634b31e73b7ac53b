#include "credits/command_api/command_result.hpp"

#include <charconv>

#include "credits/common/assert.hpp"
#include "credits/common/overloaded.hpp"

namespace credits::api {
namespace {

// The reservation an answer shows in full: the one a reservation is created, cancelled or expired with.
const std::string* shown_reservation(const event_payload& payload) {
  return std::visit(overloaded{
                        [](const credits_reserved& p) { return &p.reservation_id; },
                        [](const reservation_cancelled& p) { return &p.reservation_id; },
                        [](const reservation_expired& p) { return &p.reservation_id; },
                        [](const auto&) -> const std::string* { return nullptr; },
                    },
                    payload);
}

}  // namespace

std::string log_position::to_string() const {
  return topic + ":" + std::to_string(partition) + ":" + std::to_string(offset);
}

std::optional<log_position> log_position::parse(std::string_view text) {
  // "<topic>:<partition>:<offset>", the numbers in decimal digits alone and short enough to fit (docs/openapi.yaml
  // states the same pattern): a sign, a space or an overflow is not a position.
  const auto number = [](std::string_view digits, std::size_t digits_max, auto& out) {
    if (digits.empty() || digits.size() > digits_max) return false;
    if (digits.find_first_not_of("0123456789") != std::string_view::npos) return false;
    const auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), out);
    return ec == std::errc{} && p == digits.data() + digits.size();
  };
  const auto last = text.rfind(':');
  if (last == std::string_view::npos || last == 0) return std::nullopt;
  const auto middle = text.rfind(':', last - 1);
  if (middle == std::string_view::npos || middle == 0) return std::nullopt;
  log_position p;
  p.topic = std::string(text.substr(0, middle));
  if (!number(text.substr(middle + 1, last - middle - 1), partition_digits_max, p.partition) ||
      !number(text.substr(last + 1), offset_digits_max, p.offset))
    return std::nullopt;
  return p;
}

account_facts facts_of(const event& e, const account_state& account) {
  account_facts facts{account.id, account.external_id, std::nullopt};
  if (const auto* id = shown_reservation(e.payload)) {
    const auto it = account.reservations.find(*id);
    CREDITS_ASSERT(it != account.reservations.end(), "answering for a reservation the state does not hold");
    facts.reservation = it->second;
  }
  return facts;
}

}  // namespace credits::api
