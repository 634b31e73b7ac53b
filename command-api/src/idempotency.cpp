#include "credits/command_api/idempotency.hpp"

#include <algorithm>
#include <bit>
#include <charconv>

#include "credits/common/assert.hpp"
#include "credits/common/ids.hpp"

namespace credits::api {
namespace {

constexpr unsigned second_bits = 24;
constexpr std::uint64_t second_mask = (std::uint64_t{1} << second_bits) - 1;
constexpr std::int64_t second_half = std::int64_t{1} << (second_bits - 1);
constexpr unsigned offset_bits = 48;
constexpr std::uint64_t offset_mask = (std::uint64_t{1} << offset_bits) - 1;
constexpr std::uint64_t usage_bit = std::uint64_t{1} << 63;

// The ring's first capacity; it doubles from there up to keys_max.
constexpr std::size_t ring_capacity_min = 1024;

std::optional<std::uint64_t> hex64(std::string_view hex) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(hex.data(), hex.data() + hex.size(), v, 16);
  if (ec != std::errc{} || p != hex.data() + hex.size()) return std::nullopt;
  return v;
}

// 40 bits of the slot: what the store keeps of a key.
std::uint64_t fingerprint_of(const key128& slot) { return slot.hi >> second_bits; }
std::uint64_t fingerprint_of(const packed_key& k) { return k.fingerprint_second >> second_bits; }

// The key's second relative to `now`'s, from the 24 bits kept: negative when it lies ahead of `now` (a clock
// that stepped back).
std::int64_t age_s(const packed_key& k, time_ms now) {
  const auto now_s = static_cast<std::uint64_t>(std::max<time_ms>(now, 0) / 1000);
  const auto diff = static_cast<std::int64_t>((now_s - (k.fingerprint_second & second_mask)) & second_mask);
  return diff >= second_half ? diff - (std::int64_t{1} << second_bits) : diff;
}

// Surely past its window: even an event at the last millisecond of its second is.
bool expired(const packed_key& k, std::chrono::milliseconds window, time_ms now) {
  return age_s(k, now) * 1000 >= window.count() + 1000;
}

// The first millisecond of the key's second.
time_ms occurred_at(const packed_key& k, time_ms now) {
  return (std::max<time_ms>(now, 0) / 1000 - age_s(k, now)) * 1000;
}

}  // namespace

std::optional<packed_key> pack_key(const key128& slot, const idempotency_record& r) {
  if (r.topic == stream::keys || r.partition < 0 || r.partition >= idempotency_partitions_max || r.offset < 0 ||
      r.offset >= idempotency_offset_max)
    return std::nullopt;
  const auto second = static_cast<std::uint64_t>(std::max<time_ms>(r.occurred_at, 0) / 1000);
  return packed_key{(fingerprint_of(slot) << second_bits) | (second & second_mask),
                    (r.topic == stream::usage ? usage_bit : 0) |
                        (static_cast<std::uint64_t>(r.partition) << offset_bits) |
                        static_cast<std::uint64_t>(r.offset)};
}

namespace {

idempotency_record unpack(const packed_key& k, time_ms now) {
  return idempotency_record{(k.position & usage_bit) != 0 ? stream::usage : stream::ledger,
                            static_cast<std::int32_t>((k.position & ~usage_bit) >> offset_bits),
                            static_cast<std::int64_t>(k.position & offset_mask), occurred_at(k, now)};
}

}  // namespace

key128 slot_of(std::string_view tenant, std::string_view idempotency_key) {
  std::string material(tenant);
  material.push_back('\n');
  material.append(idempotency_key);
  const auto hex = sha256_hex(material);
  return key128{hex64(std::string_view(hex).substr(0, 16)).value_or(0),
                hex64(std::string_view(hex).substr(16, 16)).value_or(0)};
}

std::string to_hex(const key128& k) {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(k.hi),
                static_cast<unsigned long long>(k.lo));
  return buf;
}

std::optional<key128> key128_from_hex(std::string_view hex) {
  if (hex.size() != 32) return std::nullopt;
  auto hi = hex64(hex.substr(0, 16));
  auto lo = hex64(hex.substr(16));
  if (!hi || !lo) return std::nullopt;
  return key128{*hi, *lo};
}

