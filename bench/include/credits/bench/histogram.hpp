#pragma once

#include <cstdint>
#include <vector>

// A latency histogram with bounded relative error, for the benchmark tools. Values are non-negative integers
// in any unit (the tools record microseconds). Values below `exact_values` get a bucket each; above, each power
// of two is split into `sub_buckets` buckets, so a reported percentile is at most 1/sub_buckets (1.6 %) above
// the true value and never below it. Values above `value_max` are counted as `value_max` (and reported by
// `saturated`). Plain data: not thread-safe; merge per-thread histograms instead.
namespace credits::bench {

class histogram {
 public:
  static constexpr std::uint64_t exact_values = 128;
  static constexpr std::uint64_t sub_buckets = 64;
  static constexpr std::uint64_t value_max = 3'600'000'000ULL;  // one hour in microseconds

  histogram();

  void record(std::uint64_t value);
  void merge(const histogram& other);

  std::uint64_t count() const { return count_; }
  std::uint64_t saturated() const { return saturated_; }
  std::uint64_t min() const { return count_ ? min_ : 0; }
  std::uint64_t max() const { return max_; }
  double mean() const { return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) : 0.0; }

  // The smallest bucket bound that at least `percent` % of the values are at or below (0 when empty), clamped
  // to [min, max] so that p0 is the minimum and p100 the maximum exactly. `percent` is clamped to [0, 100].
  std::uint64_t percentile(double percent) const;

  // Bucket arithmetic, public for the tests.
  static std::size_t index_of(std::uint64_t value);
  static std::uint64_t upper_bound_of(std::size_t index);

 private:
  std::vector<std::uint64_t> counts_;
  std::uint64_t count_ = 0;
  std::uint64_t saturated_ = 0;
  std::uint64_t min_ = 0;
  std::uint64_t max_ = 0;
  std::uint64_t sum_ = 0;
};

}  // namespace credits::bench
