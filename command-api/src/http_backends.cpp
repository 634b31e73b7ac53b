#include <memory>
#include <string>

#include "credits/event_store/event_store.hpp"
#include "http_impl.hpp"

// The HTTP side's backends: the Redis connections of the query endpoints and the probe of Kafka.
namespace credits::api {

using http_detail::component;

std::unique_ptr<read_model::redis_connection> redis_pool::acquire() {
  {
    std::lock_guard lock(mutex_);
    if (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      return c;
    }
  }
  auto c = std::make_unique<read_model::redis_connection>(cfg_.redis_host, cfg_.redis_port, cfg_.redis_timeout_ms);
  if (cfg_.redis_db != 0) c->run({"SELECT", std::to_string(cfg_.redis_db)});
  return c;
}

void redis_pool::release(std::unique_ptr<read_model::redis_connection> c) {
  if (!c || c->broken()) return;
  std::lock_guard lock(mutex_);
  if (idle_.size() < static_cast<std::size_t>(cfg_.redis_connections_max)) idle_.push_back(std::move(c));
}

kafka_probe::kafka_probe(const config& cfg) : cfg_(cfg), thread_([this] { run(); }) {}

kafka_probe::~kafka_probe() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  thread_.join();
}

kafka_probe::status kafka_probe::current() const {
  std::lock_guard lock(mutex_);
  return status{reachable_.load(std::memory_order_acquire), error_};
}

void kafka_probe::run() {
  std::unique_ptr<store::consumer> client;
  for (;;) {
    std::string error;
    try {
      // One client for the process's life; it reconnects by itself, at most a probe interval apart, so a broker
      // that comes back is seen within about one interval.
      if (!client)
        client = std::make_unique<store::consumer>(
            cfg_.kafka_brokers, false,
            store::settings{{"reconnect.backoff.max.ms", std::to_string(cfg_.kafka_probe_interval_ms.count())},
                            {"log.connection.close", "false"}});
      client->partition_count(cfg_.ledger_topic, cfg_.kafka_probe_timeout_ms);
    } catch (const std::exception& ex) {
      error = ex.what();
    }
    std::unique_lock lock(mutex_);
    const bool reachable = error.empty();
    if (reachable != reachable_.load(std::memory_order_acquire))
      write_log(reachable ? log_level::info : log_level::error, component,
                reachable ? "Kafka is reachable again" : "Kafka is unreachable: " + error);
    error_ = std::move(error);
    reachable_.store(reachable, std::memory_order_release);
    if (stop_cv_.wait_for(lock, cfg_.kafka_probe_interval_ms, [this] { return stopping_; })) return;
  }
}

}  // namespace credits::api
