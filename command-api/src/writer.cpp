#include "credits/writer.hpp"

#include <charconv>
#include <cstdio>
#include <unordered_set>

#include "credits/responses.hpp"

namespace credits::api {
namespace {

std::string idempotency_slot(const request_context& ctx) { return ctx.tenant + '\n' + ctx.idempotency_key; }

outcome failure(const rejection& r) { return outcome{http_status(r.code), error_body(r), {}, false}; }

outcome unavailable(std::string message) {
  return failure(rejection{error_code::unavailable, std::move(message), "", nullptr});
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

writer::writer(const config& cfg, clock_fn now) : cfg_(cfg), now_(std::move(now)) {}

writer::~writer() { stop(); }

void writer::start() {
  producer_ = std::make_unique<store::transactional_producer>(cfg_.kafka_brokers, cfg_.transactional_id,
                                                              cfg_.kafka_transaction_timeout_ms,
                                                              cfg_.startup_timeout_ms);
  for (const auto& topic : {cfg_.ledger_topic, cfg_.usage_topic}) producer_->partition_count(topic, cfg_.startup_timeout_ms);
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
}

bool writer::submit(submission&& s) {
  {
    std::lock_guard lock(queue_mutex_);
    if (!accepting_ || queue_.size() >= cfg_.queue_commands_max) return false;
    queue_.push_back(std::move(s));
  }
  queue_cv_.notify_one();
  return true;
}

std::optional<log_position> writer::latest_position(const std::string& account_id) const {
  std::lock_guard lock(positions_mutex_);
  auto it = latest_.find(account_id);
  if (it == latest_.end()) return std::nullopt;
  return it->second;
}

std::size_t writer::accounts() const {
  std::lock_guard lock(positions_mutex_);
  return accounts_count_;
}

const std::string& writer::topic_of(const event& e) const {
  return stream_of(e.payload) == stream::ledger ? cfg_.ledger_topic : cfg_.usage_topic;
}

std::string writer::new_event_id() {
  // UUID version 4 (random), RFC 9562.
  std::uint64_t hi = rng_(), lo = rng_();
  hi = (hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;
  lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
  char buf[37];
  std::snprintf(buf, sizeof buf, "%08llx-%04llx-%04llx-%04llx-%012llx", static_cast<unsigned long long>(hi >> 32),
                static_cast<unsigned long long>((hi >> 16) & 0xffff), static_cast<unsigned long long>(hi & 0xffff),
                static_cast<unsigned long long>(lo >> 48), static_cast<unsigned long long>(lo & 0xffffffffffffULL));
  return buf;
}

void writer::rebuild() {
  state_ = {};
  idempotency_.clear();
  std::unordered_map<std::string, log_position> latest;
  // Responses are rendered once the whole log is folded: a usage event may be read before the
  // AccountCreated event of its account (they sit in different topics).
  std::vector<std::pair<event, log_position>> keyed;
  std::size_t events = 0, skipped = 0;
  store::read_to_end(
      cfg_.kafka_brokers, {cfg_.ledger_topic, cfg_.usage_topic},
      [&](const store::message& m) {
        std::string error;
        auto e = decode(m.value, &error);
        if (!e) {
          std::fprintf(stderr, "credits-api: skipping undecodable event at %s:%d:%lld: %s\n", m.topic.c_str(),
                       m.partition, static_cast<long long>(m.offset), error.c_str());
          ++skipped;
          return;
        }
        ++events;
        apply(state_, *e);
        log_position where{m.topic, m.partition, m.offset};
        if (m.topic == cfg_.ledger_topic) latest[e->account_id] = where;
        if (!e->idempotency_key.empty()) keyed.emplace_back(std::move(*e), std::move(where));
      },
      cfg_.startup_timeout_ms);
  for (auto& [e, where] : keyed)
    idempotency_[e.tenant + '\n' + e.idempotency_key] =
        remembered{e.request_hash, outcome{200, render(e, state_.accounts.at(e.account_id)), where.to_string(), false}};
  {
    std::lock_guard lock(positions_mutex_);
    latest_ = std::move(latest);
    accounts_count_ = state_.accounts.size();
  }
  std::fprintf(stderr, "credits-api: rebuilt %zu accounts from %zu events (%zu skipped), %zu idempotency keys\n",
               state_.accounts.size(), events, skipped, idempotency_.size());
}

void writer::recover(bool producer_lost) {
  {
    std::lock_guard lock(queue_mutex_);
    accepting_ = false;
  }
  // Until the state matches the log again, no command may be decided: retry with a bounded backoff.
  std::chrono::milliseconds backoff{100};
  constexpr std::chrono::milliseconds backoff_max{5000};
  for (;;) {
    try {
      if (producer_lost) {
        producer_.reset();
        producer_ = std::make_unique<store::transactional_producer>(cfg_.kafka_brokers, cfg_.transactional_id,
                                                                    cfg_.kafka_transaction_timeout_ms,
                                                              cfg_.startup_timeout_ms);
        producer_lost = false;
      }
      rebuild();
      break;
    } catch (const std::exception& ex) {
      std::fprintf(stderr, "credits-api: recovery failed, retrying: %s\n", ex.what());
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
    process(batch);
    batch.clear();
  }
}

void writer::process(std::vector<submission>& batch) {
  const time_ms now = now_();
  std::vector<std::optional<outcome>> answers(batch.size());
  std::vector<std::optional<std::size_t>> event_of(batch.size());  // index into `events`
  std::vector<event> events;
  std::unordered_set<std::string> keys_in_batch;

  for (std::size_t i = 0; i < batch.size(); ++i) {
    auto& s = batch[i];
    s.ctx.now = now;
    if (!s.ctx.idempotency_key.empty()) {
      const auto slot = idempotency_slot(s.ctx);
      if (auto it = idempotency_.find(slot); it != idempotency_.end()) {
        if (it->second.request_hash == s.ctx.request_hash) {
          answers[i] = it->second.result;
          answers[i]->replayed = true;
        } else {
          answers[i] = failure(rejection{error_code::idempotency_key_reused,
                                         "this Idempotency-Key was used with a different request", "", nullptr});
        }
        continue;
      }
      if (!keys_in_batch.insert(slot).second) {
        answers[i] = failure(rejection{error_code::idempotency_key_in_flight,
                                       "a request with this Idempotency-Key is in flight", "", nullptr});
        continue;
      }
    }
    auto d = decide(state_, s.cmd, s.ctx);
    if (auto* r = std::get_if<rejection>(&d)) {
      answers[i] = failure(*r);
      continue;
    }
    for (auto& e : std::get<std::vector<event>>(d)) {
      e.event_id = new_event_id();
      apply(state_, e);
      event_of[i] = events.size();  // every command yields one event today
      events.push_back(std::move(e));
    }
  }
  for (auto& e : expire_due(state_, now, cfg_.expiries_per_batch_max)) {
    e.event_id = new_event_id();
    apply(state_, e);
    events.push_back(std::move(e));
  }

  if (!events.empty()) {
    std::vector<store::record> records;
    records.reserve(events.size());
    for (const auto& e : events) records.push_back({topic_of(e), e.account_id, encode(e)});
    const auto result = producer_->append(records, cfg_.append_timeout_ms);
    if (result.status != store::append_status::committed) {
      std::fprintf(stderr, "credits-api: Kafka transaction of %zu events not committed (%s): %s\n", events.size(),
                   result.status == store::append_status::unknown ? "outcome unknown" : "aborted",
                   result.error.c_str());
      // Every decision in this batch was made against state that may not be in the log: none is reported,
      // except replays, which rest on earlier committed events.
      const auto message = result.status == store::append_status::unknown
                               ? "the outcome of the write is unknown; retry with the same Idempotency-Key"
                               : "the event log is unavailable; retry later";
      for (std::size_t i = 0; i < batch.size(); ++i)
        batch[i].done(answers[i] && answers[i]->replayed ? *answers[i] : unavailable(message));
      recover(result.producer_lost);
      return;
    }
    std::lock_guard lock(positions_mutex_);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (!event_of[i]) continue;
      const auto& e = events[*event_of[i]];
      const auto& where = result.positions[*event_of[i]];
      const log_position position{topic_of(e), where.partition, where.offset};
      if (stream_of(e.payload) == stream::ledger) latest_[e.account_id] = position;
      answers[i] = outcome{200, render(e, state_.accounts.at(e.account_id)), position.to_string(), false};
      if (!e.idempotency_key.empty()) idempotency_[idempotency_slot(batch[i].ctx)] = {e.request_hash, *answers[i]};
    }
    for (std::size_t k = 0; k < events.size(); ++k)  // expiries: no caller, but readers wait on them too
      if (std::holds_alternative<reservation_expired>(events[k].payload))
        latest_[events[k].account_id] = {cfg_.ledger_topic, result.positions[k].partition, result.positions[k].offset};
    accounts_count_ = state_.accounts.size();
  }
  for (std::size_t i = 0; i < batch.size(); ++i) batch[i].done(std::move(*answers[i]));
}

}  // namespace credits::api
