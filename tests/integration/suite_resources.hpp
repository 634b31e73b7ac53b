#pragma once

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "credits/event_store/partition_reader.hpp"
#include "credits/event_store/topics.hpp"
#include "credits/projector/projector.hpp"
#include "credits/read_model/redis.hpp"
#include "projector_harness.hpp"

// What each C++ integration suite has of its own, so no suite reads, flushes or swaps another's data and none
// depends on the order the suites (or their tests) run in.
namespace credits::harness {

// Redis databases: the view's, and the one a rebuild builds in. tests/README.md has the whole table, with the
// Python suites' pairs (conftest.py REDIS_DBS) and the SDK's; test_suite_layout.py checks that no database is
// claimed twice. scripts/lib.sh starts Redis with 64 databases.
struct redis_databases {
  int view;
  int rebuild;
};

inline constexpr redis_databases projector_test_dbs{30, 31};
inline constexpr redis_databases projector_ops_test_dbs{32, 33};
inline constexpr redis_databases projector_group_test_dbs{34, 35};

// Empties both databases and leaves `redis` on the view's.
inline void flush(read_model::redis_connection& redis, redis_databases dbs) {
  for (const int db : {dbs.rebuild, dbs.view}) {
    redis.run({"SELECT", std::to_string(db)});
    redis.run({"FLUSHDB"});
  }
}

// Kafka: a ledger, usage and dead-letter topic made for one test ("credits-test-<suite>-<random>.ledger", ...),
// set in `config`, once every partition of them has a leader (a topic just made is not at once in every metadata
// answer). Returns the suffix that names them.
inline std::string use_topics_of_its_own(projector_config& config, const std::string& suite,
                                         std::int32_t ledger_partitions, std::int32_t usage_partitions,
                                         std::chrono::milliseconds timeout) {
  const auto suffix = hex_suffix();
  config.ledger_topic = "credits-test-" + suite + "-" + suffix + ".ledger";
  config.usage_topic = "credits-test-" + suite + "-" + suffix + ".usage";
  config.dlq_topic = config.ledger_topic + ".dlq";
  store::create_topics(config.brokers,
                       {{config.ledger_topic, ledger_partitions, {}},
                        {config.usage_topic, usage_partitions, {}},
                        {config.dlq_topic, 1, {}}},
                       timeout);
  store::partition_reader probe(config.brokers);
  const auto led = [&](const std::string& topic, std::int32_t partitions) {
    try {
      if (probe.partition_count(topic, timeout) != partitions) return false;
      for (std::int32_t p = 0; p < partitions; ++p) probe.query_watermarks(topic, p, timeout);
      return true;
    } catch (const std::exception&) {
      return false;
    }
  };
  const bool ready = eventually([&] {
    return led(config.ledger_topic, ledger_partitions) && led(config.usage_topic, usage_partitions) &&
           led(config.dlq_topic, 1);
  });
  if (!ready) throw std::runtime_error("the new topics " + config.ledger_topic + " ... have no leaders yet");
  return suffix;
}

}  // namespace credits::harness
