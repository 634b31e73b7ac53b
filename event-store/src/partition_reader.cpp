#include "credits/event_store/partition_reader.hpp"

#include <stdexcept>

#include "rdkafka_support.hpp"

namespace credits::store {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Consumer errors that waiting will not cure. librdkafka retries the others (a broker restarting) itself.
bool is_lasting_error(rd_kafka_resp_err_t err) {
  return err == RD_KAFKA_RESP_ERR__FATAL || err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION ||
         err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE;
}

}  // namespace

struct partition_reader::impl {
  detail::kafka_ptr rk;
};

partition_reader::partition_reader(const std::string& brokers, const settings& extra)
    : impl_(std::make_unique<impl>()) {
  impl_->rk = detail::make_assigned_consumer(brokers, "credits-operations", true, extra);
}

partition_reader::~partition_reader() {
  if (impl_ && impl_->rk) rd_kafka_consumer_close(impl_->rk.get());
}

void partition_reader::assign(const std::vector<start_point>& from) { detail::assign(impl_->rk.get(), from); }

std::optional<message> partition_reader::poll(milliseconds timeout,
                                              const std::function<void(const std::string&, std::int32_t)>& on_end) {
  const auto deadline = clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - clock::now());
    const detail::message_ptr m(
        rd_kafka_consumer_poll(impl_->rk.get(), static_cast<int>(std::max<std::int64_t>(0, left.count()))));
    if (!m) return std::nullopt;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) return detail::message_of(m.get(), true);
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      if (on_end) on_end(rd_kafka_topic_name(m->rkt), m->partition);
    } else if (is_lasting_error(m->err)) {
      throw std::runtime_error(std::string("kafka consumer: ") + rd_kafka_message_errstr(m.get()));
    }
    if (clock::now() >= deadline) return std::nullopt;
  }
}

std::int32_t partition_reader::partition_count(const std::string& topic, milliseconds timeout) {
  return detail::partition_count(impl_->rk.get(), topic, timeout);
}

bool partition_reader::topic_exists(const std::string& topic, milliseconds timeout) {
  const auto md = detail::metadata_of(impl_->rk.get(), topic, timeout);
  if (md.error == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) return false;
  if (md.error != RD_KAFKA_RESP_ERR_NO_ERROR)
    throw std::runtime_error("kafka topic " + topic + ": " + rd_kafka_err2str(md.error));
  return md.partitions > 0;
}

watermarks partition_reader::query_watermarks(const std::string& topic, std::int32_t partition, milliseconds timeout) {
  watermarks w;
  const auto err = rd_kafka_query_watermark_offsets(impl_->rk.get(), topic.c_str(), partition, &w.low, &w.high,
                                                    static_cast<int>(timeout.count()));
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
    throw std::runtime_error("kafka watermarks of " + topic + ":" + std::to_string(partition) + ": " +
                             rd_kafka_err2str(err));
  return w;
}

}  // namespace credits::store
