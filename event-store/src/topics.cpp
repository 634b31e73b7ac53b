#include "credits/event_store/topics.hpp"

#include <stdexcept>

#include "rdkafka_support.hpp"

namespace credits::store {
namespace {

// The admin API's description of each topic; `owned` keeps them alive, the returned pointers borrow them.
std::vector<rd_kafka_NewTopic_t*> new_topics(const std::vector<topic_spec>& topics,
                                             std::vector<detail::new_topic_ptr>& owned) {
  char err[512];
  std::vector<rd_kafka_NewTopic_t*> raw;
  for (const auto& t : topics) {
    // Replication factor -1: the broker's default.replication.factor.
    detail::new_topic_ptr nt(rd_kafka_NewTopic_new(t.name.c_str(), t.partitions, -1, err, sizeof err));
    if (!nt) throw std::runtime_error("kafka topic " + t.name + ": " + err);
    for (const auto& [k, v] : t.configs)
      if (rd_kafka_NewTopic_set_config(nt.get(), k.c_str(), v.c_str()) != RD_KAFKA_RESP_ERR_NO_ERROR)
        throw std::runtime_error("kafka topic " + t.name + ": bad config " + k);
    raw.push_back(nt.get());
    owned.push_back(std::move(nt));
  }
  return raw;
}

}  // namespace

void create_topics(const std::string& brokers, const std::vector<topic_spec>& topics,
                   std::chrono::milliseconds timeout) {
  if (topics.empty()) return;
  auto rk = detail::make_client(RD_KAFKA_PRODUCER, detail::make_conf(brokers, {}, {}));
  std::vector<detail::new_topic_ptr> owned;
  auto raw = new_topics(topics, owned);
  char err[512];
  const detail::admin_options_ptr options(rd_kafka_AdminOptions_new(rk.get(), RD_KAFKA_ADMIN_OP_CREATETOPICS));
  if (rd_kafka_AdminOptions_set_operation_timeout(options.get(), static_cast<int>(timeout.count()), err, sizeof err) !=
      RD_KAFKA_RESP_ERR_NO_ERROR)
    throw std::runtime_error(std::string("kafka admin options: ") + err);
  const detail::queue_ptr queue(rd_kafka_queue_new(rk.get()));
  rd_kafka_CreateTopics(rk.get(), raw.data(), raw.size(), options.get(), queue.get());
  const detail::event_ptr ev(rd_kafka_queue_poll(queue.get(), static_cast<int>(timeout.count()) + 1000));
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

}  // namespace credits::store