retry_match match_retry(const event& first, std::string_view tenant, std::string_view idempotency_key,
                        std::string_view request_hash, std::chrono::milliseconds window, time_ms now) {
  if (first.tenant != tenant || first.idempotency_key != idempotency_key) return retry_match::other_key;
  if (first.occurred_at + window.count() <= now) return retry_match::expired;
  if (first.request_hash != request_hash) return retry_match::reused;
  return retry_match::replay;
}

std::chrono::milliseconds window_held(std::chrono::milliseconds window, time_ms forgotten_until, time_ms now) {
  if (forgotten_until + window.count() <= now) return window;
  return std::chrono::milliseconds(std::max<time_ms>(0, now - forgotten_until));
}

idempotency_store::idempotency_store(std::chrono::milliseconds window, std::size_t keys_max, std::size_t responses_max)
    : window_(window),
      keys_max_(std::max<std::size_t>(keys_max, 1)),
      responses_max_(responses_max),
      place_bits_(static_cast<unsigned>(std::bit_width(keys_max_))) {
  CREDITS_ASSERT(place_bits_ < 32, "an index slot holds a ring place and at least one fingerprint bit");
}

std::uint64_t idempotency_store::sequence_at(std::size_t physical) const {
  return head_sequence_ + (physical + ring_.size() - head_) % ring_.size();
}

// Multiply-shift of 32 fingerprint bits onto the index (any size, no modulo); the 8 lowest bits are left for
// the index slot's own fingerprint bits.
std::size_t idempotency_store::home_of(std::uint64_t fingerprint) const {
  return static_cast<std::size_t>(((fingerprint >> 8) & 0xffffffffULL) * index_.size() >> 32);
}

std::uint32_t idempotency_store::index_word(std::uint64_t fingerprint, std::size_t physical) const {
  const auto tag = fingerprint & ((std::uint64_t{1} << (32 - place_bits_)) - 1);
  return static_cast<std::uint32_t>((tag << place_bits_) | (physical + 1));
}

std::vector<idempotency_store::candidate> idempotency_store::find(const key128& slot, time_ms now) const {
  std::vector<candidate> out;
  if (size_ == 0) return out;
  const auto fingerprint = fingerprint_of(slot);
  const auto tag = index_word(fingerprint, 0) >> place_bits_;
  const auto place_mask = (std::uint32_t{1} << place_bits_) - 1;
  for (auto i = home_of(fingerprint); index_[i] != 0; i = i + 1 == index_.size() ? 0 : i + 1) {
    if (index_[i] >> place_bits_ != tag) continue;
    const std::size_t physical = (index_[i] & place_mask) - 1;
    const auto& k = ring_[physical];
    if (fingerprint_of(k) != fingerprint || expired(k, window_, now)) continue;
    out.push_back({sequence_at(physical), unpack(k, now)});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.sequence > b.sequence; });
  return out;
}

std::optional<std::uint64_t> idempotency_store::remember(const key128& slot, const idempotency_record& record) {
  const auto k = pack_key(slot, record);
  if (!k) return std::nullopt;
  append(*k, record.occurred_at);
  return head_sequence_ + size_ - 1;
}

void idempotency_store::append(const packed_key& key, time_ms now) {
  if (size_ == keys_max_) {
    forgotten_until_ = std::max(forgotten_until_, occurred_at(ring_[head_], now) + 999);
    drop_oldest();
    ++evicted_;
  } else if (size_ == ring_.size()) {
    grow(std::min(keys_max_, std::max(ring_capacity_min, 2 * ring_.size())));
  }
  const auto physical = (head_ + size_) % ring_.size();
  ring_[physical] = key;
  ++size_;
  index_insert(physical);
}

// Moves the ring to a larger one, in order, and rebuilds the index for it: a ring place is an index slot's value.
void idempotency_store::grow(std::size_t capacity) {
  CREDITS_ASSERT(capacity >= size_ && capacity <= keys_max_, "the ring holds its keys and no more than keys_max");
  std::vector<packed_key> ring(capacity);
  for (std::size_t i = 0; i < size_; ++i) ring[i] = ring_[(head_ + i) % ring_.size()];
  ring_ = std::move(ring);
  head_ = 0;
  index_.assign(capacity + capacity / 3 + 1, 0);
  for (std::size_t i = 0; i < size_; ++i) index_insert(i);
}

