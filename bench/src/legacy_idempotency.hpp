#pragma once

// The idempotency store as it was before the compact one (command-api before issue 20): a std::unordered_map of
// 128-bit slots to records that keep a 128-bit request fingerprint and the position and time in full, plus a
// deque of (time, slot) for oldest-first eviction, and snapshots as a JSON array per key. Kept here, trimmed of
// its answer cache, only as the same-run baseline of credits-bench-idempotency.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "credits/command_api/idempotency.hpp"

namespace credits::bench {

struct legacy_record {
  api::key128 request;
  stream topic = stream::ledger;
  std::int32_t partition = -1;
  std::int64_t offset = -1;
  time_ms occurred_at = 0;
};

class legacy_idempotency_store {
 public:
  legacy_idempotency_store(std::chrono::milliseconds window, std::size_t keys_max)
      : window_(window), keys_max_(keys_max) {}

  std::optional<legacy_record> find(const api::key128& slot, time_ms now) const {
    auto it = records_.find(slot);
    if (it == records_.end() || it->second.occurred_at + window_.count() <= now) return std::nullopt;
    return it->second;
  }

  void remember(const api::key128& slot, const legacy_record& record) {
    records_[slot] = record;
    order_.emplace_back(record.occurred_at, slot);
    while (records_.size() > keys_max_ && !order_.empty()) {
      const auto [t, oldest] = order_.front();
      order_.pop_front();
      if (auto it = records_.find(oldest); it != records_.end() && it->second.occurred_at == t) records_.erase(it);
    }
  }

  std::size_t size() const { return records_.size(); }

  // The version 2 snapshot's "idempotency" array.
  nlohmann::json to_json() const {
    nlohmann::json keys = nlohmann::json::array();
    for (const auto& [slot, r] : records_)
      keys.push_back({api::to_hex(slot), api::to_hex(r.request), r.topic == stream::ledger ? 0 : 1, r.partition,
                      r.offset, r.occurred_at});
    return keys;
  }

  // As the writer loaded a version 2 snapshot: every key decoded, sorted by time, remembered in that order.
  void load(const nlohmann::json& keys) {
    std::vector<std::pair<api::key128, legacy_record>> loaded;
    loaded.reserve(keys.size());
    for (const auto& k : keys) {
      const auto slot = api::key128_from_hex(k.at(0).get<std::string>());
      const auto request = api::key128_from_hex(k.at(1).get<std::string>());
      if (!slot || !request) throw std::invalid_argument("bad idempotency key");
      loaded.emplace_back(
          *slot, legacy_record{*request, k.at(2) == 0 ? stream::ledger : stream::usage, k.at(3).get<std::int32_t>(),
                               k.at(4).get<std::int64_t>(), k.at(5).get<time_ms>()});
    }
    std::sort(loaded.begin(), loaded.end(),
              [](const auto& a, const auto& b) { return a.second.occurred_at < b.second.occurred_at; });
    for (const auto& [slot, record] : loaded) remember(slot, record);
  }

 private:
  std::chrono::milliseconds window_;
  std::size_t keys_max_;
  std::unordered_map<api::key128, legacy_record, api::key128_hash> records_;
  std::deque<std::pair<time_ms, api::key128>> order_;
};

}  // namespace credits::bench
