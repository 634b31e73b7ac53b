#include "credits/bench/histogram.hpp"

#include <algorithm>
#include <bit>
#include <cmath>

namespace credits::bench {
namespace {

// exact_values = 2 * sub_buckets: the first bucketed octave starts where the exact range ends.
static_assert(histogram::exact_values == 2 * histogram::sub_buckets);
constexpr int sub_bucket_bits = static_cast<int>(std::countr_zero(histogram::sub_buckets));  // 6

}  // namespace

histogram::histogram() : counts_(index_of(value_max) + 1, 0) {}

std::size_t histogram::index_of(std::uint64_t value) {
  if (value < exact_values) return static_cast<std::size_t>(value);
  // shift: how far the value must move right so that it lies in [sub_buckets, 2 * sub_buckets).
  const int shift = static_cast<int>(std::bit_width(value)) - 1 - sub_bucket_bits;
  const std::uint64_t sub = (value >> shift) - sub_buckets;  // [0, sub_buckets)
  return static_cast<std::size_t>(exact_values + static_cast<std::uint64_t>(shift - 1) * sub_buckets + sub);
}

std::uint64_t histogram::upper_bound_of(std::size_t index) {
  if (index < exact_values) return index;
  const std::uint64_t rest = index - exact_values;
  const int shift = static_cast<int>(rest / sub_buckets) + 1;
  const std::uint64_t sub = rest % sub_buckets + sub_buckets;
  return ((sub + 1) << shift) - 1;
}

void histogram::record(std::uint64_t value) {
  if (value > value_max) {
    value = value_max;
    ++saturated_;
  }
  ++counts_[index_of(value)];
  min_ = count_ == 0 ? value : std::min(min_, value);
  max_ = std::max(max_, value);
  ++count_;
  sum_ += value;
}

void histogram::merge(const histogram& other) {
  if (other.count_ == 0) return;
  for (std::size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
  min_ = count_ == 0 ? other.min_ : std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
  count_ += other.count_;
  saturated_ += other.saturated_;
  sum_ += other.sum_;
}

std::uint64_t histogram::percentile(double percent) const {
  if (count_ == 0) return 0;
  percent = std::clamp(percent, 0.0, 100.0);
  const auto rank =
      std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::ceil(percent / 100.0 * static_cast<double>(count_))));
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < counts_.size(); ++i) {
    seen += counts_[i];
    if (seen >= rank) return std::clamp(upper_bound_of(i), min_, max_);
  }
  return max_;
}

}  // namespace credits::bench
