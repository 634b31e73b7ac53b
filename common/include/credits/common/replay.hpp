#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "credits/common/domain.hpp"

// Folding the log as it is, not as it should be: one record of the ledger or usage topic at a time, where a record
// that cannot be folded costs its own account and nothing else. The writer replays with it; verify and the
// projector judge records by the same rules (admission_error, violation), so every fold refuses the same records.
namespace credits {

// One record of the ledger or usage topic, as read from Kafka.
struct log_record {
  std::string_view topic;
  stream topic_stream = stream::ledger;  // what the topic carries: ledger or usage
  std::int32_t partition = 0;
  std::int32_t home_partition = 0;  // the partition its key hashes to (store::partition_of_key)
  std::int64_t offset = 0;
  std::string_view key;
  std::string_view value;
};

// "<topic>:<partition>:<offset>", the position as the account_blocked answer, the view's credits:poison and
// EventVoided name it.
std::string position_of(const log_record& r);

// Why a decoded event read from a record cannot be folded, judged on the record alone, or nullopt. Every event of
// an account must sit in its key's partition of the right topic, or its order against the account's other events
// would depend on how partitions interleave (and a rebuild could fold differently from the live projector);
// amounts outside 0..amount_max could overflow the fold.
std::optional<std::string> admission_error(const event& e, std::string_view key, stream topic_stream,
                                           std::int32_t partition, std::int32_t home_partition);

struct replayed {
  enum class outcome {
    applied,      // `e` is folded into the state
    quarantined,  // refused: the record's key names the account it blocks (ledger_state::quarantined)
    unkeyed,      // refused, and no account can be told: it blocks nothing
  };
  outcome result = outcome::applied;
  std::optional<event> e;  // the decoded event, when the record decodes
  std::string reason;      // why it was refused
};

// Folds the record into `state` when it decodes, passes admission_error and breaks no invariant (violation);
// otherwise quarantines the account its key names. A quarantined account's later records are still folded when
// they pass, as the projector does; EventVoided takes a quarantined record off its account. Never aborts, whatever
// the record holds.
replayed replay(ledger_state& state, const log_record& r);

}  // namespace credits
