#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "credits/common/events.hpp"

// The Redis read model: its key layout, the fold of events into Redis commands, and the reads the query
// endpoints make. The projector is its only writer; command-api only reads it.
//
// Key layout (every per-account key carries the account id as a hash tag, every per-tenant key the tenant, so that
// on a Redis Cluster an account's keys share one slot; docs/scaling.md, "Redis Cluster"):
//   credits:account:{<accountId>}                 HASH id tenant name externalId email metadata(JSON) createdAt
//                                                       balance reserved
//   credits:reservation:{<accountId>}:<rsvId>      HASH id accountId amount status createdAt expiresAt operation
//                                                       model metadata(JSON) charged released transactionId
//                                                       resolvedAt
//   credits:reservations:{<accountId>}             ZSET reservation ids scored by creation time (ms)
//   credits:usage:{<accountId>}:<usageId>          HASH the usage record's fields
//   credits:usage-daily:{<accountId>}:<yyyy-mm-dd> HASH <modelId>:<field> counters (inputTokens, outputTokens,
//                                                       cachedTokens, records)
//   credits:usage-records:{<accountId>}           ZSET "<offset>:<usageId>" scored by time (ms)
//   credits:usage-summary:{<accountId>}:<day>      HASH "<context>|<metric>|<modelId>" counters, metric one of
//                                                       inputTokens outputTokens cachedTokens records costCredits
//   credits:usage-summary:tenant:{<tenant>}:<day>  HASH the same, over all the tenant's accounts
//   credits:transactions:{<accountId>}             ZSET "<offset>:<transactionId>" scored by time (ms)
//   credits:transaction:{<accountId>}              HASH transaction id -> its list entry (JSON)
//   credits:accounts:{<tenant>}                    ZSET account ids scored by creation time (ms)
//   credits:applied:{<tag>}                        HASH on a Redis Cluster only: the offsets of the events applied
//                                                       to that tag's keys (projector.hpp, "Redis Cluster")
//   credits:positions                              HASH "<topic>:<partition>" -> offset of the last applied event
//   credits:poison                                 HASH "<topic>:<partition>:<offset>" -> {"key","reason"} (JSON) of
//                                                       every event the projector could not apply
//   credits:blocked                                SET the Kafka keys (account ids) of those events
// An account with a poison event also gets `blocked` 1 and `blockedAt` "<topic>:<partition>:<offset>" (the
// first one) in its hash; its later events are still folded when they can be.
//
// The view owns its whole Redis database (CREDITS_REDIS_DB): a rebuild builds the next view in another
// database and swaps the two with SWAPDB, so no other data may live beside it. (A cluster has only database 0
// and no SWAPDB: there a rebuild refuses.)
namespace credits::read_model {

// One synchronous connection to a Redis server or a Redis Cluster, whichever `host:port` turns out to be
// (INFO cluster). On a cluster it holds a hiredis connection per master it has used, sends each command to the
// master of its key's slot (keyless commands to the configured node), and follows MOVED, ASK and TRYAGAIN
// redirections, re-reading the slot map on MOVED. CLIENT SETNAME and SCRIPT LOAD go to every master and are
// replayed on nodes it connects to later; they may not be part of a pipeline there. Commands of one pipeline
// run in order per node; a redirected one runs after the rest of its pipeline. Not thread-safe: one owner at a
// time (see connection_pool).
class redis_connection {
 public:
  redis_connection(const std::string& host, int port, std::chrono::milliseconds timeout);
  ~redis_connection();
  redis_connection(const redis_connection&) = delete;
  redis_connection& operator=(const redis_connection&) = delete;

  // Runs one command; throws std::runtime_error on a connection or protocol error. Integer replies come back
  // as their decimal text, nil as nullopt, arrays flattened into `array`.
  struct reply {
    std::optional<std::string> value;
    std::vector<std::optional<std::string>> array;
  };
  reply run(const std::vector<std::string>& args);

  // Sends all commands in one round trip and returns their replies in order.
  std::vector<reply> pipeline(const std::vector<std::vector<std::string>>& commands);

  // Like pipeline, but each error reply comes back in its command's place instead of being thrown, for
  // callers that expect some commands to be refused. I/O errors still throw.
  struct outcome {
    reply value;
    std::optional<std::string> error;  // Redis's error reply, e.g. "GAP ..."
  };
  std::vector<outcome> pipeline_each(const std::vector<std::vector<std::string>>& commands);

  // pipeline_each in two halves, so the caller can work while Redis executes: send() writes the commands,
  // receive() reads the replies of the `count` oldest commands not yet received.
  void send(const std::vector<std::vector<std::string>>& commands);
  std::vector<outcome> receive(std::size_t count);

  bool broken() const;     // true after an I/O error: discard and reconnect
  bool clustered() const;  // connected to a Redis Cluster
  // How many MOVED, ASK and TRYAGAIN replies this connection has followed (0 unless clustered).
  std::uint64_t redirections() const;

