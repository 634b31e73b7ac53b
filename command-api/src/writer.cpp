#include "credits/command_api/writer.hpp"

#include <algorithm>
#include <cstdio>

#include "credits/command_api/snapshot.hpp"
#include "credits/common/assert.hpp"
#include "credits/common/contract.hpp"
#include "credits/common/ids.hpp"
#include "credits/common/log.hpp"
#include "credits/event_store/partitioner.hpp"

namespace credits::api {
namespace {

using std::chrono::milliseconds;

constexpr std::string_view component = "credits-api";

constexpr milliseconds replay_read_timeout{5'000};

// While the window of idempotency keys held is below the configured one, the log says so this often.
constexpr milliseconds window_short_log_interval{3'600'000};

// The writer's transactional ids, used in turn (see store::transactional_producer): the next batch does not
// wait for the coordinator to finish writing the previous commit's markers. A constant, not a setting: every
// start-up claims all of them, which is what fences an older process on each.
constexpr std::size_t transactional_ids_in_turn = 2;

// librdkafka backs off up to 10 s between reconnects by default; after a broker restart that delays the
// writer's recovery by as much. One second keeps recovery quick without hammering a broker that is down.
const store::settings producer_settings{{"reconnect.backoff.max.ms", "1000"}};

void note_offset(std::map<std::string, std::vector<std::int64_t>>& next, const std::string& topic,
                 std::int32_t partition, std::int64_t offset) {
  auto& offsets = next[topic];
  if (offsets.size() <= static_cast<std::size_t>(partition)) offsets.resize(static_cast<std::size_t>(partition) + 1, 0);
  offsets[static_cast<std::size_t>(partition)] = std::max(offsets[static_cast<std::size_t>(partition)], offset + 1);
}

// What answering for `e` reads of its account; an EventVoided's account need not exist.
account_facts facts_in(const ledger_state& state, const event& e) {
  static const account_state none;
  const auto it = state.accounts.find(e.account_id);
  return facts_of(e, it == state.accounts.end() ? none : it->second);
}

// The id under which the record at `where` is quarantined on `account`.
std::string quarantined_id(const ledger_state& state, const std::string& account, const std::string& where) {
  for (const auto& q : state.quarantined.at(account))
    if (q.position == where) return q.event_id;
  return where;
}

// A partition writer's share of a per-process limit: the process may come to own every partition, and their
// shares together stay within the limit.
std::size_t share_of(std::size_t per_process, std::int32_t partitions) {
  if (per_process == 0) return 0;
  return std::max<std::size_t>(1, per_process / static_cast<std::size_t>(std::max(partitions, 1)));
}

}  // namespace

writer::writer(const config& cfg, clock_fn now, api_metrics& metrics, std::optional<std::int32_t> partition)
    : cfg_(cfg),
      partition_(partition),
      rules_{cfg.balance_low_threshold, cfg.model_prices},
      now_(std::move(now)),
      metrics_(metrics),
      idempotency_(cfg.idempotency_window_ms, cfg.idempotency_keys_max, cfg.idempotency_responses_cached_max),
      snapshots_(cfg.snapshot_interval_events > 0) {}

writer::~writer() { stop(); }

std::string writer::snapshot_scope() const { return partition_ ? "p" + std::to_string(*partition_) : std::string(); }

std::unique_ptr<store::transactional_producer> writer::make_producer(milliseconds init_timeout) const {
  // A partition writer uses one id: its batches are small and the partitions' writers commit side by side.
  if (partition_)
    return std::make_unique<store::transactional_producer>(
        cfg_.kafka_brokers, cfg_.transactional_id + "-p" + std::to_string(*partition_),
        cfg_.kafka_transaction_timeout_ms, init_timeout, producer_settings, 1);
  return std::make_unique<store::transactional_producer>(cfg_.kafka_brokers, cfg_.transactional_id,
                                                         cfg_.kafka_transaction_timeout_ms, init_timeout,
                                                         producer_settings, transactional_ids_in_turn);
}

void writer::start() {
  producer_ = make_producer(cfg_.startup_timeout_ms);
  for (const auto& topic : {cfg_.ledger_topic, cfg_.usage_topic}) {
    partition_counts_[topic] = producer_->partition_count(topic, cfg_.startup_timeout_ms);
    if (partition_counts_[topic] > idempotency_partitions_max)
      throw std::runtime_error("topic " + topic + " has more than " + std::to_string(idempotency_partitions_max) +
                               " partitions, more than an idempotency key can name");
  }
  if (partition_) {  // CREDITS_IDEMPOTENCY_KEYS_MAX bounds the process, whatever partitions it comes to own
    const auto partitions = partition_counts_.at(cfg_.ledger_topic);
    idempotency_ = idempotency_store(cfg_.idempotency_window_ms, share_of(cfg_.idempotency_keys_max, partitions),
                                     share_of(cfg_.idempotency_responses_cached_max, partitions));
  }
  if (snapshots_) {
    try {
      producer_->partition_count(cfg_.snapshot_topic, cfg_.startup_timeout_ms);
    } catch (const std::exception& ex) {
      // Without the topic the writer still works; every start-up just replays the whole log.
      write_log(log_level::warn, component, std::string("snapshots disabled: ") + ex.what(),
                {{"topic", cfg_.snapshot_topic}});
      snapshots_ = false;
    }
  }
  if (snapshots_) snapshots_writer_ = std::make_unique<snapshot_writer>(cfg_, snapshot_scope());
  rebuild();
  {
    std::lock_guard lock(queue_mutex_);
    accepting_ = true;
  }
  thread_ = std::thread([this] { run(); });
}

void writer::stop() {
  {
    std::lock_guard lock(queue_mutex_);
    stopping_ = true;
    accepting_ = false;
  }
  queue_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  snapshots_writer_.reset();  // after the writer thread: it finishes the snapshot it is writing
}

submit_result writer::submit(submission&& s) {
  {
    std::lock_guard lock(queue_mutex_);
    if (!accepting_ || queue_.size() >= cfg_.queue_commands_max) return submit_result::busy;
    if (!s.ctx.idempotency_key.empty() && !in_flight_.insert(slot_of(s.ctx.tenant, s.ctx.idempotency_key)).second)
      return submit_result::in_flight;
    queue_.push_back(std::move(s));
  }
  queue_cv_.notify_one();
  return submit_result::queued;
}

std::optional<std::string> writer::quarantined_account(const std::string& event_id) const {
  std::lock_guard lock(positions_mutex_);
  const auto it = quarantine_index_.find(event_id);
  if (it == quarantine_index_.end()) return std::nullopt;
  return it->second;
}

std::optional<log_position> writer::latest_position(const std::string& account_id) const {
  std::lock_guard lock(positions_mutex_);
  auto it = latest_.find(account_id);
  if (it == latest_.end()) return std::nullopt;
  return it->second;
}

bool writer::ready() const {
  std::lock_guard lock(queue_mutex_);
  return accepting_;
}

bool writer::fenced() const {
  std::lock_guard lock(queue_mutex_);
  return fenced_;
}

std::size_t writer::queued_commands() const {
  std::lock_guard lock(queue_mutex_);
  return queue_.size();
}

std::size_t writer::accounts() const {
  std::lock_guard lock(positions_mutex_);
  return accounts_count_;
}

writer::start_stats writer::last_start() const {
  std::lock_guard lock(positions_mutex_);
  return last_start_;
}

writer::idempotency_summary writer::idempotency() const {
  return {
      idempotency_keys_.load(std::memory_order_relaxed), idempotency_keys_max_.load(std::memory_order_relaxed),
      idempotency_bytes_.load(std::memory_order_relaxed),
      window_held(cfg_.idempotency_window_ms, idempotency_forgotten_until_.load(std::memory_order_relaxed), now_())};
}

// Publishes the idempotency store's figures to other threads, and says in the log when the window held falls
// below the configured one (a retry of an older request would be written again), hourly while it stays there,
// and when it is whole again.
void writer::watch_idempotency(time_ms now) {
  idempotency_keys_.store(idempotency_.size(), std::memory_order_relaxed);
  idempotency_keys_max_.store(idempotency_.keys_max(), std::memory_order_relaxed);
  idempotency_bytes_.store(idempotency_.bytes(), std::memory_order_relaxed);
  idempotency_forgotten_until_.store(idempotency_.forgotten_until(), std::memory_order_relaxed);
  const auto held = idempotency_.window_held(now);
  const auto where = partition_ ? "partition " + std::to_string(*partition_) + ": " : std::string();
  if (held < cfg_.idempotency_window_ms) {
    if (window_short_logged_at_ >= 0 && now - window_short_logged_at_ < window_short_log_interval.count()) return;
    write_log(log_level::warn, component,
              where + "idempotency window held is " + std::to_string(held.count() / 1000) +
                  " s, below CREDITS_IDEMPOTENCY_WINDOW_S: the oldest keys were forgotten to stay within " +
                  std::to_string(idempotency_.keys_max()) +
                  " keys (CREDITS_IDEMPOTENCY_KEYS_MAX); a retry of an older request is written again",
              {{"windowHeldS", held.count() / 1000},
               {"windowS", cfg_.idempotency_window_ms.count() / 1000},
               {"keys", idempotency_.size()},
               {"keysMax", idempotency_.keys_max()}});
    window_short_logged_at_ = now;
  } else if (window_short_logged_at_ >= 0) {
    write_log(log_level::info, component, where + "idempotency window held is whole again",
              {{"windowHeldS", held.count() / 1000}});
    window_short_logged_at_ = -1;
  }
}

const std::string& writer::topic_of(stream s) const {
  return s == stream::ledger ? cfg_.ledger_topic : cfg_.usage_topic;
}

std::string writer::new_event_id() {
  const auto hi = rng_();
  return uuid_v4(hi, rng_());
}

bool writer::load_snapshot(store::start_offsets& from) {
  snapshot_assembler assembler(snapshot_scope());
  store::read_to_end(
      cfg_.kafka_brokers, {cfg_.snapshot_topic}, [&](const store::message& m) { assembler.add(m.value); },
      cfg_.startup_timeout_ms);
  last_snapshot_id_ = std::max(last_snapshot_id_, assembler.highest_id());
  std::vector<std::string> problems;
  const auto payload = assembler.newest(problems);
  for (const auto& p : problems) write_log(log_level::warn, component, "snapshot: " + p);
  if (!payload) {
    write_log(log_level::info, component, "no usable snapshot; replaying the whole log");
    return false;
  }
  std::string error;
  auto s = decode_snapshot(*payload, &error);
  if (!s) {
    write_log(log_level::warn, component, "snapshot is corrupt (" + error + "); replaying the whole log",
              {{"snapshotId", assembler.highest_id()}});
    return false;
  }
  state_ = std::move(s->state);
  idempotency_.restore(s->idempotency, s->created_at, now_());
  next_offsets_ = s->next_offsets;
  from = next_offsets_;
  loaded_snapshot_id_ = s->id;
  return true;
}

// A record the replay could not fold: it blocks its account (or, without a key, nothing), which the log says
// each time a replay reads it.
void writer::report_refused(const store::message& m, const replayed& r) {
  const auto where = m.topic + ":" + std::to_string(m.partition) + ":" + std::to_string(m.offset);
  if (r.result == replayed::outcome::unkeyed) {
    metrics_.unkeyed_record();
    write_log(log_level::error, component,
              "a record without a key at " + where + " cannot be folded (" + r.reason + "); it blocks no account",
              {{"topic", m.topic}, {"partition", m.partition}, {"offset", m.offset}, {"reason", r.reason}});
    return;
  }
  write_log(log_level::error, component,
            "account " + m.key + " quarantined: the record at " + where + " cannot be folded (" + r.reason +
                "); its commands answer 423 account_blocked until an operator voids the record " +
                "(POST /v1/admin/events/void, credits-admin events void)",
            {{"topic", m.topic},
             {"partition", m.partition},
             {"offset", m.offset},
             {"accountId", m.key},
             {"eventId", quarantined_id(state_, m.key, where)},
             {"reason", r.reason}});
}

// Publishes the quarantine for quarantined_account() and the metrics, after a rebuild or a void.
void writer::publish_quarantine() {
  std::unordered_map<std::string, std::string> index;
  for (const auto& [account, records] : state_.quarantined)
    for (const auto& q : records) index.emplace(q.event_id, account);
  const auto accounts = static_cast<std::int64_t>(state_.quarantined.size());
  const auto records = static_cast<std::int64_t>(index.size());
  metrics_.quarantine_changed(accounts - quarantined_accounts_reported_, records - quarantined_records_reported_);
  quarantined_accounts_reported_ = accounts;
  quarantined_records_reported_ = records;
  std::lock_guard lock(positions_mutex_);
  quarantine_index_ = std::move(index);
}

// What folding the log's tail found besides the state: each account's last ledger position, the newest keyed
// events (rendered once the fold is complete, so that retries after a restart, the common case after a crash, are
// answered without reading the log again) and how many events were folded or skipped.
struct writer::tail_fold {
  std::unordered_map<std::string, log_position> latest;
  std::deque<std::pair<std::uint64_t, std::pair<event, log_position>>> recent;  // by key sequence number
  std::size_t events = 0;
  std::size_t skipped = 0;
  time_ms now = 0;  // when the fold began: keys whose window had passed by then are not remembered
};

void writer::rebuild() {
  const auto started = std::chrono::steady_clock::now();
  state_ = {};
  idempotency_.clear();
  next_offsets_.clear();
  store::start_offsets from;
  const bool from_snapshot = snapshots_ && load_snapshot(from);
  if (!from_snapshot) {  // a snapshot that failed half-way may have left pieces behind
    state_ = {};
    idempotency_.clear();
    next_offsets_.clear();
    from.clear();
  }
  tail_fold tail;
  tail.now = now_();
  store::read_to_end(
      cfg_.kafka_brokers, {cfg_.ledger_topic, cfg_.usage_topic}, [&](const store::message& m) { fold(m, tail); },
      cfg_.startup_timeout_ms, from, partition_ ? std::vector<std::int32_t>{*partition_} : std::vector<std::int32_t>{});
  cache_recent_answers(tail);
  publish_quarantine();
  idempotency_.expire(now_());
  watch_idempotency(now_());
  events_since_snapshot_ = tail.events;
  const auto took = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - started);
  {
    std::lock_guard lock(positions_mutex_);
    latest_ = std::move(tail.latest);
    accounts_count_ = state_.accounts.size();
    last_start_ = start_stats{from_snapshot, from_snapshot ? loaded_snapshot_id_ : 0, tail.events, took};
  }
  write_log(log_level::info, component,
            (partition_ ? "partition " + std::to_string(*partition_) + ": " : std::string()) + "state rebuilt in " +
                std::to_string(took.count()) + " ms: " + std::to_string(state_.accounts.size()) + " accounts, " +
                (from_snapshot ? "snapshot " + std::to_string(loaded_snapshot_id_) : std::string("no snapshot")) +
                " + " + std::to_string(tail.events) + " events replayed (" + std::to_string(tail.skipped) +
                " skipped), " + std::to_string(idempotency_.size()) + " idempotency keys (window held " +
                std::to_string(idempotency_.window_held(now_()).count() / 1000) + " s)",
            {{"durationMs", took.count()},
             {"accounts", state_.accounts.size()},
             {"snapshotId", from_snapshot ? loaded_snapshot_id_ : 0},
             {"eventsReplayed", tail.events},
             {"eventsSkipped", tail.skipped}});
}

void writer::fold(const store::message& m, tail_fold& t) {
  note_offset(next_offsets_, m.topic, m.partition, m.offset);
  const auto topic_stream = m.topic == cfg_.ledger_topic ? stream::ledger : stream::usage;
  auto folded = credits::replay(
      state_, log_record{m.topic, topic_stream, m.partition,
                         store::partition_of_key(m.key, partition_counts_.at(m.topic)), m.offset, m.key, m.value});
  if (folded.result != replayed::outcome::applied) {
    report_refused(m, folded);
    ++t.skipped;
    return;
  }
  ++t.events;
  auto e = std::move(folded.e);
  const bool ledger = m.topic == cfg_.ledger_topic;
  if (ledger) t.latest[e->account_id] = log_position{m.topic, m.partition, m.offset};
  if (e->idempotency_key.empty() || e->occurred_at + cfg_.idempotency_window_ms.count() <= t.now) return;
  const auto sequence = remember_key(*e, ledger ? stream::ledger : stream::usage, m.partition, m.offset);
  if (!sequence || cfg_.idempotency_responses_cached_max == 0) return;
  t.recent.emplace_back(*sequence, std::make_pair(std::move(*e), log_position{m.topic, m.partition, m.offset}));
  if (t.recent.size() > cfg_.idempotency_responses_cached_max) t.recent.pop_front();
}

void writer::cache_recent_answers(tail_fold& t) {
  for (auto& [sequence, entry] : t.recent) {
    auto& [e, where] = entry;
    auto facts = facts_in(state_, e);
    idempotency_.keep_answer(sequence, accepted{std::move(e), std::move(facts), std::move(where), false});
  }
}

void writer::offer_snapshot() {
  if (!snapshots_writer_->idle()) return;  // the last one is still being written: offered again after the next batch
  const auto started = std::chrono::steady_clock::now();
  snapshot_job job;
  job.created_at = now_();
  job.id = std::max<std::uint64_t>(last_snapshot_id_ + 1, static_cast<std::uint64_t>(job.created_at));
  job.next_offsets = next_offsets_;
  job.state = state_;
  job.idempotency = idempotency_.image();
  job.copy_took = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - started);
  const auto id = job.id;
  if (!snapshots_writer_->offer(job)) return;
  last_snapshot_id_ = id;  // even if writing it fails, the next one is numbered above it
  events_since_snapshot_ = 0;
}

