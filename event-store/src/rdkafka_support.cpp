#include "rdkafka_support.hpp"

#include <algorithm>
#include <stdexcept>

#include "credits/common/log.hpp"

namespace credits::store::detail {
namespace {

void set(rd_kafka_conf_t* conf, const std::string& key, const std::string& value) {
  char err[512];
  if (rd_kafka_conf_set(conf, key.c_str(), value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
    throw std::runtime_error("kafka setting " + key + "=" + value + ": " + err);
}

// librdkafka's own diagnostics (a broker gone, a group session timed out), written as JSON lines like every other
// line of ours instead of librdkafka's "%4|<time>|FACILITY|client| text" on stderr. Called on librdkafka's threads;
// write_log writes each line in one fwrite. `level` is syslog's: 0-3 error, 4 warning, 5-6 info, 7 debug.
void log_diagnostic(const rd_kafka_t* rk, int level, const char* facility, const char* text) {
  const auto severity = level <= 3   ? log_level::error
                        : level == 4 ? log_level::warn
                        : level <= 6 ? log_level::info
                                     : log_level::debug;
  write_log(severity, "librdkafka", text, {{"facility", facility}, {"client", rd_kafka_name(rk)}});
}

std::vector<header> headers_of(const rd_kafka_message_t* m) {
  std::vector<header> out;
  rd_kafka_headers_t* headers = nullptr;  // owned by the message
  if (rd_kafka_message_headers(m, &headers) != RD_KAFKA_RESP_ERR_NO_ERROR || !headers) return out;
  const char* name = nullptr;
  const void* value = nullptr;
  std::size_t size = 0;
  for (std::size_t i = 0; rd_kafka_header_get_all(headers, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i)
    out.emplace_back(name, value ? std::string(static_cast<const char*>(value), size) : std::string());
  return out;
}

}  // namespace

conf_ptr make_conf(const std::string& brokers, const settings& base, const settings& extra) {
  conf_ptr conf(rd_kafka_conf_new());
  rd_kafka_conf_set_log_cb(conf.get(), log_diagnostic);
  set(conf.get(), "bootstrap.servers", brokers);
  for (const auto& [k, v] : base) set(conf.get(), k, v);
  for (const auto& [k, v] : extra) set(conf.get(), k, v);
  return conf;
}

kafka_ptr make_client(rd_kafka_type_t type, conf_ptr conf) {
  char err[512];
  rd_kafka_t* rk = rd_kafka_new(type, conf.get(), err, sizeof err);
  if (!rk) throw std::runtime_error(std::string("kafka client: ") + err);
  (void)conf.release();  // owned by rk now
  return kafka_ptr(rk);
}

kafka_ptr make_assigned_consumer(const std::string& brokers, const std::string& group_id, bool report_end_of_partition,
                                 const settings& extra) {
  auto conf = make_conf(brokers,
                        {{"group.id", group_id},
                         {"enable.auto.commit", "false"},
                         {"enable.auto.offset.store", "false"},
                         {"isolation.level", "read_committed"},
                         {"enable.partition.eof", report_end_of_partition ? "true" : "false"},
                         {"auto.offset.reset", "earliest"}},
                        extra);
  auto rk = make_client(RD_KAFKA_CONSUMER, std::move(conf));
  rd_kafka_poll_set_consumer(rk.get());
  return rk;
}

topic_metadata metadata_of(rd_kafka_t* rk, const std::string& topic, std::chrono::milliseconds timeout) {
  const topic_ptr rkt(rd_kafka_topic_new(rk, topic.c_str(), nullptr));
  const rd_kafka_metadata_t* raw = nullptr;
  const auto err = rd_kafka_metadata(rk, 0, rkt.get(), &raw, static_cast<int>(timeout.count()));
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
    throw std::runtime_error("kafka metadata for " + topic + ": " + rd_kafka_err2str(err));
  const metadata_ptr md(raw);
  if (md->topic_cnt != 1) return {-1, RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART};
  return {md->topics[0].partition_cnt, md->topics[0].err};
}

std::int32_t partition_count(rd_kafka_t* rk, const std::string& topic, std::chrono::milliseconds timeout) {
  const auto md = metadata_of(rk, topic, timeout);
  if (md.error != RD_KAFKA_RESP_ERR_NO_ERROR || md.partitions <= 0)
    throw std::runtime_error("kafka topic " + topic + ": " + rd_kafka_err2str(md.error));
  return md.partitions;
}

partition_list_ptr partition_list_of(const std::vector<start_point>& from) {
  partition_list_ptr list(rd_kafka_topic_partition_list_new(static_cast<int>(from.size())));
  for (const auto& p : from)
    rd_kafka_topic_partition_list_add(list.get(), p.topic.c_str(), p.partition)->offset =
        p.offset <= 0 ? RD_KAFKA_OFFSET_BEGINNING : p.offset;
  return list;
}

void assign(rd_kafka_t* rk, const std::vector<start_point>& from) {
  const auto list = partition_list_of(from);
  if (const auto err = rd_kafka_assign(rk, list.get()); err != RD_KAFKA_RESP_ERR_NO_ERROR)
    throw std::runtime_error(std::string("kafka assign: ") + rd_kafka_err2str(err));
}

message message_of(const rd_kafka_message_t* m, bool with_headers) {
  rd_kafka_timestamp_type_t timestamp_type = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
  const auto timestamp = rd_kafka_message_timestamp(m, &timestamp_type);
  return message{rd_kafka_topic_name(m->rkt),
                 m->partition,
                 m->offset,
                 m->key ? std::string(static_cast<const char*>(m->key), m->key_len) : std::string(),
                 m->payload ? std::string(static_cast<const char*>(m->payload), m->len) : std::string(),
                 timestamp_type == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? -1 : timestamp,
                 with_headers ? headers_of(m) : std::vector<header>{}};
}

headers_ptr headers_for(const std::vector<header>& headers) {
  headers_ptr out(rd_kafka_headers_new(headers.size()));
  for (const auto& [name, value] : headers)
    rd_kafka_header_add(out.get(), name.data(), static_cast<ssize_t>(name.size()), value.data(),
                        static_cast<ssize_t>(value.size()));
  return out;
}

bool is_record(const rd_kafka_message_t* m) {
  if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) return true;
  if (m->err == RD_KAFKA_RESP_ERR__FATAL)
    throw std::runtime_error(std::string("kafka consumer: ") + rd_kafka_message_errstr(m));
  return false;
}

std::vector<consumer::partition_lag> assignment_lag(rd_kafka_t* rk) {
  std::vector<consumer::partition_lag> out;
  rd_kafka_topic_partition_list_t* raw = nullptr;
  if (rd_kafka_assignment(rk, &raw) != RD_KAFKA_RESP_ERR_NO_ERROR || !raw) return out;
  const partition_list_ptr assigned(raw);
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
