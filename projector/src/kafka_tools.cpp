#include "credits/projector/kafka_tools.hpp"
#include "credits/event_store/partitioner.hpp"

#include <librdkafka/rdkafka.h>

#include <stdexcept>
#include <utility>

namespace credits::kafka {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

template <class T, void (*destroy)(T*)>
struct deleter {
  void operator()(T* p) const {
    if (p) destroy(p);
  }
};
template <class T, void (*destroy)(T*)>
using handle = std::unique_ptr<T, deleter<T, destroy>>;

using kafka_ptr = handle<rd_kafka_t, rd_kafka_destroy>;
using conf_ptr = handle<rd_kafka_conf_t, rd_kafka_conf_destroy>;
using message_ptr = handle<rd_kafka_message_t, rd_kafka_message_destroy>;
using partition_list_ptr = handle<rd_kafka_topic_partition_list_t, rd_kafka_topic_partition_list_destroy>;
using topic_ptr = handle<rd_kafka_topic_t, rd_kafka_topic_destroy>;
using headers_ptr = handle<rd_kafka_headers_t, rd_kafka_headers_destroy>;
using new_topic_ptr = handle<rd_kafka_NewTopic_t, rd_kafka_NewTopic_destroy>;
using admin_options_ptr = handle<rd_kafka_AdminOptions_t, rd_kafka_AdminOptions_destroy>;
using queue_ptr = handle<rd_kafka_queue_t, rd_kafka_queue_destroy>;
using event_ptr = handle<rd_kafka_event_t, rd_kafka_event_destroy>;

void metadata_destroy(const rd_kafka_metadata_t* md) { rd_kafka_metadata_destroy(md); }
using metadata_ptr = std::unique_ptr<const rd_kafka_metadata_t, decltype(&metadata_destroy)>;

// The wait for a full producer queue to drain before produce() gives up.
constexpr milliseconds queue_full_wait_ms{30'000};

void set(rd_kafka_conf_t* conf, const std::string& key, const std::string& value) {
  char err[512];
  if (rd_kafka_conf_set(conf, key.c_str(), value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
    throw std::runtime_error("kafka setting " + key + "=" + value + ": " + err);
}

conf_ptr make_conf(const std::string& brokers, const settings& base, const settings& extra) {
  conf_ptr conf(rd_kafka_conf_new());
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

// The topic's metadata: its partition count, or the broker's error for it.
std::pair<std::int32_t, rd_kafka_resp_err_t> topic_metadata(rd_kafka_t* rk, const std::string& topic,
                                                            milliseconds timeout) {
  topic_ptr rkt(rd_kafka_topic_new(rk, topic.c_str(), nullptr));
  const rd_kafka_metadata_t* raw = nullptr;
  const auto err = rd_kafka_metadata(rk, 0, rkt.get(), &raw, static_cast<int>(timeout.count()));
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
    throw std::runtime_error("kafka metadata for " + topic + ": " + rd_kafka_err2str(err));
  metadata_ptr md(raw, &metadata_destroy);
  if (md->topic_cnt != 1) return {-1, RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART};
  return {md->topics[0].partition_cnt, md->topics[0].err};
}

}  // namespace

struct reader::impl {
  kafka_ptr rk;
};

reader::reader(const std::string& brokers, const settings& extra) : impl_(std::make_unique<impl>()) {
  auto conf = make_conf(brokers,
                        {{"group.id", "credits-operations"},  // required by librdkafka; never joined or committed
                         {"enable.auto.commit", "false"},
                         {"enable.auto.offset.store", "false"},
                         {"isolation.level", "read_committed"},
                         {"enable.partition.eof", "true"},
                         {"auto.offset.reset", "earliest"}},
                        extra);
  impl_->rk = make_client(RD_KAFKA_CONSUMER, std::move(conf));
  rd_kafka_poll_set_consumer(impl_->rk.get());
}

reader::~reader() {
  if (impl_ && impl_->rk) rd_kafka_consumer_close(impl_->rk.get());
}

void reader::assign(const std::vector<from>& points) {
  partition_list_ptr list(rd_kafka_topic_partition_list_new(static_cast<int>(points.size())));
  for (const auto& p : points)
    rd_kafka_topic_partition_list_add(list.get(), p.topic.c_str(), p.partition)->offset =
        p.offset <= 0 ? RD_KAFKA_OFFSET_BEGINNING : p.offset;
  const auto err = rd_kafka_assign(impl_->rk.get(), list.get());
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
    throw std::runtime_error(std::string("kafka assign: ") + rd_kafka_err2str(err));
}

std::optional<record> reader::poll(milliseconds timeout,
                                   const std::function<void(const std::string&, std::int32_t)>& on_end) {
  const auto deadline = clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - clock::now());
    message_ptr m(rd_kafka_consumer_poll(impl_->rk.get(), static_cast<int>(std::max<std::int64_t>(0, left.count()))));
    if (!m) return std::nullopt;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      if (on_end) on_end(rd_kafka_topic_name(m->rkt), m->partition);
      if (clock::now() >= deadline) return std::nullopt;
      continue;
    }
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      // Transient errors (a broker restarting) are retried by librdkafka itself; these are not.
      if (m->err == RD_KAFKA_RESP_ERR__FATAL || m->err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION ||
          m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || m->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE)
        throw std::runtime_error(std::string("kafka consumer: ") + rd_kafka_message_errstr(m.get()));
      if (clock::now() >= deadline) return std::nullopt;
      continue;
    }
    record r{rd_kafka_topic_name(m->rkt),
             m->partition,
             m->offset,
             m->key ? std::string(static_cast<const char*>(m->key), m->key_len) : std::string(),
             m->payload ? std::string(static_cast<const char*>(m->payload), m->len) : std::string(),
             -1,
             {}};
    rd_kafka_timestamp_type_t type{};
    r.timestamp_ms = rd_kafka_message_timestamp(m.get(), &type);
    rd_kafka_headers_t* hdrs = nullptr;  // owned by the message
    if (rd_kafka_message_headers(m.get(), &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR && hdrs) {
      const char* name = nullptr;
      const void* value = nullptr;
      std::size_t size = 0;
      for (std::size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i)
        r.headers.push_back({name, value ? std::string(static_cast<const char*>(value), size) : std::string()});
    }
    return r;
  }
}

std::int32_t reader::partition_count(const std::string& topic, milliseconds timeout) {
  const auto [count, err] = topic_metadata(impl_->rk.get(), topic, timeout);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR || count <= 0)
    throw std::runtime_error("kafka topic " + topic + ": " + rd_kafka_err2str(err));
  return count;
}

