#include "credits/command_api/rate_limit.hpp"

#include <algorithm>

namespace credits::api {
namespace {

constexpr std::int64_t milli = 1000;  // thousandths of a token per token

}  // namespace

rate_limiter::rate_limiter(std::int64_t requests_per_s, std::int64_t burst_requests, std::size_t keys_max)
    : requests_per_s_(requests_per_s),
      capacity_milli_(std::max<std::int64_t>(burst_requests, 1) * milli),
      keys_max_(std::max<std::size_t>(keys_max, 1)) {}

std::int64_t rate_limiter::tokens_at(const bucket& b, std::chrono::milliseconds now) const {
  // requests_per_s tokens a second are exactly requests_per_s thousandths a millisecond; compared before
  // multiplying, so a long idle time cannot overflow.
  const auto elapsed = std::max<std::int64_t>(0, (now - b.updated).count());
  const auto room = capacity_milli_ - b.tokens_milli;
  return elapsed > room / requests_per_s_ ? capacity_milli_ : b.tokens_milli + elapsed * requests_per_s_;
}

std::optional<std::chrono::seconds> rate_limiter::admit(const std::string& key_id, std::chrono::milliseconds now) {
  if (!enabled()) return std::nullopt;
  std::lock_guard lock(mutex_);
  auto it = buckets_.find(key_id);
  if (it == buckets_.end()) {
    if (buckets_.size() >= keys_max_)
      std::erase_if(buckets_, [&](const auto& entry) { return tokens_at(entry.second, now) >= capacity_milli_; });
    if (buckets_.size() >= keys_max_ && !buckets_.empty())
      buckets_.erase(std::max_element(buckets_.begin(), buckets_.end(), [&](const auto& a, const auto& b) {
        return tokens_at(a.second, now) < tokens_at(b.second, now);
      }));
    it = buckets_.emplace(key_id, bucket{capacity_milli_, now}).first;
  }
  auto& b = it->second;
  b.tokens_milli = tokens_at(b, now);
  b.updated = std::max(b.updated, now);
  if (b.tokens_milli >= milli) {
    b.tokens_milli -= milli;
    return std::nullopt;
  }
  const auto wait_ms = (milli - b.tokens_milli + requests_per_s_ - 1) / requests_per_s_;
  return std::chrono::seconds(std::max<std::int64_t>(1, (wait_ms + 999) / 1000));
}

std::size_t rate_limiter::keys() const {
  std::lock_guard lock(mutex_);
  return buckets_.size();
}

}  // namespace credits::api
