#pragma once

// librdkafka handles and the helpers every client of the event store shares: configuration, metadata,
// assignment, and turning a consumed librdkafka message into a store::message. Internal to the event store:
// nothing outside event-store/src includes librdkafka.
#include <librdkafka/rdkafka.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "credits/event_store/event_store.hpp"

namespace credits::store::detail {

// Owns a librdkafka object and destroys it with its own destroy function.
template <class T, void (*destroy)(T*)>
struct deleter {
  void operator()(T* p) const { destroy(p); }
};
template <class T, void (*destroy)(T*)>
using handle = std::unique_ptr<T, deleter<T, destroy>>;

using kafka_ptr = handle<rd_kafka_t, rd_kafka_destroy>;
using conf_ptr = handle<rd_kafka_conf_t, rd_kafka_conf_destroy>;
using error_ptr = handle<rd_kafka_error_t, rd_kafka_error_destroy>;
using partition_list_ptr = handle<rd_kafka_topic_partition_list_t, rd_kafka_topic_partition_list_destroy>;
using message_ptr = handle<rd_kafka_message_t, rd_kafka_message_destroy>;
using topic_ptr = handle<rd_kafka_topic_t, rd_kafka_topic_destroy>;
using metadata_ptr = handle<const rd_kafka_metadata_t, rd_kafka_metadata_destroy>;
using headers_ptr = handle<rd_kafka_headers_t, rd_kafka_headers_destroy>;
using queue_ptr = handle<rd_kafka_queue_t, rd_kafka_queue_destroy>;
using event_ptr = handle<rd_kafka_event_t, rd_kafka_event_destroy>;
using admin_options_ptr = handle<rd_kafka_AdminOptions_t, rd_kafka_AdminOptions_destroy>;
using new_topic_ptr = handle<rd_kafka_NewTopic_t, rd_kafka_NewTopic_destroy>;

// A configuration for `brokers`: the client's own properties (`base`), then the caller's (`extra`), which
// override them. Throws on a property librdkafka refuses.
conf_ptr make_conf(const std::string& brokers, const settings& base, const settings& extra);
kafka_ptr make_client(rd_kafka_type_t type, conf_ptr conf);

// A read_committed consumer for explicitly assigned partitions: never joins `group_id` (librdkafka wants one)
// and commits nothing, since callers keep their own positions. Reports the end of each partition when asked.
kafka_ptr make_assigned_consumer(const std::string& brokers, const std::string& group_id, bool report_end_of_partition,
                                 const settings& extra);

// The topic's partition count from the broker's metadata, and the broker's error for the topic.
struct topic_metadata {
  std::int32_t partitions = -1;
  rd_kafka_resp_err_t error = RD_KAFKA_RESP_ERR_NO_ERROR;
};
// Throws when the metadata request itself fails.
topic_metadata metadata_of(rd_kafka_t* rk, const std::string& topic, std::chrono::milliseconds timeout);
// Throws when the topic does not exist or has no partitions.
std::int32_t partition_count(rd_kafka_t* rk, const std::string& topic, std::chrono::milliseconds timeout);

// Replaces the consumer's assignment with these partitions from these offsets (0 or less: the beginning).
partition_list_ptr partition_list_of(const std::vector<start_point>& from);
void assign(rd_kafka_t* rk, const std::vector<start_point>& from);  // throws if librdkafka refuses

// A consumed record (one without an error) as the event store hands it out; with its headers when asked
// (copying them costs the projector's fold, which needs none).
message message_of(const rd_kafka_message_t* m, bool with_headers = false);

// The headers of a record to produce; producev takes them over only when it succeeds.
headers_ptr headers_for(const std::vector<header>& headers);

// Whether a polled message is a record to hand out. A consumer error is not: librdkafka retries the transient
// ones (a broker restarting, a coordinator moving) itself; a fatal one throws.
bool is_record(const rd_kafka_message_t* m);

// How far the consumer is behind the end of each partition assigned to it, from the watermarks of its last
// fetches (no broker round trip).
std::vector<consumer::partition_lag> assignment_lag(rd_kafka_t* rk);

}  // namespace credits::store::detail
