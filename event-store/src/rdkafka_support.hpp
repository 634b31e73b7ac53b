#pragma once

// librdkafka handles and the small helpers kafka.cpp and consumer_group_member.cpp share. Internal to the event
// store: nothing outside event-store/src includes librdkafka.
#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "credits/event_store/event_store.hpp"

namespace credits::store::detail {

struct kafka_deleter {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
using kafka_ptr = std::unique_ptr<rd_kafka_t, kafka_deleter>;

struct conf_deleter {
  void operator()(rd_kafka_conf_t* c) const { rd_kafka_conf_destroy(c); }
};
using conf_ptr = std::unique_ptr<rd_kafka_conf_t, conf_deleter>;

struct error_deleter {
  void operator()(rd_kafka_error_t* e) const { rd_kafka_error_destroy(e); }
};
using error_ptr = std::unique_ptr<rd_kafka_error_t, error_deleter>;

struct topic_partitions_deleter {
  void operator()(rd_kafka_topic_partition_list_t* l) const { rd_kafka_topic_partition_list_destroy(l); }
};
using partition_list_ptr = std::unique_ptr<rd_kafka_topic_partition_list_t, topic_partitions_deleter>;

struct message_deleter {
  void operator()(rd_kafka_message_t* m) const { rd_kafka_message_destroy(m); }
};
using message_ptr = std::unique_ptr<rd_kafka_message_t, message_deleter>;

inline void set(rd_kafka_conf_t* conf, const std::string& key, const std::string& value) {
  char err[512];
  if (rd_kafka_conf_set(conf, key.c_str(), value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
    throw std::runtime_error("kafka setting " + key + "=" + value + ": " + err);
}

inline conf_ptr make_conf(const std::string& brokers, const settings& base, const settings& extra) {
  conf_ptr conf(rd_kafka_conf_new());
  set(conf.get(), "bootstrap.servers", brokers);
  for (const auto& [k, v] : base) set(conf.get(), k, v);
  for (const auto& [k, v] : extra) set(conf.get(), k, v);
  return conf;
}

inline kafka_ptr make_client(rd_kafka_type_t type, conf_ptr conf) {
  char err[512];
  rd_kafka_t* rk = rd_kafka_new(type, conf.get(), err, sizeof err);
  if (!rk) throw std::runtime_error(std::string("kafka client: ") + err);
  conf.release();  // owned by rk now
  return kafka_ptr(rk);
}

// A consumed record (one without an error) as the event store hands it out.
inline message message_of(const rd_kafka_message_t* m) {
  rd_kafka_timestamp_type_t timestamp_type = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
  const auto timestamp = rd_kafka_message_timestamp(m, &timestamp_type);
  return message{rd_kafka_topic_name(m->rkt),
                 m->partition,
                 m->offset,
                 std::string(static_cast<const char*>(m->key), m->key_len),
                 std::string(static_cast<const char*>(m->payload), m->len),
                 timestamp_type == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? -1 : timestamp};
}

// Whether a polled message is a record to hand out. A consumer error is not: librdkafka retries the transient
// ones (a broker restarting, a coordinator moving) itself; a fatal one throws.
inline bool is_record(const rd_kafka_message_t* m) {
  if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) return true;
  if (m->err == RD_KAFKA_RESP_ERR__FATAL)
    throw std::runtime_error(std::string("kafka consumer: ") + rd_kafka_message_errstr(m));
  return false;
}

// How far the consumer is behind the end of each partition assigned to it, from the watermarks of its last
// fetches (no broker round trip).
inline std::vector<consumer::partition_lag> assignment_lag(rd_kafka_t* rk) {
  std::vector<consumer::partition_lag> out;
  rd_kafka_topic_partition_list_t* raw = nullptr;
  if (rd_kafka_assignment(rk, &raw) != RD_KAFKA_RESP_ERR_NO_ERROR || !raw) return out;
  partition_list_ptr assigned(raw);
  rd_kafka_position(rk, assigned.get());
  for (int i = 0; i < assigned->cnt; ++i) {
    const auto& p = assigned->elems[i];
    std::int64_t low = 0, high = 0;
    if (rd_kafka_get_watermark_offsets(rk, p.topic, p.partition, &low, &high) != RD_KAFKA_RESP_ERR_NO_ERROR) continue;
    const std::int64_t at = p.offset >= 0 ? p.offset : low;  // no position yet: nothing read
    out.push_back({p.topic, p.partition, std::max<std::int64_t>(0, high - at)});
  }
  return out;
}

}  // namespace credits::store::detail
