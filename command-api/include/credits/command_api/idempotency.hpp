#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "credits/command_api/command_result.hpp"
#include "credits/common/events.hpp"

namespace credits::api {

// 128 bits of a SHA-256: names an idempotency slot (tenant + key) or fingerprints a request, in fixed space.
struct key128 {
  std::uint64_t hi = 0;
  std::uint64_t lo = 0;
  friend bool operator==(const key128&, const key128&) = default;
};
struct key128_hash {
  std::size_t operator()(const key128& k) const noexcept {
    return static_cast<std::size_t>(k.hi ^ (k.lo * 0x9e3779b97f4a7c15ULL));
  }
};

key128 slot_of(std::string_view tenant, std::string_view idempotency_key);
key128 fingerprint_of(std::string_view request_hash_hex);  // the first 32 hex digits
std::string to_hex(const key128& k);
std::optional<key128> key128_from_hex(std::string_view hex);

// Where the first answer of an idempotency key can be found again: the event it wrote.
struct idempotency_record {
  key128 request;  // fingerprint of the first request, to tell a retry from a reused key
  stream topic = stream::ledger;
  std::int32_t partition = -1;
  std::int64_t offset = -1;
  time_ms occurred_at = 0;
};

// The idempotency keys a writer remembers. A key answers retries until occurred_at + window (so expiry
// depends only on the event's time and the retry's time), and at most keys_max are kept: past that the
// oldest are forgotten first. The most recent answers are kept whole; older ones are rendered again from
// the event in the log. About 110 bytes per key (see README). Writer thread only.
class idempotency_store {
 public:
  idempotency_store(std::chrono::milliseconds window, std::size_t keys_max, std::size_t responses_max)
      : window_(window), keys_max_(keys_max), responses_max_(responses_max) {}

  struct hit {
    idempotency_record record;
    std::optional<accepted> response;  // the first answer, when still cached
  };
  std::optional<hit> find(const key128& slot, time_ms now) const;

  void remember(const key128& slot, const idempotency_record& record, std::optional<accepted> response);

  // Forgets keys past their window; returns how many.
  std::size_t expire(time_ms now);

  std::size_t size() const { return records_.size(); }
  std::size_t evicted() const { return evicted_; }
  void clear();

  template <class F>
  void for_each(F&& f) const {
    for (const auto& [slot, record] : records_) f(slot, record);
  }

 private:
  void forget(const key128& slot, time_ms occurred_at);

  std::chrono::milliseconds window_;
  std::size_t keys_max_;
  std::size_t responses_max_;
  std::unordered_map<key128, idempotency_record, key128_hash> records_;
  std::deque<std::pair<time_ms, key128>> order_;  // by insertion, which is by time for one writer
  std::unordered_map<key128, accepted, key128_hash> responses_;
  std::deque<key128> response_order_;
  std::size_t evicted_ = 0;
};

}  // namespace credits::api