  // Every key matching `pattern` (SCAN MATCH, `count` per call), on every master of a cluster.
  std::vector<std::string> scan(std::string_view pattern, std::size_t count);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// An error reply from Redis (run and pipeline throw it): the connection is still usable, unlike after the
// plain std::runtime_error of an I/O error. The message starts with Redis's error code, e.g. "NOSCRIPT".
class reply_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Redis Cluster's key placement: the slot is CRC16 of the hash tag (the text between the first '{' and the
// next '}', when not empty; else the whole key) modulo 16384.
inline constexpr std::size_t cluster_slots = 16384;
std::string_view hash_tag(std::string_view key);
std::uint16_t cluster_slot(std::string_view key);
// The key a command is routed by: the first key of EVAL/EVALSHA, none for keyless commands (PING, INFO,
// CLIENT, SCRIPT, SELECT, SCAN, ...), otherwise its first argument.
std::optional<std::string_view> command_key(const std::vector<std::string>& args);

std::string account_key(std::string_view account_id);
std::string reservation_key(std::string_view account_id, std::string_view reservation_id);
std::string reservations_key(std::string_view account_id);
inline constexpr std::string_view positions_key = "credits:positions";
inline constexpr std::string_view poison_key = "credits:poison";
inline constexpr std::string_view blocked_key = "credits:blocked";
// Held by a running rebuild (its Redis client id) so that two never build into the same database.
inline constexpr std::string_view rebuild_lock_key = "credits:rebuild-lock";
std::string poison_field(std::string_view topic, std::int32_t partition, std::int64_t offset);
// On a Redis Cluster: the offsets of the events applied to the keys of hash tag `tag` (projector.hpp).
std::string applied_key(std::string_view tag);
std::string position_field(std::string_view topic, std::int32_t partition);
std::string usage_key(std::string_view account_id, std::string_view usage_id);
std::string usage_daily_key(std::string_view account_id, std::string_view day);  // day: yyyy-mm-dd (UTC)
std::string accounts_key(std::string_view tenant);
std::string transactions_key(std::string_view account_id);
std::string transaction_entries_key(std::string_view account_id);
std::string usage_records_key(std::string_view account_id);
std::string usage_summary_key(std::string_view account_id, std::string_view day);
std::string tenant_usage_summary_key(std::string_view tenant, std::string_view day);
// "<offset, 19 digits>:<id>": members of equal time sort in log order (one account's events share a partition).
std::string sequenced(std::int64_t offset, std::string_view id);
std::string_view sequenced_id(std::string_view member);
// Context first and model last: the context and metric hold no '|', the model id may.
std::string usage_summary_field(std::string_view context, std::string_view metric, std::string_view model_id);

struct account_view {
  std::string id;
  std::string tenant;
  std::string name;
  std::string external_id;
  std::string email;
  nlohmann::json metadata = nlohmann::json::object();
  std::string created_at;  // RFC 3339
  amount_t balance = 0;
  amount_t reserved = 0;
  bool blocked = false;  // one of its events could not be applied: its balance may miss that event
};

struct reservation_view {
  std::string id;
  std::string account_id;
  amount_t amount = 0;
  std::string status;
  std::string created_at;
  std::string expires_at;
  std::string operation;
  std::string model;
  nlohmann::json metadata = nlohmann::json::object();
  amount_t charged = 0;
  amount_t released = 0;
  std::string transaction_id;
};

std::optional<account_view> get_account(redis_connection& redis, std::string_view account_id);
std::optional<reservation_view> get_reservation(redis_connection& redis, std::string_view account_id,
                                                std::string_view reservation_id);
// ---- lists --------------------------------------------------------------------------------------------
// Every list is a time-scored ZSET read newest first, in (time desc, member desc) order. A cursor names the
// last entry a page returned, so the next page starts strictly after it: entries that arrive meanwhile are
// newer and never shift a page, so paging never loses or repeats one.
struct page_cursor {
  time_ms score = 0;
  std::string member;
  std::string to_string() const;  // "<score>.<member>", URL-safe
  static std::optional<page_cursor> parse(std::string_view text);
};

struct list_query {
  std::size_t limit = 50;
  std::optional<page_cursor> after;
  time_ms from = std::numeric_limits<time_ms>::min();  // inclusive
  time_ms to = std::numeric_limits<time_ms>::max();    // inclusive
};

struct page {
  std::vector<nlohmann::json> items;
  std::optional<page_cursor> next;  // absent: nothing more
};

// Filters look at the rendered item. A page examines at most `list_scan_max` entries, then returns what it
// found with a cursor to go on from, so a rare filter costs bounded work per request.
inline constexpr std::size_t list_scan_max = 5'000;
using item_filter = std::function<bool(const nlohmann::json&)>;

page list_transactions(redis_connection& redis, std::string_view account_id, const list_query& q,
                       const item_filter& keep);
page list_usage(redis_connection& redis, std::string_view account_id, const list_query& q, const item_filter& keep);
page list_reservations(redis_connection& redis, std::string_view account_id, const list_query& q,
                       const item_filter& keep);
page list_accounts(redis_connection& redis, std::string_view tenant, const list_query& q);

// Usage totals per model, per context and per day over [from_day, to_day] (yyyy-mm-dd, UTC), from the daily
// summary hashes of one account (or, with an empty account id, of the whole tenant). Empty model / context
// filters match everything.
nlohmann::json usage_summary(redis_connection& redis, std::string_view tenant, std::string_view account_id,
                             const std::vector<std::string>& days, std::string_view model_id, std::string_view context);

struct balance_at {
  amount_t balance = 0;
  amount_t reserved = 0;
};
// The balance and reserved amount of an account right after its last event at or before `as_of`: the balance
// from the last ledger transaction's balanceAfter, the holds from the reservations created within
// `hold_max_ms` before it and not resolved by then.
balance_at balance_as_of(redis_connection& redis, std::string_view account_id, time_ms as_of, time_ms hold_max_ms);

// The offset of the last event the projector applied from (topic, partition); -1 when none.
std::int64_t applied_offset(redis_connection& redis, std::string_view topic, std::int32_t partition);

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

}  // namespace credits::read_model
