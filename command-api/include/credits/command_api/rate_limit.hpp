#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace credits::api {

// A token bucket per API key: each request takes one token; a key's bucket holds at most `burst_requests`
// and refills at `requests_per_s`. Tokens are counted in thousandths, so the arithmetic stays in integers.
// Thread-safe (one mutex, held for a few arithmetic operations); the clock is the caller's, so tests need no
// sleeps. At most `keys_max` buckets are kept: when a new key would exceed it, the buckets that are full
// again (idle long enough to have refilled) are dropped, which changes nothing for their keys; when none is,
// the one closest to full is, which forgives its key the fewest requests.
class rate_limiter {
 public:
  rate_limiter(std::int64_t requests_per_s, std::int64_t burst_requests, std::size_t keys_max);

  bool enabled() const { return requests_per_s_ > 0; }

  // nullopt: admitted (one token taken). Otherwise refused, and how long until a token is there again
  // (at least one second: what Retry-After can say).
  std::optional<std::chrono::seconds> admit(const std::string& key_id, std::chrono::milliseconds now);

  // How many buckets are kept now: never more than keys_max.
  std::size_t keys() const;

 private:
  struct bucket {
    std::int64_t tokens_milli = 0;
    std::chrono::milliseconds updated{0};
  };
  std::int64_t tokens_at(const bucket& b, std::chrono::milliseconds now) const;

  const std::int64_t requests_per_s_;
  const std::int64_t capacity_milli_;
  const std::size_t keys_max_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, bucket> buckets_;
};

}  // namespace credits::api
