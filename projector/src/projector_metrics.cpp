#include "credits/projector/projector_metrics.hpp"

#include <prometheus/family.h>

#include <algorithm>

namespace credits {

namespace {

// One unlabelled series of a family registered in `registry`.
prometheus::Counter& counter(prometheus::Registry& registry, const std::string& name, const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry).Add({});
}
prometheus::Family<prometheus::Gauge>& gauges(prometheus::Registry& registry, const std::string& name,
                                              const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry);
}

// A batch's pipelines take from half a millisecond to seconds while Redis is slow.
prometheus::Histogram::BucketBoundaries batch_buckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
}

}  // namespace

projector_metrics::projector_metrics(const std::vector<std::pair<std::string, std::int32_t>>& partitions)
    : registry_(std::make_shared<prometheus::Registry>()),
      applied_(counter(*registry_, "credits_projector_events_applied_total", "Events folded into the read model")),
      replayed_(counter(*registry_, "credits_projector_events_replayed_total",
                        "Events read again that the stored position already covered (no-ops)")),
      poison_(counter(*registry_, "credits_projector_poison_events_total",
                      "Events that could not be applied, copied to the dead-letter topic and recorded")),
      redis_errors_(counter(*registry_, "credits_projector_redis_errors_total",
                            "Redis failures (each is followed by a reconnect)")),
      view_losses_(counter(*registry_, "credits_projector_view_losses_total",
                           "Times this projector found the view had lost its data (its marker or positions gone) "
                           "and had it rebuilt from the log")),
      view_rebuilds_(counter(*registry_, "credits_projector_view_rebuilds_total",
                             "Rebuilds of a lost view that this projector ran to the switch")),
      view_rebuilding_(gauges(*registry_, "credits_projector_view_rebuilding",
                              "1 while the view is being rebuilt from the log (by this projector or another) and "
                              "this projector does not fold, else 0")
                           .Add({})),
      batch_duration_(prometheus::BuildHistogram()
                          .Name("credits_projector_batch_duration_seconds")
                          .Help("Time to fold one polled batch into Redis (its pipelines and any dead-letter copies)")
                          .Register(*registry_)
                          .Add({}, batch_buckets())),
      lag_offsets_(gauges(*registry_, "credits_projector_lag_events",
                          "Offsets between the last folded record and the end of the partition")),
      lag_seconds_(gauges(*registry_, "credits_projector_lag_seconds",
                          "Now minus the timestamp of the last folded record, while the partition is behind")) {
  for (const auto& [topic, partition] : partitions) {
    partitions_.push_back({prometheus::Labels{{"topic", topic}, {"partition", std::to_string(partition)}}});
    owned(partitions_.size() - 1, true);
  }
}

void projector_metrics::owned(std::size_t index, bool yes) {
  if (index >= partitions_.size()) return;
  auto& p = partitions_[index];
  if (yes && !p.offsets) {
    p.offsets = &lag_offsets_.Add(p.labels);
    p.seconds = &lag_seconds_.Add(p.labels);
  } else if (!yes && p.offsets) {
    lag_offsets_.Remove(p.offsets);
    lag_seconds_.Remove(p.seconds);
    p.offsets = p.seconds = nullptr;
    p.last_timestamp_ms = -1;
  }
}

void projector_metrics::folded(std::size_t index, std::int64_t timestamp_ms) {
  if (index < partitions_.size() && timestamp_ms >= 0) partitions_[index].last_timestamp_ms = timestamp_ms;
}

void projector_metrics::lag(std::size_t index, std::int64_t offsets, std::int64_t now_ms) {
  if (index >= partitions_.size() || !partitions_[index].offsets) return;
  auto& p = partitions_[index];
  p.offsets->Set(static_cast<double>(offsets));
  const bool late = offsets > 0 && p.last_timestamp_ms >= 0;
  p.seconds->Set(late ? static_cast<double>(std::max<std::int64_t>(0, now_ms - p.last_timestamp_ms)) / 1000.0 : 0.0);
}

}  // namespace credits