void idempotency_store::index_insert(std::size_t physical) {
  const auto fingerprint = fingerprint_of(ring_[physical]);
  auto i = home_of(fingerprint);
  while (index_[i] != 0) i = i + 1 == index_.size() ? 0 : i + 1;
  index_[i] = index_word(fingerprint, physical);
}

// Removes the slot of ring place `physical` and shifts the slots after it back where their probe allows, so
// that no probe ever crosses an empty slot before its key (no tombstones).
void idempotency_store::index_erase(std::size_t physical) {
  const auto place_mask = (std::uint32_t{1} << place_bits_) - 1;
  const auto next = [&](std::size_t i) { return i + 1 == index_.size() ? 0 : i + 1; };
  auto i = home_of(fingerprint_of(ring_[physical]));
  while ((index_[i] & place_mask) != physical + 1) {
    CREDITS_ASSERT(index_[i] != 0, "every key in the ring has its index slot");
    i = next(i);
  }
  for (auto j = next(i); index_[j] != 0; j = next(j)) {
    const auto home = home_of(fingerprint_of(ring_[(index_[j] & place_mask) - 1]));
    const bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
    if (stays) continue;
    index_[i] = index_[j];
    i = j;
  }
  index_[i] = 0;
}

void idempotency_store::drop_oldest() {
  index_erase(head_);
  head_ = head_ + 1 == ring_.size() ? 0 : head_ + 1;
  ++head_sequence_;
  --size_;
  drop_answers_before(head_sequence_);
}

void idempotency_store::keep_answer(std::uint64_t sequence, accepted answer) {
  if (responses_max_ == 0 || sequence < head_sequence_ || sequence >= head_sequence_ + size_) return;
  if (answers_.insert_or_assign(sequence, std::move(answer)).second) answer_order_.push_back(sequence);
  while (answers_.size() > responses_max_) {
    answers_.erase(answer_order_.front());
    answer_order_.pop_front();
  }
}

const accepted* idempotency_store::answer(std::uint64_t sequence) const {
  const auto it = answers_.find(sequence);
  return it == answers_.end() ? nullptr : &it->second;
}

// Answers are kept in the order they were cached, which is the keys' order except for answers read back from
// the log: one of those may outstay its key, bounded by responses_max, and is never found again.
void idempotency_store::drop_answers_before(std::uint64_t sequence) {
  while (!answer_order_.empty() && answer_order_.front() < sequence) {
    answers_.erase(answer_order_.front());
    answer_order_.pop_front();
  }
}

std::size_t idempotency_store::expire(time_ms now) {
  std::size_t n = 0;
  for (; size_ > 0 && expired(ring_[head_], window_, now); ++n) drop_oldest();
  return n;
}

std::chrono::milliseconds idempotency_store::window_held(time_ms now) const {
  return api::window_held(window_, forgotten_until_, now);
}

std::size_t idempotency_store::bytes() const {
  return ring_.capacity() * sizeof(packed_key) + index_.capacity() * sizeof(std::uint32_t);
}

void idempotency_store::clear() {
  ring_ = {};
  index_ = {};
  head_ = 0;
  size_ = 0;
  head_sequence_ = 0;
  answers_.clear();
  answer_order_.clear();
  evicted_ = 0;
  forgotten_until_ = 0;
}

idempotency_image idempotency_store::image() const {
  idempotency_image out;
  out.forgotten_until = forgotten_until_;
  out.keys.reserve(size_);
  const auto first = std::min(size_, ring_.size() - head_);  // the ring's two runs, each copied in one go
  out.keys.insert(out.keys.end(), ring_.begin() + static_cast<std::ptrdiff_t>(head_),
                  ring_.begin() + static_cast<std::ptrdiff_t>(head_ + first));
  out.keys.insert(out.keys.end(), ring_.begin(), ring_.begin() + static_cast<std::ptrdiff_t>(size_ - first));
  return out;
}

void idempotency_store::restore(const idempotency_image& image, time_ms taken_at, time_ms now) {
  clear();
  forgotten_until_ = image.forgotten_until;
  if (!image.keys.empty()) grow(std::min(keys_max_, std::max(ring_capacity_min, image.keys.size())));
  for (const auto& k : image.keys) {
    // Its age when the image was taken tells its time (a snapshot may be older than 97 days).
    const auto at = occurred_at(k, taken_at);
    if (at + 999 + window_.count() <= now) continue;
    append(k, now);
  }
}

}  // namespace credits::api
