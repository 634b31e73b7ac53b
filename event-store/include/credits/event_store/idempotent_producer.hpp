#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "credits/event_store/event_store.hpp"

namespace credits::store {

// A producer outside Kafka transactions, for the projector's dead-letter copies and the import of an export:
// idempotent (acks=all, no duplicates or reordering from its retries), writing to a chosen partition or to
// the one partition_of_key() names, with headers. produce() only queues; flush() waits for every queued
// record and throws if any was not written. Owns one librdkafka producer and lives on one thread: the one
// that produces and flushes, on which librdkafka reports deliveries.
class idempotent_producer {
 public:
  explicit idempotent_producer(const std::string& brokers, const settings& extra = {});
  ~idempotent_producer();
  idempotent_producer(const idempotent_producer&) = delete;
  idempotent_producer& operator=(const idempotent_producer&) = delete;

  // partition -1: the partition of the key. timestamp_ms -1: now. Waits for room while the queue is full,
  // then throws.
  void produce(const std::string& topic, std::int32_t partition, std::string_view key, std::string_view value,
               const std::vector<header>& headers = {}, std::int64_t timestamp_ms = -1);
  void flush(std::chrono::milliseconds timeout);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace credits::store
