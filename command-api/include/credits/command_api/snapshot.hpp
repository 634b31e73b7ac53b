#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "credits/command_api/idempotency.hpp"
#include "credits/common/domain.hpp"

namespace credits::api {

// 2: transactions carry their type, amount and reversed amount (for reversals); version 1 snapshots are
// skipped and the log replayed.
// 3: the idempotency keys are packed, 16 bytes each (idempotency.hpp: packed_key), after the JSON document and
// a newline.
// 4: accounts carry their credit grants, holds and transactions what they drew from each grant. Versions 2 and 3
// predate grants and cannot say which grant holds which credit: they are refused and the log replayed.
inline constexpr int snapshot_format_version = 4;

// The writer's state at a log position: everything start-up would otherwise fold from the beginning.
struct snapshot {
  std::uint64_t id = 0;  // increasing; the newest complete one wins
  time_ms created_at = 0;
  // Per topic, per partition: the first offset the snapshot does NOT cover (where the tail replay starts).
  std::map<std::string, std::vector<std::int64_t>> next_offsets;
  ledger_state state;
  idempotency_image idempotency;
};

// What encode_snapshot throws when `cancelled` became true while it encoded.
struct snapshot_cancelled : std::runtime_error {
  snapshot_cancelled() : std::runtime_error("snapshot cancelled") {}
};

// Encodes without copying the state: the writer snapshots its live state in place. A large state takes seconds;
// with `cancelled`, the encoding checks it as it goes and gives up (snapshot_cancelled) once it is set.
std::string encode_snapshot(std::uint64_t id, time_ms created_at,
                            const std::map<std::string, std::vector<std::int64_t>>& next_offsets,
                            const ledger_state& state, const idempotency_image& idempotency,
                            const std::atomic<bool>* cancelled = nullptr);
std::optional<snapshot> decode_snapshot(std::string_view payload, std::string* error);

// A snapshot travels as chunks (Kafka messages below the broker's size limit). Each chunk's value is one
// header line of JSON ({snapshotId, chunk, chunks, sha256 of the whole payload}, and the scope when it has
// one) and then its bytes. The scope says whose state it is: "" for a whole-process writer, "p<N>" for the
// writer of partition N (scale out), whose snapshots share the topic with the other partitions'.
std::vector<std::string> split_snapshot(std::string_view payload, std::uint64_t id, std::size_t chunk_bytes,
                                        std::string_view scope = {});

// Collects chunks read from the snapshot topic and gives the newest snapshot of its scope whose chunks are all
// there and whose checksum holds; older or broken ones are reported through `problems`.
class snapshot_assembler {
 public:
  explicit snapshot_assembler(std::string scope = {}) : scope_(std::move(scope)) {}
  void add(std::string_view chunk_value);
  std::optional<std::string> newest(std::vector<std::string>& problems) const;
  // The highest id seen in any scope, usable or not: the next snapshot must be numbered above it to win.
  std::uint64_t highest_id() const { return highest_id_; }

 private:
  struct parts {
    std::size_t chunks = 0;
    std::string sha256;
    std::map<std::size_t, std::string> data;
  };
  std::string scope_;
  std::map<std::uint64_t, parts> snapshots_;  // of scope_ only
  std::uint64_t highest_id_ = 0;
  std::size_t malformed_ = 0;
};

}  // namespace credits::api
