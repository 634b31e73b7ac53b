// The projector's metrics: lag series per partition.
#include <gtest/gtest.h>

#include <prometheus/text_serializer.h>

#include <string>

#include "credits/projector/projector_metrics.hpp"
#include "prometheus_text.hpp"

namespace credits {
namespace {

using credits::test::sample;

TEST(projector_metrics, every_partition_has_lag_series_from_the_start) {
  projector_metrics m({{"t.ledger", 0}, {"t.ledger", 1}, {"t.usage", 0}});
  const auto text = prometheus::TextSerializer{}.Serialize(m.registry()->Collect());
  EXPECT_EQ(sample(text, R"(credits_projector_lag_events{partition="1",topic="t.ledger"})"), 0);
  EXPECT_EQ(sample(text, R"(credits_projector_lag_seconds{partition="0",topic="t.usage"})"), 0);
}

TEST(projector_metrics, lag_in_time_counts_from_the_last_folded_record_only_while_behind) {
  projector_metrics m({{"t.ledger", 0}, {"t.ledger", 1}});
  m.folded(0, 10'000);
  m.lag(0, 5, 12'500);  // behind: now minus the last folded record's time
  m.folded(1, 10'000);
  m.lag(1, 0, 60'000);  // caught up: a quiet partition is not late
  m.applied(3);
  m.poison();
  const auto text = prometheus::TextSerializer{}.Serialize(m.registry()->Collect());
  EXPECT_EQ(sample(text, R"(credits_projector_lag_events{partition="0",topic="t.ledger"})"), 5);
  EXPECT_DOUBLE_EQ(sample(text, R"(credits_projector_lag_seconds{partition="0",topic="t.ledger"})"), 2.5);
  EXPECT_EQ(sample(text, R"(credits_projector_lag_seconds{partition="1",topic="t.ledger"})"), 0);
  EXPECT_EQ(sample(text, "credits_projector_events_applied_total"), 3);
  EXPECT_EQ(sample(text, "credits_projector_poison_events_total"), 1);
}

TEST(projector_metrics, a_partition_another_projector_owns_has_no_lag_series_until_it_is_owned_again) {
  projector_metrics m({{"t.ledger", 0}, {"t.ledger", 1}});
  m.folded(1, 10'000);
  m.owned(1, false);
  m.lag(1, 7, 12'000);  // sampled by mistake after the revocation: ignored
  auto text = prometheus::TextSerializer{}.Serialize(m.registry()->Collect());
  EXPECT_EQ(sample(text, R"(credits_projector_lag_events{partition="1",topic="t.ledger"})"), -1);
  EXPECT_EQ(sample(text, R"(credits_projector_lag_seconds{partition="1",topic="t.ledger"})"), -1);
  EXPECT_EQ(sample(text, R"(credits_projector_lag_events{partition="0",topic="t.ledger"})"), 0);

  m.owned(1, true);
  m.lag(1, 3, 12'000);  // the record folded before it moved away is not what this lag counts from
  text = prometheus::TextSerializer{}.Serialize(m.registry()->Collect());
  EXPECT_EQ(sample(text, R"(credits_projector_lag_events{partition="1",topic="t.ledger"})"), 3);
  EXPECT_EQ(sample(text, R"(credits_projector_lag_seconds{partition="1",topic="t.ledger"})"), 0);
}

}  // namespace
}  // namespace credits
