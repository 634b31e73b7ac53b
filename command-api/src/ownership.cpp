#include "credits/command_api/ownership.hpp"

#include <algorithm>
#include <atomic>
#include <thread>

#include "credits/common/ids.hpp"
#include "credits/common/log.hpp"
#include "credits/event_store/partitioner.hpp"

namespace credits::api {
namespace {

using std::chrono::milliseconds;

constexpr std::string_view component = "credits-api";

// A partition writer that cannot start (Kafka unreachable) is retried after this, until it starts or the
// partition is taken away.
constexpr milliseconds partition_start_retry_ms{1'000};
// A partition missing from the owners map is asked for again at most this often: during a rebalance every
// forwarded request would otherwise ask the coordinator.
constexpr milliseconds owners_missing_refresh_ms{100};
// new_account_id() draws at most this many ids per partition before it gives up on owning the account.
constexpr int account_id_draws_per_partition = 64;
// How often the watchdog looks for fenced partition writers.
constexpr milliseconds watchdog_interval_ms{1'000};

}  // namespace

// One owned partition: its writer, and the thread that starts it.
struct ownership::slot {
  std::int32_t partition = 0;
  std::unique_ptr<writer> w;
  std::thread starter;
  std::atomic<bool> given_up{false};
  std::optional<std::chrono::steady_clock::time_point> fenced_seen;  // the watchdog's, first seen fenced

  ~slot() {
    given_up.store(true, std::memory_order_release);
    if (starter.joinable()) starter.join();
  }
};

ownership::ownership(const config& cfg, writer::clock_fn now, api_metrics& metrics)
    : cfg_(cfg), now_(std::move(now)), metrics_(metrics) {
  if (!grouped()) alone_ = std::make_unique<writer>(cfg_, now_, metrics_);
}

ownership::~ownership() { stop(); }

void ownership::start() {
  if (alone_) {
    alone_->start();
    return;
  }
  {
    store::consumer metadata(cfg_.kafka_brokers, false);
    partitions_ = metadata.partition_count(cfg_.ledger_topic, cfg_.startup_timeout_ms);
    const auto usage = metadata.partition_count(cfg_.usage_topic, cfg_.startup_timeout_ms);
    // A partition writer reads and writes partition N of both topics: the same account must land in both.
    if (usage != partitions_)
      throw std::runtime_error("CREDITS_GROUP_ID needs as many partitions in " + cfg_.usage_topic + " (" +
                               std::to_string(usage) + ") as in " + cfg_.ledger_topic + " (" +
                               std::to_string(partitions_) + ")");
  }
  observer_ = std::make_unique<store::group_observer>(cfg_.kafka_brokers);
  joined_.store(true, std::memory_order_release);
  membership_ = std::make_unique<store::group_membership>(
      cfg_.kafka_brokers, cfg_.group_id, cfg_.ledger_topic, cfg_.advertised_address, cfg_.group_session_timeout_ms,
      store::group_membership::handlers{[this](const auto& p) { assigned(p); }, [this](const auto& p) { revoked(p); }});
  watchdog_ = std::thread([this] {
    std::unique_lock lock(watchdog_mutex_);
    while (!watchdog_wake_.wait_for(lock, watchdog_interval_ms, [this] { return watchdog_stop_; })) {
      lock.unlock();
      replace_fenced_writers();
      lock.lock();
    }
  });
  write_log(log_level::info, component,
            "joined group " + cfg_.group_id + " as " + cfg_.advertised_address + "; " + std::to_string(partitions_) +
                " partitions to share",
            {{"group", cfg_.group_id}, {"member", cfg_.advertised_address}, {"partitions", partitions_}});
}

void ownership::stop() {
  if (alone_) {
    alone_->stop();
    return;
  }
  joined_.store(false, std::memory_order_release);
  if (watchdog_.joinable()) {
    {
      std::lock_guard lock(watchdog_mutex_);
      watchdog_stop_ = true;
    }
    watchdog_wake_.notify_all();
    watchdog_.join();
  }
  membership_.reset();  // leaves the group: revoked() stops every writer, and the partitions move on at once
  if (const auto left = owned(); !left.empty()) revoked(left);  // the group never got to revoke them
}

// A slot whose writer is being built and started (it claims the partition's transactional id) on a thread of
// its own, retried until it starts or the slot is given up.
std::shared_ptr<ownership::slot> ownership::start_slot(std::int32_t partition) {
  auto s = std::make_shared<slot>();
  s->partition = partition;
  s->w = std::make_unique<writer>(cfg_, now_, metrics_, partition);
  s->starter = std::thread([s = s.get()] {
    const auto started = std::chrono::steady_clock::now();
    while (!s->given_up.load(std::memory_order_acquire)) {
      try {
        s->w->start();
        const auto took = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - started);
        write_log(
            log_level::info, component,
            "partition " + std::to_string(s->partition) + " taken over in " + std::to_string(took.count()) + " ms",
            {{"partition", s->partition}, {"durationMs", took.count()}});
        return;
      } catch (const std::exception& ex) {
        write_log(log_level::error, component,
                  "partition " + std::to_string(s->partition) + " cannot start, retrying: " + ex.what(),
                  {{"partition", s->partition}});
        std::this_thread::sleep_for(partition_start_retry_ms);
      }
    }
  });
  return s;
}

void ownership::assigned(const std::vector<std::int32_t>& partitions) {
  std::string list;
  for (const auto p : partitions) {
    auto s = start_slot(p);
    std::unique_lock lock(slots_mutex_);
    slots_[p] = std::move(s);
    list += (list.empty() ? "" : ",") + std::to_string(p);
  }
  {
    std::lock_guard lock(owners_mutex_);
    owners_at_ = {};  // the map is stale now
  }
  write_log(log_level::info, component, "partitions assigned: " + list, {{"partitions", list}});
}

void ownership::revoked(const std::vector<std::int32_t>& partitions) {
  std::vector<std::shared_ptr<slot>> going;
  {
    std::unique_lock lock(slots_mutex_);  // from here on, their commands are elsewhere
    for (const auto p : partitions)
      if (auto it = slots_.find(p); it != slots_.end()) {
        going.push_back(std::move(it->second));
        slots_.erase(it);
      }
  }
  // Side by side: each stop decides and answers what its writer queued (a Kafka transaction or so), with the
  // partition still ours; the group waits for all of them before it hands the partitions on.
  std::string list;
  std::vector<std::thread> stopping;
  for (auto& s : going) {
    s->given_up.store(true, std::memory_order_release);
    stopping.emplace_back([s = s.get()] {
      if (s->starter.joinable()) s->starter.join();
      s->w->stop();
    });
    list += (list.empty() ? "" : ",") + std::to_string(s->partition);
  }
  for (auto& t : stopping) t.join();
  {
    std::lock_guard lock(owners_mutex_);
    owners_at_ = {};
  }
  write_log(log_level::info, component, "partitions given up: " + list, {{"partitions", list}});
}

void ownership::replace_fenced_writers() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<std::shared_ptr<slot>> stale;
  {
    std::shared_lock lock(slots_mutex_);
    for (const auto& [p, s] : slots_) {
      if (!s->w->fenced()) continue;
      if (!s->fenced_seen) s->fenced_seen = now;  // only this thread touches it
      if (now - *s->fenced_seen >= cfg_.group_session_timeout_ms) stale.push_back(s);
    }
  }
  for (auto& old : stale) {
    {
      // Unless revoked() took it meanwhile: then the partition has moved, and nothing is replaced.
      std::unique_lock lock(slots_mutex_);
      const auto it = slots_.find(old->partition);
      if (it == slots_.end() || it->second != old) continue;
      it->second = start_slot(old->partition);
    }
    write_log(log_level::warn, component,
              "partition " + std::to_string(old->partition) + " is still assigned here " +
                  std::to_string(cfg_.group_session_timeout_ms.count()) +
                  " ms after its writer was fenced: replacing the writer, which claims the partition back",
              {{"partition", old->partition}});
    old->given_up.store(true, std::memory_order_release);
    if (old->starter.joinable()) old->starter.join();
    old->w->stop();
  }
}

std::shared_ptr<ownership::slot> ownership::slot_of(std::int32_t partition) const {
  std::shared_lock lock(slots_mutex_);
  const auto it = slots_.find(partition);
  return it == slots_.end() ? nullptr : it->second;
}

submit_result ownership::submit(submission&& s) {
  if (alone_) return alone_->submit(std::move(s));
  const auto owner = slot_of(partition_of_account(target_account(s.cmd)));
  if (!owner) return submit_result::elsewhere;
  if (owner->w->fenced()) return submit_result::elsewhere;  // it has a newer owner; the group will say which
  return owner->w->submit(std::move(s));
}

std::optional<log_position> ownership::latest_position(const std::string& account_id) const {
  if (alone_) return alone_->latest_position(account_id);
  const auto owner = slot_of(partition_of_account(account_id));
  return owner ? owner->w->latest_position(account_id) : std::nullopt;
}

std::optional<std::string> ownership::quarantined_account(const std::string& event_id) const {
  if (alone_) return alone_->quarantined_account(event_id);
  std::shared_lock lock(slots_mutex_);
  for (const auto& [p, s] : slots_)
    if (auto account = s->w->quarantined_account(event_id)) return account;
  return std::nullopt;
}

bool ownership::ready() const {
  if (alone_) return alone_->ready();
  std::shared_lock lock(slots_mutex_);
  return joined_.load(std::memory_order_acquire) &&
         std::all_of(slots_.begin(), slots_.end(), [](const auto& s) { return s.second->w->ready(); });
}

std::size_t ownership::accounts() const {
  if (alone_) return alone_->accounts();
  std::shared_lock lock(slots_mutex_);
  std::size_t n = 0;
  for (const auto& [p, s] : slots_) n += s->w->accounts();
  return n;
}

std::size_t ownership::queued_commands() const {
  if (alone_) return alone_->queued_commands();
  std::shared_lock lock(slots_mutex_);
  std::size_t n = 0;
  for (const auto& [p, s] : slots_) n += s->w->queued_commands();
  return n;
}

writer::start_stats ownership::last_start() const {
  if (alone_) return alone_->last_start();
  std::shared_lock lock(slots_mutex_);
  writer::start_stats total;
  for (const auto& [p, s] : slots_) {
    const auto one = s->w->last_start();
    total.events_replayed += one.events_replayed;
    total.duration = std::max(total.duration, one.duration);
    total.from_snapshot = total.from_snapshot || one.from_snapshot;
    total.snapshot_id = std::max(total.snapshot_id, one.snapshot_id);
  }
  return total;
}

writer::idempotency_summary ownership::idempotency() const {
  if (alone_) return alone_->idempotency();
  std::shared_lock lock(slots_mutex_);
  writer::idempotency_summary total{0, 0, 0, cfg_.idempotency_window_ms};
  for (const auto& [p, s] : slots_) {
    const auto one = s->w->idempotency();
    total.keys += one.keys;
    total.keys_max += one.keys_max;
    total.bytes += one.bytes;
    total.window_held = std::min(total.window_held, one.window_held);
  }
  return total;
}

std::vector<std::int32_t> ownership::owned() const {
  std::shared_lock lock(slots_mutex_);
  std::vector<std::int32_t> out;
  for (const auto& [p, s] : slots_) out.push_back(p);
  return out;
}

std::int32_t ownership::partition_of_account(std::string_view account_id) const {
  return partitions_ > 0 ? store::partition_of_key(account_id, partitions_) : 0;
}

std::string ownership::new_account_id(const random_bits& bits) const {
  const auto mine = alone_ ? std::vector<std::int32_t>{} : owned();
  for (int draw = 0;; ++draw) {
    auto id = account_id_from_bits(bits(), static_cast<std::uint32_t>(bits()));
    if (mine.empty() || draw >= account_id_draws_per_partition * partitions_ ||
        std::find(mine.begin(), mine.end(), partition_of_account(id)) != mine.end())
      return id;
  }
}

std::optional<std::string> ownership::owner_address(std::int32_t partition) {
  if (!observer_) return std::nullopt;
  std::lock_guard lock(owners_mutex_);
  const auto age = std::chrono::steady_clock::now() - owners_at_;
  if (age >= cfg_.owners_refresh_ms || (!owners_.contains(partition) && age >= owners_missing_refresh_ms)) {
    try {
      owners_ = observer_->describe(cfg_.group_id, cfg_.ledger_topic, cfg_.owners_timeout_ms);
      owners_at_ = std::chrono::steady_clock::now();
    } catch (const std::exception& ex) {
      write_log(log_level::warn, component, std::string("cannot learn the partition owners: ") + ex.what());
      owners_.clear();
      owners_at_ = std::chrono::steady_clock::now();
    }
  }
  const auto it = owners_.find(partition);
  if (it == owners_.end()) return std::nullopt;
  return it->second;
}

}  // namespace credits::api
