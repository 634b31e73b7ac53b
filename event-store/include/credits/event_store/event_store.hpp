#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

// The Kafka-backed event log: transactional append, and reading a topic's committed records. The rest of
// the code never touches a librdkafka handle: the operator commands' reads and writes are in
// partition_reader.hpp, idempotent_producer.hpp and topics.hpp, where a key's partition is in partitioner.hpp.
namespace credits::store {

using settings = std::map<std::string, std::string>;  // extra librdkafka properties

// A Kafka record header: name, value (e.g. the CloudEvents ce_* attributes).
using header = std::pair<std::string, std::string>;

struct record {
  std::string topic;
  std::string key;    // the account id: all of an account stream lands in one partition, in order
  std::string value;  // the encoded event
  std::vector<header> headers = {};
};

// Where a record sits in the log.
struct position {
  std::int32_t partition = -1;
  std::int64_t offset = -1;
};

enum class append_status {
  committed,  // the Kafka transaction committed; positions are filled in
  aborted,    // definitely not in the log
  unknown,    // may or may not have committed: the log must be read to know
};

struct append_result {
  append_status status = append_status::aborted;
  std::vector<position> positions;  // one per record, in order, when committed
  std::string error;
  bool producer_lost = false;  // a fatal error: the producer must be re-created before the next append
  bool fenced = false;         // a newer producer claimed the transactional id: this one may never append again
};

// Appends batches of records in one Kafka transaction each. Lives on one thread (the writer's); not
// thread-safe. Construction runs init_transactions, which fences any older producer with the same
// transactional.id and aborts its open transaction.
//
// With `ids_in_turn` = K > 1 it owns K transactional ids (`transactional_id`, then `transactional_id.1` ..
// `.K-1`), claims all of them at construction and uses them in turn, still one transaction at a time, so
// the order of batches in the log is the order of append() calls. Why: a Kafka coordinator answers EndTxn
// before it has written the commit markers, and until it has, the same id cannot add partitions to its next
// transaction (CONCURRENT_TRANSACTIONS, retried by librdkafka after a fixed 20 ms). The next id in turn has no
// such wait. Fencing holds as long as K is a constant of the caller: a new process claims every id before
// it appends, so an older one fails on whichever id it tries next.
class transactional_producer {
 public:
  // Retries init_transactions until `init_timeout` while the broker is unreachable, then throws.
  transactional_producer(const std::string& brokers, const std::string& transactional_id,
                         std::chrono::milliseconds transaction_timeout, std::chrono::milliseconds init_timeout,
                         const settings& extra = {}, std::size_t ids_in_turn = 1);
  ~transactional_producer();
  transactional_producer(const transactional_producer&) = delete;
  transactional_producer& operator=(const transactional_producer&) = delete;

  // Blocks until the Kafka transaction commits or fails, at most about `timeout`. After a result with
  // `producer_lost`, the whole producer (every id) must be re-created.
  append_result append(std::span<const record> records, std::chrono::milliseconds timeout);

  std::int32_t partition_count(const std::string& topic, std::chrono::milliseconds timeout);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

struct message {
  std::string topic;
  std::int32_t partition = 0;
  std::int64_t offset = 0;
  std::string key;
  std::string value;
  std::int64_t timestamp_ms = -1;    // the record's timestamp (producer create time), -1 if it has none
  std::vector<header> headers = {};  // filled by partition_reader only: the projector's fold needs none
};

struct start_point {
  std::string topic;
  std::int32_t partition = 0;
  std::int64_t offset = 0;  // the first offset to read; 0 reads from the beginning
};

// A read_committed consumer over explicitly assigned partitions (no group membership, no offset commits:
// callers keep their own positions). Lives on one thread.
class consumer {
 public:
  consumer(const std::string& brokers, bool report_end_of_partition, const settings& extra = {});
  ~consumer();
  consumer(const consumer&) = delete;
  consumer& operator=(const consumer&) = delete;

  void assign(const std::vector<start_point>& from);

  // The one record at (topic, partition, offset), assigning the consumer to it; nullopt if it cannot be
  // read within `timeout`.
  std::optional<message> read_at(const std::string& topic, std::int32_t partition, std::int64_t offset,
                                 std::chrono::milliseconds timeout);
  std::int32_t partition_count(const std::string& topic, std::chrono::milliseconds timeout);

  // How many offsets the consumer is behind the end of its assigned partitions, from the watermarks of the
  // last fetches (no broker round trip). Offsets include Kafka transaction markers, so it over-counts events
  // slightly; 0 means caught up.
  std::int64_t lag();

  // The same per assigned partition.
  struct partition_lag {
    std::string topic;
    std::int32_t partition = 0;
    std::int64_t offsets = 0;
  };
  std::vector<partition_lag> lag_by_partition();

  // Up to `max` messages; waits at most `timeout` for the first. End-of-partition markers are reported
  // through `on_end` when the consumer was built to report them.
  std::vector<message> poll(std::size_t max, std::chrono::milliseconds timeout,
                            const std::function<void(const std::string&, std::int32_t)>& on_end = {});

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// Per topic, per partition: the first offset to read (a partition missing from the list is read from the
// beginning).
using start_offsets = std::map<std::string, std::vector<std::int64_t>>;

// Reads every committed record of `topics` from `from` (default: the beginning) to the current end of each
// partition; with `only_partitions`, only those partition numbers of each topic. Throws if the end is not
// reached within `timeout`.
void read_to_end(const std::string& brokers, const std::vector<std::string>& topics,
                 const std::function<void(const message&)>& on_message, std::chrono::milliseconds timeout,
                 const start_offsets& from = {}, const std::vector<std::int32_t>& only_partitions = {});

}  // namespace credits::store
