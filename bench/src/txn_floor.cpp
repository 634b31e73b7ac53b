// credits-bench-txn: the floor of a durable, fenced append. Runs Kafka transactions of R records (default 1)
// back to back through the writer's own adapter (credits::store::transactional_producer: begin, produce,
// commit, wait for the delivery reports), and prints their latency as JSON on stdout. With --writers K, K
// producers with distinct transactional ids run side by side (one thread each), as per-partition writers would.
// With --alternate K, each writer thread owns K producers (distinct transactional ids) and uses them in turn,
// one transaction at a time: the next transaction never waits for the previous one's commit markers, which
// the coordinator writes after it has answered EndTxn (a transactional id whose markers are still being written
// refuses AddPartitionsToTxn with CONCURRENT_TRANSACTIONS, and librdkafka retries 20 ms later).
//
// Usage: credits-bench-txn --brokers HOST:PORT --topic T [--count N] [--warmup N] [--records R]
//          [--record-bytes B] [--writers K] [--alternate K] [--transactional-id PREFIX] [--set key=value]...
// --set passes a librdkafka property to the producer (after the adapter's own, so it overrides them).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "credits/bench/args.hpp"
#include "credits/bench/histogram.hpp"
#include "credits/event_store/event_store.hpp"

namespace {

using credits::bench::number;
using clock_type = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds transaction_timeout_ms{10'000};
constexpr milliseconds init_timeout_ms{30'000};
constexpr milliseconds append_timeout_ms{5'000};
constexpr long count_max = 10'000'000;
constexpr long records_max = 100'000;
constexpr long record_bytes_max = 1024 * 1024;
constexpr long writers_max = 64;
constexpr long alternate_max = 16;

struct options {
  std::string brokers = "127.0.0.1:9092";
  std::string topic;
  std::string transactional_id = "credits-bench-txn";
  long count = 500;
  long warmup = 20;
  long records = 1;
  long record_bytes = 420;  // about one encoded CreditsAdded event
  long writers = 1;
  long alternate = 1;
  credits::store::settings extra;
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
    const char* v = argv[++i];
    if (a == "--brokers")
      o.brokers = v;
    else if (a == "--topic")
      o.topic = v;
    else if (a == "--transactional-id")
      o.transactional_id = v;
    else if (a == "--count")
      o.count = number(a, v, 1, count_max);
    else if (a == "--warmup")
      o.warmup = number(a, v, 0, count_max);
    else if (a == "--records")
      o.records = number(a, v, 1, records_max);
    else if (a == "--record-bytes")
      o.record_bytes = number(a, v, 1, record_bytes_max);
    else if (a == "--writers")
      o.writers = number(a, v, 1, writers_max);
    else if (a == "--alternate")
      o.alternate = number(a, v, 1, alternate_max);
    else if (a == "--set") {
      const std::string kv = v;
      const auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) throw std::invalid_argument("--set needs key=value");
      o.extra[kv.substr(0, eq)] = kv.substr(eq + 1);
    } else {
      throw std::invalid_argument("unknown option " + a);
    }
  }
  if (o.topic.empty()) throw std::invalid_argument("--topic is required");
  return o;
}

nlohmann::json summary(const credits::bench::histogram& h) {
  return {{"count", h.count()},
          {"p50_us", h.percentile(50)},
          {"p90_us", h.percentile(90)},
          {"p99_us", h.percentile(99)},
          {"p999_us", h.percentile(99.9)},
          {"max_us", h.max()},
          {"min_us", h.min()},
          {"mean_us", h.mean()}};
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  try {
    o = parse(argc, argv);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "credits-bench-txn: %s\n", ex.what());
    return 2;
  }
  std::mutex merge_mutex;
  credits::bench::histogram all;
  std::vector<std::string> failures;
  const auto started = clock_type::now();
  std::vector<std::thread> threads;
  for (long w = 0; w < o.writers; ++w) {
    threads.emplace_back([&, w] {
      try {
        std::vector<std::unique_ptr<credits::store::transactional_producer>> producers;
        for (long k = 0; k < o.alternate; ++k)
          producers.push_back(std::make_unique<credits::store::transactional_producer>(
              o.brokers, o.transactional_id + "-" + std::to_string(w) + "-" + std::to_string(k), transaction_timeout_ms,
              init_timeout_ms, o.extra));
        std::vector<credits::store::record> batch;
        for (long r = 0; r < o.records; ++r)
          batch.push_back({o.topic, "bench-" + std::to_string(w) + "-" + std::to_string(r),
                           std::string(static_cast<std::size_t>(o.record_bytes), 'x')});
        credits::bench::histogram mine;
        for (long i = 0; i < o.warmup + o.count; ++i) {
          const auto t0 = clock_type::now();
          const auto result = producers[static_cast<std::size_t>(i % o.alternate)]->append(batch, append_timeout_ms);
          const auto us = std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - t0).count();
          if (result.status != credits::store::append_status::committed)
            throw std::runtime_error("append not committed: " + result.error);
          if (i >= o.warmup) mine.record(static_cast<std::uint64_t>(us));
        }
        std::lock_guard lock(merge_mutex);
        all.merge(mine);
      } catch (const std::exception& ex) {
        std::lock_guard lock(merge_mutex);
        failures.push_back(ex.what());
      }
    });
  }
  for (auto& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(clock_type::now() - started).count();
  nlohmann::json out = summary(all);
  out["writers"] = o.writers;
  out["alternate"] = o.alternate;
  out["records_per_transaction"] = o.records;
  out["record_bytes"] = o.record_bytes;
  out["seconds"] = seconds;
  out["transactions_per_s"] = seconds > 0 ? static_cast<double>(all.count()) / seconds : 0.0;
  out["settings"] = o.extra;
  out["failures"] = failures;
  std::printf("%s\n", out.dump().c_str());
  return failures.empty() ? 0 : 1;
}
