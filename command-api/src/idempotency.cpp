#include "credits/command_api/idempotency.hpp"

#include <charconv>

#include "credits/common/ids.hpp"

namespace credits::api {
namespace {

std::optional<std::uint64_t> hex64(std::string_view hex) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(hex.data(), hex.data() + hex.size(), v, 16);
  if (ec != std::errc{} || p != hex.data() + hex.size()) return std::nullopt;
  return v;
}

key128 from_digest_hex(std::string_view hex) {
  return key128{hex64(hex.substr(0, 16)).value_or(0), hex64(hex.substr(16, 16)).value_or(0)};
}

}  // namespace

key128 slot_of(std::string_view tenant, std::string_view idempotency_key) {
  std::string material(tenant);
  material.push_back('\n');
  material.append(idempotency_key);
  return from_digest_hex(sha256_hex(material));
}

key128 fingerprint_of(std::string_view request_hash_hex) {
  if (request_hash_hex.size() < 32) return from_digest_hex(sha256_hex(request_hash_hex));
  return from_digest_hex(request_hash_hex);
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

std::optional<idempotency_store::hit> idempotency_store::find(const key128& slot, time_ms now) const {
  auto it = records_.find(slot);
  if (it == records_.end() || it->second.occurred_at + window_.count() <= now) return std::nullopt;
  hit h{it->second, std::nullopt};
  if (auto r = responses_.find(slot); r != responses_.end()) h.response = r->second;
  return h;
}

void idempotency_store::remember(const key128& slot, const idempotency_record& record,
                                 std::optional<accepted> response) {
  records_[slot] = record;
  order_.emplace_back(record.occurred_at, slot);
  if (response && responses_max_ > 0) {
    if (responses_.insert_or_assign(slot, std::move(*response)).second) response_order_.push_back(slot);
    while (responses_.size() > responses_max_) {
      responses_.erase(response_order_.front());
      response_order_.pop_front();
    }
  }
  while (records_.size() > keys_max_ && !order_.empty()) {
    const auto [t, oldest] = order_.front();
    order_.pop_front();
    if (auto it = records_.find(oldest); it != records_.end() && it->second.occurred_at == t) {
      forget(oldest, t);
      ++evicted_;
    }
  }
}

void idempotency_store::forget(const key128& slot, time_ms occurred_at) {
  auto it = records_.find(slot);
  if (it == records_.end() || it->second.occurred_at != occurred_at) return;  // remembered again since
  records_.erase(it);
  responses_.erase(slot);  // its place in response_order_ is skipped when reached
}

std::size_t idempotency_store::expire(time_ms now) {
  std::size_t n = 0;
  while (!order_.empty() && order_.front().first + window_.count() <= now) {
    const auto [t, slot] = order_.front();
    order_.pop_front();
    const auto before = records_.size();
    forget(slot, t);
    n += before - records_.size();
  }
  while (!response_order_.empty() && !responses_.contains(response_order_.front())) response_order_.pop_front();
  return n;
}

void idempotency_store::clear() {
  records_.clear();
  order_.clear();
  responses_.clear();
  response_order_.clear();
}

}  // namespace credits::api
