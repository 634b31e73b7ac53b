#include "credits/event_store/partitioner.hpp"

#include "credits/common/assert.hpp"

namespace credits::store {

std::uint32_t murmur2(std::string_view key) {
  // Transcribed from Kafka's org.apache.kafka.common.utils.Utils.murmur2 (seed 0x9747b28c).
  constexpr std::uint32_t seed = 0x9747b28c;
  constexpr std::uint32_t m = 0x5bd1e995;
  constexpr int r = 24;
  const auto len = static_cast<std::uint32_t>(key.size());
  std::uint32_t h = seed ^ len;
  const auto* data = reinterpret_cast<const unsigned char*>(key.data());
  const std::uint32_t blocks = len / 4;
  for (std::uint32_t i = 0; i < blocks; ++i) {
    std::uint32_t k = static_cast<std::uint32_t>(data[i * 4]) | (static_cast<std::uint32_t>(data[i * 4 + 1]) << 8) |
                      (static_cast<std::uint32_t>(data[i * 4 + 2]) << 16) |
                      (static_cast<std::uint32_t>(data[i * 4 + 3]) << 24);
    k *= m;
    k ^= k >> r;
    k *= m;
    h *= m;
    h ^= k;
  }
  const unsigned char* tail = data + blocks * 4;
  switch (len & 3) {
    case 3:
      h ^= static_cast<std::uint32_t>(tail[2]) << 16;
      [[fallthrough]];
    case 2:
      h ^= static_cast<std::uint32_t>(tail[1]) << 8;
      [[fallthrough]];
    case 1:
      h ^= tail[0];
      h *= m;
  }
  h ^= h >> 13;
  h *= m;
  h ^= h >> 15;
  return h;
}

std::int32_t partition_of_key(std::string_view key, std::int32_t partition_count) {
  // Callers pass a count that Kafka's metadata gave them; zero would divide by zero below.
  CREDITS_ASSERT(partition_count > 0, "a partition count below 1");
  return static_cast<std::int32_t>((murmur2(key) & 0x7fffffff) % static_cast<std::uint32_t>(partition_count));
}

}  // namespace credits::store
