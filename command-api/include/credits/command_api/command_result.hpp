#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "credits/common/domain.hpp"
#include "credits/common/events.hpp"

namespace credits::api {

// A position in the log, as clients see it: "<topic>:<partition>:<offset>".
struct log_position {
  // The longest numbers parse() takes, in decimal digits: each fits its type whatever the digits.
  static constexpr std::size_t partition_digits_max = 9;
  static constexpr std::size_t offset_digits_max = 18;

  std::string topic;
  std::int32_t partition = -1;
  std::int64_t offset = -1;

  std::string to_string() const;
  static std::optional<log_position> parse(std::string_view text);
};

// What answering a command reads of its account besides the event: the immutable fields and the reservation the
// event names. A copy, taken on the writer thread, so the answer can be rendered on any thread, now or later,
// and always the same way.
struct account_facts {
  std::string id;
  std::string external_id;
  std::optional<reservation_state> reservation;  // the one the event names, if it names one
};

// The facts of `account` that rendering `e` reads.
account_facts facts_of(const event& e, const account_state& account);

// The command's event is in the log (or was already: a retry with the same Idempotency-Key answered from the
// first attempt). `e` is the command's own event; the signals it caused follow it in the log and answer nothing.
struct accepted {
  event e;
  account_facts account;
  log_position position;
  bool replayed = false;
};

// Why a command was neither decided nor written now: the client retries later.
enum class unavailable_reason {
  busy,                     // the writer's queue is full or it is recovering
  partition_moved,          // the writer was fenced: its partition has a newer owner
  log_unavailable,          // the Kafka transaction aborted
  outcome_unknown,          // the Kafka transaction may or may not have committed
  first_answer_unreadable,  // a retry whose first answer cannot be read from the log now
};
struct unavailable {
  unavailable_reason reason = unavailable_reason::busy;
};

// A command with the same Idempotency-Key is queued or being written.
struct in_flight {};

// Another instance owns the account's partition (ownership.hpp).
struct elsewhere {};

// Every way a command can end, named; the HTTP side alone turns it into a status and a body (responses.hpp).
// The writer answers with the first three; submitting answers the last three without queuing.
using command_result = std::variant<accepted, rejection, unavailable, in_flight, elsewhere>;

}  // namespace credits::api
