#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace credits::store {

// A topic to create.
struct topic_spec {
  std::string name;
  std::int32_t partitions = 1;
  std::map<std::string, std::string> configs;  // topic configs, e.g. retention.ms
};

// Creates the topics (replication factor: the broker's default) through one short-lived admin client.
// Throws on any failure, including a topic that exists already.
void create_topics(const std::string& brokers, const std::vector<topic_spec>& topics,
                   std::chrono::milliseconds timeout);

}  // namespace credits::store
