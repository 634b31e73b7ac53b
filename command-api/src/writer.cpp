#include "credits/command_api/writer.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>

#include "credits/common/log.hpp"

#include "credits/command_api/responses.hpp"
#include "credits/command_api/snapshot.hpp"
#include "credits/common/contract.hpp"
#include "credits/common/ids.hpp"

namespace credits::api {
namespace {

using std::chrono::milliseconds;

constexpr std::string_view component = "credits-api";

constexpr milliseconds replay_read_timeout{5'000};

// The writer's transactional ids, used in turn (see store::transactional_producer): the next batch does not
// wait for the coordinator to finish writing the previous commit's markers. A constant, not a setting: every
// start-up claims all of them, which is what fences an older process on each.
constexpr std::size_t transactional_ids_in_turn = 2;

// librdkafka backs off up to 10 s between reconnects by default; after a broker restart that delays the
// writer's recovery by as much. One second keeps recovery quick without hammering a broker that is down.
const store::settings producer_settings{{"reconnect.backoff.max.ms", "1000"}};

outcome failure(const rejection& r) { return outcome{http_status(r.code), error_body(r), {}, false}; }

outcome unavailable(std::string message) {
  return failure(rejection{error_code::unavailable, std::move(message), "", nullptr});
}

void note_offset(std::map<std::string, std::vector<std::int64_t>>& next, const std::string& topic,
                 std::int32_t partition, std::int64_t offset) {
  auto& offsets = next[topic];
  if (offsets.size() <= static_cast<std::size_t>(partition)) offsets.resize(static_cast<std::size_t>(partition) + 1, 0);
  offsets[static_cast<std::size_t>(partition)] = std::max(offsets[static_cast<std::size_t>(partition)], offset + 1);
}

}  // namespace

std::string log_position::to_string() const {
  return topic + ":" + std::to_string(partition) + ":" + std::to_string(offset);
}

std::optional<log_position> log_position::parse(std::string_view text) {
  const auto last = text.rfind(':');
  if (last == std::string_view::npos || last == 0) return std::nullopt;
  const auto middle = text.rfind(':', last - 1);
  if (middle == std::string_view::npos || middle == 0) return std::nullopt;
  log_position p;
  p.topic = std::string(text.substr(0, middle));
  const auto part = text.substr(middle + 1, last - middle - 1);
  const auto off = text.substr(last + 1);
  auto [pp, pe] = std::from_chars(part.data(), part.data() + part.size(), p.partition);
  auto [op, oe] = std::from_chars(off.data(), off.data() + off.size(), p.offset);
  if (pe != std::errc{} || pp != part.data() + part.size() || oe != std::errc{} || op != off.data() + off.size() ||
      p.partition < 0 || p.offset < 0)
    return std::nullopt;
  return p;
}

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
  for (const auto& topic : {cfg_.ledger_topic, cfg_.usage_topic})
    producer_->partition_count(topic, cfg_.startup_timeout_ms);
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
  std::sort(s->idempotency.begin(), s->idempotency.end(),
            [](const auto& a, const auto& b) { return a.second.occurred_at < b.second.occurred_at; });
  for (const auto& [slot, record] : s->idempotency) idempotency_.remember(slot, record, std::nullopt);
  next_offsets_ = s->next_offsets;
  from = next_offsets_;
  loaded_snapshot_id_ = s->id;
  return true;
}

void writer::rebuild() {
  const auto started = std::chrono::steady_clock::now();
  state_ = {};
  idempotency_.clear();
  next_offsets_.clear();
  std::unordered_map<std::string, log_position> latest;
  store::start_offsets from;
  const bool from_snapshot = snapshots_ && load_snapshot(from);
  if (!from_snapshot) {  // a snapshot that failed half-way may have left pieces behind
    state_ = {};
    idempotency_.clear();
    next_offsets_.clear();
    from.clear();
  }
  std::size_t events = 0, skipped = 0;
  // The newest keyed events of the tail, rendered once the fold is complete, so that retries after a restart
  // (the common case after a crash) are answered without reading the log again.
  std::deque<std::pair<key128, std::pair<event, log_position>>> recent;
  store::read_to_end(
      cfg_.kafka_brokers, {cfg_.ledger_topic, cfg_.usage_topic},
      [&](const store::message& m) {
        note_offset(next_offsets_, m.topic, m.partition, m.offset);
        std::string error;
        auto e = decode(m.value, &error);
        if (!e) {
          write_log(log_level::warn, component,
                    "skipping undecodable event at " + m.topic + ":" + std::to_string(m.partition) + ":" +
                        std::to_string(m.offset) + ": " + error,
                    {{"topic", m.topic}, {"partition", m.partition}, {"offset", m.offset}, {"accountId", m.key}});
          ++skipped;
          return;
        }
        ++events;
        apply(state_, *e);
        const bool ledger = m.topic == cfg_.ledger_topic;
        if (ledger) latest[e->account_id] = log_position{m.topic, m.partition, m.offset};
        if (!e->idempotency_key.empty()) {
          const auto slot = slot_of(e->tenant, e->idempotency_key);
          idempotency_.remember(
              slot,
              idempotency_record{fingerprint_of(e->request_hash), ledger ? stream::ledger : stream::usage, m.partition,
                                 m.offset, e->occurred_at},
              std::nullopt);
          if (cfg_.idempotency_responses_cached_max > 0) {
            recent.emplace_back(slot, std::make_pair(std::move(*e), log_position{m.topic, m.partition, m.offset}));
            if (recent.size() > cfg_.idempotency_responses_cached_max) recent.pop_front();
          }
        }
      },
      cfg_.startup_timeout_ms, from, partition_ ? std::vector<std::int32_t>{*partition_} : std::vector<std::int32_t>{});
  for (auto& [slot, entry] : recent) {
    auto& [e, where] = entry;
    if (const auto hit = idempotency_.find(slot, e.occurred_at); hit && hit->record.offset == where.offset)
      idempotency_.remember(slot, hit->record,
                            outcome{200, render(e, state_.accounts.at(e.account_id)), where.to_string(), false});
  }
  idempotency_.expire(now_());
  events_since_snapshot_ = events;
  const auto took = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - started);
  {
    std::lock_guard lock(positions_mutex_);
    latest_ = std::move(latest);
    accounts_count_ = state_.accounts.size();
    last_start_ = start_stats{from_snapshot, from_snapshot ? loaded_snapshot_id_ : 0, events, took};
  }
  write_log(log_level::info, component,
            (partition_ ? "partition " + std::to_string(*partition_) + ": " : std::string()) + "state rebuilt in " +
                std::to_string(took.count()) + " ms: " + std::to_string(state_.accounts.size()) + " accounts, " +
                (from_snapshot ? "snapshot " + std::to_string(loaded_snapshot_id_) : std::string("no snapshot")) +
                " + " + std::to_string(events) + " events replayed (" + std::to_string(skipped) + " skipped), " +
                std::to_string(idempotency_.size()) + " idempotency keys",
            {{"durationMs", took.count()},
             {"accounts", state_.accounts.size()},
             {"snapshotId", from_snapshot ? loaded_snapshot_id_ : 0},
             {"eventsReplayed", events},
             {"eventsSkipped", skipped}});
}

