#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "credits/common/events.hpp"

// The write side of the Redis read model, whose only writer is the projector: the fold of one event into Redis
// commands over the key layout of credits/read_model/layout.hpp, the guards that keep its money invariants, and
// the marks of a poison event. Pure: no Redis connection here.
namespace credits::read_model {

// The Redis commands that fold one event into the read model. Pure: a function of the event alone, so the
// projector can apply it exactly once by guarding it with the partition's position (see projector.hpp).
// `offset` is the event's offset in its partition: it orders the account's list entries of equal time.
std::vector<std::vector<std::string>> fold(const event& e, std::int64_t offset);

// The conditions under which fold(e) keeps the money invariants that credits::apply asserts; the guarded
// script checks them before running any command, and refuses the event (a poison event) when one fails.
// Pure, like fold. Each guard is one of
//   {"absent",  key, field, reason}                  the hash field must not exist
//   {"present", key, field, reason}                  the hash field must exist
//   {"equals",  key, field, value, reason}           the hash field must hold exactly `value`
//   {"money",   key, balance delta, reserved delta, balanceAfter or "", reason}
//       after the deltas: 0 <= reserved <= balance <= amount_max, and balance == balanceAfter when given.
std::vector<std::vector<std::string>> guards(const event& e);

// The hash fields guards read. guard_state keeps only these.
inline constexpr std::string_view guarded_fields[] = {"id", "balance", "reserved", "status", "amount"};

// An in-memory copy of the fields guards read, kept up to date by the same commands the view receives, so
// that a sole writer (a rebuild, into a database nobody else writes) judges each event exactly as the
// guarded script would, without asking Redis. Not thread-safe; one owner.
class guard_state {
 public:
  // Why the guards refuse, in the script's words, or nullopt.
  std::optional<std::string> check(const std::vector<std::vector<std::string>>& guards) const;
  // The commands' effect on the guarded fields (HSET, HSETNX, HINCRBY; the rest touch none).
  void apply(const std::vector<std::vector<std::string>>& commands);

 private:
  std::unordered_map<std::string, std::unordered_map<std::string, std::string>> hashes_;
};

// The same writes as running `commands` in order, in fewer commands, for a writer that sends them in one
// pipeline and reads nothing in between (a rebuild). Per key: its HSETs become one HSET (the last value of a
// field wins), its HINCRBYs one per field (deltas summed, so a field still comes into being at 0), its ZADDs
// one ZADD (the last score of a member wins). A key with any other command, or with a field both set and
// incremented, keeps its commands as they were, in order. Keys come out in order of first appearance; the
// order between keys never matters, as no command reads another key.
std::vector<std::vector<std::string>> coalesce(std::vector<std::vector<std::string>> commands);

// The commands that record a poison event: its entry in credits:poison and, when it has a key, the blocked
// marks on that account. `key` is the Kafka key as read, which need not be a valid account id.
std::vector<std::vector<std::string>> poison_marks(std::string_view topic, std::int32_t partition, std::int64_t offset,
                                                   std::string_view key, std::string_view reason);

// The view-wide writes of an EventVoided (empty for any other event): its record leaves credits:poison and, when
// the void unblocks the account, the account leaves credits:blocked. Plain idempotent writes on keys without a hash
// tag, so on a Redis Cluster they run beside the event's script, like poison_marks.
std::vector<std::vector<std::string>> void_marks(const event& e);

}  // namespace credits::read_model
