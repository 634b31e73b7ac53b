#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace credits {

// The projector's Prometheus metrics (names in docs/operations.md). Owns the registry, which the process's
// exposer (CREDITS_PROJECTOR_METRICS_PORT) serves on a thread of its own; every other call is made from the
// projector's thread. prometheus-cpp's metrics are safe to read while they are written.
class projector_metrics {
 public:
  // `partitions`: every (topic, partition) the projector reads, so each has its lag series from the start.
  explicit projector_metrics(const std::vector<std::pair<std::string, std::int32_t>>& partitions);

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  void applied(std::uint64_t events) { applied_.Increment(static_cast<double>(events)); }
  void replayed(std::uint64_t events) { replayed_.Increment(static_cast<double>(events)); }
  void poison() { poison_.Increment(); }
  void redis_error() { redis_errors_.Increment(); }
  void batch_done(double seconds) { batch_duration_.Observe(seconds); }
  // The view lost its data (noticed by this projector); a rebuild of it ran to the switch; whether the view is
  // being rebuilt now (by this projector or another), so this one does not fold.
  void view_lost() { view_losses_.Increment(); }
  void view_rebuilt() { view_rebuilds_.Increment(); }
  void view_rebuilding(bool yes) { view_rebuilding_.Set(yes ? 1 : 0); }

  // A record of partition `index` (in the constructor's order) was folded: its timestamp is what the lag in
  // time is measured from.
  void folded(std::size_t index, std::int64_t timestamp_ms);
  // How many offsets partition `index` is behind the end of the log, sampled at `now_ms`. The lag in time is
  // now minus the timestamp of its last folded record while it is behind, and 0 once it has caught up (a quiet
  // partition is not late).
  void lag(std::size_t index, std::int64_t offsets, std::int64_t now_ms);
  // Whether this projector folds partition `index` now (all do without a group). The lag series of a partition
  // another projector of the group folds are removed, so summing them over the group counts each once.
  void owned(std::size_t index, bool yes);

 private:
  struct partition_series {
    prometheus::Labels labels;
    prometheus::Gauge* offsets = nullptr;  // both null while the partition is not owned
    prometheus::Gauge* seconds = nullptr;
    std::int64_t last_timestamp_ms = -1;
  };

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Counter& applied_;
  prometheus::Counter& replayed_;
  prometheus::Counter& poison_;
  prometheus::Counter& redis_errors_;
  prometheus::Counter& view_losses_;
  prometheus::Counter& view_rebuilds_;
  prometheus::Gauge& view_rebuilding_;
  prometheus::Histogram& batch_duration_;
  prometheus::Family<prometheus::Gauge>& lag_offsets_;
  prometheus::Family<prometheus::Gauge>& lag_seconds_;
  std::vector<partition_series> partitions_;
};

}  // namespace credits
