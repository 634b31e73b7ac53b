#pragma once

#include <librdkafka/rdkafka.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>

// Topics of a test's own on the real broker of scripts/up.sh --infra-only (CREDITS_KAFKA_BROKERS).
namespace credits::testing {

inline constexpr std::chrono::milliseconds kafka_timeout{15'000};

inline std::string brokers() {
  const char* b = std::getenv("CREDITS_KAFKA_BROKERS");
  return b && *b ? b : "127.0.0.1:9092";
}

// A new topic named `prefix` + a random number, through the admin API (the broker does not auto-create topics).
inline std::string create_topic(const std::string& prefix = "credits-test-fencing-", int partitions = 1) {
  const std::string name = prefix + std::to_string(std::random_device{}());
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers().c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
    throw std::runtime_error(err);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (!rk) throw std::runtime_error(err);
  rd_kafka_NewTopic_t* topic = rd_kafka_NewTopic_new(name.c_str(), partitions, 1, err, sizeof err);
  rd_kafka_queue_t* queue = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, &topic, 1, nullptr, queue);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(queue, static_cast<int>(kafka_timeout.count()));
  std::string failure = !ev ? "no answer" : rd_kafka_event_error(ev) ? rd_kafka_event_error_string(ev) : "";
  if (ev) {
    std::size_t n = 0;
    const auto* results = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
    if (n == 1 && rd_kafka_topic_result_error(results[0]) != RD_KAFKA_RESP_ERR_NO_ERROR)
      failure = rd_kafka_topic_result_error_string(results[0]);
    rd_kafka_event_destroy(ev);
  }
  rd_kafka_queue_destroy(queue);
  rd_kafka_NewTopic_destroy(topic);
  rd_kafka_destroy(rk);
  if (!failure.empty()) throw std::runtime_error("create topic " + name + ": " + failure);
  return name;
}

}  // namespace credits::testing
