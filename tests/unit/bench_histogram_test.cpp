#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "credits/bench/histogram.hpp"

using credits::bench::histogram;

TEST(bench_histogram, an_empty_histogram_reports_zero) {
  histogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.percentile(50), 0u);
  EXPECT_EQ(h.max(), 0u);
  EXPECT_EQ(h.min(), 0u);
}

TEST(bench_histogram, small_values_are_exact) {
  histogram h;
  for (std::uint64_t v = 1; v <= 100; ++v) h.record(v);
  EXPECT_EQ(h.percentile(50), 50u);
  EXPECT_EQ(h.percentile(99), 99u);
  EXPECT_EQ(h.percentile(100), 100u);
  EXPECT_EQ(h.percentile(0), 1u);
  EXPECT_DOUBLE_EQ(h.mean(), 50.5);
}

TEST(bench_histogram, every_value_lands_in_a_bucket_whose_bound_covers_it_within_two_percent) {
  const std::uint64_t values[] = {0, 1, 127, 128, 129, 255, 256, 1000, 12'345, 999'999, histogram::value_max};
  for (const std::uint64_t v : values) {
    const auto bound = histogram::upper_bound_of(histogram::index_of(v));
    EXPECT_GE(bound, v) << v;
    EXPECT_LE(static_cast<double>(bound), static_cast<double>(v) * (1.0 + 1.0 / histogram::sub_buckets) + 1) << v;
  }
}

TEST(bench_histogram, bucket_indexes_grow_with_the_value) {
  std::size_t last = 0;
  for (std::uint64_t v = 0; v < 100'000; ++v) {
    const auto i = histogram::index_of(v);
    EXPECT_GE(i, last);
    EXPECT_LE(i, last + 1);
    last = i;
  }
}

TEST(bench_histogram, percentiles_of_random_values_match_the_sorted_values_within_the_error_bound) {
  std::mt19937_64 rng(42);
  std::lognormal_distribution<double> dist(9.0, 1.5);  // microseconds, a latency-like long tail
  histogram h;
  std::vector<std::uint64_t> values;
  for (int i = 0; i < 100'000; ++i) {
    const auto v = static_cast<std::uint64_t>(dist(rng));
    values.push_back(v);
    h.record(v);
  }
  std::sort(values.begin(), values.end());
  for (double p : {50.0, 90.0, 99.0, 99.9}) {
    const auto exact = values[static_cast<std::size_t>(std::ceil(p / 100 * static_cast<double>(values.size()))) - 1];
    const auto reported = h.percentile(p);
    EXPECT_GE(reported, exact) << p;
    EXPECT_LE(static_cast<double>(reported), static_cast<double>(exact) * 1.02 + 1) << p;
  }
  EXPECT_EQ(h.percentile(100), values.back());
  EXPECT_EQ(h.max(), values.back());
}

TEST(bench_histogram, values_above_the_maximum_are_saturated_and_counted) {
  histogram h;
  h.record(histogram::value_max * 2);
  EXPECT_EQ(h.saturated(), 1u);
  EXPECT_EQ(h.max(), histogram::value_max);
}

TEST(bench_histogram, merging_equals_recording_everything_in_one) {
  histogram a, b, both;
  for (std::uint64_t v = 0; v < 5000; v += 3) {
    (v % 2 ? a : b).record(v * 17);
    both.record(v * 17);
  }
  a.merge(b);
  EXPECT_EQ(a.count(), both.count());
  EXPECT_EQ(a.min(), both.min());
  EXPECT_EQ(a.max(), both.max());
  for (double p : {1.0, 50.0, 99.0, 99.9}) EXPECT_EQ(a.percentile(p), both.percentile(p));
}
