#include "credits/projector/projector_metrics.hpp"

#include <prometheus/family.h>

#include <algorithm>

namespace credits {

projector_metrics::projector_metrics(const std::vector<std::pair<std::string, std::int32_t>>& partitions)
    : registry_(std::make_shared<prometheus::Registry>()),
      applied_(prometheus::BuildCounter()
                   .Name("credits_projector_events_applied_total")
                   .Help("Events folded into the read model")
                   .Register(*registry_)
                   .Add({})),
      replayed_(prometheus::BuildCounter()
                    .Name("credits_projector_events_replayed_total")
                    .Help("Events read again that the stored position already covered (no-ops)")
                    .Register(*registry_)
                    .Add({})),
      poison_(prometheus::BuildCounter()
                  .Name("credits_projector_poison_events_total")
                  .Help("Events that could not be applied, copied to the dead-letter topic and recorded")
                  .Register(*registry_)
                  .Add({})),
      redis_errors_(prometheus::BuildCounter()
                        .Name("credits_projector_redis_errors_total")
                        .Help("Redis failures (each is followed by a reconnect)")
                        .Register(*registry_)
                        .Add({})),
      batch_duration_(prometheus::BuildHistogram()
                          .Name("credits_projector_batch_duration_seconds")
                          .Help("Time to fold one polled batch into Redis (its pipelines and any dead-letter copies)")
                          .Register(*registry_)
                          .Add({}, prometheus::Histogram::BucketBoundaries{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                                           0.05, 0.1, 0.25, 0.5, 1, 2.5, 5})),
      lag_offsets_(prometheus::BuildGauge()
                       .Name("credits_projector_lag_events")
                       .Help("Offsets between the last folded record and the end of the partition")
                       .Register(*registry_)),
      lag_seconds_(prometheus::BuildGauge()
                       .Name("credits_projector_lag_seconds")
                       .Help("Now minus the timestamp of the last folded record, while the partition is behind")
                       .Register(*registry_)) {
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
