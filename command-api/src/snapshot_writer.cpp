#include "credits/command_api/snapshot_writer.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include "credits/command_api/snapshot.hpp"
#include "credits/common/log.hpp"

namespace credits::api {
namespace {

constexpr std::string_view component = "credits-api";

// The snapshot thread's nice value (Linux: per thread). Encoding a large snapshot takes a core for a second
// or more; on a small machine that core is the one the HTTP and writer threads need, so it yields to them.
constexpr int snapshot_thread_nice = 10;

std::unique_ptr<store::transactional_producer> make_producer(const config& cfg, const std::string& scope,
                                                             std::chrono::milliseconds init_timeout) {
  return std::make_unique<store::transactional_producer>(
      cfg.kafka_brokers, cfg.transactional_id + (scope.empty() ? "" : "-" + scope) + ".snapshots",
      cfg.kafka_transaction_timeout_ms, init_timeout);
}

}  // namespace

snapshot_writer::snapshot_writer(const config& cfg, std::string scope)
    : cfg_(cfg),
      scope_(std::move(scope)),
      producer_(make_producer(cfg, scope_, cfg.startup_timeout_ms)),
      thread_([this] { run(); }) {}

snapshot_writer::~snapshot_writer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  // The snapshot being written gets the shutdown timeout to finish. Stopping must not wait longer (a large one
  // encodes for a minute on a loaded machine, beyond any stop timeout); the state it holds is in the log anyway,
  // and the next start-up replays it from the snapshot before.
  {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, cfg_.shutdown_timeout_ms, [&] { return !job_; });
  }
  cancelled_.store(true, std::memory_order_relaxed);
  thread_.join();
}

bool snapshot_writer::idle() const {
  std::lock_guard lock(mutex_);
  return !job_;
}

bool snapshot_writer::offer(snapshot_job& job) {
  {
    std::lock_guard lock(mutex_);
    if (job_ || stopping_) return false;
    job_ = std::move(job);
  }
  cv_.notify_one();
  return true;
}

void snapshot_writer::run() {
  // Best effort: without the permission (it needs none to lower priority) the thread runs at normal priority.
  (void)setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), snapshot_thread_nice);
  for (;;) {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return stopping_ || job_; });
    if (!job_) return;  // stopping, nothing left to write
    lock.unlock();
    write(*job_);  // the job is only used here; offer() leaves it alone while it is set
    lock.lock();
    job_.reset();
    cv_.notify_all();  // a stopping destructor waits for this
  }
}

// Each copy of the snapshot is freed as soon as the next one is made (the keys, the payload, its chunks): with
// millions of idempotency keys each copy is hundreds of MB, and at most two exist at once.
void snapshot_writer::write(snapshot_job& job) {
  const auto started = std::chrono::steady_clock::now();
  try {
    if (!producer_) producer_ = make_producer(cfg_, scope_, cfg_.kafka_transaction_timeout_ms);
    auto payload = encode_snapshot(job.id, job.created_at, job.next_offsets, job.state, job.idempotency, &cancelled_);
    const auto keys = job.idempotency.keys.size();
    std::vector<packed_key>().swap(job.idempotency.keys);
    if (cancelled_.load(std::memory_order_relaxed)) throw snapshot_cancelled();
    auto chunks = split_snapshot(payload, job.id, cfg_.snapshot_chunk_bytes, scope_);
    const auto payload_bytes = payload.size();
    std::string().swap(payload);
    std::vector<store::record> records;
    records.reserve(chunks.size());
    for (std::size_t i = 0; i < chunks.size(); ++i)
      records.push_back({cfg_.snapshot_topic, (scope_.empty() ? "" : scope_ + "-") + "chunk-" + std::to_string(i),
                         std::move(chunks[i])});
    const auto result = producer_->append(records, cfg_.append_timeout_ms);
    const auto took =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
    if (result.status == store::append_status::committed) {
      write_log(log_level::info, component,
                "snapshot " + std::to_string(job.id) + " written: " + std::to_string(job.state.accounts.size()) +
                    " accounts, " + std::to_string(keys) + " idempotency keys, " + std::to_string(payload_bytes) +
                    " bytes in " + std::to_string(chunks.size()) + " chunks in " + std::to_string(took) +
                    " ms (the writer paused " + std::to_string(job.copy_took.count()) + " ms to copy its state)",
                {{"snapshotId", job.id},
                 {"accounts", job.state.accounts.size()},
                 {"idempotencyKeys", keys},
                 {"bytes", payload_bytes},
                 {"durationMs", took},
                 {"writerPauseMs", job.copy_took.count()}});
      return;
    }
    // A missing snapshot only makes the next start-up slower; the writer's state is unaffected.
    write_log(log_level::warn, component, "snapshot not written: " + result.error, {{"snapshotId", job.id}});
    if (result.producer_lost) producer_.reset();
  } catch (const snapshot_cancelled&) {
    write_log(log_level::info, component, "snapshot " + std::to_string(job.id) + " given up: the process is stopping",
              {{"snapshotId", job.id}});
  } catch (const std::exception& ex) {
    write_log(log_level::warn, component, std::string("snapshot not written: ") + ex.what(), {{"snapshotId", job.id}});
    producer_.reset();
  }
}

}  // namespace credits::api
