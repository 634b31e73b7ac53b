#pragma once

#include <cstdint>
#include <string_view>

// Which partition a keyed record lands in. The producers here leave that choice to librdkafka's
// murmur2_random partitioner, the Java clients' default; partition_of_key() is the same computation, so an id
// alone names its partition without asking Kafka: the projector checks that every event sits where its key
// puts it, verify finds an account's position, and the API routes a command to the owner of its partition.
namespace credits::store {

// Kafka's murmur2 hash, as org.apache.kafka.common.utils.Utils.murmur2 computes it (seed 0x9747b28c).
std::uint32_t murmur2(std::string_view key);

// The partition of `key` among `partition_count` (at least 1): the hash's low 31 bits modulo the count, as
// murmur2_random computes it for a record that has a key. An empty key is a key of no bytes, hashed like any
// other; only a record without a key at all gets a random partition from librdkafka, and no caller asks where
// such a record goes.
std::int32_t partition_of_key(std::string_view key, std::int32_t partition_count);

// The librdkafka `partitioner` property of every producer here: partition_of_key() for keyed records.
inline constexpr const char* librdkafka_partitioner = "murmur2_random";

}  // namespace credits::store
