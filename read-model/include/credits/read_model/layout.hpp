#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

// The Redis read model's key layout: what its writer (the projector's fold, credits/projector/fold.hpp) writes
// and its readers (reads.hpp) read.
//
// Key layout (every per-account key carries the account id as a hash tag, every per-tenant key the tenant, so that
// on a Redis Cluster an account's keys share one slot; docs/scaling.md, "Redis Cluster"):
//   credits:account:{<accountId>}                 HASH id tenant name externalId email metadata(JSON) createdAt
//                                                       balance reserved, and the balance by grant category:
//                                                       paid promotional (paid + promotional == balance)
//   credits:reservation:{<accountId>}:<rsvId>      HASH id accountId amount status createdAt expiresAt operation
//                                                       model metadata(JSON) charged released transactionId
//                                                       resolvedAt draws (JSON: what the hold took of each grant)
//   credits:reservations:{<accountId>}             ZSET reservation ids scored by creation time (ms)
//   credits:usage:{<accountId>}:<usageId>          HASH the usage record's fields
//   credits:usage-daily:{<accountId>}:<yyyy-mm-dd> HASH <modelId>:<field> counters (inputTokens, outputTokens,
//                                                       cachedTokens, records)
//   credits:usage-records:{<accountId>}           ZSET "<offset>:<usageId>" scored by time (ms)
//   credits:usage-summary:{<accountId>}:<day>      HASH "<context>|<metric>|<modelId>" counters, metric one of
//                                                       inputTokens outputTokens cachedTokens records costCredits
//   credits:usage-summary:tenant:{<tenant>}:<day>  HASH the same, over all the tenant's accounts
//   credits:transactions:{<accountId>}             ZSET "<offset>:<transactionId>" scored by time (ms)
//   credits:transaction:{<accountId>}              HASH transaction id -> its list entry (JSON; what it does not
//                                                       have is absent: metadata, reservationId, reversalOf,
//                                                       grantId, reason, draws; list_transactions puts it back)
//   credits:accounts:{<tenant>}                    ZSET account ids scored by creation time (ms)
//   credits:grant:{<accountId>}                    HASH the account's grants, one hash for all of them (a key per
//                                                       grant cost Redis a key's creation for every addCredits):
//                                                       <grantId> -> its terms (JSON: amount; priority, category
//                                                       when not the default; transactionId when not the grant's
//                                                       id with the prefix txn; expiresAt, costAmount costCurrency
//                                                       when it has them; its creation time is its score in
//                                                       credits:grants); <grantId>|<counter> -> the counters
//                                                       held charged refunded expired voided corrected (credits,
//                                                       absent while 0); <grantId>|status -> expired or voided
//                                                       (absent: active). What is left of it is not kept: amount +
//                                                       refunded - held - charged - expired - voided - corrected
//   credits:grants:{<accountId>}                   ZSET "<offset>:<grantId>" scored by creation time (ms)
//   credits:grant-expiries:{<accountId>}           ZSET ids of the grants that expire and have not yet, scored by
//                                                       expiresAt (ms)
//   credits:legacy-draws:{<accountId>}            HASH transaction id -> the draws (JSON) the view computed for a
//                                                       charge written before grants, less what refunds returned
//   credits:grant-report:tenant:{<tenant>}:<day>   HASH "<metric>|<category>" credits moved that UTC day, metric one
//                                                       of granted consumed refunded expired voided corrected
//   credits:applied:{<tag>}                        HASH on a Redis Cluster only: the offsets of the events applied
//                                                       to that tag's keys (projector.hpp, "Redis Cluster")
//   credits:positions                              HASH "<topic>:<partition>" -> offset of the last applied event
//                                                       (-1: none yet; every partition of a topic the view holds
//                                                       has its field from the start)
//   credits:view                                   HASH the view's marker: id (16 hex digits, new for every view
//                                                       built: the first start on an empty database and every
//                                                       rebuild), createdAt, fold ("grants": made by a projector
//                                                       that folds grants), and "topic:<name>" -> partition count
//                                                       for each topic folded into it. While a projector rebuilds a
//                                                       view that lost its data: no id, but rebuildingSince (RFC
//                                                       3339), reason and by (the projector's instance id)
//   credits:poison                                 HASH "<topic>:<partition>:<offset>" -> {"key","reason"} (JSON) of
//                                                       every event the projector could not apply
//   credits:blocked                                SET the Kafka keys (account ids) of those events
//   credits:voided:{<accountId>}                  HASH "<topic>:<partition>:<offset>" ->
//   {"eventId","reason","apiKeyId",
//                                                       "voidedAt","voidEventId"} (JSON): the audit of each void
// An account with a poison event also gets `blocked` 1 and `blockedAt` "<topic>:<partition>:<offset>" (the
// first one) in its hash; its later events are still folded when they can be. An EventVoided takes its record
// out of credits:poison and, when no other is left on the account, clears the account's blocked marks.
//
// The view owns its whole Redis database (CREDITS_REDIS_DB): a rebuild builds the next view in another
// database and swaps the two with SWAPDB, so no other data may live beside it. (A cluster has only database 0
// and no SWAPDB: there a rebuild refuses.)
namespace credits::read_model {

std::string account_key(std::string_view account_id);
std::string reservation_key(std::string_view account_id, std::string_view reservation_id);
std::string reservations_key(std::string_view account_id);
std::string voided_key(std::string_view account_id);
inline constexpr std::string_view positions_key = "credits:positions";
// The view's marker (above). A view that lost its data (FLUSHALL, a restart without its append-only file, a
// failover to an empty replica) lost it too, which is how the projector and the API tell such a view from one
// that merely has not applied an event yet.
inline constexpr std::string_view view_key = "credits:view";
std::string view_topic_field(std::string_view topic);  // "topic:<name>"
// The marker's field that says what the view's fold holds: "grants" for a view made by a projector that folds
// credit grants. A view made before has no such field, and no grants for the events it folded then.
inline constexpr std::string_view view_fold_field = "fold";
inline constexpr std::string_view view_fold_grants = "grants";
inline constexpr std::string_view poison_key = "credits:poison";
inline constexpr std::string_view blocked_key = "credits:blocked";
// Held by a running rebuild (its Redis client id) so that two never build into the same database.
inline constexpr std::string_view rebuild_lock_key = "credits:rebuild-lock";
std::string poison_field(std::string_view topic, std::int32_t partition, std::int64_t offset);
// On a Redis Cluster: the offsets of the events applied to the keys of hash tag `tag` (projector.hpp).
std::string applied_key(std::string_view tag);
std::string position_field(std::string_view topic, std::int32_t partition);
// The prefixes of the report counters' keys (usage_daily_key, usage_summary_key and tenant_usage_summary_key,
// grant_report_key): hashes of counters that only ever grow by HINCRBY.
inline constexpr std::string_view usage_daily_prefix = "credits:usage-daily:";
inline constexpr std::string_view usage_summary_prefix = "credits:usage-summary:";
inline constexpr std::string_view grant_report_prefix = "credits:grant-report:";
std::string usage_key(std::string_view account_id, std::string_view usage_id);
std::string usage_daily_key(std::string_view account_id, std::string_view day);  // day: yyyy-mm-dd (UTC)
std::string accounts_key(std::string_view tenant);
std::string transactions_key(std::string_view account_id);
std::string transaction_entries_key(std::string_view account_id);
std::string usage_records_key(std::string_view account_id);
std::string usage_summary_key(std::string_view account_id, std::string_view day);
std::string grant_key(std::string_view account_id);
// "<grantId>|<counter>": a field of grant_key. The writer's grant ids hold no '|' (ids.hpp); one in a hand-made
// record could at worst share fields with another grant of the same account.
std::string grant_field(std::string_view grant_id, std::string_view counter);
// What the view keeps of a grant besides its terms, in this order: the counters, then the status.
inline constexpr std::string_view grant_counters[] = {"held", "charged", "refunded", "expired", "voided", "corrected"};
// The HMGET fields of one grant: its terms, its counters, its status.
std::vector<std::string> grant_fields(std::string_view grant_id);
// One grant as grant_fields read it, by name: "id", every term (as text; those left out put back), every counter
// present and "status" ("active" when absent); not "createdAt", which is its score in the listing. Empty when the view
// has no such grant; throws std::runtime_error when its terms are not a JSON object.
std::unordered_map<std::string, std::string> grant_hash(std::string_view grant_id,
                                                        const std::vector<std::optional<std::string>>& values);
std::string grants_key(std::string_view account_id);
std::string grant_expiries_key(std::string_view account_id);
std::string legacy_draws_key(std::string_view account_id);
std::string grant_report_key(std::string_view tenant, std::string_view day);  // day: yyyy-mm-dd (UTC)
// "<metric>|<category>", a field of grant_report_key.
std::string grant_report_field(std::string_view metric, std::string_view category);
std::string tenant_usage_summary_key(std::string_view tenant, std::string_view day);
// "<offset, 19 digits>:<id>": members of equal time sort in log order (one account's events share a partition).
std::string sequenced(std::int64_t offset, std::string_view id);
std::string_view sequenced_id(std::string_view member);
// Context first and model last: the context and metric hold no '|', the model id may.
std::string usage_summary_field(std::string_view context, std::string_view metric, std::string_view model_id);

}  // namespace credits::read_model