bool reader::topic_exists(const std::string& topic, milliseconds timeout) {
  const auto [count, err] = topic_metadata(impl_->rk.get(), topic, timeout);
  if (err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) return false;
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
    throw std::runtime_error("kafka topic " + topic + ": " + rd_kafka_err2str(err));
  return count > 0;
}

watermarks reader::query_watermarks(const std::string& topic, std::int32_t partition, milliseconds timeout) {
  watermarks w;
  const auto err = rd_kafka_query_watermark_offsets(impl_->rk.get(), topic.c_str(), partition, &w.low, &w.high,
                                                    static_cast<int>(timeout.count()));
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
    throw std::runtime_error("kafka watermarks of " + topic + ":" + std::to_string(partition) + ": " +
                             rd_kafka_err2str(err));
  return w;
}

namespace {
// Filled by the delivery report callback, on the thread that polls or flushes the producer.
struct delivery_tally {
  std::uint64_t failed = 0;  // delivery reports with an error, since construction
  std::string first_error;
};

void on_delivery(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
  if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) return;
  auto* tally = static_cast<delivery_tally*>(opaque);
  if (tally->failed++ == 0)
    tally->first_error =
        std::string(rd_kafka_topic_name(m->rkt)) + ":" + std::to_string(m->partition) + ": " + rd_kafka_err2str(m->err);
}
}  // namespace

struct producer::impl {
  delivery_tally tally;  // declared before rk: librdkafka may report deliveries while rk is destroyed
  kafka_ptr rk;
};

producer::producer(const std::string& brokers, const settings& extra) : impl_(std::make_unique<impl>()) {
  auto conf =
      make_conf(brokers,
                {{"enable.idempotence", "true"},  // no duplicates or reordering from retries
                 {"acks", "all"},
                 {"partitioner", store::librdkafka_partitioner},  // the writer's partitioner, for records without one
                 {"linger.ms", "5"}},
                extra);
  rd_kafka_conf_set_dr_msg_cb(conf.get(), on_delivery);
  rd_kafka_conf_set_opaque(conf.get(), &impl_->tally);
  impl_->rk = make_client(RD_KAFKA_PRODUCER, std::move(conf));
}

producer::~producer() = default;

