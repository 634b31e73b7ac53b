#include "credits/event_store/idempotent_producer.hpp"

#include <stdexcept>
#include <utility>

#include "credits/event_store/partitioner.hpp"
#include "rdkafka_support.hpp"

namespace credits::store {
namespace {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// The wait for a full producer queue to drain before produce() gives up.
constexpr milliseconds queue_full_wait_ms{30'000};

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

struct idempotent_producer::impl {
  delivery_tally tally;  // declared before rk: librdkafka may report deliveries while rk is destroyed
  detail::kafka_ptr rk;
};

idempotent_producer::idempotent_producer(const std::string& brokers, const settings& extra)
    : impl_(std::make_unique<impl>()) {
  auto conf = detail::make_conf(brokers,
                                {{"enable.idempotence", "true"},  // no duplicates or reordering from retries
                                 {"acks", "all"},
                                 {"partitioner", librdkafka_partitioner},  // for records without a partition
                                 {"linger.ms", "5"}},
                                extra);
  rd_kafka_conf_set_dr_msg_cb(conf.get(), on_delivery);
  rd_kafka_conf_set_opaque(conf.get(), &impl_->tally);
  impl_->rk = detail::make_client(RD_KAFKA_PRODUCER, std::move(conf));
}

idempotent_producer::~idempotent_producer() = default;

void idempotent_producer::produce(const std::string& topic, std::int32_t partition, std::string_view key,
                                  std::string_view value, const std::vector<header>& headers,
                                  std::int64_t timestamp_ms) {
  const auto deadline = clock::now() + queue_full_wait_ms;
  for (;;) {
    auto owned_headers = detail::headers_for(headers);
    const auto err = rd_kafka_producev(
        impl_->rk.get(), RD_KAFKA_V_TOPIC(topic.c_str()),
        RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA : partition), RD_KAFKA_V_KEY(key.data(), key.size()),
        RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_TIMESTAMP(timestamp_ms < 0 ? 0 : timestamp_ms), RD_KAFKA_V_HEADERS(owned_headers.get()),
        RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      (void)owned_headers.release();  // owned by the queued message now
      return;
    }
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && clock::now() < deadline) {
      rd_kafka_poll(impl_->rk.get(), 10);
      continue;
    }
    throw std::runtime_error("kafka produce to " + topic + ": " + rd_kafka_err2str(err));
  }
}

void idempotent_producer::flush(milliseconds timeout) {
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

}  // namespace credits::store
