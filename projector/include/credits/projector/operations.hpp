#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "credits/common/domain.hpp"
#include "credits/event_store/event_store.hpp"
#include "credits/projector/projector.hpp"

// The operator's commands of credits-projector: rebuild, verify, export and import (docs/operations.md).
// Each runs on the calling thread and returns the process exit code; they print to `out` (results) and
// stderr (progress and errors). The pure pieces are declared here for the unit tests.
namespace credits::ops {

// Exit codes beyond 0 (success), 1 (failure or a mismatch) and 2 (bad configuration or usage).
inline constexpr int exit_poison = 3;     // verify: the view matches the log, but the log has poison events
inline constexpr int exit_stopped = 130;  // stopped by SIGINT or SIGTERM before finishing

// Replays both topics from the beginning into config.redis_rebuild_db while the live projector keeps
// serving config.redis_db, then switches readers to the new view with one atomic SWAPDB, once the new view
// has applied at least as much of every partition as the live one, and discards the old view. Progress on
// stderr: a bar on a terminal, plain lines every config.progress_interval_ms otherwise. A Redis Cluster has
// one database and no SWAPDB: there it refuses with exit 2 and says how to rebuild in place.
int rebuild(const projector_config& config, const std::atomic<bool>& stop, std::FILE* out);

// Where a rebuild reports: `say` gets its result lines; `progress` its progress display (progress_reporter: a
// bar on a terminal, plain lines otherwise), or, when null, `say` gets a progress line every
// config.progress_interval_ms.
struct rebuild_output {
  std::function<void(const std::string&)> say;
  std::FILE* progress = nullptr;
};
enum class rebuild_outcome {
  switched,  // the new view is live
  busy,      // another rebuild, alive, holds the lock: nothing was done
  stopped,   // `stop` was set: the live view is unchanged (but for the notice of `announce`)
};
// The rebuild of rebuild() (not on a cluster: it throws there), for the projector as well, which runs it when
// its view lost its data. With `announce` (why), the live view is marked as being rebuilt once the lock is
// held: the marker's id goes, so no projector's apply script writes into that view and the API answers 503, and
// rebuildingSince, reason and by (config.instance_id) are set; the switch replaces the marker with the new
// view's. `holder` gets the lock's holder when busy. Throws when the build or the switch fails.
rebuild_outcome rebuild_view(const projector_config& config, const std::atomic<bool>& stop,
                             const std::optional<std::string>& announce, const rebuild_output& output,
                             std::string* holder = nullptr);

// Folds the log independently (decode, the invariant check below, credits::apply) and compares it with the
// view account by account, each at exactly the position the view had applied when that account was read, so
// a log that keeps growing and a live projector that keeps applying cause no false mismatch. Prints every
// mismatch and poison event, then a summary. Exit 0, 1 on any mismatch, exit_poison when matching with
// poison events.
int verify(const projector_config& config, const std::atomic<bool>& stop, std::FILE* out);

// Writes every committed record of the event topics and the API key log as JSON lines (see
// docs/operations.md): a header line, one line per record with topic, partition, offset, key, value,
// timestamp and headers, and a trailer with the count. The file appears only when complete.
int export_log(const projector_config& config, const std::string& path, std::FILE* out);

// Writes an export into the configured topics, each record into its original partition, after checking
// the whole file. The topics (and the dead-letter topic) are created when missing; existing ones must be
// empty and have the exported partition counts. A version 1 export (before the key log was exported) leaves
// the keys topic alone. Offsets are new, so the view must be built afresh (rebuild).
int import_log(const projector_config& config, const std::string& path, std::FILE* out);

// One progress display. `done` may pass `total` (the log grows while it is read).
//   bar:  [##########----------]  50%  500000/1000000 events  181234 events/s  ETA 3s
//   line: 500000/1000000 events (50%), 181234 events/s, ETA 3s
std::string progress_bar(std::uint64_t done, std::uint64_t total, double elapsed_s, std::size_t width);
std::string progress_line(std::uint64_t done, std::uint64_t total, double elapsed_s);

// Rate-limited progress on a FILE: a bar redrawn in place on a terminal, plain lines otherwise. Lives on
// the thread of the operation it reports.
class progress_reporter {
 public:
  progress_reporter(std::FILE* to, std::string label, std::chrono::milliseconds line_interval);
  void update(std::uint64_t done, std::uint64_t total);
  void finish(std::uint64_t done, std::uint64_t total);

 private:
  void draw(std::uint64_t done, std::uint64_t total);

  std::FILE* to_;
  std::string label_;
  bool terminal_;
  std::chrono::milliseconds interval_;
  std::chrono::steady_clock::time_point started_;
  std::chrono::steady_clock::time_point last_;
};

// The export file's lines. Keys and values that are not valid UTF-8 go as keyBase64 / valueBase64.
nlohmann::json export_header(const std::string& ledger_topic, const std::string& usage_topic,
                             const std::string& keys_topic, const std::map<std::string, std::int32_t>& partitions);
nlohmann::json export_line(const store::message& r);
// Parses a record line; throws std::runtime_error naming what is wrong.
store::message parse_export_line(const nlohmann::json& line);

std::string base64_encode(std::string_view bytes);
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace credits::ops