void producer::produce(const std::string& topic, std::int32_t partition, std::string_view key, std::string_view value,
                       const std::vector<header>& headers, std::int64_t timestamp_ms) {
  const auto deadline = clock::now() + queue_full_wait_ms;
  for (;;) {
    headers_ptr hdrs(rd_kafka_headers_new(headers.size()));
    for (const auto& h : headers)
      rd_kafka_header_add(hdrs.get(), h.name.data(), static_cast<ssize_t>(h.name.size()), h.value.data(),
                          static_cast<ssize_t>(h.value.size()));
    const auto err = rd_kafka_producev(
        impl_->rk.get(), RD_KAFKA_V_TOPIC(topic.c_str()),
        RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA : partition), RD_KAFKA_V_KEY(key.data(), key.size()),
        RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_TIMESTAMP(timestamp_ms < 0 ? 0 : timestamp_ms), RD_KAFKA_V_HEADERS(hdrs.get()), RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      (void)hdrs.release();  // owned by the queued message now
      return;
    }
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && clock::now() < deadline) {
      rd_kafka_poll(impl_->rk.get(), 10);
      continue;
    }
    throw std::runtime_error("kafka produce to " + topic + ": " + rd_kafka_err2str(err));
  }
}

void producer::flush(milliseconds timeout) {
  const auto err = rd_kafka_flush(impl_->rk.get(), static_cast<int>(timeout.count()));
  if (impl_->tally.failed > 0) {
    // Reported once: the caller re-sends what it needs, and later flushes judge only their own records.
    const auto tally = std::exchange(impl_->tally, {});
    throw std::runtime_error("kafka: " + std::to_string(tally.failed) +
                             " records not written, first: " + tally.first_error);
  }
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
    throw std::runtime_error("kafka flush: " + std::to_string(rd_kafka_outq_len(impl_->rk.get())) +
                             " records still unacknowledged: " + rd_kafka_err2str(err));
}

void create_topics(const std::string& brokers, const std::vector<topic_spec>& topics, milliseconds timeout) {
  if (topics.empty()) return;
  auto rk = make_client(RD_KAFKA_PRODUCER, make_conf(brokers, {}, {}));
  char err[512];
  std::vector<new_topic_ptr> owned;
  std::vector<rd_kafka_NewTopic_t*> raw;
  for (const auto& t : topics) {
    // Replication factor -1: the broker's default.replication.factor.
    new_topic_ptr nt(rd_kafka_NewTopic_new(t.name.c_str(), t.partitions, -1, err, sizeof err));
    if (!nt) throw std::runtime_error("kafka topic " + t.name + ": " + err);
    for (const auto& [k, v] : t.configs)
      if (rd_kafka_NewTopic_set_config(nt.get(), k.c_str(), v.c_str()) != RD_KAFKA_RESP_ERR_NO_ERROR)
        throw std::runtime_error("kafka topic " + t.name + ": bad config " + k);
    raw.push_back(nt.get());
    owned.push_back(std::move(nt));
  }
  admin_options_ptr options(rd_kafka_AdminOptions_new(rk.get(), RD_KAFKA_ADMIN_OP_CREATETOPICS));
  if (rd_kafka_AdminOptions_set_operation_timeout(options.get(), static_cast<int>(timeout.count()), err, sizeof err) !=
      RD_KAFKA_RESP_ERR_NO_ERROR)
    throw std::runtime_error(std::string("kafka admin options: ") + err);
  queue_ptr queue(rd_kafka_queue_new(rk.get()));
  rd_kafka_CreateTopics(rk.get(), raw.data(), raw.size(), options.get(), queue.get());
  event_ptr ev(rd_kafka_queue_poll(queue.get(), static_cast<int>(timeout.count()) + 1000));
  if (!ev) throw std::runtime_error("kafka create topics: no answer in time");
  if (rd_kafka_event_error(ev.get()) != RD_KAFKA_RESP_ERR_NO_ERROR)
    throw std::runtime_error(std::string("kafka create topics: ") + rd_kafka_event_error_string(ev.get()));
  const auto* result = rd_kafka_event_CreateTopics_result(ev.get());
  std::size_t count = 0;
  const rd_kafka_topic_result_t** results = rd_kafka_CreateTopics_result_topics(result, &count);
  for (std::size_t i = 0; i < count; ++i)
    if (rd_kafka_topic_result_error(results[i]) != RD_KAFKA_RESP_ERR_NO_ERROR)
      throw std::runtime_error(std::string("kafka create topic ") + rd_kafka_topic_result_name(results[i]) + ": " +
                               rd_kafka_topic_result_error_string(results[i]));
}

}  // namespace credits::kafka