void writer::offer_snapshot() {
  if (!snapshots_writer_->idle()) return;  // the last one is still being written: offered again after the next batch
  const auto started = std::chrono::steady_clock::now();
  snapshot_job job;
  job.created_at = now_();
  job.id = std::max<std::uint64_t>(last_snapshot_id_ + 1, static_cast<std::uint64_t>(job.created_at));
  job.next_offsets = next_offsets_;
  job.state = state_;
  job.idempotency.reserve(idempotency_.size());
  idempotency_.for_each(
      [&](const key128& slot, const idempotency_record& r) { job.idempotency.emplace_back(slot, r); });
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
      queue_cv_.wait_for(lock, cfg_.expiry_scan_interval_ms, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_ && queue_.empty()) return;
      while (!queue_.empty() && batch.size() < cfg_.batch_commands_max) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    if (fenced()) {  // nothing may be decided or appended here any more
      release_in_flight(batch);
      for (auto& s : batch) s.done(unavailable("this account's partition moved to another instance; retry"));
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

outcome writer::replay(const idempotency_store::hit& hit) {
  if (hit.response) {
    outcome o = *hit.response;
    o.replayed = true;
    return o;
  }
  // The first answer fell out of the cache: render it again from the event it wrote.
  if (!replay_reader_)  // short fetch waits: each read is one record that is already in the log
    replay_reader_ = std::make_unique<store::consumer>(
        cfg_.kafka_brokers, false, store::settings{{"fetch.wait.max.ms", "5"}, {"fetch.error.backoff.ms", "5"}});
  const auto& topic = topic_of(hit.record.topic);
  const auto m = replay_reader_->read_at(topic, hit.record.partition, hit.record.offset, replay_read_timeout);
  auto e = m ? decode(m->value) : std::nullopt;
  if (!e || !state_.accounts.contains(e->account_id))
    return unavailable("the first answer to this Idempotency-Key cannot be read now; retry later");
  return outcome{200, render(*e, state_.accounts.at(e->account_id)),
                 log_position{topic, hit.record.partition, hit.record.offset}.to_string(), true};
}

void writer::process(std::vector<submission>& batch) {
  const time_ms now = now_();
  idempotency_.expire(now);
  std::vector<std::optional<outcome>> answers(batch.size());
  std::vector<std::optional<std::size_t>> event_of(batch.size());  // index into `events`
  std::vector<event> events;
  std::vector<store::record> records;  // events[k] encoded, in the same order

  for (std::size_t i = 0; i < batch.size(); ++i) {
    auto& s = batch[i];
    s.ctx.now = now;
    if (!s.ctx.idempotency_key.empty()) {
      if (const auto hit = idempotency_.find(slot_of(s.ctx.tenant, s.ctx.idempotency_key), now)) {
        answers[i] = hit->record.request == fingerprint_of(s.ctx.request_hash)
                         ? replay(*hit)
                         : failure(rejection{error_code::idempotency_key_reused,
                                             "this Idempotency-Key was used with a different request", "", nullptr});
        if (answers[i]->replayed) metrics_.idempotent_replay();
        continue;
      }
    }
    auto d = decide(state_, s.cmd, s.ctx, rules_);
    if (auto* r = std::get_if<rejection>(&d)) {
      answers[i] = failure(*r);
      continue;
    }
    auto& decided = std::get<std::vector<event>>(d);
    std::vector<std::string> encoded;
    try {  // encode before apply: an event that cannot be stored must not change the state
      for (auto& e : decided) {
        e.event_id = new_event_id();
        encoded.push_back(encode(e));
      }
    } catch (const std::exception& ex) {
      answers[i] = failure(rejection{error_code::invalid_request,
                                     std::string("the request cannot be stored: ") + ex.what(), "", nullptr});
      continue;
    }
    event_of[i] = events.size();  // the command's own event comes first; signals it caused follow
    for (std::size_t k = 0; k < decided.size(); ++k) {
      apply(state_, decided[k]);
      records.push_back({topic_of(stream_of(decided[k].payload)), decided[k].account_id, std::move(encoded[k]),
                         cloudevents_headers(decided[k], cfg_.event_source)});
      events.push_back(std::move(decided[k]));
    }
  }
  for (auto& e : expire_due(state_, now, cfg_.expiries_per_batch_max)) {
    e.event_id = new_event_id();
    apply(state_, e);
    records.push_back({cfg_.ledger_topic, e.account_id, encode(e), cloudevents_headers(e, cfg_.event_source)});
    events.push_back(std::move(e));
  }

  if (!events.empty()) {
    const auto append_started = std::chrono::steady_clock::now();
    const auto result = producer_->append(records, cfg_.append_timeout_ms);
    const std::chrono::duration<double> append_took = std::chrono::steady_clock::now() - append_started;
    const auto commands = static_cast<std::size_t>(
        std::count_if(event_of.begin(), event_of.end(), [](const auto& k) { return k.has_value(); }));
    if (result.status != store::append_status::committed) {
      const bool unknown = result.status == store::append_status::unknown;
      metrics_.transaction_failed(unknown, append_took.count());
      write_log(log_level::error, component,
                "Kafka transaction of " + std::to_string(events.size()) + " events not committed (" +
                    (unknown ? "outcome unknown" : "aborted") + "): " + result.error,
                {{"outcome", unknown ? "unknown" : "aborted"},
                 {"batchCommands", commands},
                 {"events", events.size()},
                 {"producerLost", result.producer_lost}});
      // Every decision in this batch was made against state that may not be in the log: none is reported,
      // except replays, which rest on earlier committed events. A retry with the same Idempotency-Key
      // learns the true outcome once the state is rebuilt from the log.
      const auto message = result.status == store::append_status::unknown
                               ? "the outcome of the write is unknown; retry with the same Idempotency-Key"
                               : "the event log is unavailable; retry later";
      release_in_flight(batch);
      // A partition writer whose id a newer owner claimed: claiming it back would fence that owner in turn.
      // It stays down (before anyone hears of this batch) until the group's revocation stops it; commands
      // still queued are answered 503.
      const bool fenced_out = result.fenced && partition_;
      if (fenced_out) {
        std::lock_guard lock(queue_mutex_);
        accepting_ = false;
        fenced_ = true;
      }
      for (std::size_t i = 0; i < batch.size(); ++i)
        batch[i].done(answers[i] && answers[i]->replayed ? *answers[i] : unavailable(message));
      if (fenced_out) {
        write_log(log_level::warn, component, "fenced: partition " + std::to_string(*partition_) + " has a newer owner",
                  {{"partition", *partition_}});
        return;
      }
      recover(result.producer_lost);
      return;
    }
    metrics_.transaction_committed(commands, events.size(), append_took.count());
    std::lock_guard lock(positions_mutex_);
    for (std::size_t k = 0; k < events.size(); ++k) {
      const auto& e = events[k];
      const auto& topic = topic_of(stream_of(e.payload));
      note_offset(next_offsets_, topic, result.positions[k].partition, result.positions[k].offset);
      if (stream_of(e.payload) == stream::ledger)
        latest_[e.account_id] = {topic, result.positions[k].partition, result.positions[k].offset};
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (!event_of[i]) continue;
      const auto k = *event_of[i];
      const auto& e = events[k];
      const log_position position{topic_of(stream_of(e.payload)), result.positions[k].partition,
                                  result.positions[k].offset};
      answers[i] = outcome{200, render(e, state_.accounts.at(e.account_id)), position.to_string(), false};
      if (!e.idempotency_key.empty())
        idempotency_.remember(slot_of(e.tenant, e.idempotency_key),
                              idempotency_record{fingerprint_of(e.request_hash), stream_of(e.payload),
                                                 position.partition, position.offset, e.occurred_at},
                              answers[i]);
    }
    accounts_count_ = state_.accounts.size();
    events_since_snapshot_ += events.size();
  }
  release_in_flight(batch);
  for (std::size_t i = 0; i < batch.size(); ++i) batch[i].done(std::move(*answers[i]));
  if (snapshots_ && events_since_snapshot_ >= cfg_.snapshot_interval_events) offer_snapshot();
}

}  // namespace credits::api
