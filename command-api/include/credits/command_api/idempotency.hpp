#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "credits/command_api/command_result.hpp"
#include "credits/common/events.hpp"

namespace credits::api {

// 128 bits of a SHA-256: names an idempotency slot (tenant + key) in fixed space.
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
std::string to_hex(const key128& k);
std::optional<key128> key128_from_hex(std::string_view hex);

// The limits of a remembered key's position (16 bytes hold all of it, see packed_key): a ledger or usage
// partition below 2^15 (writer::start refuses topics with more) and an offset below 2^48 (at 100,000 events/s
// per partition, 89 years).
inline constexpr std::int32_t idempotency_partitions_max = 1 << 15;
inline constexpr std::int64_t idempotency_offset_max = std::int64_t{1} << 48;

// Where the first event of an idempotency key is in the log, and when it happened.
struct idempotency_record {
  stream topic = stream::ledger;
  std::int32_t partition = -1;
  std::int64_t offset = -1;
  time_ms occurred_at = 0;
};

// One remembered key in 16 bytes, as the store holds it and as snapshots carry it:
//  - `fingerprint_second`: 40 bits of the slot (slot_of: tenant + key) above the 24 low bits of the second the
//    event occurred at (Unix seconds mod 2^24). A key's age is read against the current time: up to 97 days
//    either way is unambiguous, and no key is held long past its window (at most 30 days): the store forgets
//    keys as their window passes, and keys already past it are never remembered (the writer's fold skips them,
//    restore() drops them).
//  - `position`: the topic (1 bit: 0 ledger, 1 usage), the partition (15 bits) and the offset (48 bits).
// The fingerprint only finds candidates: a hit is confirmed by reading the event back (its tenant, key and
// request hash), so two keys that share a fingerprint never answer for each other.
struct packed_key {
  std::uint64_t fingerprint_second = 0;
  std::uint64_t position = 0;
  friend bool operator==(const packed_key&, const packed_key&) = default;
};
static_assert(sizeof(packed_key) == 16);

// The key of `slot` at `record`; nullopt when the position does not fit (idempotency_partitions_max,
// idempotency_offset_max).
std::optional<packed_key> pack_key(const key128& slot, const idempotency_record& record);

// What a snapshot carries of the store: every key, oldest first, and forgotten_until (see window_held).
struct idempotency_image {
  std::vector<packed_key> keys;
  time_ms forgotten_until = 0;
};

// What the first event of a candidate key says about a retry (tenant, key and request hash of the retry, at
// `now`): it is that retry's first answer, the same key came with another request, the key's window has passed,
// or it is another key that shares the fingerprint.
enum class retry_match { replay, reused, expired, other_key };
retry_match match_retry(const event& first, std::string_view tenant, std::string_view idempotency_key,
                        std::string_view request_hash, std::chrono::milliseconds window, time_ms now);

// How long before `now` a retry is still recognised, given that every key that occurred at or before
// `forgotten_until` may have been forgotten for lack of room: the configured window when none was (or all those
// would have expired anyway), else now - forgotten_until.
std::chrono::milliseconds window_held(std::chrono::milliseconds window, time_ms forgotten_until, time_ms now);

// The idempotency keys a writer remembers, 16 bytes each plus a 4-byte index slot per 3/4 key (about 21.3
// bytes per key at the cap; bench/results/idempotency-*.json measures it).
//  - The keys sit in a ring, oldest first (remembered in the order their events were written). Past `keys_max`
//    the oldest is forgotten for each new one; a key also goes once its window has surely passed (expire()).
//  - An open-addressing index (linear probing, 4 bytes a slot: the key's ring place and a few more fingerprint
//    bits) finds a fingerprint's keys. It holds 4/3 slots per ring place, so it is at most 3/4 full.
//  - The newest `responses_max` first answers are kept whole (`accepted`), so a retry soon after the first
//    request (the common case) needs no log read; the others are read back from the log.
// Expiry here is to the second (a key is kept until its second + window has passed); the writer decides a
// hit's expiry exactly, from the event's occurred_at. Writer thread only.
class idempotency_store {
 public:
  idempotency_store(std::chrono::milliseconds window, std::size_t keys_max, std::size_t responses_max);

  // A key the store holds under a fingerprint.
  struct candidate {
    std::uint64_t sequence = 0;  // its place in the order of remembering (answer(), keep_answer())
    idempotency_record record;   // occurred_at to the second (its start)
  };
  // The keys with `slot`'s fingerprint that may still answer at `now`, newest first: usually none or one.
  std::vector<candidate> find(const key128& slot, time_ms now) const;

  // Remembers a key as the newest, forgetting the oldest at the cap. Returns its sequence number, or nullopt
  // when the position does not fit (idempotency_partitions_max, idempotency_offset_max): nothing is remembered.
  std::optional<std::uint64_t> remember(const key128& slot, const idempotency_record& record);
  // Keeps the whole first answer of the key remembered as `sequence` (if it is still held), and finds it: a
  // pointer valid until the store changes.
  void keep_answer(std::uint64_t sequence, accepted answer);
  const accepted* answer(std::uint64_t sequence) const;

  // Forgets the oldest keys whose window has passed at `now`; returns how many.
  std::size_t expire(time_ms now);

  std::size_t size() const { return size_; }
  std::size_t keys_max() const { return keys_max_; }
  std::size_t evicted() const { return evicted_; }  // forgotten for lack of room
  time_ms forgotten_until() const { return forgotten_until_; }
  std::chrono::milliseconds window_held(time_ms now) const;
  std::size_t bytes() const;  // what the ring and the index take (their capacity), not the cached answers
  void clear();

  // For snapshots: the keys as they are, and restoring an image taken at `taken_at`: the keys whose window has
  // passed at `now` are dropped, the order is kept, and past keys_max the oldest go.
  idempotency_image image() const;
  void restore(const idempotency_image& image, time_ms taken_at, time_ms now);

 private:
  std::uint64_t sequence_at(std::size_t physical) const;
  std::size_t home_of(std::uint64_t fingerprint) const;
  std::uint32_t index_word(std::uint64_t fingerprint, std::size_t physical) const;
  void append(const packed_key& key, time_ms now);
  void grow(std::size_t capacity);
  void index_insert(std::size_t physical);
  void index_erase(std::size_t physical);
  void drop_oldest();
  void drop_answers_before(std::uint64_t sequence);

  std::chrono::milliseconds window_;
  std::size_t keys_max_;
  std::size_t responses_max_;
  unsigned place_bits_;  // of an index slot: the ring place + 1 (0 is empty); the rest are fingerprint bits

  std::vector<packed_key> ring_;     // ring_.size() is its capacity: grows by doubling up to keys_max
  std::size_t head_ = 0;             // the oldest key's place
  std::size_t size_ = 0;             // keys held
  std::uint64_t head_sequence_ = 0;  // the oldest key's sequence number; the newest is head_sequence_ + size_ - 1
  std::vector<std::uint32_t> index_;

  std::unordered_map<std::uint64_t, accepted> answers_;  // by sequence number
  std::deque<std::uint64_t> answer_order_;               // increasing
  std::size_t evicted_ = 0;
  time_ms forgotten_until_ = 0;  // the end of the second of the newest key forgotten for lack of room
};

}  // namespace credits::api
