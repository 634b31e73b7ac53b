#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
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

// What the fold of an event must know beyond the event itself, all of it fixed by earlier events of the same
// account: the category of each grant it draws from (for the balance by category and the tenant's report), and
// for a ReservationConfirmed the draws of its hold (the event says what it charged, not what it returned).
struct fold_context {
  std::unordered_map<std::string, grant_category> categories;  // grant id -> category; a grant not here is paid
  std::optional<grant_draws> hold;                             // a confirm's hold; nullopt: a hold before grants
};

// The grants and the hold whose facts the fold of `e` reads (fold_context).
struct fold_facts {
  std::vector<std::string> grants;
  std::string reservation;  // a ReservationConfirmed's, else empty
};
fold_facts facts_of(const event& e);

// The Redis commands that fold one event into the read model. Pure: a function of the event and its context
// alone, so the projector can apply it exactly once by guarding it with the partition's position (see
// projector.hpp). `offset` is the event's offset in its partition: it orders the account's list entries of equal
// time.
std::vector<std::vector<std::string>> fold(const event& e, std::int64_t offset, const fold_context& context = {});

// The facts of fold_context as the projector learns them from the events it folds, so that most events fold
// without asking Redis. What it lacks (it forgot, or learnt before a restart) the view holds: the grant hash's
// `category` and the reservation hash's `draws`, which the projector reads (lookups) and then tells it
// (remember_*). Facts never change once written, so a fact learnt from an event that then failed to apply is still
// true. Holds at most `facts_max` facts; trim() forgets all of them when it holds more, between batches, so that
// none learnt from a batch is forgotten before that batch is applied. Thread-safe.
class fold_memory {
 public:
  explicit fold_memory(std::size_t facts_max) : facts_max_(facts_max) {}
  // The context of `e` as far as the memory knows it; `missing` gets the facts it lacks (none: complete).
  fold_context context(const event& e, fold_facts& missing) const;
  // The facts `e` creates: the grant of a CreditsAdded, the hold of a CreditsReserved.
  void learn(const event& e);
  void trim();
  void clear();  // when the view changed under the projector: what it held may be gone
  std::size_t size() const;

  // The Redis reads that answer `missing` (one HGET each, in its order: grants, then the hold), and how their
  // replies complete a context (and are remembered). A grant or a hold the view does not hold reads as the
  // default: paid, no draws.
  static std::vector<std::vector<std::string>> lookups(const std::string& account_id, const fold_facts& missing);
  void complete(fold_context& context, const fold_facts& missing,
                const std::vector<std::optional<std::string>>& replies);

 private:
  mutable std::mutex mutex_;
  std::size_t facts_max_;
  std::unordered_map<std::string, grant_category> categories_;
  std::unordered_map<std::string, std::optional<grant_draws>> holds_;  // nullopt: a hold made before grants
};

// Events written before grants carry no draws, and which grants they took from (or returned to) depends on every
// earlier event of the account: the burn order, what a hold took, what a charge has left to refund. fold() leaves
// that part to Redis, which holds all of it, as one command of its own:
//   {"CREDITS.LEGACY", <grants listing key>, kind, <grant key>, amount, id1, id2, <event time (RFC 3339)>,
//    draws, <legacy draws key>}
// with kind take-charge (id1: transaction), take-hold (id1: reservation key), confirm (id1: reservation key, id2:
// transaction, draws: the charge's draws when the event has them), release (id1: reservation key), refund (id1:
// the original transaction) or correct (id1: the grant it corrects). legacy_lua defines `legacy(words)`, which
// does what the domain's fold (credits::apply, domain.cpp legacy_take) does with such an event's grants: the same
// burn order, the hold's draws, last drawn first for a refund. The apply scripts run it in place of redis.call for
// these commands; a rebuild sends it with EVAL (legacy_script). The draws it computes for a charge are kept in
// the legacy draws key (credits:legacy-draws:{<accountId>}, transaction id -> JSON) for a refund; a hold's in its
// reservation hash's `draws`, as any hold's.
inline constexpr std::string_view legacy_command = "CREDITS.LEGACY";
extern const std::string_view legacy_lua;
// A script that runs the one CREDITS.LEGACY command given as ARGV (without its first word).
std::string legacy_script();
bool is_legacy(const std::vector<std::string>& command);

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

// Whether a fold command is a tally: an HINCRBY of a report counter (the usage summaries and daily usage, the
// tenant's credits report) that no guard and no CREDITS.LEGACY command reads. The projector adds up a run of
// events' tallies and increments each counter once (guarded_apply_script).
bool is_tally(const std::vector<std::string>& command);

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
