// The per-key token bucket, on an injected clock.
#include <gtest/gtest.h>

#include "credits/command_api/rate_limit.hpp"

namespace credits::api {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(rate_limiter, a_burst_passes_then_the_rest_waits_for_the_refill) {
  rate_limiter r(10, 5, 100);
  const milliseconds t0{1'000'000};
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(r.admit("k", t0)) << i;
  const auto refused = r.admit("k", t0);
  ASSERT_TRUE(refused);
  EXPECT_EQ(*refused, seconds(1));  // 100 ms to the next token; Retry-After says whole seconds, at least 1
  EXPECT_TRUE(r.admit("k", t0 + milliseconds(99)));
  EXPECT_FALSE(r.admit("k", t0 + milliseconds(100)));
  EXPECT_TRUE(r.admit("k", t0 + milliseconds(100)));
  // Idle long enough, the bucket is full again, never fuller.
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(r.admit("k", t0 + seconds(60))) << i;
  EXPECT_TRUE(r.admit("k", t0 + seconds(60)));
}

TEST(rate_limiter, keys_have_buckets_of_their_own) {
  rate_limiter r(1, 1, 100);
  const milliseconds t0{5000};
  EXPECT_FALSE(r.admit("a", t0));
  EXPECT_TRUE(r.admit("a", t0));
  EXPECT_FALSE(r.admit("b", t0));
}

TEST(rate_limiter, retry_after_covers_a_slow_refill) {
  rate_limiter r(1, 1, 100);
  const milliseconds t0{0};
  EXPECT_FALSE(r.admit("k", t0));
  EXPECT_EQ(r.admit("k", t0 + milliseconds(10)), seconds(1));
  rate_limiter slow(1, 3, 100);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(slow.admit("k", t0));
  EXPECT_EQ(slow.admit("k", t0), seconds(1));
  EXPECT_FALSE(slow.admit("k", t0 + seconds(1)));
}

TEST(rate_limiter, off_at_zero_and_keeps_no_buckets) {
  rate_limiter off(0, 0, 1);
  for (int i = 0; i < 1000; ++i) EXPECT_FALSE(off.admit("k" + std::to_string(i), milliseconds(0)));
  EXPECT_EQ(off.keys(), 0u);
}

TEST(rate_limiter, a_new_key_beyond_the_bound_drops_the_buckets_that_refilled) {
  rate_limiter r(1000, 1, 2);
  const milliseconds t0{0};
  EXPECT_FALSE(r.admit("a", t0));
  EXPECT_FALSE(r.admit("b", t0));
  EXPECT_EQ(r.keys(), 2u);
  // "a" and "b" are full again a moment later, so a third key evicts them rather than growing the map.
  EXPECT_FALSE(r.admit("c", t0 + milliseconds(5)));
  EXPECT_EQ(r.keys(), 1u);
  // Dropping a full bucket forgets nothing: "a" starts full, as it would have been.
  EXPECT_FALSE(r.admit("a", t0 + milliseconds(5)));
  EXPECT_TRUE(r.admit("a", t0 + milliseconds(5)));
  EXPECT_EQ(r.keys(), 2u);
}

TEST(rate_limiter, keys_beyond_the_bound_never_grow_the_map_even_when_every_bucket_is_in_use) {
  constexpr std::size_t keys_max = 8;
  rate_limiter r(1, 3, keys_max);  // a bucket takes 3 s to refill: none is full again within this test
  const milliseconds t0{0};
  for (int i = 0; i < 1000; ++i) {
    r.admit("k" + std::to_string(i), t0 + milliseconds(i));
    ASSERT_LE(r.keys(), keys_max) << "after key " << i;
  }
  EXPECT_EQ(r.keys(), keys_max);
  // The bucket closest to full goes first: "spent" (no tokens left) outlives eight fresher keys.
  rate_limiter s(1, 3, keys_max);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(s.admit("spent", t0));
  for (int i = 0; i < 20; ++i) s.admit("fresh" + std::to_string(i), t0);
  EXPECT_TRUE(s.admit("spent", t0)) << "the spent bucket was dropped, and with it what the key had used";
}

}  // namespace
}  // namespace credits::api