void writer::recover(bool producer_lost) {
  {
    std::lock_guard lock(queue_mutex_);
    accepting_ = false;
  }
  // Until the state matches the log again, no command may be decided: retry with a bounded backoff.
  milliseconds backoff{100};
  constexpr milliseconds backoff_max{5000};
  for (;;) {
    try {
      if (producer_lost) {
        producer_.reset();
        producer_ = make_producer(cfg_.kafka_transaction_timeout_ms);
        producer_lost = false;
      }
      rebuild();
      break;
    } catch (const std::exception& ex) {
      write_log(log_level::error, component, std::string("recovery failed, retrying: ") + ex.what(),
                {{"backoffMs", backoff.count()}});
      {
        std::lock_guard lock(queue_mutex_);
        if (stopping_) return;
      }
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, backoff_max);
    }
  }
  std::lock_guard lock(queue_mutex_);
  accepting_ = !stopping_;
}

void writer::run() {
  std::vector<submission> batch;
  for (;;) {
    {
      std::unique_lock lock(queue_mutex_);
      const auto scan_in = expiries_backlog_ ? std::chrono::milliseconds(0) : cfg_.expiry_scan_interval_ms;
      queue_cv_.wait_for(lock, scan_in, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_ && queue_.empty()) return;
      while (!queue_.empty() && batch.size() < cfg_.batch_commands_max) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    if (fenced()) {  // nothing may be decided or appended here any more
      std::vector<std::optional<command_result>> answers(batch.size(),
                                                         unavailable{unavailable_reason::partition_moved});
      answer(batch, answers);
      batch.clear();
      continue;
    }
    process(batch);
    batch.clear();
  }
}

void writer::release_in_flight(const std::vector<submission>& batch) {
  std::lock_guard lock(queue_mutex_);
  for (const auto& s : batch)
    if (!s.ctx.idempotency_key.empty()) in_flight_.erase(slot_of(s.ctx.tenant, s.ctx.idempotency_key));
}

// The first answer of a remembered key: kept whole, or rendered again from the event it wrote (one log read).
// nullopt when the event cannot be read now.
std::optional<accepted> writer::first_answer(const idempotency_store::candidate& c) {
  if (const auto* kept = idempotency_.answer(c.sequence)) return *kept;
  if (!replay_reader_)  // short fetch waits: each read is one record that is already in the log
    replay_reader_ = std::make_unique<store::consumer>(
        cfg_.kafka_brokers, false, store::settings{{"fetch.wait.max.ms", "5"}, {"fetch.error.backoff.ms", "5"}});
  const auto& topic = topic_of(c.record.topic);
  const auto m = replay_reader_->read_at(topic, c.record.partition, c.record.offset, replay_read_timeout);
  auto e = m ? decode(m->value) : std::nullopt;
  if (!e || (!state_.accounts.contains(e->account_id) && !std::holds_alternative<event_voided>(e->payload)))
    return std::nullopt;
  auto facts = facts_in(state_, *e);
  accepted a{std::move(*e), std::move(facts), log_position{topic, c.record.partition, c.record.offset}, false};
  idempotency_.keep_answer(c.sequence, a);  // a client that retried once may well retry again
  return a;
}

// What deciding a batch hands on to appending and answering it. Each submission is either answered already
// (`answers[i]`: a replay or a rejection) or waits for its own event, `events[event_of[i]]`, to commit; never both.
struct writer::decided_batch {
  time_ms now = 0;
  std::vector<std::optional<command_result>> answers;
  std::vector<std::optional<std::size_t>> event_of;
  std::vector<event> events;           // the commands' events (each command's own first), then the expiries
  std::vector<store::record> records;  // events[k] encoded, in the same order

  std::size_t commands() const {
    return static_cast<std::size_t>(
        std::count_if(event_of.begin(), event_of.end(), [](const auto& k) { return k.has_value(); }));
  }
};

void writer::process(std::vector<submission>& batch) {
  auto decided = decide_batch(batch);
  if (!decided.events.empty()) {
    const auto result = append(decided);
    if (result.status != store::append_status::committed) return fail(batch, decided, result);
    commit(decided, result);
    if (std::any_of(decided.events.begin(), decided.events.end(),
                    [](const event& e) { return std::holds_alternative<event_voided>(e.payload); }))
      publish_quarantine();
  }
  answer(batch, decided.answers);
  watch_idempotency(decided.now);
  if (snapshots_ && events_since_snapshot_ >= cfg_.snapshot_interval_events) offer_snapshot();
}

writer::decided_batch writer::decide_batch(std::vector<submission>& batch) {
  decided_batch d;
  d.now = now_();
  idempotency_.expire(d.now);
  d.answers.resize(batch.size());
  d.event_of.resize(batch.size());
  for (std::size_t i = 0; i < batch.size(); ++i) {
    batch[i].ctx.now = d.now;
    decide_one(batch[i], i, d);
    CREDITS_ASSERT(d.answers[i].has_value() != d.event_of[i].has_value(),
                   "a command is answered at once or by its event, exactly one of the two");
  }
  add_expiries(d);
  CREDITS_ASSERT(d.records.size() == d.events.size(), "one record per event to append");
  return d;
}

void writer::decide_one(submission& s, std::size_t index, decided_batch& d) {
  if (auto answer = answer_from_key(s, d.now)) {
    d.answers[index] = std::move(*answer);
    return;
  }
  auto decision = decide(state_, s.cmd, s.ctx, rules_);
  if (auto* r = std::get_if<rejection>(&decision)) {
    d.answers[index] = std::move(*r);
    return;
  }
  auto& decided = std::get<std::vector<event>>(decision);
  CREDITS_ASSERT(!decided.empty(), "an accepted command decides at least its own event");
  std::vector<std::string> encoded;
  try {  // encode before apply: an event that cannot be stored must not change the state
    for (auto& e : decided) {
      e.event_id = new_event_id();
      encoded.push_back(encode(e));
    }
  } catch (const std::exception& ex) {
    d.answers[index] =
        rejection{error_code::invalid_request, std::string("the request cannot be stored: ") + ex.what(), "", nullptr};
    return;
  }
  d.event_of[index] = d.events.size();  // the command's own event comes first; signals it caused follow
  for (std::size_t k = 0; k < decided.size(); ++k) {
    apply(state_, decided[k]);
    d.records.push_back({topic_of(stream_of(decided[k].payload)), decided[k].account_id, std::move(encoded[k]),
                         cloudevents_headers(decided[k], cfg_.event_source)});
    d.events.push_back(std::move(decided[k]));
  }
}

// A retry of a command whose Idempotency-Key this writer remembers: the first answer again, or a rejection when
// the key came with a different request. nullopt: the key is new (or the command carries none). The store only
// knows a fingerprint of each key: every candidate is checked against its event (tenant, key, time, request).
std::optional<command_result> writer::answer_from_key(const submission& s, time_ms now) {
  if (s.ctx.idempotency_key.empty()) return std::nullopt;
  for (const auto& c : idempotency_.find(slot_of(s.ctx.tenant, s.ctx.idempotency_key), now)) {
    auto first = first_answer(c);
    if (!first) return unavailable{unavailable_reason::first_answer_unreadable};
    switch (match_retry(first->e, s.ctx.tenant, s.ctx.idempotency_key, s.ctx.request_hash, cfg_.idempotency_window_ms,
                        now)) {
      case retry_match::other_key:
        continue;
      case retry_match::expired:  // candidates come newest first: every other one of this key is older
        return std::nullopt;
      case retry_match::reused:
        return rejection{error_code::idempotency_key_reused, "this Idempotency-Key was used with a different request",
                         "", nullptr};
      case retry_match::replay:
        first->replayed = true;
        metrics_.idempotent_replay();
        return std::move(*first);
    }
  }
  return std::nullopt;
}

// Remembers the key of `e`, written at topic:partition:offset; its sequence number in the store.
std::optional<std::uint64_t> writer::remember_key(const event& e, stream topic, std::int32_t partition,
                                                  std::int64_t offset) {
  auto sequence = idempotency_.remember(slot_of(e.tenant, e.idempotency_key),
                                        idempotency_record{topic, partition, offset, e.occurred_at});
  if (!sequence)  // beyond idempotency_offset_max: unreachable in practice, and never silent
    write_log(log_level::error, component,
              "idempotency key not remembered: offset " + std::to_string(offset) + " is beyond what a key can name",
              {{"partition", partition}, {"offset", offset}});
  return sequence;
}

void writer::add_expiries(decided_batch& d) {
  const auto add = [&](std::vector<event> events) {
    for (auto& e : events) {
      e.event_id = new_event_id();
      apply(state_, e);
      d.records.push_back({cfg_.ledger_topic, e.account_id, encode(e), cloudevents_headers(e, cfg_.event_source)});
      d.events.push_back(std::move(e));
    }
    return events.size();
  };
  // Grants expire by the same clock, batching and restart rules as holds, within what the holds left of the
  // batch's budget: a hold's expiry first returns its draws, so a grant's remainder is judged after it.
  const auto holds = add(expire_due(state_, d.now, cfg_.expiries_per_batch_max));
  const auto grants = holds < cfg_.expiries_per_batch_max
                          ? add(expire_grants_due(state_, d.now, cfg_.expiries_per_batch_max - holds))
                          : 0;
  expiries_backlog_ = holds + grants >= cfg_.expiries_per_batch_max;
}

store::append_result writer::append(const decided_batch& d) {
  const auto started = std::chrono::steady_clock::now();
  auto result = producer_->append(d.records, cfg_.append_timeout_ms);
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
  if (result.status == store::append_status::committed) {
    CREDITS_ASSERT(result.positions.size() == d.records.size(), "a committed append has one position per record");
    metrics_.transaction_committed(d.commands(), d.events.size(), took.count());
    return result;
  }
  const bool unknown = result.status == store::append_status::unknown;
  metrics_.transaction_failed(unknown, took.count());
  write_log(log_level::error, component,
            "Kafka transaction of " + std::to_string(d.events.size()) + " events not committed (" +
                (unknown ? "outcome unknown" : "aborted") + "): " + result.error,
            {{"outcome", unknown ? "unknown" : "aborted"},
             {"batchCommands", d.commands()},
             {"events", d.events.size()},
             {"producerLost", result.producer_lost}});
  return result;
}

// The batch is in the log: what the state covers moves on, and every command that wrote is accepted (and
// remembered under its Idempotency-Key, with its answer).
void writer::commit(decided_batch& d, const store::append_result& result) {
  std::vector<log_position> positions;
  positions.reserve(d.events.size());
  std::lock_guard lock(positions_mutex_);
  for (std::size_t k = 0; k < d.events.size(); ++k) {
    const auto& e = d.events[k];
    positions.push_back({topic_of(stream_of(e.payload)), result.positions[k].partition, result.positions[k].offset});
    note_offset(next_offsets_, positions[k].topic, positions[k].partition, positions[k].offset);
    if (stream_of(e.payload) == stream::ledger) latest_[e.account_id] = positions[k];
  }
  for (std::size_t i = 0; i < d.answers.size(); ++i) {
    if (!d.event_of[i]) continue;
    const auto k = *d.event_of[i];
    const auto& e = d.events[k];
    accepted a{e, facts_in(state_, e), positions[k], false};
    if (!e.idempotency_key.empty())
      if (const auto sequence = remember_key(e, stream_of(e.payload), positions[k].partition, positions[k].offset))
        idempotency_.keep_answer(*sequence, a);
    d.answers[i] = std::move(a);
  }
  accounts_count_ = state_.accounts.size();
  events_since_snapshot_ += d.events.size();
}

// The batch's Kafka transaction did not commit. Every decision in it was made against state that may not be in
// the log: none is reported, except replays, which rest on earlier committed events. A retry with the same
// Idempotency-Key learns the true outcome once the state is rebuilt from the log.
void writer::fail(std::vector<submission>& batch, decided_batch& d, const store::append_result& result) {
  const unavailable why{result.status == store::append_status::unknown ? unavailable_reason::outcome_unknown
                                                                       : unavailable_reason::log_unavailable};
  for (auto& a : d.answers) {
    const auto* first = a ? std::get_if<accepted>(&*a) : nullptr;
    if (!first || !first->replayed) a = why;
  }
  // A partition writer whose id a newer owner claimed: claiming it back would fence that owner in turn. It stays
  // down (before anyone hears of this batch) until the group's revocation stops it; commands still queued are
  // answered `unavailable`.
  const bool fenced_out = result.fenced && partition_;
  if (fenced_out) {
    std::lock_guard lock(queue_mutex_);
    accepting_ = false;
    fenced_ = true;
  }
  answer(batch, d.answers);
  if (fenced_out) {
    write_log(log_level::warn, component, "fenced: partition " + std::to_string(*partition_) + " has a newer owner",
              {{"partition", *partition_}});
    return;
  }
  recover(result.producer_lost);
}

// Frees the batch's Idempotency-Key slots, then answers each submission exactly once.
void writer::answer(std::vector<submission>& batch, std::vector<std::optional<command_result>>& answers) {
  CREDITS_ASSERT(answers.size() == batch.size(), "one answer per submission");
  release_in_flight(batch);
  for (std::size_t i = 0; i < batch.size(); ++i) {
    CREDITS_ASSERT(answers[i].has_value(), "every submission is answered");
    batch[i].done(std::move(*answers[i]));
  }
}

}  // namespace credits::api
