#include <algorithm>
#include <array>
#include <charconv>
#include <iterator>
#include <map>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "credits/common/overloaded.hpp"
#include "credits/common/replay.hpp"
#include "credits/event_store/partition_reader.hpp"
#include "credits/event_store/partitioner.hpp"
#include "credits/projector/operations.hpp"

namespace credits::ops {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using clock = std::chrono::steady_clock;

constexpr milliseconds metadata_timeout_ms{10'000};
constexpr milliseconds poll_timeout_ms{500};
constexpr std::size_t snapshot_accounts_per_pipeline = 500;
constexpr std::size_t scan_count = 1000;

// One account as the view holds it, read in one script so that it and its partition's position belong
// together: [id, balance, reserved, blocked, promotional, position, n, then n times (reservation id, status, amount,
// charged), then (grant id, terms (JSON), held, charged, refunded, expired, voided, corrected)...]. (What is left of
// a grant is not kept: parse_snapshot computes it, as the API does.)
constexpr std::string_view account_snapshot_script = R"lua(
local out = {}
local a = redis.call('HMGET', KEYS[1], 'id', 'balance', 'reserved', 'blocked', 'promotional')
for i = 1, 5 do out[#out + 1] = a[i] or '' end
out[#out + 1] = redis.call('HGET', KEYS[3], ARGV[2]) or '-1'
local holds = redis.call('ZRANGE', KEYS[2], 0, -1)
out[#out + 1] = tostring(#holds)
for _, id in ipairs(holds) do
  local r = redis.call('HMGET', ARGV[1] .. id, 'status', 'amount', 'charged')
  out[#out + 1] = id
  for i = 1, 3 do out[#out + 1] = r[i] or '' end
end
for _, member in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  local id = string.sub(member, 21)
  local g = redis.call('HMGET', ARGV[3], id, id .. '|held', id .. '|charged', id .. '|refunded', id .. '|expired',
                       id .. '|voided', id .. '|corrected')
  out[#out + 1] = id
  for i = 1, 7 do out[#out + 1] = g[i] or '' end
end
return out
)lua";

// Every poison record and every position, together: [n, (field, entry)..., m, (field, offset)...].
constexpr std::string_view poison_snapshot_script = R"lua(
local entries = redis.call('HGETALL', KEYS[1])
local positions = redis.call('HGETALL', KEYS[2])
local out = {tostring(#entries / 2)}
for _, v in ipairs(entries) do out[#out + 1] = v end
out[#out + 1] = tostring(#positions / 2)
for _, v in ipairs(positions) do out[#out + 1] = v end
return out
)lua";

std::int64_t to_int(const std::optional<std::string>& s, const std::string& what) {
  if (!s || s->empty()) return 0;
  std::size_t used = 0;
  std::int64_t n = 0;
  try {
    n = std::stoll(*s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != s->size()) throw std::runtime_error(what + " is not an integer: " + *s);
  return n;
}

std::string text(const std::optional<std::string>& s) { return s.value_or(""); }

struct poison_entry {
  std::string key;
  std::string reason;
};

// The independent fold: the log, read one partition at a time up to chosen offsets, folded with credits::replay
// (decode, admission_error, violation and credits::apply), as the writer folds it. Owns nothing but its state; reads
// through `reader`.
class log_fold {
 public:
  log_fold(const projector_config& config, store::partition_reader& reader, clock::time_point deadline)
      : config_(config), reader_(reader), deadline_(deadline) {
    for (const auto& topic : {config.ledger_topic, config.usage_topic}) {
      counts_[topic] = reader.partition_count(topic, metadata_timeout_ms);
      for (std::int32_t p = 0; p < counts_[topic]; ++p) {
        const auto field = read_model::position_field(topic, p);
        fields_.push_back(field);
        where_[field] = {topic, p};
        folded_[field] = -1;
      }
    }
  }

  const std::vector<std::string>& fields() const { return fields_; }
  std::int64_t folded(const std::string& field) const { return folded_.at(field); }
  std::int32_t partition_count(const std::string& topic) const { return counts_.at(topic); }

  // Folds `field` up to and including `target`, which must be the offset of a committed record.
  void advance(const std::string& field, std::int64_t target) {
    auto& done = folded_.at(field);
    if (target <= done) return;
    const auto& [topic, partition] = where_.at(field);
    if (assigned_ != field) {
      reader_.assign({{topic, partition, done + 1}});
      assigned_ = field;
    }
    bool ended = false;
    while (done < target) {
      if (clock::now() > deadline_) throw std::runtime_error("the log was not read within the time limit");
      const auto r =
          reader_.poll(poll_timeout_ms, [&, t = topic, p = partition](const std::string& et, std::int32_t ep) {
            if (et == t && ep == p) ended = true;
          });
      if (!r) {
        if (ended)
          throw std::runtime_error("the view is at " + field + "@" + std::to_string(target) + " but the log ends at " +
                                   std::to_string(done));
        continue;
      }
      ended = false;
      fold(*r, field);
      done = r->offset;
    }
    if (done != target)
      throw std::runtime_error("the view's position " + field + "@" + std::to_string(target) +
                               " is not the offset of a committed event");
  }

  ledger_state state;
  std::map<std::string, std::map<std::int64_t, poison_entry>> poison;  // field -> offset -> entry
  std::uint64_t events = 0;

 private:
  void fold(const store::message& r, const std::string& field) {
    ++events;
    const auto topic_stream = r.topic == config_.ledger_topic ? stream::ledger : stream::usage;
    const auto folded =
        replay(state, log_record{r.topic, topic_stream, r.partition,
                                 store::partition_of_key(r.key, counts_.at(r.topic)), r.offset, r.key, r.value});
    if (folded.result != replayed::outcome::applied) {
      poison[field][r.offset] = {r.key, folded.reason};
      return;
    }
    // A voided record is no longer poison in the view either (the projector's fold of EventVoided).
    if (const auto* v = std::get_if<event_voided>(&folded.e->payload)) {
      const auto cut = v->voided_position.rfind(':');
      if (cut == std::string::npos) return;
      const auto voided_field = v->voided_position.substr(0, cut);
      if (auto it = poison.find(voided_field); it != poison.end()) {
        std::int64_t offset = -1;
        std::from_chars(v->voided_position.data() + cut + 1, v->voided_position.data() + v->voided_position.size(),
                        offset);
        it->second.erase(offset);
        if (it->second.empty()) poison.erase(it);
      }
    }
  }

  const projector_config& config_;
  store::partition_reader& reader_;
  clock::time_point deadline_;
  std::map<std::string, std::int32_t> counts_;
  std::vector<std::string> fields_;
  std::map<std::string, std::pair<std::string, std::int32_t>> where_;
  std::map<std::string, std::int64_t> folded_;
  std::string assigned_;
};

struct account_snapshot {
  std::string account_id;
  std::string field;  // the account's ledger partition
  std::string id;     // empty when the view has no such account
  std::optional<std::string> balance, reserved;
  bool blocked = false;
  std::optional<std::string> promotional;
  std::int64_t position = -1;
  struct reservation {
    std::string status;
    std::optional<std::string> amount, charged;
  };
  std::map<std::string, reservation> reservations;
  static constexpr const char* grant_fields[] = {"amount",   "remaining", "held",   "charged",
                                                 "refunded", "expired",   "voided", "corrected"};
  std::map<std::string, std::array<std::int64_t, std::size(grant_fields)>> grants;
};

account_snapshot parse_snapshot(std::string account_id, std::string field,
                                const std::vector<std::optional<std::string>>& a) {
  if (a.size() < 7) throw std::runtime_error("verify: malformed account snapshot");
  account_snapshot s;
  s.account_id = std::move(account_id);
  s.field = std::move(field);
  s.id = text(a[0]);
  s.balance = a[1];
  s.reserved = a[2];
  s.blocked = text(a[3]) == "1";
  s.promotional = a[4];
  s.position = to_int(a[5], "position");
  const auto holds = static_cast<std::size_t>(to_int(a[6], "count"));
  const auto grants_at = 7 + 4 * holds;
  constexpr auto per_grant = std::size(account_snapshot::grant_fields);  // the id, and every field but remaining
  if (a.size() < grants_at || (a.size() - grants_at) % per_grant != 0)
    throw std::runtime_error("verify: malformed account snapshot");
  for (std::size_t i = 7; i < grants_at; i += 4) s.reservations[text(a[i])] = {text(a[i + 1]), a[i + 2], a[i + 3]};
  for (std::size_t i = grants_at; i < a.size(); i += per_grant) {
    auto& g = s.grants[text(a[i])];
    // The amount is a term (layout.hpp); terms that are not there or damaged count as 0, which the comparison
    // then reports.
    const auto terms = a[i + 1] ? nlohmann::json::parse(*a[i + 1], nullptr, false) : nlohmann::json();
    g[0] = terms.is_object() && terms.contains("amount") && terms["amount"].is_number_integer()
               ? terms["amount"].get<std::int64_t>()
               : 0;
    for (std::size_t f = 2, k = i + 2; f < g.size(); ++f)
      g[f] = to_int(a[k++], text(a[i]) + " " + account_snapshot::grant_fields[f]);
    g[1] = g[0] + g[4] - g[2] - g[3] - g[5] - g[6] - g[7];  // remaining: amount + refunded - the rest
  }
  return s;
}

class report {
 public:
  explicit report(std::FILE* out) : out_(out) {}
  void mismatch(const std::string& what) {
    ++mismatches_;
    std::fprintf(out_, "mismatch: %s\n", what.c_str());
  }
  void note(const std::string& what) { std::fprintf(out_, "%s\n", what.c_str()); }
  std::uint64_t mismatches() const { return mismatches_; }

 private:
  std::FILE* out_;
  std::uint64_t mismatches_ = 0;
};

struct tally {
  std::uint64_t accounts = 0;
  std::uint64_t reservations = 0;
  std::uint64_t grants = 0;
  std::set<std::string> blocked;  // accounts the view marks blocked
};

std::string num(std::int64_t n) { return std::to_string(n); }

// The grants: the promotional part of the balance, and each grant's counters (amount - corrected is what the fold
// calls granted).
void compare_grants(const account_snapshot& v, const account_state& a, report& r, tally& t, const std::string& at) {
  const auto& id = v.account_id;
  amount_t promotional = 0;
  for (const auto& [gid, g] : a.grants)
    if (g.category == grant_category::promotional) promotional += g.remaining + g.held;
  if (const auto seen = to_int(v.promotional, id + " promotional"); seen != promotional)
    r.mismatch("account " + id + " promotional: view " + num(seen) + ", log " + num(promotional) + at);
  for (const auto& [gid, g] : a.grants) {
    ++t.grants;
    const auto found = v.grants.find(gid);
    if (found == v.grants.end()) {
      r.mismatch("grant " + gid + " of " + id + " is in the log but not in the view" + at);
      continue;
    }
    const auto& f = found->second;  // in the order of account_snapshot::grant_fields
    const std::int64_t log[] = {g.granted + f[7], g.remaining, g.held,   g.charged,
                                g.refunded,       g.expired,   g.voided, f[7]};
    for (std::size_t i = 0; i < f.size(); ++i)
      if (f[i] != log[i])
        r.mismatch("grant " + gid + " " + account_snapshot::grant_fields[i] + ": view " + num(f[i]) + ", log " +
                   num(log[i]) + (i == 0 ? " (granted " + num(g.granted) + " + corrected)" : "") + at);
  }
  for (const auto& [gid, f] : v.grants)
    if (!a.grants.contains(gid)) r.mismatch("grant " + gid + " of " + id + " is in the view but not in the log" + at);
}

void compare(const account_snapshot& v, const log_fold& fold, report& r, tally& t) {
  const auto& id = v.account_id;
  const auto it = fold.state.accounts.find(id);
  const bool in_log = it != fold.state.accounts.end();
  const bool in_view = !v.id.empty();
  if (v.blocked) t.blocked.insert(id);
  if (!in_log && !in_view) return;  // a poison event's key with no account: checked with the poison records
  ++t.accounts;
  const auto at = " (at " + v.field + "@" + num(v.position) + ")";
  if (in_log != in_view) {
    r.mismatch("account " + id +
               (in_log ? " is in the log but not in the view" : " is in the view but not in the log") + at);
    return;
  }
  const auto& a = it->second;
  const auto balance = to_int(v.balance, id + " balance"), reserved = to_int(v.reserved, id + " reserved");
  if (balance != a.balance)
    r.mismatch("account " + id + " balance: view " + num(balance) + ", log " + num(a.balance) + at);
  if (reserved != a.reserved)
    r.mismatch("account " + id + " reserved: view " + num(reserved) + ", log " + num(a.reserved) + at);
  for (const auto& [rid, rs] : a.reservations) {
    ++t.reservations;
    const auto found = v.reservations.find(rid);
    if (found == v.reservations.end()) {
      r.mismatch("reservation " + rid + " of " + id + " is in the log but not in the view" + at);
      continue;
    }
    const auto& vr = found->second;
    const auto status = std::string(to_string(rs.status));
    if (vr.status != status) r.mismatch("reservation " + rid + " status: view " + vr.status + ", log " + status + at);
    if (to_int(vr.amount, rid + " amount") != rs.amount)
      r.mismatch("reservation " + rid + " amount: view " + text(vr.amount) + ", log " + num(rs.amount) + at);
    if (to_int(vr.charged, rid + " charged") != rs.charged)
      r.mismatch("reservation " + rid + " charged: view " + text(vr.charged) + ", log " + num(rs.charged) + at);
  }
  for (const auto& [rid, vr] : v.reservations)
    if (!a.reservations.contains(rid))
      r.mismatch("reservation " + rid + " of " + id + " is in the view but not in the log" + at);
  compare_grants(v, a, r, t, at);
}

std::vector<std::string> scan_accounts(read_model::redis_connection& redis) {
  std::vector<std::string> out;
  const std::string prefix = "credits:account:{";
  for (const auto& key : redis.scan("credits:account:*", scan_count))
    if (key.starts_with(prefix) && key.back() == '}')
      out.push_back(key.substr(prefix.size(), key.size() - prefix.size() - 1));
  return out;
}

// The view's poison records and positions as [n, (field, entry)..., m, (field, offset)...]. On a server, read
// together in one script. On a cluster the two keys sit in different slots: the positions are read first, and
// the records past them dropped, as the projector records poison events before it raises the positions.
std::vector<std::optional<std::string>> poison_snapshot(read_model::redis_connection& redis) {
  const std::string positions(read_model::positions_key);
  if (!redis.clustered())
    return redis.run({"EVAL", std::string(poison_snapshot_script), "2", std::string(read_model::poison_key), positions})
        .array;
  const auto at = redis.run({"HGETALL", positions}).array;
  const auto entries = redis.run({"HGETALL", std::string(read_model::poison_key)}).array;
  std::map<std::string, std::int64_t> position;
  for (std::size_t i = 0; i + 1 < at.size(); i += 2) position[text(at[i])] = to_int(at[i + 1], "position");
  std::vector<std::optional<std::string>> kept;
  for (std::size_t i = 0; i + 1 < entries.size(); i += 2) {
    const auto where = text(entries[i]);
    const auto cut = where.rfind(':');
    const auto field = cut == std::string::npos ? where : where.substr(0, cut);
    if (cut != std::string::npos && position.contains(field) &&
        to_int(where.substr(cut + 1), "offset") > position[field])
      continue;
    kept.insert(kept.end(), {entries[i], entries[i + 1]});
  }
  std::vector<std::optional<std::string>> out{std::to_string(kept.size() / 2)};
  out.insert(out.end(), kept.begin(), kept.end());
  out.push_back(std::to_string(at.size() / 2));
  out.insert(out.end(), at.begin(), at.end());
  return out;
}

}  // namespace

namespace {

// What one run of verify works with. Lives on the calling thread for the run.
struct verify_run {
  const projector_config& config;
  const std::atomic<bool>& stop;
  read_model::redis_connection& redis;
  log_fold& fold;
  report& r;
  tally& t;
  bool cluster = false;
};

// The poison records the view holds, by partition field and offset, with the positions it had applied then.
struct view_poison {
  std::map<std::string, std::map<std::int64_t, poison_entry>> by_field;
  std::set<std::string> keys;                                   // the accounts they block
  std::vector<std::pair<std::string, std::int64_t>> positions;  // field -> the view's position with them
};

view_poison read_view_poison(read_model::redis_connection& redis) {
  const auto a = poison_snapshot(redis);
  view_poison out;
  const auto entries = static_cast<std::size_t>(to_int(a.at(0), "count"));
  for (std::size_t i = 0; i < entries; ++i) {
    const auto where = text(a.at(1 + 2 * i));
    const auto entry = json::parse(text(a.at(2 + 2 * i)), nullptr, false);
    const auto cut = where.rfind(':');
    if (cut == std::string::npos || !entry.is_object())
      throw std::runtime_error("verify: malformed poison record " + where);
    const poison_entry pe{entry.value("key", ""), entry.value("reason", "")};
    if (!pe.key.empty()) out.keys.insert(pe.key);
    out.by_field[where.substr(0, cut)][to_int(where.substr(cut + 1), "poison offset")] = pe;
  }
  const auto m_at = 1 + 2 * entries;
  const auto fields_count = static_cast<std::size_t>(to_int(a.at(m_at), "count"));
  for (std::size_t i = 0; i < fields_count; ++i)
    out.positions.emplace_back(text(a.at(m_at + 1 + 2 * i)), to_int(a.at(m_at + 2 + 2 * i), "position"));
  return out;
}

// 1. The log up to the positions the view has applied now; the view only moves on from there.
bool fold_to_view_positions(verify_run& v) {
  std::map<std::string, std::int64_t> start;
  const auto all = v.redis.run({"HGETALL", std::string(read_model::positions_key)});
  for (std::size_t i = 0; i + 1 < all.array.size(); i += 2)
    start[text(all.array[i])] = to_int(all.array[i + 1], "position");
  for (const auto& field : v.fold.fields()) {
    if (v.stop.load()) return false;
    v.fold.advance(field, start.contains(field) ? start[field] : -1);
  }
  return true;
}

// Compares the accounts whose snapshots `calls` asks for where the fold is at their position, and keeps the
// snapshots ahead of the fold in `later` (field -> snapshots).
void compare_chunk(verify_run& v, const std::vector<std::string>& ids,
                   const std::vector<std::vector<std::string>>& calls, std::int32_t ledger_partitions,
                   std::map<std::string, std::vector<account_snapshot>>& later) {
  const auto replies = v.redis.pipeline(calls);
  for (std::size_t k = 0; k < replies.size(); ++k) {
    const auto field =
        read_model::position_field(v.config.ledger_topic, store::partition_of_key(ids[k], ledger_partitions));
    auto s = parse_snapshot(ids[k], field, replies[k].array);
    const auto folded = v.fold.folded(field);
    // On a cluster the snapshot carries the offset of the account's own last applied event: the partition's
    // position was raised only after it, so the account has no event between the two.
    if (s.position == folded || (v.cluster && s.position < folded))
      compare(s, v.fold, v.r, v.t);
    else if (s.position > folded)
      later[field].push_back(std::move(s));
    else
      v.r.mismatch("the view's position " + field + "@" + num(s.position) + " is behind where it was (" + num(folded) +
                   "): was the view wiped or replaced while verify ran?");
  }
}

// 2. Every account either side knows, each compared at exactly the position its snapshot carries: at once
// when the fold is there, otherwise after folding further, partition by partition in offset order.
bool compare_accounts(verify_run& v) {
  std::set<std::string> ids;
  for (const auto& [id, a] : v.fold.state.accounts) ids.insert(id);
  for (auto& id : scan_accounts(v.redis)) ids.insert(std::move(id));
  const auto sha = *v.redis.run({"SCRIPT", "LOAD", std::string(account_snapshot_script)}).value;
  const auto ledger_partitions = v.fold.partition_count(v.config.ledger_topic);
  const std::string positions(read_model::positions_key);
  std::map<std::string, std::vector<account_snapshot>> later;
  std::vector<std::string> chunk_ids;
  std::vector<std::vector<std::string>> calls;
  for (const auto& id : ids) {
    const auto field =
        read_model::position_field(v.config.ledger_topic, store::partition_of_key(id, ledger_partitions));
    const auto& index = v.cluster ? read_model::applied_key(id) : positions;
    calls.push_back({"EVALSHA", sha, "4", read_model::account_key(id), read_model::reservations_key(id), index,
                     read_model::grants_key(id), read_model::reservation_key(id, ""),
                     v.cluster ? "account:" + field : field, read_model::grant_key(id)});
    chunk_ids.push_back(id);
    if (calls.size() == snapshot_accounts_per_pipeline || &id == &*ids.rbegin()) {
      if (v.stop.load()) return false;
      compare_chunk(v, chunk_ids, calls, ledger_partitions, later);
      calls.clear();
      chunk_ids.clear();
    }
  }
  for (auto& [field, snapshots] : later) {
    std::sort(snapshots.begin(), snapshots.end(),
              [](const account_snapshot& a, const account_snapshot& b) { return a.position < b.position; });
    for (const auto& s : snapshots) {
      if (v.stop.load()) return false;
      v.fold.advance(field, s.position);
      compare(s, v.fold, v.r, v.t);
    }
  }
  return true;
}

// 3. Poison records: the view's, with its positions, against the fold's up to those positions. Returns how many
// poison events the log has, or nullopt when stopped.
std::optional<std::uint64_t> compare_poison(verify_run& v, const view_poison& seen) {
  for (const auto& [field, at] : seen.positions) {
    if (std::find(v.fold.fields().begin(), v.fold.fields().end(), field) == v.fold.fields().end()) {
      v.r.mismatch("the view has a position for " + field + ", which is not a partition of the configured topics");
      continue;
    }
    if (at < v.fold.folded(field)) {
      v.r.mismatch("the view's position " + field + "@" + num(at) + " is behind where it was (" +
                   num(v.fold.folded(field)) + ")");
      continue;
    }
    if (v.stop.load()) return std::nullopt;
    v.fold.advance(field, at);
  }
  std::uint64_t poison_events = 0;
  static const std::map<std::int64_t, poison_entry> none;
  for (const auto& field : v.fold.fields()) {
    const auto& in_log = v.fold.poison[field];
    const auto found = seen.by_field.find(field);
    const auto& in_view = found == seen.by_field.end() ? none : found->second;
    for (const auto& [offset, pe] : in_log) {
      const auto where = field + ":" + num(offset);
      ++poison_events;
      if (!in_view.contains(offset)) {
        v.r.mismatch("poison event " + where + " (key " + pe.key + ": " + pe.reason + ") is not recorded in the view");
        continue;
      }
      v.r.note("poison: " + where + " key " + pe.key + ": " + in_view.at(offset).reason);
    }
    for (const auto& [offset, pe] : in_view)
      if (!in_log.contains(offset))
        v.r.mismatch("the view records poison event " + field + ":" + num(offset) + " (key " + pe.key + ": " +
                     pe.reason + "), which the log fold applied");
  }
  return poison_events;
}

// 4. Blocked marks and poison records belong together.
void check_blocked(verify_run& v, const std::set<std::string>& poison_keys) {
  std::vector<std::vector<std::string>> flags;
  const std::vector<std::string> keys(poison_keys.begin(), poison_keys.end());
  for (const auto& k : keys) flags.push_back({"HGET", read_model::account_key(k), "blocked"});
  const auto flag_replies =
      flags.empty() ? std::vector<read_model::redis_connection::reply>{} : v.redis.pipeline(flags);
  for (std::size_t i = 0; i < keys.size(); ++i)
    if (flag_replies[i].value != "1")
      v.r.mismatch("account " + keys[i] + " has a poison event but is not marked blocked");
  for (const auto& id : v.t.blocked)
    if (!poison_keys.contains(id)) v.r.mismatch("account " + id + " is marked blocked without a poison record");
}

}  // namespace

int verify(const projector_config& config, const std::atomic<bool>& stop, std::FILE* out) {
  const auto deadline = clock::now() + milliseconds(config.log_read_timeout_ms);
  read_model::redis_connection redis(config.redis_host, config.redis_port, milliseconds(config.redis_timeout_ms));
  redis.run({"CLIENT", "SETNAME", "credits-verify"});
  const bool cluster = redis.clustered();
  if (cluster && config.redis_db != 0)
    throw std::runtime_error("CREDITS_REDIS_DB is " + std::to_string(config.redis_db) +
                             " but the view is on a Redis Cluster, which has only db 0");
  if (!cluster) redis.run({"SELECT", std::to_string(config.redis_db)});
  store::partition_reader reader(config.brokers, {{"fetch.wait.max.ms", std::to_string(config.fetch_wait_ms)}});
  log_fold fold(config, reader, deadline);
  report r(out);
  tally t;
  verify_run v{config, stop, redis, fold, r, t, cluster};

  r.note("verify: view db " + std::to_string(config.redis_db) + " of " + config.redis_host + ":" +
         std::to_string(config.redis_port) + " against " + config.ledger_topic + " and " + config.usage_topic);
  if (!fold_to_view_positions(v) || !compare_accounts(v)) return exit_stopped;
  const auto seen = read_view_poison(redis);
  const auto poison_events = compare_poison(v, seen);
  if (!poison_events) return exit_stopped;
  check_blocked(v, seen.keys);

  r.note("verify: " + std::to_string(fold.events) + " events folded; " + std::to_string(t.accounts) + " accounts, " +
         std::to_string(t.reservations) + " reservations and " + std::to_string(t.grants) + " grants compared; " +
         std::to_string(r.mismatches()) + " mismatches; " + "poison events: " + std::to_string(*poison_events) +
         ", blocked accounts: " + std::to_string(seen.keys.size()));
  std::fflush(out);
  if (r.mismatches() > 0) return 1;
  return *poison_events > 0 ? exit_poison : 0;
}

}  // namespace credits::ops
